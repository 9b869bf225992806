// The dense CRF's entry point: arguments validated (csrc/core/check.h), then mean-field run by the CPU or CUDA kernel
// on the caller's stream. Framework-free: the pybind11 binding and the XLA FFI handlers call it.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace convloc::ops {

// A Gaussian over the pixel grid (crf/grid_gaussian.h): a standard deviation per axis in pixels, and
// the step of the coarser grid it is filtered on per axis (all 1: exactly, over the pixels).
struct GridGaussian {
  std::vector<double> sigmas;
  std::vector<int> steps;
};

// How the CPU kernel filters a Gaussian of these standard deviations per axis (pixels) over the grid `spatial`: the
// steps of the coarser grid it is filtered on, all 1 for exactly over the pixels, or none: not over the grid but with
// the permutohedral lattice over the positions. `exact` asks for steps of 1 at any sigma. Sigmas beyond
// kWidestGridSigma extents of their axis are taken as that wide (the Gaussian is then a constant over the grid, as
// far as float32 tells), which bounds the work and the steps.
GridGaussian grid_gaussian(std::vector<double> sigmas, const std::vector<int64_t>& spatial, bool exact);

// The bilateral kernel over the call's image (crf/bilateral_features.h): its features are built here,
// so the image crosses into C++ once.
struct Bilateral {
  std::vector<double> pos_scale, srgb;
};

// One pairwise term: exactly one of the three is set.
struct CrfKernelArg {
  const TensorView* features = nullptr;  // [B, N, d] lattice features, the unary's dtype and device
  const GridGaussian* grid = nullptr;
  const Bilateral* bilateral = nullptr;
};

// Dense CRF mean-field. unary [B, L, N]; kernels: K terms (grid and bilateral ones on the CPU only); compat [K, L, L]
// (apply convention); norms: K pydensecrf modes (0 none, 1 before, 2 after, 3 symmetric). Writes q [B, L, N], labels
// [B, N] (int64, nullable), energy [B, iterations + 1] (float64, nullable, CPU); init [B, L, N] (nullable, CPU): Q_0
// instead of softmax(-U); image [B, N, C] (uint8 or the unary's dtype, CPU) for bilateral kernels. Returns the lattice
// memory of one image in bytes (CPU).
int64_t dense_crf(const TensorView& unary, const std::vector<CrfKernelArg>& kernels, const TensorView& compat,
                  const std::vector<int>& norms, int64_t iterations, bool exclude_self, const TensorView& q,
                  const TensorView* labels, const TensorView* energy, const TensorView* init,
                  const std::vector<int64_t>& spatial, const TensorView* image, void* stream);

}  // namespace convloc::ops
