// RoI max pooling (Fast R-CNN) and RoI align (Mask R-CNN), with torchvision's arithmetic.
//
// rois [K, 5] = (batch index, x1, y1, x2, y2) in input-image coordinates; input [B, C, H, W];
// output [K, C, PH, PW]. The per-RoI geometry below is shared by the CPU and CUDA kernels and
// evaluates torchvision's expressions in the same order and precision, so results agree bit for
// bit with torchvision's CPU kernels. On the GPU the products and sums go through the _rn
// intrinsics so that nvcc cannot fuse them into FMAs (which would change the last bit).
//
// Backward passes are gathers or owner-computes (no atomics): every grad_input element sums its
// contributions in the fixed order (roi, ph, pw, iy, ix, tap) — torchvision's serial order — so
// gradients are deterministic, independent of the thread count, and equal on CPU and CUDA.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "core/common.h"
#include "core/half.h"

namespace convloc {

// Float arithmetic that nvcc may not contract into FMAs (host code is built with -ffp-contract=off).
#if defined(__CUDA_ARCH__)
CONVLOC_HD float mul_rn(float a, float b) { return __fmul_rn(a, b); }
CONVLOC_HD double mul_rn(double a, double b) { return __dmul_rn(a, b); }
CONVLOC_HD float add_rn(float a, float b) { return __fadd_rn(a, b); }
CONVLOC_HD double add_rn(double a, double b) { return __dadd_rn(a, b); }
#else
template <typename T>
CONVLOC_HD T mul_rn(T a, T b) {
  return a * b;
}
template <typename T>
CONVLOC_HD T add_rn(T a, T b) {
  return a + b;
}
#endif

CONVLOC_HD float round_half_away(float x) { return roundf(x); }
CONVLOC_HD double round_half_away(double x) { return round(x); }
CONVLOC_HD float floor_of(float x) { return floorf(x); }
CONVLOC_HD double floor_of(double x) { return floor(x); }
CONVLOC_HD float ceil_of(float x) { return ceilf(x); }
CONVLOC_HD double ceil_of(double x) { return ceil(x); }

// ---- RoI max pooling ----

// Corners rounded half away from zero, size max(x2 - x1 + 1, 1), bins of size/output cells.
template <typename T>
struct PoolRoi {
  int64_t batch;
  int start_h, start_w;
  T bin_h, bin_w;
};

template <typename T>
CONVLOC_HD PoolRoi<T> pool_roi(const T* roi, T scale, int pooled_h, int pooled_w) {
  PoolRoi<T> r;
  r.batch = static_cast<int64_t>(roi[0]);
  r.start_w = static_cast<int>(round_half_away(roi[1] * scale));
  r.start_h = static_cast<int>(round_half_away(roi[2] * scale));
  const int end_w = static_cast<int>(round_half_away(roi[3] * scale));
  const int end_h = static_cast<int>(round_half_away(roi[4] * scale));
  const int width = max_of(end_w - r.start_w + 1, 1), height = max_of(end_h - r.start_h + 1, 1);
  r.bin_h = static_cast<T>(height) / static_cast<T>(pooled_h);
  r.bin_w = static_cast<T>(width) / static_cast<T>(pooled_w);
  return r;
}

// Bin i along one axis covers [floor(i bin), ceil((i + 1) bin)) + start, clipped to [0, size).
template <typename T>
CONVLOC_HD void pool_bin(int i, T bin, int start, int size, int& lo, int& hi) {
  lo = static_cast<int>(floor_of(static_cast<T>(i) * bin));
  hi = static_cast<int>(ceil_of(static_cast<T>(i + 1) * bin));
  lo = min_of(max_of(lo + start, 0), size);
  hi = min_of(max_of(hi + start, 0), size);
}

// The running maximum starts here in a non-empty bin (torchvision's -FLT_MAX, also for double).
template <typename T>
CONVLOC_HD T pool_initial_max() {
  return static_cast<T>(-FLT_MAX);
}

// ---- RoI align ----

// The most samples per bin along an axis (sampling_ratio, or the adaptive ceil(roi size / output size)), and the
// most output cells times samples along an axis (the CPU kernels' per-axis tables). The entry points refuse more;
// the kernels clamp, so that a RoI written by another thread after its check stays within int and the scratch.
constexpr int kMaxAlignGrid = 1 << 16;
constexpr int kMaxAlignAxisSamples = 1 << 20;
CONVLOC_HD int align_grid_limit(int pooled) { return min_of(kMaxAlignGrid, max_of(kMaxAlignAxisSamples / pooled, 1)); }

// The adaptive grid ceil(bin), clamped to [0, limit].
template <typename T>
CONVLOC_HD int adaptive_grid(T bin, int limit) {
  const T g = ceil_of(bin);
  return g > T(0) ? (g < static_cast<T>(limit) ? static_cast<int>(g) : limit) : 0;
}

template <typename T>
struct AlignRoi {
  int64_t batch;
  T start_h, start_w, bin_h, bin_w;
  int grid_h, grid_w;  // samples per bin along each axis
  T count;             // samples per bin, at least 1
};

template <typename T>
CONVLOC_HD AlignRoi<T> align_roi(const T* roi, T scale, int pooled_h, int pooled_w, int sampling_ratio, bool aligned) {
  AlignRoi<T> r;
  r.batch = static_cast<int64_t>(roi[0]);
  const T offset = aligned ? T(0.5) : T(0);
  r.start_w = add_rn(mul_rn(roi[1], scale), -offset);
  r.start_h = add_rn(mul_rn(roi[2], scale), -offset);
  T width = add_rn(add_rn(mul_rn(roi[3], scale), -offset), -r.start_w);
  T height = add_rn(add_rn(mul_rn(roi[4], scale), -offset), -r.start_h);
  if (!aligned) {  // malformed RoIs are forced to 1 x 1
    width = max_of(width, T(1));
    height = max_of(height, T(1));
  }
  r.bin_h = height / static_cast<T>(pooled_h);
  r.bin_w = width / static_cast<T>(pooled_w);
  r.grid_h = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(r.bin_h, align_grid_limit(pooled_h));
  r.grid_w = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(r.bin_w, align_grid_limit(pooled_w));
  r.count = static_cast<T>(max_of(int64_t(r.grid_h) * r.grid_w, int64_t(1)));
  return r;
}

// Coordinate of sample j (of `grid`) in bin i: start + i bin + (j + 0.5) bin / grid.
template <typename T>
CONVLOC_HD T align_sample(T start, T bin, int i, int j, int grid) {
  return add_rn(add_rn(start, mul_rn(static_cast<T>(i), bin)),
                mul_rn(static_cast<T>(j + .5f), bin) / static_cast<T>(grid));
}

// Bilinear interpolation along one axis: taps lo, hi with weights (1 - frac), frac.
// The 2-D weights are products of two of these, as in torchvision (w1 = hy hx, ...).
template <typename T>
struct AlignAxis {
  int lo, hi;
  T l, h;      // frac and 1 - frac
  bool valid;  // inside [-1, size]; a sample outside on either axis contributes 0
};

template <typename T>
CONVLOC_HD AlignAxis<T> align_axis(T v, int size) {
  AlignAxis<T> a;
  a.valid = v >= T(-1) && v <= static_cast<T>(size);
  if (!a.valid) {
    a.lo = a.hi = 0;
    a.l = a.h = T(0);
    return a;
  }
  if (v <= 0) v = 0;
  a.lo = static_cast<int>(v);
  if (a.lo >= size - 1) {
    a.hi = a.lo = size - 1;
    v = static_cast<T>(a.lo);
  } else {
    a.hi = a.lo + 1;
  }
  a.l = v - static_cast<T>(a.lo);
  a.h = T(1) - a.l;
  return a;
}

// One bilinear sample: four input offsets (within a channel plane) and weights. A sample invalid
// on either axis reads offset 0 with weight 0, exactly as torchvision's forward does.
template <typename T>
struct AlignSample {
  int64_t p1, p2, p3, p4;
  T w1, w2, w3, w4;
  bool valid;
};

template <typename T>
CONVLOC_HD AlignSample<T> align_sample_at(const AlignAxis<T>& y, const AlignAxis<T>& x, int64_t width) {
  AlignSample<T> s;
  s.valid = y.valid && x.valid;
  if (!s.valid) {
    s.p1 = s.p2 = s.p3 = s.p4 = 0;
    s.w1 = s.w2 = s.w3 = s.w4 = T(0);
    return s;
  }
  s.p1 = y.lo * width + x.lo;
  s.p2 = y.lo * width + x.hi;
  s.p3 = y.hi * width + x.lo;
  s.p4 = y.hi * width + x.hi;
  s.w1 = mul_rn(y.h, x.h);
  s.w2 = mul_rn(y.h, x.l);
  s.w3 = mul_rn(y.l, x.h);
  s.w4 = mul_rn(y.l, x.l);
  return s;
}

// w1 v1 + w2 v2 + w3 v3 + w4 v4, summed left to right.
template <typename T>
CONVLOC_HD T align_interpolate(const AlignSample<T>& s, T v1, T v2, T v3, T v4) {
  return add_rn(add_rn(add_rn(mul_rn(s.w1, v1), mul_rn(s.w2, v2)), mul_rn(s.w3, v3)), mul_rn(s.w4, v4));
}

// ---- gradients ----

// An output gradient [K, C, PH, PW] addressed by strides (in elements); a stride of 0 broadcasts
// that dimension, so autograd's expanded gradients (e.g. of out.sum()) need no copy.
template <typename T>
struct GradView {
  const T* data;
  int64_t sk, sc, sh, sw;
  CONVLOC_HD T operator()(int64_t k, int64_t c, int64_t ph, int64_t pw) const {
    return data[k * sk + c * sc + ph * sh + pw * sw];
  }
};

// ---- backward as a gather per input cell (the CUDA kernels; a CPU test hook runs the same code) ----
// Each cell walks the RoIs in order and, within a RoI, only the bins / samples that can reach it:
// candidate ranges, one more either side for rounding, then the exact tests above. The contributions
// are added in the full walk's order, (roi, ph, pw, iy, ix, tap), so the sums are the CPU kernels'.

// Clamped to an int range that leaves room for the margins below (huge RoIs reach nothing further).
CONVLOC_HD int clamp_cell(double v) { return static_cast<int>(min_of(max_of(v, -1e9), 1e9)); }

// A RoI's geometry and the cells it can reach, [y0, y1] x [x0, x1] (conservative).
template <typename T>
struct PoolGather {
  PoolRoi<T> r;
  int y0, y1, x0, x1;
};

template <typename T>
CONVLOC_HD PoolGather<T> pool_gather(const T* roi, T scale, int pooled_h, int pooled_w) {
  PoolGather<T> g;
  g.r = pool_roi(roi, scale, pooled_h, pooled_w);
  g.y0 = g.r.start_h - 1;
  g.x0 = g.r.start_w - 1;
  g.y1 = clamp_cell(double(g.r.start_h) + ceil_of(double(g.r.bin_h) * pooled_h) + 1);
  g.x1 = clamp_cell(double(g.r.start_w) + ceil_of(double(g.r.bin_w) * pooled_w) + 1);
  return g;
}

template <typename T>
struct AlignGather {
  AlignRoi<T> r;
  int y0, y1, x0, x1;
};

template <typename T>
CONVLOC_HD AlignGather<T> align_gather(const T* roi, T scale, int pooled_h, int pooled_w, int sampling_ratio,
                                       bool aligned) {
  AlignGather<T> g;
  g.r = align_roi(roi, scale, pooled_h, pooled_w, sampling_ratio, aligned);
  // Samples lie in [start, start + pooled bin]; a sample's taps are floor(v) and floor(v) + 1.
  g.y0 = clamp_cell(floor_of(double(g.r.start_h)) - 2);
  g.x0 = clamp_cell(floor_of(double(g.r.start_w)) - 2);
  g.y1 = clamp_cell(floor_of(double(g.r.start_h) + double(g.r.bin_h) * pooled_h) + 2);
  g.x1 = clamp_cell(floor_of(double(g.r.start_w) + double(g.r.bin_w) * pooled_w) + 2);
  return g;
}

// Pool bins [lo, hi] along one axis that can contain cell pos (pool_bin decides exactly).
template <typename T>
CONVLOC_HD void pool_bins_near(int pos, int start, T bin, int pooled, int& lo, int& hi) {
  const double rel = double(pos) - double(start), b = double(bin);  // bin >= 1 / pooled
  lo = max_of(clamp_cell(floor_of((rel - 1) / b) - 1), 0);
  hi = min_of(clamp_cell(floor_of((rel + 1) / b) + 1), pooled - 1);
}

// Align samples s = bin * grid + j, [lo, hi] along one axis, whose taps can include cell pos: a
// sample at v reaches pos only from v in [pos - 1, pos + 1] (border clamping included).
template <typename T>
CONVLOC_HD void align_samples_near(int pos, T start, T bin, int grid, int pooled, int64_t& lo, int64_t& hi) {
  const int64_t total = int64_t(pooled) * grid;
  const double step = double(bin) / double(grid);
  if (!(step > 0)) {  // a RoI of zero size: all its samples at one place
    lo = 0, hi = total - 1;
    return;
  }
  const double a = (double(pos) - 2 - double(start)) / step - 0.5, b = (double(pos) + 2 - double(start)) / step - 0.5;
  lo = a < 0 ? 0 : a >= double(total) ? total : static_cast<int64_t>(a);
  hi = b < 0 ? -1 : b >= double(total) ? total - 1 : static_cast<int64_t>(b) + 1;
  if (hi >= total) hi = total - 1;
}

// d input[b, ch, y, x] of RoI pooling, from the forward's argmax [K, C, PH, PW].
template <typename T>
CONVLOC_HD T roi_pool_grad_at(const GradView<T>& grad, const int32_t* argmax, const PoolGather<T>* rois, int64_t k_n,
                              int64_t b, int64_t ch, int64_t c, int y, int x, int h, int w, int ph_n, int pw_n) {
  const int32_t p = int32_t(y * w + x);
  T acc = T(0);
  for (int64_t k = 0; k < k_n; ++k) {
    const PoolGather<T>& g = rois[k];
    if (y < g.y0 || y > g.y1 || x < g.x0 || x > g.x1 || g.r.batch != b) continue;
    int ph0, ph1, pw0, pw1;
    pool_bins_near(y, g.r.start_h, g.r.bin_h, ph_n, ph0, ph1);
    pool_bins_near(x, g.r.start_w, g.r.bin_w, pw_n, pw0, pw1);
    const int32_t* am = argmax + (k * c + ch) * ph_n * pw_n;
    for (int ph = ph0; ph <= ph1; ++ph) {
      int hs, he;
      pool_bin(ph, g.r.bin_h, g.r.start_h, h, hs, he);
      if (y < hs || y >= he) continue;
      for (int pw = pw0; pw <= pw1; ++pw) {
        int ws, we;
        pool_bin(pw, g.r.bin_w, g.r.start_w, w, ws, we);
        if (x < ws || x >= we) continue;
        if (am[ph * pw_n + pw] == p) acc = add_rn(acc, grad(k, ch, ph, pw));
      }
    }
  }
  return acc;
}

// d input[b, ch, y, x] of RoI align.
template <typename T>
CONVLOC_HD T roi_align_grad_at(const GradView<T>& grad, const AlignGather<T>* rois, int64_t k_n, int64_t b, int64_t ch,
                               int y, int x, int h, int w, int ph_n, int pw_n) {
  T acc = T(0);
  for (int64_t k = 0; k < k_n; ++k) {
    const AlignGather<T>& g = rois[k];
    const AlignRoi<T>& r = g.r;
    if (y < g.y0 || y > g.y1 || x < g.x0 || x > g.x1 || r.batch != b || r.grid_h <= 0 || r.grid_w <= 0) continue;
    int64_t sy0, sy1, sx0, sx1;
    align_samples_near(y, r.start_h, r.bin_h, r.grid_h, ph_n, sy0, sy1);
    align_samples_near(x, r.start_w, r.bin_w, r.grid_w, pw_n, sx0, sx1);
    if (sy0 > sy1 || sx0 > sx1) continue;
    for (int ph = int(sy0 / r.grid_h); ph <= int(sy1 / r.grid_h); ++ph) {
      const int iy0 = int(max_of(sy0 - int64_t(ph) * r.grid_h, int64_t(0)));
      const int iy1 = int(min_of(sy1 - int64_t(ph) * r.grid_h, int64_t(r.grid_h - 1)));
      for (int pw = int(sx0 / r.grid_w); pw <= int(sx1 / r.grid_w); ++pw) {
        const int ix0 = int(max_of(sx0 - int64_t(pw) * r.grid_w, int64_t(0)));
        const int ix1 = int(min_of(sx1 - int64_t(pw) * r.grid_w, int64_t(r.grid_w - 1)));
        for (int iy = iy0; iy <= iy1; ++iy) {
          const AlignAxis<T> ya = align_axis(align_sample(r.start_h, r.bin_h, ph, iy, r.grid_h), h);
          if (!ya.valid || (ya.lo != y && ya.hi != y)) continue;
          for (int ix = ix0; ix <= ix1; ++ix) {
            const AlignAxis<T> xa = align_axis(align_sample(r.start_w, r.bin_w, pw, ix, r.grid_w), w);
            if (!xa.valid || (xa.lo != x && xa.hi != x)) continue;
            const AlignSample<T> s = align_sample_at(ya, xa, w);
            const T gv = grad(k, ch, ph, pw);
            if (ya.lo == y && xa.lo == x) acc = add_rn(acc, mul_rn(gv, s.w1) / r.count);
            if (ya.lo == y && xa.hi == x) acc = add_rn(acc, mul_rn(gv, s.w2) / r.count);
            if (ya.hi == y && xa.lo == x) acc = add_rn(acc, mul_rn(gv, s.w3) / r.count);
            if (ya.hi == y && xa.hi == x) acc = add_rn(acc, mul_rn(gv, s.w4) / r.count);
          }
        }
      }
    }
  }
  return acc;
}

// ---- host API ----
// All arrays contiguous (CPU inputs: nhwc says the input [B, C, H, W] is channels-last in memory, strides
// [HWC, 1, WC, C]); rois already validated (integral batch index in range, finite, x2 >= x1, y2 >= y1).
// Forward kernels write every output element; backward kernels write every grad_input element.
// roi_pool: argmax (nullable) receives each bin's winning offset y * W + x (-1: empty bin). The
// backward recomputes the argmax from the input instead of reading it back.
// CPU arrays S: float, double, or Half / BFloat16 computed in float (core/half.h).

template <typename S>
bool rois_valid_cpu(const S* rois, int64_t k, int64_t batch);

template <typename S>
void roi_pool_forward_cpu(const S* input, bool nhwc, int64_t b, int64_t c, int64_t h, int64_t w, const S* rois,
                          int64_t k, compute_t<S> scale, int pooled_h, int pooled_w, S* out, int32_t* argmax);
template <typename S>
void roi_pool_backward_cpu(GradView<S> grad, const S* input, bool nhwc, const S* rois, int64_t k, int64_t b, int64_t c,
                           int64_t h, int64_t w, compute_t<S> scale, int pooled_h, int pooled_w, S* grad_input);
template <typename S>
void roi_align_forward_cpu(const S* input, bool nhwc, int64_t b, int64_t c, int64_t h, int64_t w, const S* rois,
                           int64_t k, compute_t<S> scale, int pooled_h, int pooled_w, int sampling_ratio, bool aligned,
                           S* out);
template <typename S>
void roi_align_backward_cpu(GradView<S> grad, const S* rois, int64_t k, int64_t b, int64_t c, int64_t h, int64_t w,
                            compute_t<S> scale, int pooled_h, int pooled_w, int sampling_ratio, bool aligned,
                            S* grad_input);

// Test hook: the CUDA backward's gather (roi_pool_grad_at with input, roi_align_grad_at without), on the CPU.
template <typename T>
void roi_backward_gather_cpu(GradView<T> grad, const T* input, const T* rois, int64_t k, int64_t b, int64_t c,
                             int64_t h, int64_t w, T scale, int pooled_h, int pooled_w, int sampling_ratio,
                             bool aligned, T* grad_input);

#ifdef CONVLOC_WITH_CUDA
template <typename T>
bool rois_valid_cuda(const T* rois, int64_t k, int64_t batch, void* stream);
template <typename T>
void roi_pool_forward_cuda(const T* input, int64_t b, int64_t c, int64_t h, int64_t w, const T* rois, int64_t k,
                           T scale, int pooled_h, int pooled_w, T* out, int32_t* argmax, void* stream);
template <typename T>
void roi_pool_backward_cuda(GradView<T> grad, const T* input, const T* rois, int64_t k, int64_t b, int64_t c, int64_t h,
                            int64_t w, T scale, int pooled_h, int pooled_w, T* grad_input, void* stream);
template <typename T>
void roi_align_forward_cuda(const T* input, int64_t b, int64_t c, int64_t h, int64_t w, const T* rois, int64_t k,
                            T scale, int pooled_h, int pooled_w, int sampling_ratio, bool aligned, T* out,
                            void* stream);
template <typename T>
void roi_align_backward_cuda(GradView<T> grad, const T* rois, int64_t k, int64_t b, int64_t c, int64_t h, int64_t w,
                             T scale, int pooled_h, int pooled_w, int sampling_ratio, bool aligned, T* grad_input,
                             void* stream);
#endif

}  // namespace convloc
