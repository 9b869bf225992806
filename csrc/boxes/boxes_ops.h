// The box ops' entry points: arguments validated (csrc/core/check.h), then the CPU or CUDA kernel run on the
// caller's stream. Framework-free: the pybind11 binding and the XLA FFI handlers call these.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace convloc::ops {

// out [N] = areas of boxes [N, 4] (float, finite, x2 >= x1 and y2 >= y1).
void box_area(const TensorView& boxes, const TensorView& out, void* stream);
// out [N, M] = IoU(boxes1[i], boxes2[j]).
void box_iou(const TensorView& boxes1, const TensorView& boxes2, const TensorView& out, void* stream);
// Greedy NMS: writes the kept indices (descending score) to keep[:count] (int64 [N]) and returns count. idxs
// (int32 or int64 [N], nullable): boxes of different idxs never suppress each other.
int64_t nms(const TensorView& boxes, const TensorView& scores, const TensorView* idxs, double iou_threshold,
            const TensorView& keep, void* stream);

}  // namespace convloc::ops
