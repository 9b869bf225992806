// The one-shot lattice filter's entry point (build + filter): arguments validated (csrc/core/check.h), then the
// CPU or CUDA kernel run on the caller's stream. Framework-free: the pybind11 binding and the XLA FFI handlers call
// it. (PermutohedralLattice, built once and filtered many times, is a Python object: lattice_binding.cpp.)
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace convloc::ops {

// features: [N, d] or [B, N, d] float, 1 <= d <= kLatticeMaxDim: batch B (1 for [N, d]), N points of d features.
// (Finite: the CPU build refuses NaN and inf itself, within its own pass over the features.)
struct FeatureShape {
  int64_t batch, n;
  int d;
};
FeatureShape check_features(const TensorView& features);

// Builds the lattice of features [B?, N, d] and filters values [B?, N, C] into out (same shape as values);
// transpose: the exact adjoint; exclude_self: minus each point's own lattice weight.
void permutohedral_filter(const TensorView& features, const TensorView& values, const TensorView& out, bool transpose,
                          bool exclude_self, void* stream);

}  // namespace convloc::ops
