// CPU transposed convolution.
//
// Dense path (any groups): per image and group, the product weightᵀ · input gives one column
// per input pixel holding its C_out/g x kH x kW contributions (gemm_cpu), and col2im adds them
// into the output. The backward pass gathers grad_out into the same columns (im2col), then
// grad_input = weight · columns and grad_weight += input · columnsᵀ.
//
// Depthwise path (C_in = C_out = groups, FCN's bilinear upsampling): direct loops; each output
// pixel receives at most ceil(kH / sh) x ceil(kW / sw) inputs, which is far less work than a
// GEMM over mostly-zero columns.
//
// Channels-last input and output (forward): the dense path's product reads the input through its
// strides, and each image's output planes are transposed into place; the depthwise path's loops
// run over NCHW planes, so there the arrays go through NCHW copies.
//
// float16 / bfloat16 arrays run the float32 kernels (results: the float32 kernel's on the same
// values, rounded once). The dense path gets float32 copies, converted in one parallel pass each
// way: the product packs its operands and accumulates in float32 anyway, so reading half storage
// inside it would save only the pass over the input. The depthwise loops, whose output and output
// gradient dwarf their input and weight, convert those rows as they write or read them.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "core/parallel.h"
#include "core/simd.h"
#include "core/transpose.h"
#include "core/workspace.h"
#include "deconv/deconv.h"
#include "deconv/gemm.h"

namespace convloc {
namespace {

// Indices i in [0, n) with 0 <= i * stride + offset < size, as [lo, hi).
struct Range {
  int64_t lo, hi;
};
Range valid_range(int64_t n, int64_t stride, int64_t offset, int64_t size) {
  const int64_t lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const int64_t hi = size - 1 - offset < 0 ? 0 : (size - 1 - offset) / stride + 1;
  return {std::min(lo, n), std::max(std::min(hi, n), std::min(lo, n))};
}

template <typename T>
std::unique_ptr<T[]> scratch(int64_t n) {
  return std::unique_ptr<T[]>(new T[std::max<int64_t>(n, 1)]);
}

// ---- dense path ----

// out[co] = bias[co] + sum over taps of cols[(co, kh, kw), (ih, iw)] at its output pixel;
// channels [0, c_out_g) of one group, in parallel (each output channel from one task).
template <typename T>
void col2im(const DeconvShape& s, const T* cols, const T* bias, T* out) {
  const int64_t hw = s.h * s.w, ohw = s.oh * s.ow;
  parallel_for(s.c_out_g(), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t co = lo; co < hi; ++co) {
      T* o = out + co * ohw;
      std::fill(o, o + ohw, bias ? bias[co] : T(0));
      for (int64_t kh = 0; kh < s.kh; ++kh) {
        const Range rh = valid_range(s.h, s.sh, kh * s.dh - s.ph, s.oh);
        for (int64_t kw = 0; kw < s.kw; ++kw) {
          const int64_t off_w = kw * s.dw - s.pw;
          const Range rw = valid_range(s.w, s.sw, off_w, s.ow);
          const T* col = cols + ((co * s.kh + kh) * s.kw + kw) * hw;
          const int64_t sw = s.sw;
          for (int64_t ih = rh.lo; ih < rh.hi; ++ih) {
            T* __restrict orow = o + (ih * s.sh - s.ph + kh * s.dh) * s.ow + off_w;
            const T* __restrict crow = col + ih * s.w;
            for (int64_t iw = rw.lo; iw < rw.hi; ++iw) orow[iw * sw] += crow[iw];
          }
        }
      }
    }
  });
}

// cols[(co, kh, kw), (ih, iw)] = grad_out[co] at the pixel that tap reads (0 outside).
template <typename T>
void im2col(const DeconvShape& s, const T* grad_out, T* cols) {
  const int64_t hw = s.h * s.w, ohw = s.oh * s.ow;
  parallel_for(s.c_out_g() * s.kh, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t co = r / s.kh, kh = r % s.kh;
      const T* g = grad_out + co * ohw;
      const Range rh = valid_range(s.h, s.sh, kh * s.dh - s.ph, s.oh);
      for (int64_t kw = 0; kw < s.kw; ++kw) {
        const int64_t off_w = kw * s.dw - s.pw;
        const Range rw = valid_range(s.w, s.sw, off_w, s.ow);
        T* col = cols + (r * s.kw + kw) * hw;
        std::fill(col, col + rh.lo * s.w, T(0));
        const int64_t sw = s.sw;
        for (int64_t ih = rh.lo; ih < rh.hi; ++ih) {
          T* __restrict crow = col + ih * s.w;
          const T* __restrict grow = g + (ih * s.sh - s.ph + kh * s.dh) * s.ow + off_w;
          std::fill(crow, crow + rw.lo, T(0));
          for (int64_t iw = rw.lo; iw < rw.hi; ++iw) crow[iw] = grow[iw * sw];
          std::fill(crow + rw.hi, crow + s.w, T(0));
        }
        std::fill(col + rh.hi * s.w, col + hw, T(0));
      }
    }
  });
}

template <typename T>
void dense_forward(const DeconvShape& s, const T* input, const T* weight, const T* bias, T* out, DeconvLayout layout) {
  const int64_t cig = s.c_in_g(), cog = s.c_out_g(), kk = s.kh * s.kw, hw = s.h * s.w, ohw = s.oh * s.ow;
  const int64_t rows = cog * kk;
  auto cols = scratch<T>(rows * hw);
  auto planes = scratch<T>(layout.output_nhwc ? s.c_out * ohw : 0);
  // Input channel ci, pixel p at input_n[ci * in_c + p * in_p].
  const int64_t in_c = layout.input_nhwc ? 1 : hw, in_p = layout.input_nhwc ? s.c_in : 1;
  for (int64_t n = 0; n < s.n; ++n) {
    T* out_n = layout.output_nhwc ? planes.get() : out + n * s.c_out * ohw;
    for (int64_t g = 0; g < s.groups; ++g) {
      // cols[rows, hw] = weight_gᵀ [rows, cig] · input_g [cig, hw]
      gemm_cpu<T>(rows, hw, cig, weight + g * cig * rows, 1, rows, input + n * s.c_in * hw + g * cig * in_c, in_c, in_p,
                  false, cols.get(), hw);
      col2im(s, cols.get(), bias ? bias + g * cog : nullptr, out_n + g * cog * ohw);
    }
    if (layout.output_nhwc) transpose_batch(planes.get(), out + n * s.c_out * ohw, 1, s.c_out, ohw);
  }
}

template <typename T>
void dense_backward(const DeconvShape& s, const T* grad_out, const T* input, const T* weight, T* grad_input,
                    T* grad_weight) {
  const int64_t cig = s.c_in_g(), cog = s.c_out_g(), kk = s.kh * s.kw, hw = s.h * s.w;
  const int64_t rows = cog * kk;
  if (grad_weight && s.n == 0) std::fill(grad_weight, grad_weight + s.c_in * rows, T(0));
  if (!grad_input && !grad_weight) return;
  auto cols = scratch<T>(rows * hw);
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t g = 0; g < s.groups; ++g) {
      im2col(s, grad_out + (n * s.c_out + g * cog) * s.oh * s.ow, cols.get());
      if (grad_input)  // [cig, hw] = weight_g [cig, rows] · cols [rows, hw]
        gemm_cpu<T>(cig, hw, rows, weight + g * cig * rows, rows, 1, cols.get(), hw, 1, false,
                    grad_input + (n * s.c_in + g * cig) * hw, hw);
      if (grad_weight)  // [cig, rows] += input_g [cig, hw] · colsᵀ [hw, rows]
        gemm_cpu<T>(cig, rows, hw, input + (n * s.c_in + g * cig) * hw, hw, 1, cols.get(), 1, hw, n > 0,
                    grad_weight + g * cig * rows, rows);
    }
}

// ---- depthwise path ----

// A row of the output plane, padded on both sides so every tap lands inside it:
// buffer index = output column - first.
struct PaddedRow {
  int64_t first, width;
  explicit PaddedRow(const DeconvShape& s)
      : first(std::min<int64_t>(0, -s.pw)),
        width(std::max<int64_t>(s.ow, (s.w - 1) * s.sw - s.pw + (s.kw - 1) * s.dw + 1) - first) {}
};

// One output row: out[ow] = bias + sum over the kernel taps that land on it.
//
// Unit dilation and stride >= kPhaseStride (FCN's kernel 2f, stride f): output column
// q * sw + r - pw receives x[q - j] * w[j * sw + r] for j < ceil(kW / sw), so each block of sw
// outputs is a few length-sw vector updates, written once (wpad: weight rows zero-padded to
// a multiple of sw). Otherwise the inputs are scattered one by one into the padded row.
constexpr int64_t kPhaseStride = 4;

bool phase_path(const DeconvShape& s) { return s.dw == 1 && s.sw >= kPhaseStride; }

// The phase path for a compile-time stride SW: a block's SW sums live in one vector.
template <typename T, int SW, int VB>
CONVLOC_ALWAYS_INLINE void phase_row_fixed(const DeconvShape& s, const T* __restrict x, const T* __restrict wt,
                                           const int64_t* taps, int64_t n_taps, T bias, T* __restrict out) {
  using L = Lanes<T, SW, VB>;
  const int64_t n_j = (s.kw + SW - 1) / SW, blocks = s.w + n_j;
  for (int64_t q = 0; q < blocks; ++q) {
    const int64_t p0 = q * SW - s.pw;  // output column of the block's first value
    if (p0 >= s.ow) break;
    if (p0 + SW <= 0) continue;
    L acc = L::fill(bias);
    const int64_t j_lo = std::max<int64_t>(0, q - s.w + 1), j_hi = std::min(n_j, q + 1);
    for (int64_t t = 0; t < n_taps; ++t) {
      const T* __restrict xr = x + taps[2 * t] * s.w;
      const T* __restrict wr = wt + taps[2 * t + 1] * n_j * SW;
      for (int64_t j = j_lo; j < j_hi; ++j) acc = acc + xr[q - j] * L::load(wr + j * SW);
    }
    if (p0 >= 0 && p0 + SW <= s.ow) {
      acc.store(out + p0);
    } else {
      T tmp[SW];
      acc.store(tmp);
      for (int64_t r = std::max<int64_t>(0, -p0); r < std::min<int64_t>(SW, s.ow - p0); ++r) out[p0 + r] = tmp[r];
    }
  }
}

// Writes the row to out (fixed strides) and returns true, or leaves the block sums in buf
// (column q * sw + r - pw at buf[q * sw + r]) and returns false.
template <typename T, int VB>
CONVLOC_ALWAYS_INLINE bool phase_row(const DeconvShape& s, const T* __restrict x, const T* __restrict wt,
                                     const int64_t* taps, int64_t n_taps, T bias, T* __restrict buf,
                                     T* __restrict out) {
  switch (s.sw) {
    case 4:
      return phase_row_fixed<T, 4, VB>(s, x, wt, taps, n_taps, bias, out), true;
    case 8:
      return phase_row_fixed<T, 8, VB>(s, x, wt, taps, n_taps, bias, out), true;
    case 16:
      return phase_row_fixed<T, 16, VB>(s, x, wt, taps, n_taps, bias, out), true;
    case 32:
      return phase_row_fixed<T, 32, VB>(s, x, wt, taps, n_taps, bias, out), true;
    case 64:
      return phase_row_fixed<T, 64, VB>(s, x, wt, taps, n_taps, bias, out), true;
    default:
      break;
  }
  const int64_t sw = s.sw, n_j = (s.kw + sw - 1) / sw, blocks = s.w + n_j;
  std::fill(buf, buf + blocks * sw, T(0));
  for (int64_t t = 0; t < n_taps; ++t) {
    const T* __restrict xr = x + taps[2 * t] * s.w;
    const T* __restrict wr = wt + taps[2 * t + 1] * n_j * sw;
    for (int64_t q = 0; q < blocks; ++q)
      for (int64_t j = std::max<int64_t>(0, q - s.w + 1); j < std::min(n_j, q + 1); ++j) {
        const T v = xr[q - j];
        for (int64_t r = 0; r < sw; ++r) buf[q * sw + r] += v * wr[j * sw + r];
      }
  }
  return false;
}

// taps: the (ih, kh) pairs that reach this row.
template <typename T, int VB>
CONVLOC_ALWAYS_INLINE void dw_forward_row(const DeconvShape& s, const T* __restrict x, const T* __restrict wt, T bias,
                                          const int64_t* taps, int64_t n_taps, T* __restrict buf, int64_t first,
                                          int64_t width, T* __restrict out) {
  if (phase_path(s)) {
    if (!phase_row<T, VB>(s, x, wt, taps, n_taps, bias, buf, out))
      for (int64_t ow = 0; ow < s.ow; ++ow) out[ow] = bias + buf[ow + s.pw];
    return;
  }
  std::fill(buf, buf + width, T(0));
  for (int64_t t = 0; t < n_taps; ++t) {
    const T* __restrict xr = x + taps[2 * t] * s.w;
    const T* __restrict wr = wt + taps[2 * t + 1] * s.kw;
    for (int64_t iw = 0; iw < s.w; ++iw) {
      const T v = xr[iw];
      T* __restrict d = buf + iw * s.sw - s.pw - first;
      for (int64_t kw = 0; kw < s.kw; ++kw) d[kw * s.dw] += v * wr[kw];
    }
  }
  const T* b = buf - first;
  for (int64_t ow = 0; ow < s.ow; ++ow) out[ow] = bias + b[ow];
}

// Pairwise sum of N values (short dependency chains, vectorisable halves).
template <typename T, int N>
CONVLOC_ALWAYS_INLINE T tree_sum(const T* p) {
  if constexpr (N == 1) {
    return p[0];
  } else {
    T half[N / 2];
    for (int i = 0; i < N / 2; ++i) half[i] = p[i] + p[i + N / 2];
    const T rest = N % 2 ? p[N - 1] : T(0);
    return tree_sum<T, N / 2>(half) + rest;
  }
}

// One (image, channel) plane of the backward pass. gpad: grad_out plane with padded rows
// (PaddedRow layout, zeros outside); part: scratch [W, kW]. grad_input row ih gets
// sum_{kh, kw} gpad * weight; grad_weight (if given) accumulates input * gpad.
// KW > 0: the kernel width, known at compile time, with unit dilation.
template <typename T, int KW, int VB>
CONVLOC_ALWAYS_INLINE void dw_backward_plane(const DeconvShape& s, const T* __restrict gpad, int64_t first,
                                             int64_t width, const T* __restrict x, const T* __restrict wt,
                                             T* __restrict gi, T* __restrict gw, T* __restrict part) {
  const int64_t kw_n = KW > 0 ? KW : s.kw, dw = KW > 0 ? 1 : s.dw;
  for (int64_t ih = 0; ih < s.h; ++ih) {
    if (gi) std::fill(part, part + s.w * kw_n, T(0));
    for (int64_t kh = 0; kh < s.kh; ++kh) {
      const int64_t oh = ih * s.sh - s.ph + kh * s.dh;
      if (oh < 0 || oh >= s.oh) continue;
      const T* __restrict grow = gpad + oh * width - first - s.pw;
      const T* __restrict wr = wt + kh * kw_n;
      T* __restrict gwr = gw ? gw + kh * kw_n : nullptr;
      const T* __restrict xr = x + ih * s.w;
      if constexpr (KW > 0) {
        // Whole kernel rows as vectors; grad_weight's row in two registers (even and odd iw).
        using L = Lanes<T, KW, VB>;
        const L w = L::load(wr);
        if (gi)
          for (int64_t iw = 0; iw < s.w; ++iw)
            (L::load(part + iw * KW) + L::load(grow + iw * s.sw) * w).store(part + iw * KW);
        if (gwr) {
          L acc0 = L::load(gwr), acc1 = L::fill(T(0));
          int64_t iw = 0;
          for (; iw + 1 < s.w; iw += 2) {
            acc0 = acc0 + xr[iw] * L::load(grow + iw * s.sw);
            acc1 = acc1 + xr[iw + 1] * L::load(grow + (iw + 1) * s.sw);
          }
          if (iw < s.w) acc0 = acc0 + xr[iw] * L::load(grow + iw * s.sw);
          (acc0 + acc1).store(gwr);
        }
      } else {
        if (gi)
          for (int64_t iw = 0; iw < s.w; ++iw) {
            const T* __restrict g = grow + iw * s.sw;
            T* __restrict p = part + iw * kw_n;
            for (int64_t kw = 0; kw < kw_n; ++kw) p[kw] += g[kw * dw] * wr[kw];
          }
        if (gwr)
          for (int64_t iw = 0; iw < s.w; ++iw) {
            const T* __restrict g = grow + iw * s.sw;
            for (int64_t kw = 0; kw < kw_n; ++kw) gwr[kw] += xr[iw] * g[kw * dw];
          }
      }
    }
    if (gi)
      for (int64_t iw = 0; iw < s.w; ++iw) {
        const T* p = part + iw * kw_n;
        T sum = 0;
        if constexpr (KW > 0) {
          sum = tree_sum<T, KW>(p);
        } else {
          for (int64_t kw = 0; kw < kw_n; ++kw) sum += p[kw];
        }
        gi[ih * s.w + iw] = sum;
      }
  }
}

template <typename T, int VB>
CONVLOC_ALWAYS_INLINE void dw_backward_plane_any(const DeconvShape& s, const T* gpad, int64_t first, int64_t width,
                                                 const T* x, const T* wt, T* gi, T* gw, T* part) {
  if (s.dw == 1) switch (s.kw) {
      case 4:
        return dw_backward_plane<T, 4, VB>(s, gpad, first, width, x, wt, gi, gw, part);
      case 8:
        return dw_backward_plane<T, 8, VB>(s, gpad, first, width, x, wt, gi, gw, part);
      case 16:
        return dw_backward_plane<T, 16, VB>(s, gpad, first, width, x, wt, gi, gw, part);
      case 32:
        return dw_backward_plane<T, 32, VB>(s, gpad, first, width, x, wt, gi, gw, part);
      case 64:
        return dw_backward_plane<T, 64, VB>(s, gpad, first, width, x, wt, gi, gw, part);
      default:
        break;
    }
  dw_backward_plane<T, 0, VB>(s, gpad, first, width, x, wt, gi, gw, part);
}

// SIMD versions on vectors of kVectorBytes and, for CPUs with AVX-512, of kWideBytes.
#define CONVLOC_DW_ENTRIES(T, suffix)                                                                                  \
  CONVLOC_SIMD_FN(void, dw_forward_row_##suffix,                                                                       \
                  (const DeconvShape& s, const T* x, const T* wt, T bias, const int64_t* taps, int64_t n_taps, T* buf, \
                   int64_t first, int64_t width, T* out),                                                              \
                  { dw_forward_row<T, kVectorBytes>(s, x, wt, bias, taps, n_taps, buf, first, width, out); })          \
  CONVLOC_WIDE_SIMD void dw_forward_row_wide_##suffix(const DeconvShape& s, const T* x, const T* wt, T bias,           \
                                                      const int64_t* taps, int64_t n_taps, T* buf, int64_t first,      \
                                                      int64_t width, T* out) {                                         \
    dw_forward_row<T, kWideBytes>(s, x, wt, bias, taps, n_taps, buf, first, width, out);                               \
  }                                                                                                                    \
  CONVLOC_SIMD_FN(void, dw_backward_plane_##suffix,                                                                    \
                  (const DeconvShape& s, const T* gpad, int64_t first, int64_t width, const T* x, const T* wt, T* gi,  \
                   T* gw, T* part),                                                                                    \
                  { dw_backward_plane_any<T, kVectorBytes>(s, gpad, first, width, x, wt, gi, gw, part); })             \
  CONVLOC_WIDE_SIMD void dw_backward_plane_wide_##suffix(const DeconvShape& s, const T* gpad, int64_t first,           \
                                                         int64_t width, const T* x, const T* wt, T* gi, T* gw,         \
                                                         T* part) {                                                    \
    dw_backward_plane_any<T, kWideBytes>(s, gpad, first, width, x, wt, gi, gw, part);                                  \
  }                                                                                                                    \
  inline void dw_forward_row_simd(const DeconvShape& s, const T* x, const T* wt, T bias, const int64_t* taps,          \
                                  int64_t n_taps, T* buf, int64_t first, int64_t width, T* out) {                      \
    (wide_vectors() ? dw_forward_row_wide_##suffix : dw_forward_row_##suffix)(s, x, wt, bias, taps, n_taps, buf,       \
                                                                              first, width, out);                      \
  }                                                                                                                    \
  inline void dw_backward_plane_simd(const DeconvShape& s, const T* gpad, int64_t first, int64_t width, const T* x,    \
                                     const T* wt, T* gi, T* gw, T* part) {                                             \
    (wide_vectors() ? dw_backward_plane_wide_##suffix : dw_backward_plane_##suffix)(s, gpad, first, width, x, wt, gi,  \
                                                                                    gw, part);                         \
  }
CONVLOC_DW_ENTRIES(float, f32)
CONVLOC_DW_ENTRIES(double, f64)
#undef CONVLOC_DW_ENTRIES

// O: T, or a half type each output row is converted to as it is written.
template <typename T, typename O>
void depthwise_forward(const DeconvShape& s, const T* input, const T* weight, const T* bias, O* out) {
  const PaddedRow pr(s);
  const int64_t c = s.c_out;
  // The phase path reads weight rows zero-padded to a multiple of the stride.
  const int64_t row = phase_path(s) ? (s.kw + s.sw - 1) / s.sw * s.sw : s.kw;
  std::vector<T> wpad(c * s.kh * row, T(0));
  for (int64_t r = 0; r < c * s.kh; ++r) std::copy(weight + r * s.kw, weight + (r + 1) * s.kw, &wpad[r * row]);
  const int64_t buf_size = std::max(pr.width, (s.w + row / s.sw + 1) * s.sw);
  // The (ih, kh) taps of each output row, grouped by row (no division per row and tap).
  std::vector<int64_t> tap_start(s.oh + 1, 0), taps;
  for (int64_t ih = 0; ih < s.h; ++ih)
    for (int64_t kh = 0; kh < s.kh; ++kh) {
      const int64_t oh = ih * s.sh - s.ph + kh * s.dh;
      if (oh >= 0 && oh < s.oh) ++tap_start[oh + 1];
    }
  for (int64_t oh = 0; oh < s.oh; ++oh) tap_start[oh + 1] += tap_start[oh];
  taps.resize(2 * tap_start[s.oh]);
  std::vector<int64_t> fill(tap_start.begin(), tap_start.end() - 1);
  for (int64_t ih = 0; ih < s.h; ++ih)
    for (int64_t kh = 0; kh < s.kh; ++kh) {
      const int64_t oh = ih * s.sh - s.ph + kh * s.dh;
      if (oh < 0 || oh >= s.oh) continue;
      taps[2 * fill[oh]] = ih, taps[2 * fill[oh] + 1] = kh;
      ++fill[oh];
    }
  parallel_for(s.n * c * s.oh, 16, [&](int64_t lo, int64_t hi) {
    auto buf = scratch<T>(buf_size);
    auto converted = scratch<T>(std::is_same_v<T, O> ? 0 : s.ow);
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t plane = r / s.oh, oh = r % s.oh, ch = plane % c;
      T* dst;
      if constexpr (std::is_same_v<T, O>)
        dst = out + r * s.ow;
      else
        dst = converted.get();
      dw_forward_row_simd(s, input + plane * s.h * s.w, wpad.data() + ch * s.kh * row, bias ? bias[ch] : T(0),
                          taps.data() + 2 * tap_start[oh], tap_start[oh + 1] - tap_start[oh], buf.get(), pr.first,
                          pr.width, dst);
      if constexpr (!std::is_same_v<T, O>) convert(dst, out + r * s.ow, s.ow);
    }
  });
}

// G: T, or a half type grad_out's rows are converted from as they are read.
template <typename T, typename G>
void depthwise_backward(const DeconvShape& s, const G* grad_out, const T* input, const T* weight, T* grad_input,
                        T* grad_weight) {
  if (!grad_input && !grad_weight) return;
  const PaddedRow pr(s);
  const int64_t c = s.c_out, kk = s.kh * s.kw, hw = s.h * s.w, ohw = s.oh * s.ow;
  // Parallel over channels; each task owns its channel's grad_weight and grad_input planes.
  parallel_for(c, 1, [&](int64_t lo, int64_t hi) {
    auto gpad = scratch<T>(s.oh * pr.width);
    auto part = scratch<T>(s.w * s.kw);
    std::fill(gpad.get(), gpad.get() + s.oh * pr.width, T(0));
    for (int64_t ch = lo; ch < hi; ++ch) {
      T* gw = grad_weight ? grad_weight + ch * kk : nullptr;
      if (gw) std::fill(gw, gw + kk, T(0));
      for (int64_t n = 0; n < s.n; ++n) {
        const int64_t plane = n * c + ch;
        for (int64_t oh = 0; oh < s.oh; ++oh) {
          const G* src = grad_out + plane * ohw + oh * s.ow;
          T* dst = gpad.get() + oh * pr.width - pr.first;
          if constexpr (std::is_same_v<T, G>)
            std::memcpy(dst, src, s.ow * sizeof(T));
          else
            convert(src, dst, s.ow);
        }
        dw_backward_plane_simd(s, gpad.get(), pr.first, pr.width, input + plane * hw, weight + ch * kk,
                               grad_input ? grad_input + plane * hw : nullptr, gw, part.get());
      }
    }
  });
}

// Sum of n values with independent partial sums, so the loop vectorises without reassociation flags.
template <typename S, typename T = compute_t<S>>
T sum_of(const S* __restrict p, int64_t n) {
  constexpr int kLanes = 16;
  T lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lanes[j] += p[i + j];
  T total = 0;
  for (int j = 0; j < kLanes; ++j) total += lanes[j];
  for (; i < n; ++i) total += p[i];
  return total;
}

template <typename S>
void bias_gradient(const DeconvShape& s, const S* grad_out, S* grad_bias) {
  const int64_t ohw = s.oh * s.ow;
  parallel_for(s.c_out, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t co = lo; co < hi; ++co) {
      compute_t<S> total = 0;
      for (int64_t n = 0; n < s.n; ++n) total += sum_of(grad_out + (n * s.c_out + co) * ohw, ohw);
      grad_bias[co] = total;
    }
  });
}

// The float32 copies live in the workspace cache: fresh pages for them would cost about as much as
// the kernel's own work on small images.
using Floats = WorkspaceVector<float>;

// n values of a nullable half array as float32 (empty for nullptr).
template <typename S>
Floats widened(const S* p, int64_t n) {
  Floats v(p ? n : 0);
  if (p) copy_parallel(p, v.data(), n);
  return v;
}

// The data of a vector that stands for a nullable array (nullptr where that array is).
template <typename S>
float* data_or_null(Floats& v, const S* like) {
  return like ? v.data() : nullptr;
}

}  // namespace

template <typename T>
void deconv2d_forward_cpu(const DeconvShape& s, const T* input, const T* weight, const T* bias, T* out,
                          DeconvLayout layout) {
  if constexpr (is_half_v<T>) {
    const int64_t n_in = s.n * s.c_in * s.h * s.w, n_out = s.n * s.c_out * s.oh * s.ow;
    auto w = widened(weight, s.c_in * s.c_out_g() * s.kh * s.kw), b = widened(bias, s.c_out);
    // The depthwise loops read NCHW planes: a channels-last input is transposed as it is converted.
    const bool to_nchw = s.depthwise() && layout.input_nhwc;
    Floats x(n_in);
    if (to_nchw)
      transpose_batch(input, x.data(), s.n, s.h * s.w, s.c_in);
    else
      copy_parallel(input, x.data(), n_in);
    if (s.depthwise() && !layout.output_nhwc)
      return depthwise_forward(s, x.data(), w.data(), data_or_null(b, bias), out);
    Floats o(n_out);
    deconv2d_forward_cpu<float>(s, x.data(), w.data(), data_or_null(b, bias), o.data(),
                                {layout.input_nhwc && !to_nchw, layout.output_nhwc});
    copy_parallel(o.data(), out, n_out);  // same layout in and out
  } else if (!s.depthwise()) {
    dense_forward(s, input, weight, bias, out, layout);
  } else {
    std::vector<T> input_nchw, out_nchw;
    if (layout.input_nhwc) {
      input_nchw.resize(s.n * s.c_in * s.h * s.w);
      transpose_batch(input, input_nchw.data(), s.n, s.h * s.w, s.c_in);
      input = input_nchw.data();
    }
    if (layout.output_nhwc) out_nchw.resize(s.n * s.c_out * s.oh * s.ow);
    depthwise_forward(s, input, weight, bias, layout.output_nhwc ? out_nchw.data() : out);
    if (layout.output_nhwc) transpose_batch(out_nchw.data(), out, s.n, s.c_out, s.oh * s.ow);
  }
}

template <typename T>
void deconv2d_backward_cpu(const DeconvShape& s, const T* grad_out, const T* input, const T* weight, T* grad_input,
                           T* grad_weight, T* grad_bias) {
  if constexpr (is_half_v<T>) {
    // The input enters grad_weight only, the weight grad_input only; the depthwise loops convert
    // grad_out's rows as they read them.
    const int64_t n_in = s.n * s.c_in * s.h * s.w, n_w = s.c_in * s.c_out_g() * s.kh * s.kw;
    auto x = widened(grad_weight ? input : nullptr, n_in), w = widened(grad_input ? weight : nullptr, n_w);
    Floats gi(grad_input ? n_in : 0), gw(grad_weight ? n_w : 0);
    float *pgi = data_or_null(gi, grad_input), *pgw = data_or_null(gw, grad_weight);
    if (s.depthwise()) {
      depthwise_backward(s, grad_out, x.data(), w.data(), pgi, pgw);
    } else if (grad_input || grad_weight) {
      auto g = widened(grad_out, s.n * s.c_out * s.oh * s.ow);
      dense_backward(s, g.data(), x.data(), w.data(), pgi, pgw);
    }
    if (grad_input) copy_parallel(pgi, grad_input, n_in);
    if (grad_weight) copy_parallel(pgw, grad_weight, n_w);
  } else if (s.depthwise()) {
    depthwise_backward(s, grad_out, input, weight, grad_input, grad_weight);
  } else {
    dense_backward(s, grad_out, input, weight, grad_input, grad_weight);
  }
  if (grad_bias) bias_gradient(s, grad_out, grad_bias);
}

#define CONVLOC_INSTANTIATE(T)                                                                               \
  template void deconv2d_forward_cpu<T>(const DeconvShape&, const T*, const T*, const T*, T*, DeconvLayout); \
  template void deconv2d_backward_cpu<T>(const DeconvShape&, const T*, const T*, const T*, T*, T*, T*);
CONVLOC_INSTANTIATE(float)
CONVLOC_INSTANTIATE(double)
CONVLOC_INSTANTIATE(Half)
CONVLOC_INSTANTIATE(BFloat16)
#undef CONVLOC_INSTANTIATE

}  // namespace convloc
