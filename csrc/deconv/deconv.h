// Transposed 2-D convolution ("deconvolution"), torch's semantics and weight layout:
//   input [N, C_in, H, W], weight [C_in, C_out / groups, kH, kW], output [N, C_out, OH, OW],
//   out[n, co, ih * sh - ph + kh * dh, iw * sw - pw + kw * dw] += in[n, ci, ih, iw] * weight[ci, co % (C_out / g), kh,
//   kw]
// for ci and co in the same group, OH = (H - 1) sh - 2 ph + dh (kH - 1) + oph + 1 (likewise OW).
#pragma once

#include <array>
#include <cstdint>

#include "core/common.h"
#include "core/half.h"

namespace convloc {

struct DeconvShape {
  int64_t n, c_in, h, w;  // input
  int64_t c_out, kh, kw;  // C_out = groups * weight.shape[1]
  int64_t oh, ow;         // output (output padding already included)
  int64_t sh, sw, ph, pw, dh, dw, groups;

  CONVLOC_HD int64_t c_in_g() const { return c_in / groups; }
  CONVLOC_HD int64_t c_out_g() const { return c_out / groups; }
  // One input and one output channel per group: the direct (FCN bilinear) path.
  CONVLOC_HD bool depthwise() const { return c_in == groups && c_out == groups; }
};

// Stride, padding, output padding and dilation (rows, columns), and groups.
struct DeconvParams {
  std::array<int64_t, 2> stride, padding, output_padding, dilation;
  int64_t groups;
};

// The geometry of input [N, C_in, H, W] through weight [C_in, C_out / groups, kH, kW], with OH and OW by the
// formula above (unchecked: they may come out below 1).
inline DeconvShape deconv_shape(const int64_t* input, const int64_t* weight, const DeconvParams& p) {
  DeconvShape s{};
  s.n = input[0], s.c_in = input[1], s.h = input[2], s.w = input[3];
  s.c_out = weight[1] * p.groups, s.kh = weight[2], s.kw = weight[3];
  s.sh = p.stride[0], s.sw = p.stride[1], s.ph = p.padding[0], s.pw = p.padding[1];
  s.dh = p.dilation[0], s.dw = p.dilation[1], s.groups = p.groups;
  s.oh = (s.h - 1) * s.sh - 2 * s.ph + s.dh * (s.kh - 1) + p.output_padding[0] + 1;
  s.ow = (s.w - 1) * s.sw - 2 * s.pw + s.dw * (s.kw - 1) + p.output_padding[1] + 1;
  return s;
}

// grad_bias [C] of grad_output [N, C, OH, OW] is a per-channel sum: the bias gradient of the depthwise 1 x 1
// geometry whose input and output have grad_output's shape.
inline DeconvShape deconv_bias_shape(int64_t n, int64_t c, int64_t oh, int64_t ow) {
  return DeconvShape{n, c, oh, ow, c, 1, 1, oh, ow, 1, 1, 0, 0, 1, 1, c};
}

// The input pixel (ih) feeding output pixel o through kernel tap k, or -1 if none.
CONVLOC_HD int64_t deconv_source(int64_t o, int64_t k, int64_t stride, int64_t pad, int64_t dil, int64_t size) {
  const int64_t t = o + pad - k * dil;
  if (t < 0 || t % stride != 0) return -1;
  const int64_t i = t / stride;
  return i < size ? i : -1;
}

// CPU. T: float, double, or Half / BFloat16 (computed in float, core/half.h). All arrays contiguous,
// but for the forward's input and output: channels-last in memory (strides [HWC, 1, WC, C]) where
// layout says so. bias, grad_input, grad_weight, grad_bias nullable.
// Gradients are overwritten, not accumulated.
struct DeconvLayout {
  bool input_nhwc, output_nhwc;
};
template <typename T>
void deconv2d_forward_cpu(const DeconvShape& s, const T* input, const T* weight, const T* bias, T* out,
                          DeconvLayout layout);
template <typename T>
void deconv2d_backward_cpu(const DeconvShape& s, const T* grad_out, const T* input, const T* weight, T* grad_input,
                           T* grad_weight, T* grad_bias);

#ifdef CONVLOC_WITH_CUDA
template <typename T>
void deconv2d_forward_cuda(const DeconvShape& s, const T* input, const T* weight, const T* bias, T* out, void* stream);
template <typename T>
void deconv2d_backward_cuda(const DeconvShape& s, const T* grad_out, const T* input, const T* weight, T* grad_input,
                            T* grad_weight, T* grad_bias, void* stream);
#endif

}  // namespace convloc
