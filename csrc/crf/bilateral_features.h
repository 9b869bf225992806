// The bilateral kernel's features (the dense CRF's appearance kernel): per pixel its position along
// each spatial axis, the last axis first (pydensecrf's x, y), times a scale per axis; then the image's
// channels divided by srgb per channel. Computed in the features' precision T, as NumPy computes
// arange(size) * scale and image / srgb: the lattice depends on the features' last bits.
#pragma once

#include <cstdint>
#include <vector>

#include "core/common.h"

namespace convloc {

// A position feature: the pixel's index along an axis times the axis's scale.
template <typename T>
CONVLOC_HD T bilateral_position(int64_t index, T scale) {
  return static_cast<T>(index) * scale;
}

// A colour feature: a channel's value (uint8 or T) in T, divided by the channel's srgb.
template <typename T, typename P>
CONVLOC_HD T bilateral_colour(P value, T srgb) {
  return static_cast<T>(value) / srgb;
}

// out [batch, n, spatial.size() + channels] (T float or double) from image [batch, n, channels] (P uint8_t or
// T) on the grid `spatial` (product n, C order); pos_scale: one per axis, srgb: one per channel. One pass
// over the pixels (NumPy would make one strided pass per column), in parallel.
template <typename T, typename P>
void bilateral_features_cpu(const P* image, int64_t batch, int64_t n, int64_t channels,
                            const std::vector<int64_t>& spatial, const std::vector<double>& pos_scale,
                            const std::vector<double>& srgb, T* out);

}  // namespace convloc
