#include <type_traits>

#include "core/parallel.h"
#include "crf/bilateral_features.h"

namespace convloc {

template <typename T, typename P>
void bilateral_features_cpu(const P* image, int64_t batch, int64_t n, int64_t channels,
                            const std::vector<int64_t>& spatial, const std::vector<double>& pos_scale,
                            const std::vector<double>& srgb, T* out) {
  const int64_t ndim = static_cast<int64_t>(spatial.size()), d = ndim + channels;
  const std::vector<T> scale(pos_scale.begin(), pos_scale.end()), div(srgb.begin(), srgb.end());
  // uint8 images through a table of the 256 quotients per channel (the same bits as dividing)
  std::vector<T> quotient;
  if constexpr (std::is_same_v<P, uint8_t>) {
    quotient.resize(256 * channels);
    for (int64_t c = 0; c < channels; ++c)
      for (int v = 0; v < 256; ++v) quotient[c * 256 + v] = bilateral_colour(v, div[c]);
  }
  const auto colour = [&](int64_t e, int64_t c) {
    if constexpr (std::is_same_v<P, uint8_t>)
      return quotient[c * 256 + image[e]];
    else
      return bilateral_colour(image[e], div[c]);
  };
  parallel_for(batch * n, 4096, [&](int64_t p0, int64_t p1) {
    std::vector<int64_t> at(ndim);  // p's index along each axis (one division per chunk, not per pixel)
    for (int64_t a = ndim - 1, rest = p0 % n; a >= 0; --a) at[a] = rest % spatial[a], rest /= spatial[a];
    for (int64_t p = p0; p < p1; ++p) {
      T* row = out + p * d;
      for (int64_t a = 0; a < ndim; ++a) row[ndim - 1 - a] = bilateral_position(at[a], scale[a]);
      for (int64_t c = 0; c < channels; ++c) row[ndim + c] = colour(p * channels + c, c);
      for (int64_t a = ndim - 1; a >= 0 && ++at[a] == spatial[a]; --a) at[a] = 0;  // the next pixel (C order)
    }
  });
}

#define CONVLOC_INSTANTIATE(T, P)                                                                              \
  template void bilateral_features_cpu<T, P>(const P*, int64_t, int64_t, int64_t, const std::vector<int64_t>&, \
                                             const std::vector<double>&, const std::vector<double>&, T*);
CONVLOC_INSTANTIATE(float, float)
CONVLOC_INSTANTIATE(float, uint8_t)
CONVLOC_INSTANTIATE(double, double)
CONVLOC_INSTANTIATE(double, uint8_t)
#undef CONVLOC_INSTANTIATE

}  // namespace convloc
