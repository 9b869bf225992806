// Exact Gaussian filtering over a regular grid, separably, for the dense CRF's smoothness kernel:
// out[p, :] = sum_q prod_a exp(-(p_a - q_a)^2 / (2 sigma_a^2)) in[q, :], truncated at 3 sigma_a.
// No lattice to build and no approximation beyond the truncation (0.3 % of the mass per axis);
// a win over the permutohedral lattice for the small spatial sigmas CRFs use (sxy = 3).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/common.h"
#include "core/parallel.h"

namespace convloc {

// d[j] = sum_{t = t0..t1} w[t] s[j + t * stride] for j in [0, count): blocks of outputs stay in
// registers while the taps stream past (one load per tap and value, one store per value).
template <typename T>
CONVLOC_ALWAYS_INLINE void gaussian_taps(T* __restrict d, const T* __restrict s, int64_t stride, const T* w, int t0,
                                         int t1, int64_t count) {
  constexpr int64_t kB = 64;
  int64_t j = 0;
  if (t0 == -t1) {  // the interior: symmetric taps, one multiplication per pair
    for (; j + kB <= count; j += kB) {
      T acc[kB];
      for (int64_t b = 0; b < kB; ++b) acc[b] = w[0] * s[j + b];
      for (int t = 1; t <= t1; ++t) {
        const T wt = w[t];
        const T* lo = s + j - t * stride;
        const T* hi = s + j + t * stride;
        for (int64_t b = 0; b < kB; ++b) acc[b] += wt * (lo[b] + hi[b]);
      }
      for (int64_t b = 0; b < kB; ++b) d[j + b] = acc[b];
    }
  }
  for (; j + kB <= count; j += kB) {
    T acc[kB];
    for (int64_t b = 0; b < kB; ++b) acc[b] = w[t0] * s[j + b + t0 * stride];
    for (int t = t0 + 1; t <= t1; ++t) {
      const T wt = w[t];
      const T* st = s + j + t * stride;
      for (int64_t b = 0; b < kB; ++b) acc[b] += wt * st[b];
    }
    for (int64_t b = 0; b < kB; ++b) d[j + b] = acc[b];
  }
  for (; j < count; ++j) {
    T acc = w[t0] * s[j + t0 * stride];
    for (int t = t0 + 1; t <= t1; ++t) acc += w[t] * s[j + t * stride];
    d[j] = acc;
  }
}

// Non-template entry points so the SIMD clones apply (defined in grid_crf_cpu.cpp).
void gaussian_taps_f32(float* d, const float* s, int64_t stride, const float* w, int t0, int t1, int64_t count);
void gaussian_taps_f64(double* d, const double* s, int64_t stride, const double* w, int t0, int t1, int64_t count);
inline void taps(float* d, const float* s, int64_t stride, const float* w, int t0, int t1, int64_t count) {
  gaussian_taps_f32(d, s, stride, w, t0, t1, count);
}
inline void taps(double* d, const double* s, int64_t stride, const double* w, int t0, int t1, int64_t count) {
  gaussian_taps_f64(d, s, stride, w, t0, t1, count);
}

template <typename T>
class GridGaussian {
 public:
  // shape: the grid (C order, [n] points in all); sigma: per axis, in grid steps, > 0.
  GridGaussian(std::vector<int64_t> shape, const std::vector<double>& sigma) : shape_(std::move(shape)) {
    for (size_t a = 0; a < shape_.size(); ++a) {
      const int r = static_cast<int>(std::min<double>(std::ceil(3.0 * sigma[a]), double(shape_[a] - 1)));
      std::vector<T> w(2 * r + 1);
      for (int t = -r; t <= r; ++t) w[t + r] = T(std::exp(-0.5 * t * t / (sigma[a] * sigma[a])));
      taps_.push_back(std::move(w));
    }
  }

  // Elements of scratch filter() needs: none for 1-D and 2-D grids.
  int64_t scratch_size(int64_t channels) const {
    if (shape_.size() <= 2) return 0;
    int64_t n = channels;
    for (int64_t s : shape_) n *= s;
    return n;
  }

  // in, out: [n, channels]; tmp: scratch_size(channels) elements.
  void filter(const T* in, T* out, int64_t channels, T* tmp) const {
    const int nd = static_cast<int>(shape_.size());
    if (nd == 2) return filter_2d(in, out, channels);
    const T* src = in;
    for (int a = 0; a < nd; ++a) {
      T* dst = ((nd - 1 - a) % 2 == 0) ? out : tmp;
      int64_t outer = 1, inner = channels;
      for (int b = 0; b < a; ++b) outer *= shape_[b];
      for (int b = a + 1; b < nd; ++b) inner *= shape_[b];
      axis_pass(src, dst, outer, shape_[a], inner, taps_[a]);
      src = dst;
    }
  }

 private:
  // dst[o, x, :] = sum_t w[t] src[o, x + t, :] over the t that stay inside the axis.
  static void axis_pass(const T* src, T* dst, int64_t outer, int64_t len, int64_t inner, const std::vector<T>& kernel) {
    const int r = static_cast<int>(kernel.size() / 2);
    const T* w = kernel.data() + r;
    // Tasks: (outer, strip of `strip` elements of the inner dimension, chunk of rows); every output
    // element is written by one task with a fixed summation order.
    const int64_t strip = std::min<int64_t>(inner, 2048), strips = (inner + strip - 1) / strip;
    const int64_t rows = inner >= 256 ? 32 : len, chunks = (len + rows - 1) / rows;
    parallel_for(outer * strips * chunks, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t o = k / (strips * chunks), s = (k / chunks) % strips, c = k % chunks;
        const int64_t j0 = s * strip, j1 = std::min(inner, j0 + strip);
        const T* sb = src + o * len * inner;
        T* db = dst + o * len * inner;
        if (inner < 256) {
          row_pass(sb, db, len, inner, w, r);
          continue;
        }
        for (int64_t x = c * rows; x < std::min(len, (c + 1) * rows); ++x) {
          const int t0 = static_cast<int>(std::max<int64_t>(-r, -x));
          const int t1 = static_cast<int>(std::min<int64_t>(r, len - 1 - x));
          taps(db + x * inner + j0, sb + x * inner + j0, inner, w, t0, t1, j1 - j0);
        }
      }
    });
  }

  // Both axes row by row: each output row's vertical sum goes to a row buffer that the horizontal
  // pass reads while it is in cache, so no full-size intermediate array is written and read back
  // (the filter is bound by memory traffic). Rows are split in fixed chunks.
  void filter_2d(const T* in, T* out, int64_t channels) const {
    const int64_t h = shape_[0], w = shape_[1], row = w * channels;
    const int r0 = static_cast<int>(taps_[0].size() / 2), r1 = static_cast<int>(taps_[1].size() / 2);
    const T* w0 = taps_[0].data() + r0;
    const T* w1 = taps_[1].data() + r1;
    constexpr int64_t kRows = 8;
    parallel_for((h + kRows - 1) / kRows, 1, [&](int64_t c0, int64_t c1) {
      std::vector<T> buf(row);
      for (int64_t y = c0 * kRows; y < std::min(h, c1 * kRows); ++y) {
        const int t0 = static_cast<int>(std::max<int64_t>(-r0, -y));
        const int t1 = static_cast<int>(std::min<int64_t>(r0, h - 1 - y));
        taps(buf.data(), in + y * row, row, w0, t0, t1, row);
        row_pass(buf.data(), out + y * row, w, channels, w1, r1);
      }
    });
  }

  // One line with a short inner size (the last axis): the interior as one contiguous loop per tap.
  static void row_pass(const T* __restrict s, T* __restrict d, int64_t len, int64_t inner, const T* w, int r) {
    const int64_t lo = std::min<int64_t>(r, len), hi = std::max<int64_t>(lo, len - r);
    if (hi > lo) taps(d + lo * inner, s + lo * inner, inner, w, -r, r, (hi - lo) * inner);
    for (int64_t x = 0; x < len; ++x) {
      if (x >= lo && x < hi) continue;
      const int t0 = static_cast<int>(std::max<int64_t>(-r, -x));
      const int t1 = static_cast<int>(std::min<int64_t>(r, len - 1 - x));
      for (int64_t c = 0; c < inner; ++c) {
        T acc = w[t0] * s[(x + t0) * inner + c];
        for (int t = t0 + 1; t <= t1; ++t) acc += w[t] * s[(x + t) * inner + c];
        d[x * inner + c] = acc;
      }
    }
  }

  std::vector<int64_t> shape_;
  std::vector<std::vector<T>> taps_;
};

}  // namespace convloc
