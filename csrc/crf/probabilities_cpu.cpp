#include <algorithm>
#include <atomic>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/common.h"
#include "core/parallel.h"
#include "crf/dense_crf_rows.h"
#include "crf/probabilities.h"

namespace convloc {
namespace {

// Pixels per tile of the two passes below: a tile's labels stay in L1 while each label's values of the
// tile are read or written contiguously.
constexpr int64_t kPixelTile = 64;

// What clip_probabilities writes, and how far from 1 the sum of a pixel's values may be.
template <typename T>
struct Clip {
  T scale, shift, lo, hi, tolerance;
  CONVLOC_ALWAYS_INLINE float operator()(T v) const { return float(std::min(std::max(scale * v + shift, lo), hi)); }
};

// One tile of `count` pixels of clip_probabilities, labels first: src [L, count] (each label's values
// src_stride apart) to dst [L, count] (dst_stride apart). Returns the first pixel whose values are not a
// distribution, or -1.
template <typename T>
CONVLOC_ALWAYS_INLINE int64_t clip_tile(const T* __restrict src, int64_t src_stride, float* __restrict dst,
                                        int64_t dst_stride, int64_t labels, int64_t count, const Clip<T>& clip) {
  T sum[kPixelTile] = {};
  int non_negative[kPixelTile];
  std::fill(non_negative, non_negative + count, 1);
  for (int64_t l = 0; l < labels; ++l)
    for (int64_t r = 0; r < count; ++r) {
      const T v = src[l * src_stride + r];
      sum[r] += v;
      non_negative[r] &= v >= 0;  // (false for NaN)
      dst[l * dst_stride + r] = clip(v);
    }
  for (int64_t r = 0; r < count; ++r)
    if (!(non_negative[r] && std::abs(sum[r] - 1) <= clip.tolerance)) return r;
  return -1;
}
CONVLOC_SIMD_FN(int64_t, clip_tile_f32,
                (const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t labels, int64_t count,
                 const Clip<float>& clip),
                { return clip_tile(src, src_stride, dst, dst_stride, labels, count, clip); })
CONVLOC_SIMD_FN(int64_t, clip_tile_f64,
                (const double* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t labels, int64_t count,
                 const Clip<double>& clip),
                { return clip_tile(src, src_stride, dst, dst_stride, labels, count, clip); })
// The version for T's precision (the SIMD versions are not templates).
template <typename T, typename... Rest>
int64_t clip_tile_simd(const T* src, Rest... rest) {
  if constexpr (std::is_same_v<T, float>)
    return clip_tile_f32(src, rest...);
  else
    return clip_tile_f64(src, rest...);
}

// The argmax over the labels of one tile of `count` columns of q [L, m] (q and out at the tile's first).
template <typename T>
CONVLOC_ALWAYS_INLINE void argmax_tile(const T* q, int64_t m, int64_t labels, int64_t count, int64_t* out) {
  T best[kPixelTile];
  int32_t index[kPixelTile] = {};
  std::copy(q, q + count, best);
  for (int32_t l = 1; l < labels; ++l) {
    const T* row = q + l * m;
    for (int64_t r = 0; r < count; ++r) {
      const T v = row[r];
      const bool take = v > best[r] || (v != v && best[r] == best[r]);  // NaN beats numbers, as in NumPy
      best[r] = take ? v : best[r];
      index[r] = take ? l : index[r];
    }
  }
  std::copy(index, index + count, out);
}
CONVLOC_SIMD_FN(void, argmax_tile_f32, (const float* q, int64_t m, int64_t labels, int64_t count, int64_t* out),
                { argmax_tile(q, m, labels, count, out); })
CONVLOC_SIMD_FN(void, argmax_tile_f64, (const double* q, int64_t m, int64_t labels, int64_t count, int64_t* out),
                { argmax_tile(q, m, labels, count, out); })
// (as clip_tile_simd)
template <typename T, typename... Rest>
void argmax_tile_simd(const T* q, Rest... rest) {
  if constexpr (std::is_same_v<T, float>)
    argmax_tile_f32(q, rest...);
  else
    argmax_tile_f64(q, rest...);
}

}  // namespace

// (probabilities.h)
template <typename T>
int64_t clip_probabilities(const T* probs, bool labels_last, int64_t n, int64_t labels, double scale, double lo,
                           double hi, double tolerance, float* out) {
  const double shift = (1 - scale) / double(labels);
  std::atomic<int64_t> first_bad{n};
  parallel_for((n + kPixelTile - 1) / kPixelTile, 16, [&](int64_t t0, int64_t t1) {
    // labels last: a tile's rows, padded to a multiple of 8 labels, then transposed (dense_crf_rows.h)
    const int64_t lp = (labels + 7) & ~int64_t(7);
    std::vector<float> rows(labels_last ? kPixelTile * lp : 0), tile(labels_last ? labels * kPixelTile : 0);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = t * kPixelTile, count = std::min(n - i0, kPixelTile);
      int64_t bad;
      if (labels_last) {
        for (int64_t r = 0; r < count; ++r)
          std::copy(probs + (i0 + r) * labels, probs + (i0 + r + 1) * labels, rows.begin() + r * lp);
        scatter_rows(rows.data(), kPixelTile, labels, lp, 0, count, tile.data());
        const Clip<float> clip{float(scale), float(shift), float(lo), float(hi), float(tolerance)};
        bad = clip_tile_simd(tile.data(), kPixelTile, out + i0, n, labels, count, clip);
      } else {
        const Clip<T> clip{T(scale), T(shift), T(lo), T(hi), T(tolerance)};
        bad = clip_tile_simd(probs + i0, n, out + i0, n, labels, count, clip);
      }
      for (int64_t seen = first_bad.load(); bad >= 0 && i0 + bad < seen;)
        if (first_bad.compare_exchange_weak(seen, i0 + bad)) break;
    }
  });
  return first_bad == n ? -1 : first_bad.load();
}

template <typename T>
void argmax_axis0(const T* q, int64_t labels, int64_t m, int64_t* out) {
  parallel_for((m + kPixelTile - 1) / kPixelTile, 16, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = t * kPixelTile, count = std::min(m - i0, kPixelTile);
      argmax_tile_simd(q + i0, m, labels, count, out + i0);
    }
  });
}

template int64_t clip_probabilities<float>(const float*, bool, int64_t, int64_t, double, double, double, double,
                                           float*);
template int64_t clip_probabilities<double>(const double*, bool, int64_t, int64_t, double, double, double, double,
                                            float*);
template void argmax_axis0<float>(const float*, int64_t, int64_t, int64_t*);
template void argmax_axis0<double>(const double*, int64_t, int64_t, int64_t*);

}  // namespace convloc
