// Region-proposal entry points (CPU): arguments validated (csrc/core/check.h), then the kernel run. Framework-free:
// the pybind11 binding and the XLA FFI handlers call these.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "proposals/proposals.h"

namespace convloc::ops {

// Felzenszwalb-Huttenlocher segmentation of a float32 [H, W, C] image into labels (int32 [H, W]); returns the number
// of segments.
int64_t felzenszwalb(const TensorView& image, const TensorView& labels, double scale, double sigma, int64_t min_size);
// Selective-search hierarchies, one per strategy, of a float32 [H, W, 3] RGB image in [0, 1].
std::vector<Hierarchy> selective_search(const TensorView& image, const std::vector<SelectiveSearchStrategy>& strategies,
                                        double sigma);
// Selective search's proposals of that image, ranked (rank_proposals) with randoms (float64 [R], R at least the
// hierarchies' boxes: selective_search_randoms): writes the best ones to boxes (float32 [M, 4]) and returns how many.
int64_t selective_search_ranked(const TensorView& image, const std::vector<SelectiveSearchStrategy>& strategies,
                                double sigma, const TensorView& randoms, const TensorView& boxes);
// The random numbers selective_search_ranked may use for these strategies: the hierarchies' most boxes.
int64_t selective_search_randoms(int64_t h, int64_t w, const std::vector<SelectiveSearchStrategy>& strategies);

}  // namespace convloc::ops
