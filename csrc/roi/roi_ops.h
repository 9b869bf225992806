// RoI pool / RoI align entry points: arguments validated (csrc/core/check.h), then the CPU or CUDA kernel run on
// the caller's stream. Framework-free: the pybind11 binding and the XLA FFI handlers call these.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace convloc::ops {

// input [B, C, H, W]: C-contiguous, or on the CPU also channels-last (TensorView::is_channels_last).
// out [K, C, PH, PW] from input [B, C, H, W] and boxes [K, 5] = (batch index, x1, y1, x2, y2); argmax (int32
// [K, C, PH, PW], nullable) receives each bin's offset y * W + x, -1 for an empty bin.
void roi_pool_forward(const TensorView& input, const TensorView& boxes, double spatial_scale, int64_t pooled_h,
                      int64_t pooled_w, const TensorView& out, const TensorView* argmax, void* stream);
// grad_input [B, C, H, W] from grad [K, C, PH, PW] (sizes of 1 broadcast), each bin's argmax recomputed from input.
void roi_pool_backward(const TensorView& grad, const TensorView& boxes, const TensorView& input, double spatial_scale,
                       int64_t pooled_h, int64_t pooled_w, const TensorView& grad_input, void* stream);
void roi_align_forward(const TensorView& input, const TensorView& boxes, double spatial_scale, int64_t pooled_h,
                       int64_t pooled_w, int64_t sampling_ratio, bool aligned, const TensorView& out, void* stream);
void roi_align_backward(const TensorView& grad, const TensorView& boxes, double spatial_scale, int64_t pooled_h,
                        int64_t pooled_w, int64_t sampling_ratio, bool aligned, const TensorView& grad_input,
                        void* stream);
// Test hook (CPU): the CUDA backward's per-cell gather; input given: roi_pool's, nullptr: roi_align's.
void roi_backward_gather(const TensorView& grad, const TensorView& boxes, const TensorView* input, double spatial_scale,
                         int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio, bool aligned,
                         const TensorView& grad_input);

}  // namespace convloc::ops
