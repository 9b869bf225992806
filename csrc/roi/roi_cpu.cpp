// CPU RoI pool / align. Layout choice: the input is copied once to channels-last (NHWC), so
// each bilinear tap or max-pool cell is a contiguous run of channels and the per-channel
// arithmetic (identical, operation for operation, to torchvision's) vectorises across channels.
// Work is split over (roi, channel block) in the forward passes and over channel blocks in the
// backward passes; every output element is written by exactly one chunk.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.h"
#include "roi/roi.h"

namespace convloc {
namespace {

#if defined(__GNUC__)
#define CONVLOC_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define CONVLOC_ALWAYS_INLINE inline
#endif

// dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols (cache-blocked).
template <typename S, typename D>
CONVLOC_ALWAYS_INLINE void transpose(const S* __restrict src, int64_t src_stride, D* __restrict dst,
                                     int64_t dst_stride, int64_t rows, int64_t cols) {
  constexpr int64_t kTile = 32;
  for (int64_t i0 = 0; i0 < rows; i0 += kTile)
    for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
      const int64_t i1 = std::min(rows, i0 + kTile), j1 = std::min(cols, j0 + kTile);
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t i = i0; i < i1; ++i) dst[j * dst_stride + i] = src[i * src_stride + j];
    }
}

// input [B, C, HW] -> [B, HW, C].
template <typename T>
std::vector<T> channels_last(const T* input, int64_t b, int64_t c, int64_t hw) {
  std::vector<T> out(b * c * hw);
  constexpr int64_t kRows = 64;  // spatial positions per chunk
  const int64_t per_image = (hw + kRows - 1) / kRows;
  parallel_for(b * per_image, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t i = t / per_image, p0 = (t % per_image) * kRows, np = std::min(kRows, hw - p0);
      transpose(input + i * c * hw + p0, hw, out.data() + (i * hw + p0) * c, c, c, np);
    }
  });
  return out;
}

// Channels per forward work item: enough for long vector loops, few enough that one item's
// outputs ([PH * PW, block]) stay in L1.
int64_t forward_block(int64_t c) { return std::min<int64_t>(c, 128); }

// ---- roi_pool ----

template <typename T>
struct PoolArgs {
  const T* x;  // [B, HW, C]
  const T* rois;
  int64_t c, h, w, block, blocks;
  T scale;
  int ph, pw;
  T* out;
  int32_t* argmax;
};

template <typename T>
CONVLOC_ALWAYS_INLINE void pool_forward_items(const PoolArgs<T>& a, int64_t lo, int64_t hi) {
  const int64_t bins = int64_t(a.ph) * a.pw;
  std::vector<T> best(bins * a.block);
  std::vector<int32_t> where(bins * a.block);
  std::vector<int> hs(a.ph), he(a.ph), ws(a.pw), we(a.pw);
  for (int64_t item = lo; item < hi; ++item) {
    const int64_t k = item / a.blocks, c0 = (item % a.blocks) * a.block, n = std::min(a.block, a.c - c0);
    const PoolRoi<T> r = pool_roi(a.rois + 5 * k, a.scale, a.ph, a.pw);
    for (int i = 0; i < a.ph; ++i) pool_bin(i, r.bin_h, r.start_h, int(a.h), hs[i], he[i]);
    for (int i = 0; i < a.pw; ++i) pool_bin(i, r.bin_w, r.start_w, int(a.w), ws[i], we[i]);
    const T* img = a.x + r.batch * a.h * a.w * a.c + c0;
    for (int i = 0; i < a.ph; ++i)
      for (int j = 0; j < a.pw; ++j) {
        T* __restrict m = best.data() + (i * a.pw + j) * n;
        int32_t* __restrict at = where.data() + (i * a.pw + j) * n;
        const bool empty = he[i] <= hs[i] || we[j] <= ws[j];
        std::fill(m, m + n, empty ? T(0) : pool_initial_max<T>());
        std::fill(at, at + n, -1);
        for (int y = hs[i]; y < he[i]; ++y)
          for (int x = ws[j]; x < we[j]; ++x) {
            const int32_t p = int32_t(y * a.w + x);
            const T* __restrict v = img + p * a.c;
            for (int64_t ch = 0; ch < n; ++ch) {  // strict >: the first maximum wins
              const bool gt = v[ch] > m[ch];
              m[ch] = gt ? v[ch] : m[ch];
              at[ch] = gt ? p : at[ch];
            }
          }
      }
    const int64_t o = (k * a.c + c0) * bins;
    transpose(best.data(), n, a.out + o, bins, bins, n);
    transpose(where.data(), n, a.argmax + o, bins, bins, n);
  }
}

CONVLOC_SIMD_CLONES void pool_forward_f32(const PoolArgs<float>& a, int64_t lo, int64_t hi) {
  pool_forward_items(a, lo, hi);
}
CONVLOC_SIMD_CLONES void pool_forward_f64(const PoolArgs<double>& a, int64_t lo, int64_t hi) {
  pool_forward_items(a, lo, hi);
}
void pool_forward(const PoolArgs<float>& a, int64_t lo, int64_t hi) { pool_forward_f32(a, lo, hi); }
void pool_forward(const PoolArgs<double>& a, int64_t lo, int64_t hi) { pool_forward_f64(a, lo, hi); }

// ---- roi_align ----

template <typename T>
struct AlignArgs {
  const T* rois;
  int64_t c, h, w;
  T scale;
  int ph, pw, sampling_ratio;
  bool aligned;
};

// Per-axis sample taps of one RoI: ys[ph * grid_h + iy], xs[pw * grid_w + ix].
template <typename T>
CONVLOC_ALWAYS_INLINE void align_axes(const AlignArgs<T>& a, const AlignRoi<T>& r, std::vector<AlignAxis<T>>& ys,
                                      std::vector<AlignAxis<T>>& xs) {
  ys.resize(size_t(a.ph) * r.grid_h);
  xs.resize(size_t(a.pw) * r.grid_w);
  for (int i = 0; i < a.ph; ++i)
    for (int s = 0; s < r.grid_h; ++s)
      ys[i * r.grid_h + s] = align_axis(align_sample(r.start_h, r.bin_h, i, s, r.grid_h), int(a.h));
  for (int j = 0; j < a.pw; ++j)
    for (int s = 0; s < r.grid_w; ++s)
      xs[j * r.grid_w + s] = align_axis(align_sample(r.start_w, r.bin_w, j, s, r.grid_w), int(a.w));
}

template <typename T>
struct AlignForwardArgs : AlignArgs<T> {
  const T* x;  // [B, HW, C]
  int64_t block, blocks;
  T* out;
};

template <typename T>
CONVLOC_ALWAYS_INLINE void align_forward_items(const AlignForwardArgs<T>& a, int64_t lo, int64_t hi) {
  const int64_t bins = int64_t(a.ph) * a.pw;
  std::vector<T> acc(bins * a.block);
  std::vector<AlignAxis<T>> ys, xs;
  for (int64_t item = lo; item < hi; ++item) {
    const int64_t k = item / a.blocks, c0 = (item % a.blocks) * a.block, n = std::min(a.block, a.c - c0);
    const AlignRoi<T> r = align_roi(a.rois + 5 * k, a.scale, a.ph, a.pw, a.sampling_ratio, a.aligned);
    align_axes(a, r, ys, xs);
    const T* img = a.x + r.batch * a.h * a.w * a.c + c0;
    for (int i = 0; i < a.ph; ++i)
      for (int j = 0; j < a.pw; ++j) {
        T* __restrict o = acc.data() + (i * a.pw + j) * n;
        std::fill(o, o + n, T(0));
        for (int sy = 0; sy < r.grid_h; ++sy)
          for (int sx = 0; sx < r.grid_w; ++sx) {
            const AlignSample<T> s = align_sample_at(ys[i * r.grid_h + sy], xs[j * r.grid_w + sx], a.w);
            const T *__restrict v1 = img + s.p1 * a.c, *__restrict v2 = img + s.p2 * a.c,
                                *__restrict v3 = img + s.p3 * a.c, *__restrict v4 = img + s.p4 * a.c;
            for (int64_t ch = 0; ch < n; ++ch)
              o[ch] = o[ch] + (((s.w1 * v1[ch] + s.w2 * v2[ch]) + s.w3 * v3[ch]) + s.w4 * v4[ch]);
          }
        for (int64_t ch = 0; ch < n; ++ch) o[ch] = o[ch] / r.count;
      }
    transpose(acc.data(), n, a.out + (k * a.c + c0) * bins, bins, bins, n);
  }
}

CONVLOC_SIMD_CLONES void align_forward_f32(const AlignForwardArgs<float>& a, int64_t lo, int64_t hi) {
  align_forward_items(a, lo, hi);
}
CONVLOC_SIMD_CLONES void align_forward_f64(const AlignForwardArgs<double>& a, int64_t lo, int64_t hi) {
  align_forward_items(a, lo, hi);
}
void align_forward(const AlignForwardArgs<float>& a, int64_t lo, int64_t hi) { align_forward_f32(a, lo, hi); }
void align_forward(const AlignForwardArgs<double>& a, int64_t lo, int64_t hi) { align_forward_f64(a, lo, hi); }

template <typename T>
struct AlignBackwardArgs : AlignArgs<T> {
  const T* grad;  // [K, C, PH, PW]
  int64_t k, b, block;
  T* grad_input;  // [B, C, H, W]
};

// dst[c] += g[c] w / count, with the division done as torchvision does it; a power-of-two count
// is a multiplication by its exact reciprocal, which rounds to the same value.
template <typename T>
CONVLOC_ALWAYS_INLINE void add_tap(T* __restrict dst, const T* __restrict g, T w, T count, bool pow2, int64_t n) {
  if (pow2) {
    const T inv = T(1) / count;
    for (int64_t ch = 0; ch < n; ++ch) dst[ch] += (g[ch] * w) * inv;
  } else {
    for (int64_t ch = 0; ch < n; ++ch) dst[ch] += (g[ch] * w) / count;
  }
}

// Owner computes: a chunk owns channels [c0, c0 + n) of every image and accumulates their
// gradient channels-last in private memory, visiting rois, bins, samples and taps in
// torchvision's order, then writes them out NCHW.
template <typename T>
CONVLOC_ALWAYS_INLINE void align_backward_block(const AlignBackwardArgs<T>& a, int64_t c0, int64_t n) {
  const int64_t bins = int64_t(a.ph) * a.pw, hw = a.h * a.w;
  std::vector<T> acc(a.b * hw * n, T(0)), g(bins * n);
  std::vector<AlignAxis<T>> ys, xs;
  for (int64_t k = 0; k < a.k; ++k) {
    const AlignRoi<T> r = align_roi(a.rois + 5 * k, a.scale, a.ph, a.pw, a.sampling_ratio, a.aligned);
    if (r.grid_h <= 0 || r.grid_w <= 0) continue;
    align_axes(a, r, ys, xs);
    transpose(a.grad + (k * a.c + c0) * bins, bins, g.data(), n, n, bins);
    T* img = acc.data() + r.batch * hw * n;
    const bool pow2 = std::ilogb(r.count) >= 0 && std::scalbn(T(1), std::ilogb(r.count)) == r.count;
    for (int i = 0; i < a.ph; ++i)
      for (int j = 0; j < a.pw; ++j) {
        const T* gb = g.data() + (i * a.pw + j) * n;
        for (int sy = 0; sy < r.grid_h; ++sy)
          for (int sx = 0; sx < r.grid_w; ++sx) {
            const AlignSample<T> s = align_sample_at(ys[i * r.grid_h + sy], xs[j * r.grid_w + sx], a.w);
            if (!s.valid) continue;
            add_tap(img + s.p1 * n, gb, s.w1, r.count, pow2, n);
            add_tap(img + s.p2 * n, gb, s.w2, r.count, pow2, n);
            add_tap(img + s.p3 * n, gb, s.w3, r.count, pow2, n);
            add_tap(img + s.p4 * n, gb, s.w4, r.count, pow2, n);
          }
      }
  }
  for (int64_t i = 0; i < a.b; ++i)
    transpose(acc.data() + i * hw * n, n, a.grad_input + (i * a.c + c0) * hw, hw, hw, n);
}

CONVLOC_SIMD_CLONES void align_backward_f32(const AlignBackwardArgs<float>& a, int64_t c0, int64_t n) {
  align_backward_block(a, c0, n);
}
CONVLOC_SIMD_CLONES void align_backward_f64(const AlignBackwardArgs<double>& a, int64_t c0, int64_t n) {
  align_backward_block(a, c0, n);
}
void align_backward(const AlignBackwardArgs<float>& a, int64_t c0, int64_t n) { align_backward_f32(a, c0, n); }
void align_backward(const AlignBackwardArgs<double>& a, int64_t c0, int64_t n) { align_backward_f64(a, c0, n); }

// Channels per backward block: the block's private gradient ([B, HW, block]) should fit in L2,
// and there should be enough blocks to share among threads.
int64_t backward_block(int64_t c, int64_t cells, int64_t elem_size) {
  constexpr int64_t kBudget = int64_t(512) << 10;
  const int64_t fit = kBudget / std::max<int64_t>(cells * elem_size, 1);
  const int64_t block = std::max<int64_t>(16, std::min<int64_t>(fit, c / 16) / 16 * 16);
  return std::min(block, std::max<int64_t>(c, 1));
}

}  // namespace

template <typename T>
bool rois_valid_cpu(const T* rois, int64_t k, int64_t batch) {
  bool ok = true;
  for (int64_t i = 0; i < k; ++i) {
    const T* r = rois + 5 * i;
    ok &= std::isfinite(r[0]) & std::isfinite(r[1]) & std::isfinite(r[2]) & std::isfinite(r[3]) &
          std::isfinite(r[4]) & (r[0] >= 0) & (r[0] < T(batch)) & (r[0] == std::floor(r[0])) & (r[3] >= r[1]) &
          (r[4] >= r[2]);
  }
  return ok;
}

template <typename T>
void roi_pool_forward_cpu(const T* input, int64_t b, int64_t c, int64_t h, int64_t w, const T* rois, int64_t k,
                          T scale, int pooled_h, int pooled_w, T* out, int32_t* argmax) {
  if (k == 0 || c == 0) return;
  const std::vector<T> x = channels_last(input, b, c, h * w);
  PoolArgs<T> a{x.data(), rois, c, h, w, forward_block(c), 0, scale, pooled_h, pooled_w, out, argmax};
  a.blocks = (c + a.block - 1) / a.block;
  parallel_for(k * a.blocks, 1, [&](int64_t lo, int64_t hi) { pool_forward(a, lo, hi); });
}

template <typename T>
void roi_pool_backward_cpu(const T* grad, const int32_t* argmax, const T* rois, int64_t k, int64_t b, int64_t c,
                           int64_t h, int64_t w, int pooled_h, int pooled_w, T* grad_input) {
  const int64_t bins = int64_t(pooled_h) * pooled_w, hw = h * w;
  // Owner computes over channels: each chunk zeroes its planes, then adds every roi's
  // gradients to their argmax cells in (roi, bin) order.
  parallel_for(c, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = 0; i < b; ++i) std::fill(grad_input + (i * c + lo) * hw, grad_input + (i * c + hi) * hw, T(0));
    for (int64_t r = 0; r < k; ++r) {
      const int64_t batch = static_cast<int64_t>(rois[5 * r]);
      for (int64_t ch = lo; ch < hi; ++ch) {
        const T* g = grad + (r * c + ch) * bins;
        const int32_t* at = argmax + (r * c + ch) * bins;
        T* plane = grad_input + (batch * c + ch) * hw;
        for (int64_t bin = 0; bin < bins; ++bin)
          if (at[bin] >= 0) plane[at[bin]] += g[bin];
      }
    }
  });
}

template <typename T>
void roi_align_forward_cpu(const T* input, int64_t b, int64_t c, int64_t h, int64_t w, const T* rois, int64_t k,
                           T scale, int pooled_h, int pooled_w, int sampling_ratio, bool aligned, T* out) {
  if (k == 0 || c == 0) return;
  const std::vector<T> x = channels_last(input, b, c, h * w);
  AlignForwardArgs<T> a;
  static_cast<AlignArgs<T>&>(a) = {rois, c, h, w, scale, pooled_h, pooled_w, sampling_ratio, aligned};
  a.x = x.data();
  a.block = forward_block(c);
  a.blocks = (c + a.block - 1) / a.block;
  a.out = out;
  parallel_for(k * a.blocks, 1, [&](int64_t lo, int64_t hi) { align_forward(a, lo, hi); });
}

template <typename T>
void roi_align_backward_cpu(const T* grad, const T* rois, int64_t k, int64_t b, int64_t c, int64_t h, int64_t w,
                            T scale, int pooled_h, int pooled_w, int sampling_ratio, bool aligned, T* grad_input) {
  if (c == 0) return;
  AlignBackwardArgs<T> a;
  static_cast<AlignArgs<T>&>(a) = {rois, c, h, w, scale, pooled_h, pooled_w, sampling_ratio, aligned};
  a.grad = grad;
  a.k = k;
  a.b = b;
  a.block = backward_block(c, b * h * w, sizeof(T));
  a.grad_input = grad_input;
  const int64_t blocks = (c + a.block - 1) / a.block;
  parallel_for(blocks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) align_backward(a, i * a.block, std::min(a.block, c - i * a.block));
  });
}

#define CONVLOC_INSTANTIATE(T)                                                                                  \
  template bool rois_valid_cpu<T>(const T*, int64_t, int64_t);                                                \
  template void roi_pool_forward_cpu<T>(const T*, int64_t, int64_t, int64_t, int64_t, const T*, int64_t, T, int, \
                                        int, T*, int32_t*);                                                   \
  template void roi_pool_backward_cpu<T>(const T*, const int32_t*, const T*, int64_t, int64_t, int64_t, int64_t, \
                                         int64_t, int, int, T*);                                              \
  template void roi_align_forward_cpu<T>(const T*, int64_t, int64_t, int64_t, int64_t, const T*, int64_t, T, int, \
                                         int, int, bool, T*);                                                 \
  template void roi_align_backward_cpu<T>(const T*, const T*, int64_t, int64_t, int64_t, int64_t, int64_t, T, int, \
                                          int, int, bool, T*);
CONVLOC_INSTANTIATE(float)
CONVLOC_INSTANTIATE(double)
#undef CONVLOC_INSTANTIATE

}  // namespace convloc
