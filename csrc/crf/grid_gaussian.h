// Gaussian filtering over a regular grid, for the dense CRF's smoothness kernel:
// out[p, :] = sum_q prod_a exp(-(p_a - q_a)^2 / (2 sigma_a^2)) in[q, :].
//  - GridGaussian: exact and separable, truncated at 3 sigma_a (0.3 % of the mass per axis); no
//    lattice to build, which makes it the better filter for the small spatial sigmas CRFs use.
//  - CoarseGaussian: 2-D, approximated on a grid `step` times coarser per axis, for larger sigmas.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/common.h"
#include "core/parallel.h"
#include "core/simd.h"

namespace convloc {

// out[j] = sum_{t = first..last} weight[t] in[j + t * stride] for j in [0, count): blocks of outputs
// stay in registers while the taps stream past (one load per tap and value, one store per value).
template <typename T>
CONVLOC_ALWAYS_INLINE void gaussian_taps(T* __restrict out, const T* __restrict in, int64_t stride, const T* weight,
                                         int first, int last, int64_t count) {
  constexpr int64_t kBlock = 64;
  int64_t j = 0;
  if (first == -last) {  // the interior: symmetric taps, one multiplication per pair
    for (; j + kBlock <= count; j += kBlock) {
      T acc[kBlock];
      for (int64_t b = 0; b < kBlock; ++b) acc[b] = weight[0] * in[j + b];
      for (int t = 1; t <= last; ++t) {
        const T wt = weight[t];
        const T* lo = in + j - t * stride;
        const T* hi = in + j + t * stride;
        for (int64_t b = 0; b < kBlock; ++b) acc[b] += wt * (lo[b] + hi[b]);
      }
      for (int64_t b = 0; b < kBlock; ++b) out[j + b] = acc[b];
    }
  }
  for (; j + kBlock <= count; j += kBlock) {
    T acc[kBlock];
    for (int64_t b = 0; b < kBlock; ++b) acc[b] = weight[first] * in[j + b + first * stride];
    for (int t = first + 1; t <= last; ++t) {
      const T wt = weight[t];
      const T* at = in + j + t * stride;
      for (int64_t b = 0; b < kBlock; ++b) acc[b] += wt * at[b];
    }
    for (int64_t b = 0; b < kBlock; ++b) out[j + b] = acc[b];
  }
  for (; j < count; ++j) {
    T acc = weight[first] * in[j + first * stride];
    for (int t = first + 1; t <= last; ++t) acc += weight[t] * in[j + t * stride];
    out[j] = acc;
  }
}

// Rows k < rows: out_k[j] = w_k[0] in[j] + w_k[1] in[j + stride] + w_k[2] in[j + 2 stride] (out_k =
// out + k out_stride, w_k = weight + 3 k): the three source rows, read once, weighted into each of the
// rows that share them. A zero last weight (every other row when the step is even) is skipped.
template <typename T>
CONVLOC_ALWAYS_INLINE void combine_rows3(T* __restrict out, int64_t out_stride, const T* __restrict in, int64_t stride,
                                         const T* weight, int64_t rows, int64_t count) {
  using V = VecIn<T>;
  constexpr int64_t kV = kLanesIn<T>;
  const auto mix = [](const T* wk, auto a, auto b, auto c) {
    return wk[2] == T(0) ? wk[0] * a + wk[1] * b : wk[0] * a + wk[1] * b + wk[2] * c;
  };
  int64_t j = 0;
  for (; j + kV <= count; j += kV) {
    const V a = load_lanes<V>(in + j), b = load_lanes<V>(in + j + stride), c = load_lanes<V>(in + j + 2 * stride);
    for (int64_t k = 0; k < rows; ++k) store_lanes(out + k * out_stride + j, mix(weight + 3 * k, a, b, c));
  }
  for (; j < count; ++j)
    for (int64_t k = 0; k < rows; ++k)
      out[k * out_stride + j] = mix(weight + 3 * k, in[j], in[j + stride], in[j + 2 * stride]);
}
// out[j + a stride] += w_k[a] in_k[j] for a = 0, 1, 2 and rows k < rows in order (in_k = in + k
// in_stride, w_k = weight + 3 k; a zero last weight skipped), then in_k[j] = 0: rows that share their
// three destination rows spread over them together (each destination read and written once) and are
// cleared for the next.
template <typename T>
CONVLOC_ALWAYS_INLINE void spread_rows3(T* __restrict out, int64_t stride, const T* weight, T* __restrict in,
                                        int64_t in_stride, int64_t rows, int64_t count) {
  using V = VecIn<T>;
  constexpr int64_t kV = kLanesIn<T>;
  const auto add = [](const T* wk, auto v, auto& d0, auto& d1, auto& d2) {
    d0 += wk[0] * v, d1 += wk[1] * v;
    if (wk[2] != T(0)) d2 += wk[2] * v;
  };
  int64_t j = 0;
  for (; j + kV <= count; j += kV) {
    V d0 = load_lanes<V>(out + j), d1 = load_lanes<V>(out + j + stride), d2 = load_lanes<V>(out + j + 2 * stride);
    for (int64_t k = 0; k < rows; ++k) {
      add(weight + 3 * k, load_lanes<V>(in + k * in_stride + j), d0, d1, d2);
      store_lanes(in + k * in_stride + j, V{});
    }
    store_lanes(out + j, d0), store_lanes(out + j + stride, d1), store_lanes(out + j + 2 * stride, d2);
  }
  for (; j < count; ++j)
    for (int64_t k = 0; k < rows; ++k) {
      add(weight + 3 * k, in[k * in_stride + j], out[j], out[j + stride], out[j + 2 * stride]);
      in[k * in_stride + j] = 0;
    }
}

// The three kernels above by type, in SIMD versions (grid_crf_cpu.cpp).
void taps(float* out, const float* in, int64_t stride, const float* weight, int first, int last, int64_t count);
void taps(double* out, const double* in, int64_t stride, const double* weight, int first, int last, int64_t count);
void combine_rows3(float* out, int64_t out_stride, const float* in, int64_t stride, const float* weight, int64_t rows,
                   int64_t count);
void combine_rows3(double* out, int64_t out_stride, const double* in, int64_t stride, const double* weight,
                   int64_t rows, int64_t count);
void spread_rows3(float* out, int64_t stride, const float* weight, float* in, int64_t in_stride, int64_t rows,
                  int64_t count);
void spread_rows3(double* out, int64_t stride, const double* weight, double* in, int64_t in_stride, int64_t rows,
                  int64_t count);

// out[i] = prod_a f[a][i_a] over the C-order grid whose axis a has f[a].size() points (in parallel).
template <typename T>
void outer_product(const std::vector<std::vector<T>>& f, T* out) {
  const int nd = static_cast<int>(f.size());
  int64_t n = 1;
  for (const auto& fa : f) n *= static_cast<int64_t>(fa.size());
  const int64_t inner = static_cast<int64_t>(f.back().size());
  parallel_for(n / std::max<int64_t>(inner, 1), 64, [&](int64_t l0, int64_t l1) {
    for (int64_t line = l0; line < l1; ++line) {
      T lead = T(1);  // the product of the leading axes' factors at this line
      for (int64_t a = nd - 2, rest = line; a >= 0; --a) {
        const int64_t len = static_cast<int64_t>(f[a].size());
        lead = f[a][rest % len] * lead;
        rest /= len;
      }
      for (int64_t j = 0; j < inner; ++j) out[line * inner + j] = lead * f.back()[j];
    }
  });
}

// exp(-t² / (2 sigma²)), also for sigma so small that sigma² underflows (1 at t = 0, else 0).
inline double gaussian_weight(double t, double sigma) { return std::exp(-0.5 * (t / sigma) * (t / sigma)); }

// The taps of a Gaussian of standard deviation sigma (grid steps), truncated at 3 sigma, summed:
// sum_{|t| <= ceil(3 sigma)} exp(-t² / (2 sigma²)), the weight it gives a constant along one axis.
inline double gaussian_taps_sum(double sigma) {
  const int64_t r = static_cast<int64_t>(std::ceil(3.0 * sigma));  // sigma: at most kWidestGridSigma extents
  double s = 0;
  for (int64_t t = -r; t <= r; ++t) s += gaussian_weight(double(t), sigma);
  return s;
}

template <typename T>
class GridGaussian {
 public:
  // shape: the grid (C order, [n] points in all); sigma: per axis, in grid steps, > 0.
  GridGaussian(std::vector<int64_t> shape, const std::vector<double>& sigma) : shape_(std::move(shape)) {
    for (size_t a = 0; a < shape_.size(); ++a) {
      const int r = static_cast<int>(std::min<double>(std::ceil(3.0 * sigma[a]), double(shape_[a] - 1)));
      std::vector<T> w(2 * r + 1);
      for (int t = -r; t <= r; ++t) w[t + r] = T(gaussian_weight(double(t), sigma[a]));
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

  // The filter along axis a alone, of one line of shape[a] values.
  void filter_line(int a, const T* in, T* out) const { line_pass(in, out, shape_[a], 1, center(a), radius(a)); }

  // out [n] = the filter's response to ones (its normaliser), as the product of the axes' responses
  // (the filter is separable): O(n) multiplications instead of a filtering.
  void ones_response(T* out) const {
    std::vector<std::vector<T>> factors;
    for (size_t a = 0; a < shape_.size(); ++a) {
      const std::vector<T> ones(shape_[a], T(1));
      factors.emplace_back(shape_[a]);
      filter_line(static_cast<int>(a), ones.data(), factors.back().data());
    }
    outer_product(factors, out);
  }

  // in, out: [n, channels]; tmp: scratch_size(channels) elements.
  void filter(const T* in, T* out, int64_t channels, T* tmp) const {
    const int nd = static_cast<int>(shape_.size());
    if (nd == 2) return filter_2d(in, out, channels, nullptr);
    // One pass per axis, alternating between out and tmp so that the last one writes out.
    const T* src = in;
    for (int a = 0; a < nd; ++a) {
      T* dst = (nd - 1 - a) % 2 == 0 ? out : tmp;
      int64_t outer = 1, inner = channels;
      for (int b = 0; b < a; ++b) outer *= shape_[b];
      for (int b = a + 1; b < nd; ++b) inner *= shape_[b];
      axis_pass(src, dst, outer, shape_[a], inner, a);
      src = dst;
    }
  }

  // filter() of a 2-D grid, each output channel c times channel_scale[c] (nullable).
  // Both axes row by row: each output row's vertical sum goes to a row buffer that the horizontal
  // pass reads while it is in cache, so no full-size intermediate array is written and read back
  // (the filter is bound by memory traffic). Rows are split in fixed chunks.
  void filter_2d(const T* in, T* out, int64_t channels, const T* channel_scale) const {
    const int64_t h = shape_[0], w = shape_[1], row = w * channels;
    const int r0 = radius(0), r1 = radius(1);
    constexpr int64_t kRows = 8;
    parallel_for((h + kRows - 1) / kRows, 1, [&](int64_t c0, int64_t c1) {
      // The vertical sums with r1 zero columns either side: the horizontal taps then run over the whole
      // row as one vectorised loop (truncated taps at the borders would be a scalar loop per column).
      std::vector<T> padded(row + 2 * r1 * channels, T(0));
      T* vertical = padded.data() + r1 * channels;
      for (int64_t y = c0 * kRows; y < std::min(h, c1 * kRows); ++y) {
        const int first = static_cast<int>(std::max<int64_t>(-r0, -y));
        const int last = static_cast<int>(std::min<int64_t>(r0, h - 1 - y));
        taps(vertical, in + y * row, row, center(0), first, last, row);
        taps(out + y * row, vertical, channels, center(1), -r1, r1, row);
        if (channel_scale) scale_channels(out + y * row, w, channels, channel_scale);  // (while in L1)
      }
    });
  }

 private:
  int radius(int a) const { return static_cast<int>(taps_[a].size() / 2); }
  // Axis a's taps, indexed from -radius(a) to radius(a).
  const T* center(int a) const { return taps_[a].data() + radius(a); }

  // dst[o, x, :] = sum_t w[t] src[o, x + t, :] along axis a (of len points; outer lines of inner
  // values each), over the t that stay inside the axis.
  void axis_pass(const T* src, T* dst, int64_t outer, int64_t len, int64_t inner, int a) const {
    const int r = radius(a);
    const T* w = center(a);
    if (inner < 256) {  // short inner runs: whole lines, one task per outer line
      parallel_for(outer, 1, [&](int64_t o0, int64_t o1) {
        for (int64_t o = o0; o < o1; ++o) line_pass(src + o * len * inner, dst + o * len * inner, len, inner, w, r);
      });
      return;
    }
    // Tasks: (outer line, strip of kStrip inner values, chunk of kChunkRows points along the axis);
    // every output element is written by one task with a fixed summation order.
    constexpr int64_t kStrip = 2048, kChunkRows = 32;
    const int64_t strip = std::min<int64_t>(inner, kStrip), strips = (inner + strip - 1) / strip;
    const int64_t chunks = (len + kChunkRows - 1) / kChunkRows;
    parallel_for(outer * strips * chunks, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t o = k / (strips * chunks), s = (k / chunks) % strips, c = k % chunks;
        const int64_t j0 = s * strip, j1 = std::min(inner, j0 + strip);
        const T* src_line = src + o * len * inner;
        T* dst_line = dst + o * len * inner;
        for (int64_t x = c * kChunkRows; x < std::min(len, (c + 1) * kChunkRows); ++x) {
          const int first = static_cast<int>(std::max<int64_t>(-r, -x));
          const int last = static_cast<int>(std::min<int64_t>(r, len - 1 - x));
          taps(dst_line + x * inner + j0, src_line + x * inner + j0, inner, w, first, last, j1 - j0);
        }
      }
    });
  }

  // rows[p, c] *= scale[c] for `count` rows of `channels`.
  static void scale_channels(T* __restrict rows, int64_t count, int64_t channels, const T* __restrict scale) {
    for (int64_t p = 0; p < count; ++p)
      for (int64_t c = 0; c < channels; ++c) rows[p * channels + c] *= scale[c];
  }

  // One line of len points of `inner` values each, taps w[-r .. r]: the interior as one contiguous
  // loop per tap, the points within r of either end with their truncated taps.
  static void line_pass(const T* __restrict s, T* __restrict d, int64_t len, int64_t inner, const T* w, int r) {
    const int64_t lo = std::min<int64_t>(r, len), hi = std::max<int64_t>(lo, len - r);
    if (hi > lo) taps(d + lo * inner, s + lo * inner, inner, w, -r, r, (hi - lo) * inner);
    for (int64_t x = 0; x < len; ++x) {
      if (x >= lo && x < hi) continue;
      const int first = static_cast<int>(std::max<int64_t>(-r, -x));
      const int last = static_cast<int>(std::min<int64_t>(r, len - 1 - x));
      for (int64_t c = 0; c < inner; ++c) {
        T acc = w[first] * s[(x + first) * inner + c];
        for (int t = first + 1; t <= last; ++t) acc += w[t] * s[(x + t) * inner + c];
        d[x * inner + c] = acc;
      }
    }
  }

  std::vector<int64_t> shape_;
  std::vector<std::vector<T>> taps_;  // per axis: exp(-t² / (2 sigma²)) for t in [-radius, radius]
};

// A 2-D Gaussian filter approximated on a grid `step` times coarser per axis: the values are splatted
// to the coarse nodes with quadratic B-spline weights, filtered there exactly (GridGaussian) with the
// variance that remains (sigma² - step²/2: the splat and the slice each add step²/4), and sliced back
// with the same weights. The operator S^T G S is symmetric. With sigma >= step per axis it is within
// 7.3 % of the Gaussian's peak (1.3 % at sigma = 1.5 step; pydensecrf's permutohedral lattice: 17 %
// at sigma = 3), for about 1/step² of the exact filter's work and no full-size intermediate arrays.
//
// Points are taken in `bands` fixed ranges of the C-order index; each band splats into its own
// partial coarse rows (the rows its image rows reach), added in band order, so the sums do not depend
// on the thread count. The dense CRF's fused update uses the same pieces pixel by pixel.
template <typename T>
class CoarseGaussian {
 public:
  // Per point of one axis: the first of its three coarse nodes and their weights.
  struct Axis {
    std::vector<int32_t> node;  // [len]
    std::vector<T> weight;      // [len, 3]
    int64_t nodes = 0;
  };

  // shape: {H, W}; sigma, step: per axis, sigma >= step.
  CoarseGaussian(const std::vector<int64_t>& shape, const std::vector<double>& sigma, const std::vector<int>& step,
                 int64_t bands)
      : height_(shape[0]),
        width_(shape[1]),
        rows_(make_axis(shape[0], step[0])),
        cols_(make_axis(shape[1], step[1])),
        coarse_({rows_.nodes, cols_.nodes}, {coarse_sigma(sigma[0], step[0]), coarse_sigma(sigma[1], step[1])}) {
    // The slice's row weights also carry the gain that gives the filter the exact Gaussian's weight
    // (a constant comes out as the exact filter's would, away from the borders).
    double gain = 1;
    for (int a = 0; a < 2; ++a)
      gain *= gaussian_taps_sum(sigma[a]) / (step[a] * gaussian_taps_sum(coarse_sigma(sigma[a], step[a])));
    slice_weight_.resize(rows_.weight.size());
    for (size_t j = 0; j < slice_weight_.size(); ++j) slice_weight_[j] = T(gain * double(rows_.weight[j]));
    for (int64_t y = 0; y < height_; y = shared_rows_end(y, height_))
      max_shared_rows_ = std::max(max_shared_rows_, shared_rows_end(y, height_) - y);
    place_bands(bands);
  }

  const Axis& cols() const { return cols_; }
  int64_t width() const { return width_; }
  int64_t bands() const { return static_cast<int64_t>(band_lo_.size()); }
  int64_t coarse_size() const { return rows_.nodes * cols_.nodes; }
  // Elements of the partial sums of all bands, and band b's first one.
  int64_t partial_size(int64_t channels) const { return band_first_row_.back() * cols_.nodes * channels; }
  int64_t partial_offset(int64_t band, int64_t channels) const {
    return band_first_row_[band] * cols_.nodes * channels;
  }

  // Image rows [y, shared_rows_end(y, y1)) share their three coarse rows (at most
  // max_shared_rows() of them: the step).
  int64_t shared_rows_end(int64_t y, int64_t y1) const {
    int64_t e = y + 1;
    while (e < y1 && rows_.node[e] == rows_.node[y]) ++e;
    return e;
  }
  int64_t max_shared_rows() const { return max_shared_rows_; }

  // Adds w_y · sums_y[c] for image rows y in [y0, y1) (which share their coarse rows; sums_y = sums +
  // (y - y0) sums_stride: columns [c0, c1) of their horizontal splat sums, [nodes, channels] each) to
  // their coarse rows, in the partial sums of their band (starting at `partial`), and zeroes those
  // columns of sums_y.
  void flush_rows(T* __restrict sums, int64_t sums_stride, int64_t y0, int64_t y1, int64_t band, int64_t c0, int64_t c1,
                  int64_t channels, T* __restrict partial) const {
    const int64_t row = cols_.nodes * channels;
    spread_rows3(partial + (rows_.node[y0] - band_lo_[band]) * row + c0 * channels, row, rows_.weight.data() + 3 * y0,
                 sums + c0 * channels, sums_stride, y1 - y0, (c1 - c0) * channels);
  }

  // coarse = the partial sums, added in band order.
  void add_partials(const T* partial, int64_t channels, T* coarse) const {
    const int64_t row = cols_.nodes * channels;
    parallel_for(rows_.nodes, 8, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        T* dst = coarse + r * row;
        std::fill(dst, dst + row, T(0));
        for (int64_t b = 0; b < bands(); ++b) {
          const int64_t k = r - band_lo_[b];
          if (k < 0 || k >= band_first_row_[b + 1] - band_first_row_[b]) continue;
          const T* src = partial + (band_first_row_[b] + k) * row;
          for (int64_t j = 0; j < row; ++j) dst[j] += src[j];
        }
      }
    });
  }
  // blurred = G coarse, times channel_scale[c] (nullable) per channel.
  void blur(const T* coarse, T* blurred, int64_t channels, const T* channel_scale) const {
    coarse_.filter_2d(coarse, blurred, channels, channel_scale);
  }

  // out_y[c] = gain · sum_a w_y[a] blurred[node_y + a, c] for columns [c0, c1) and image rows y in
  // [y0, y1), which share their coarse rows (out_y = out + (y - y0) out_stride): the rows' slices
  // before the column weights.
  void slice_rows(const T* __restrict blurred, int64_t y0, int64_t y1, int64_t c0, int64_t c1, int64_t channels,
                  T* __restrict out, int64_t out_stride) const {
    const int64_t row = cols_.nodes * channels;
    combine_rows3(out + c0 * channels, out_stride, blurred + rows_.node[y0] * row + c0 * channels, row,
                  slice_weight_.data() + 3 * y0, y1 - y0, (c1 - c0) * channels);
  }

  // The arrays of one filtering, carved from scratch_size(channels) elements: the bands' partial
  // splat sums, their total over the coarse grid, and that blurred.
  struct Buffers {
    T* partial;
    T* coarse;
    T* blurred;
  };
  int64_t scratch_size(int64_t channels) const { return partial_size(channels) + 2 * coarse_size() * channels; }
  Buffers buffers(T* scratch, int64_t channels) const {
    T* coarse = scratch + partial_size(channels);
    return {scratch, coarse, coarse + coarse_size() * channels};
  }

  // out [H·W] = the filter's response to ones (its normaliser), as the product of the two axes'
  // responses (splat, blur and slice are all separable).
  void ones_response(T* out) const {
    outer_product<T>({axis_ones_response(0, rows_, slice_weight_), axis_ones_response(1, cols_, cols_.weight)}, out);
  }

  // out = S^T G S in, both [H·W, channels].
  void filter(const T* in, T* out, int64_t channels, T* scratch) const {
    const auto [partial, coarse, blurred] = buffers(scratch, channels);
    splat(in, channels, partial);
    add_partials(partial, channels, coarse);
    blur(coarse, blurred, channels, nullptr);
    slice(blurred, channels, out);
  }

 private:
  // The blur's sigma in coarse steps: what remains after the splat's and the slice's step² / 4 each.
  static double coarse_sigma(double sigma, int step) { return std::sqrt(sigma * sigma - 0.5 * step * step) / step; }

  // Point x sits at u = x / step in node units; its nodes are round(u) - 1 .. round(u) + 1, stored
  // one place up (node -1 is index 0).
  static Axis make_axis(int64_t len, int step) {
    Axis a;
    a.node.resize(len), a.weight.resize(3 * len);
    for (int64_t x = 0; x < len; ++x) {
      const double u = double(x) / step, k = std::floor(u + 0.5), t = u - k;
      a.node[x] = static_cast<int32_t>(k);
      a.weight[3 * x] = T(0.5 * (0.5 - t) * (0.5 - t));
      a.weight[3 * x + 1] = T(0.75 - t * t);
      a.weight[3 * x + 2] = T(0.5 * (0.5 + t) * (0.5 + t));
    }
    a.nodes = static_cast<int64_t>(std::floor(double(len - 1) / step + 0.5)) + 3;
    return a;
  }

  // Band b's coarse rows: [band_lo_[b], band_lo_[b] + the count), those its image rows reach, stored
  // from row band_first_row_[b] of the partial sums.
  void place_bands(int64_t bands) {
    const int64_t n = height_ * width_;
    band_first_row_.assign(bands + 1, 0);
    for (int64_t b = 0; b < bands; ++b) {
      const int64_t p0 = n * b / bands, p1 = n * (b + 1) / bands;
      const int64_t lo = p0 < p1 ? rows_.node[p0 / width_] : 0, hi = p0 < p1 ? rows_.node[(p1 - 1) / width_] + 3 : 0;
      band_lo_.push_back(lo);
      band_first_row_[b + 1] = band_first_row_[b] + (hi - lo);
    }
  }

  // One axis's factor of ones_response(): ones splatted, blurred along the axis, sliced.
  std::vector<T> axis_ones_response(int a, const Axis& axis, const std::vector<T>& slice_weight) const {
    const int64_t len = a == 0 ? height_ : width_;
    std::vector<T> splat(axis.nodes, T(0)), blurred(axis.nodes), f(len);
    for (int64_t p = 0; p < len; ++p)
      for (int t = 0; t < 3; ++t) splat[axis.node[p] + t] += axis.weight[3 * p + t];
    coarse_.filter_line(a, splat.data(), blurred.data());
    for (int64_t p = 0; p < len; ++p) {
      const T* w = slice_weight.data() + 3 * p;
      f[p] = w[0] * blurred[axis.node[p]] + w[1] * blurred[axis.node[p] + 1] + w[2] * blurred[axis.node[p] + 2];
    }
    return f;
  }

  // The bands' partial sums of in [H·W, channels]: each image row's run of the band splatted along the
  // row into a buffer of coarse columns, then spread to its three coarse rows.
  void splat(const T* in, int64_t channels, T* partial) const {
    const int64_t n = height_ * width_, nb = bands(), row = cols_.nodes * channels;
    parallel_for(nb, 1, [&](int64_t b0, int64_t b1) {
      std::vector<T> row_sums(row);
      for (int64_t band = b0; band < b1; ++band) {
        T* band_partial = partial + partial_offset(band, channels);
        std::fill(band_partial, band_partial + (band_first_row_[band + 1] - band_first_row_[band]) * row, T(0));
        for (int64_t p0 = n * band / nb, end = n * (band + 1) / nb; p0 < end;) {
          const int64_t y = p0 / width_, x0 = p0 - y * width_, p1 = std::min(end, (y + 1) * width_);
          const int64_t x1 = x0 + (p1 - p0);
          splat_columns(in + p0 * channels, x0, x1, channels, row_sums.data());
          flush_rows(row_sums.data(), 0, y, y + 1, band, cols_.node[x0], cols_.node[x1 - 1] + 3, channels,
                     band_partial);
          p0 = p1;
        }
      }
    });
  }
  // sums[c, :] += the column weights of columns [x0, x1) of one image row (values from `values`, the
  // row's column x0) into their coarse columns c.
  void splat_columns(const T* values, int64_t x0, int64_t x1, int64_t channels, T* sums) const {
    for (int64_t x = x0; x < x1; ++x) {
      const T* v = values + (x - x0) * channels;
      for (int t = 0; t < 3; ++t) {
        T* d = sums + (cols_.node[x] + t) * channels;
        const T wt = cols_.weight[3 * x + t];
        for (int64_t l = 0; l < channels; ++l) d[l] += wt * v[l];
      }
    }
  }
  // out [H·W, channels] = the slice of blurred: per image row, the row weights (slice_rows), then the
  // column weights.
  void slice(const T* blurred, int64_t channels, T* out) const {
    const int64_t row = cols_.nodes * channels;
    parallel_for(height_, 8, [&](int64_t y0, int64_t y1) {
      std::vector<T> row_slice(row);
      for (int64_t y = y0; y < y1; ++y) {
        slice_rows(blurred, y, y + 1, 0, cols_.nodes, channels, row_slice.data(), 0);
        for (int64_t x = 0; x < width_; ++x) {
          T* o = out + (y * width_ + x) * channels;
          const T* w = cols_.weight.data() + 3 * x;
          const T* r0 = row_slice.data() + cols_.node[x] * channels;
          for (int64_t l = 0; l < channels; ++l)
            o[l] = w[0] * r0[l] + w[1] * r0[channels + l] + w[2] * r0[2 * channels + l];
        }
      }
    });
  }

  int64_t height_, width_;
  Axis rows_, cols_;
  GridGaussian<T> coarse_;
  std::vector<T> slice_weight_;  // [H, 3] the row weights times the gain
  int64_t max_shared_rows_ = 0;
  std::vector<int64_t> band_lo_, band_first_row_;
};

}  // namespace convloc
