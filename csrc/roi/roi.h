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

namespace convloc {

// Float arithmetic that nvcc may not contract into FMAs (host code is built with -ffp-contract=off).
#if defined(__CUDA_ARCH__)
CONVLOC_HD float mul_rn(float a, float b) { return __fmul_rn(a, b); }
CONVLOC_HD double mul_rn(double a, double b) { return __dmul_rn(a, b); }
CONVLOC_HD float add_rn(float a, float b) { return __fadd_rn(a, b); }
CONVLOC_HD double add_rn(double a, double b) { return __dadd_rn(a, b); }
#else
template <typename T>
CONVLOC_HD T mul_rn(T a, T b) { return a * b; }
template <typename T>
CONVLOC_HD T add_rn(T a, T b) { return a + b; }
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
CONVLOC_HD T pool_initial_max() { return static_cast<T>(-FLT_MAX); }

// ---- RoI align ----

template <typename T>
struct AlignRoi {
  int64_t batch;
  T start_h, start_w, bin_h, bin_w;
  int grid_h, grid_w;  // samples per bin along each axis
  T count;             // samples per bin, at least 1
};

template <typename T>
CONVLOC_HD AlignRoi<T> align_roi(const T* roi, T scale, int pooled_h, int pooled_w, int sampling_ratio,
                                 bool aligned) {
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
  r.grid_h = sampling_ratio > 0 ? sampling_ratio : static_cast<int>(ceil_of(height / static_cast<T>(pooled_h)));
  r.grid_w = sampling_ratio > 0 ? sampling_ratio : static_cast<int>(ceil_of(width / static_cast<T>(pooled_w)));
  r.count = static_cast<T>(max_of(r.grid_h * r.grid_w, 1));
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

// ---- host API ----
// All arrays contiguous; rois already validated (integral batch index in range, finite, x2 >= x1, y2 >= y1).
// Forward kernels write every output element; backward kernels write every grad_input element.
// roi_pool: argmax (nullable) receives each bin's winning offset y * W + x (-1: empty bin). The
// backward recomputes the argmax from the input instead of reading it back.

template <typename T>
bool rois_valid_cpu(const T* rois, int64_t k, int64_t batch);

template <typename T>
void roi_pool_forward_cpu(const T* input, int64_t b, int64_t c, int64_t h, int64_t w, const T* rois, int64_t k,
                          T scale, int pooled_h, int pooled_w, T* out, int32_t* argmax);
template <typename T>
void roi_pool_backward_cpu(GradView<T> grad, const T* input, const T* rois, int64_t k, int64_t b, int64_t c, int64_t h,
                           int64_t w, T scale, int pooled_h, int pooled_w, T* grad_input);
template <typename T>
void roi_align_forward_cpu(const T* input, int64_t b, int64_t c, int64_t h, int64_t w, const T* rois, int64_t k,
                           T scale, int pooled_h, int pooled_w, int sampling_ratio, bool aligned, T* out);
template <typename T>
void roi_align_backward_cpu(GradView<T> grad, const T* rois, int64_t k, int64_t b, int64_t c, int64_t h, int64_t w,
                            T scale, int pooled_h, int pooled_w, int sampling_ratio, bool aligned, T* grad_input);

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
