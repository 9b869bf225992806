// Transposed 2-D convolution ("deconvolution"), torch's semantics and weight layout:
//   input [N, C_in, H, W], weight [C_in, C_out / groups, kH, kW], output [N, C_out, OH, OW],
//   out[n, co, ih * sh - ph + kh * dh, iw * sw - pw + kw * dw] += in[n, ci, ih, iw] * weight[ci, co % (C_out / g), kh, kw]
// for ci and co in the same group, OH = (H - 1) sh - 2 ph + dh (kH - 1) + oph + 1 (likewise OW).
#pragma once

#include <cstdint>

#include "core/common.h"

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

// The input pixel (ih) feeding output pixel o through kernel tap k, or -1 if none.
CONVLOC_HD int64_t deconv_source(int64_t o, int64_t k, int64_t stride, int64_t pad, int64_t dil, int64_t size) {
  const int64_t t = o + pad - k * dil;
  if (t < 0 || t % stride != 0) return -1;
  const int64_t i = t / stride;
  return i < size ? i : -1;
}

// CPU. All arrays contiguous; bias, grad_input, grad_weight, grad_bias nullable.
// Gradients are overwritten, not accumulated.
template <typename T>
void deconv2d_forward_cpu(const DeconvShape& s, const T* input, const T* weight, const T* bias, T* out);
template <typename T>
void deconv2d_backward_cpu(const DeconvShape& s, const T* grad_out, const T* input, const T* weight,
                           T* grad_input, T* grad_weight, T* grad_bias);

#ifdef CONVLOC_WITH_CUDA
template <typename T>
void deconv2d_forward_cuda(const DeconvShape& s, const T* input, const T* weight, const T* bias, T* out,
                           void* stream);
template <typename T>
void deconv2d_backward_cuda(const DeconvShape& s, const T* grad_out, const T* input, const T* weight,
                            T* grad_input, T* grad_weight, T* grad_bias, void* stream);
#endif

}  // namespace convloc
