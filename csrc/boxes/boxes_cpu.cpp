#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "boxes/boxes.h"
#include "core/half.h"
#include "core/parallel.h"

namespace convloc {

// Arrays of S: float, double, or Half / BFloat16 computed in float (core/half.h).

template <typename S>
void box_area_cpu(const S* boxes, int64_t n, S* out) {
  using T = compute_t<S>;
  for (int64_t i = 0; i < n; ++i) {
    const S* b = boxes + 4 * i;
    out[i] = box_area(T(b[0]), T(b[1]), T(b[2]), T(b[3]));
  }
}

template <typename S>
bool boxes_valid_cpu(const S* boxes, int64_t n) {
  using T = compute_t<S>;
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) {
    const T b[4] = {boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3]};
    ok &= std::isfinite(b[0]) & std::isfinite(b[1]) & std::isfinite(b[2]) & std::isfinite(b[3]) & (b[2] >= b[0]) &
          (b[3] >= b[1]);
  }
  return ok;
}

namespace {

// Boxes as separate coordinate arrays (structure of arrays), so the inner loops vectorise.
template <typename T>
struct BoxColumns {
  std::vector<T> x1, y1, x2, y2, area;
  template <typename S>  // S: T, or a half type converted on the way
  BoxColumns(const S* boxes, const int64_t* order, int64_t n) : x1(n), y1(n), x2(n), y2(n), area(n) {
    for (int64_t i = 0; i < n; ++i) {
      const S* b = boxes + 4 * (order ? order[i] : i);
      x1[i] = b[0], y1[i] = b[1], x2[i] = b[2], y2[i] = b[3];
      area[i] = box_area(x1[i], y1[i], x2[i], y2[i]);
    }
  }
};

template <typename T>
inline void iou_row(T ax1, T ay1, T ax2, T ay2, T aa, const T* __restrict x1, const T* __restrict y1,
                    const T* __restrict x2, const T* __restrict y2, const T* __restrict area, int64_t m,
                    T* __restrict out) {
  for (int64_t j = 0; j < m; ++j) out[j] = box_iou_pair(ax1, ay1, ax2, ay2, aa, x1[j], y1[j], x2[j], y2[j], area[j]);
}

// Marks every box j in [begin, end) whose IoU with box i exceeds thr (same class only, if given).
template <typename T>
inline void suppress_row(const BoxColumns<T>& c, const int64_t* __restrict cls, int64_t i, int64_t begin, int64_t end,
                         T thr, uint8_t* __restrict suppressed) {
  const T ax1 = c.x1[i], ay1 = c.y1[i], ax2 = c.x2[i], ay2 = c.y2[i], aa = c.area[i];
  const T *__restrict x1 = c.x1.data(), *__restrict y1 = c.y1.data(), *__restrict x2 = c.x2.data(),
                      *__restrict y2 = c.y2.data(), *__restrict area = c.area.data();
  if (cls) {
    const int64_t ci = cls[i];
    for (int64_t j = begin; j < end; ++j)
      suppressed[j] |=
          (box_iou_pair(ax1, ay1, ax2, ay2, aa, x1[j], y1[j], x2[j], y2[j], area[j]) > thr) & (cls[j] == ci);
  } else {
    for (int64_t j = begin; j < end; ++j)
      suppressed[j] |= box_iou_pair(ax1, ay1, ax2, ay2, aa, x1[j], y1[j], x2[j], y2[j], area[j]) > thr;
  }
}

// SIMD versions per type.
CONVLOC_SIMD_FN(void, iou_row_f32,
                (float ax1, float ay1, float ax2, float ay2, float aa, const float* x1, const float* y1,
                 const float* x2, const float* y2, const float* area, int64_t m, float* out),
                { iou_row(ax1, ay1, ax2, ay2, aa, x1, y1, x2, y2, area, m, out); })
CONVLOC_SIMD_FN(void, iou_row_f64,
                (double ax1, double ay1, double ax2, double ay2, double aa, const double* x1, const double* y1,
                 const double* x2, const double* y2, const double* area, int64_t m, double* out),
                { iou_row(ax1, ay1, ax2, ay2, aa, x1, y1, x2, y2, area, m, out); })
CONVLOC_SIMD_FN(void, suppress_row_f32,
                (const BoxColumns<float>& c, const int64_t* cls, int64_t i, int64_t begin, int64_t end, float thr,
                 uint8_t* suppressed),
                { suppress_row(c, cls, i, begin, end, thr, suppressed); })
CONVLOC_SIMD_FN(void, suppress_row_f64,
                (const BoxColumns<double>& c, const int64_t* cls, int64_t i, int64_t begin, int64_t end, double thr,
                 uint8_t* suppressed),
                { suppress_row(c, cls, i, begin, end, thr, suppressed); })
inline void iou_row_simd(float ax1, float ay1, float ax2, float ay2, float aa, const float* x1, const float* y1,
                         const float* x2, const float* y2, const float* area, int64_t m, float* out) {
  iou_row_f32(ax1, ay1, ax2, ay2, aa, x1, y1, x2, y2, area, m, out);
}
inline void iou_row_simd(double ax1, double ay1, double ax2, double ay2, double aa, const double* x1, const double* y1,
                         const double* x2, const double* y2, const double* area, int64_t m, double* out) {
  iou_row_f64(ax1, ay1, ax2, ay2, aa, x1, y1, x2, y2, area, m, out);
}
inline void suppress_row_simd(const BoxColumns<float>& c, const int64_t* cls, int64_t i, int64_t begin, int64_t end,
                              float thr, uint8_t* suppressed) {
  suppress_row_f32(c, cls, i, begin, end, thr, suppressed);
}
inline void suppress_row_simd(const BoxColumns<double>& c, const int64_t* cls, int64_t i, int64_t begin, int64_t end,
                              double thr, uint8_t* suppressed) {
  suppress_row_f64(c, cls, i, begin, end, thr, suppressed);
}

}  // namespace

template <typename S>
void box_iou_cpu(const S* a, int64_t n, const S* b, int64_t m, S* out) {
  using T = compute_t<S>;
  const BoxColumns<T> cb(b, nullptr, m);
  parallel_for(n, std::max<int64_t>(1, 16384 / std::max<int64_t>(m, 1)), [&](int64_t lo, int64_t hi) {
    std::vector<T> row(std::is_same_v<S, T> ? 0 : m);  // half types: each row computed here, then converted
    for (int64_t i = lo; i < hi; ++i) {
      const T x1 = a[4 * i], y1 = a[4 * i + 1], x2 = a[4 * i + 2], y2 = a[4 * i + 3];
      T* dst = std::is_same_v<S, T> ? reinterpret_cast<T*>(out + i * m) : row.data();
      iou_row_simd(x1, y1, x2, y2, box_area(x1, y1, x2, y2), cb.x1.data(), cb.y1.data(), cb.x2.data(), cb.y2.data(),
                   cb.area.data(), m, dst);
      if constexpr (!std::is_same_v<S, T>) convert(row.data(), out + i * m, m);
    }
  });
}

template <typename T>
int64_t nms_cpu(const T* boxes, const T* scores, const int64_t* classes, int64_t n, double iou_threshold,
                int64_t* keep) {
  if (n == 0) return 0;
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  const BoxColumns<T> c(boxes, order.data(), n);
  std::vector<int64_t> cls;
  if (classes) {
    cls.resize(n);
    for (int64_t i = 0; i < n; ++i) cls[i] = classes[order[i]];
  }
  const T thr = threshold_below<T>(iou_threshold);
  std::vector<uint8_t> suppressed(n, 0);
  int64_t count = 0;
  // Greedy in score order; each kept box suppresses the lower-scored ones it overlaps.
  // Long rows are split across threads; each thread writes its own slice of `suppressed`.
  for (int64_t i = 0; i < n; ++i) {
    if (suppressed[i]) continue;
    keep[count++] = order[i];
    const int64_t rest = n - i - 1;
    auto row = [&](int64_t lo, int64_t hi) {
      suppress_row_simd(c, classes ? cls.data() : nullptr, i, i + 1 + lo, i + 1 + hi, thr, suppressed.data());
    };
    if (rest >= (int64_t(1) << 16))
      parallel_for(rest, int64_t(1) << 14, row);
    else
      row(0, rest);
  }
  return count;
}

#define CONVLOC_INSTANTIATE(T)                                            \
  template void box_area_cpu<T>(const T*, int64_t, T*);                   \
  template void box_iou_cpu<T>(const T*, int64_t, const T*, int64_t, T*); \
  template bool boxes_valid_cpu<T>(const T*, int64_t);
CONVLOC_INSTANTIATE(float)
CONVLOC_INSTANTIATE(double)
CONVLOC_INSTANTIATE(Half)
CONVLOC_INSTANTIATE(BFloat16)
#undef CONVLOC_INSTANTIATE
template int64_t nms_cpu<float>(const float*, const float*, const int64_t*, int64_t, double, int64_t*);
template int64_t nms_cpu<double>(const double*, const double*, const int64_t*, int64_t, double, int64_t*);

}  // namespace convloc
