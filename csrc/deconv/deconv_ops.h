// Transposed-convolution entry points: arguments validated (torch's rules, csrc/core/check.h), then the CPU or CUDA
// kernel run on the caller's stream. Framework-free: the pybind11 binding and the XLA FFI handlers call these.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "deconv/deconv.h"

namespace convloc::ops {

// The geometry of input_shape [N, C_in, H, W] through weight_shape [C_in, C_out / groups, kH, kW], validated.
DeconvShape deconv2d_geometry(const std::vector<int64_t>& input_shape, const std::vector<int64_t>& weight_shape,
                              const DeconvParams& params);
// out [N, C_out, OH, OW] = conv_transpose2d(input, weight, bias); bias [C_out] nullable. input and out:
// C-contiguous, or on the CPU also channels-last (TensorView::is_channels_last).
void deconv2d_forward(const TensorView& input, const TensorView& weight, const TensorView* bias, const TensorView& out,
                      const DeconvParams& params, void* stream);
// Writes the gradients that are not nullptr in one pass over grad_output; input is needed for grad_weight, and
// gives the input's shape (or grad_input does).
void deconv2d_backward(const TensorView& grad_output, const TensorView* input, const TensorView& weight,
                       const TensorView* grad_input, const TensorView* grad_weight, const TensorView* grad_bias,
                       const DeconvParams& params, void* stream);
// grad_bias [C_out] = grad_output [N, C_out, OH, OW] summed over N, OH, OW.
void deconv2d_grad_bias(const TensorView& grad_output, const TensorView& grad_bias, void* stream);

}  // namespace convloc::ops
