// Colour spaces and per-pixel histogram bins for selective search.
#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "core/common.h"
#include "core/parallel.h"
#include "proposals/proposals.h"

namespace convloc {

int colour_channels(ColourSpace cs) { return cs == ColourSpace::I || cs == ColourSpace::H ? 1 : 3; }

namespace {

constexpr double kPi = 3.14159265358979323846;  // M_PI, which Windows' <cmath> lacks by default

inline float clamp01(float v) { return std::min(std::max(v, 0.f), 1.f); }

// Hue in [0, 1); 0 for greys.
inline float hue(float r, float g, float b, float mx, float d) {
  if (d <= 0) return 0.f;
  float h = mx == r ? (g - b) / d : mx == g ? (b - r) / d + 2.f : (r - g) / d + 4.f;
  if (h < 0) h += 6.f;
  return std::min(h / 6.f, std::nextafter(1.f, 0.f));
}

// sRGB gamma expansion, tabulated (the result only feeds 25-bin histograms and the segmentation).
struct SrgbTable {
  static constexpr int kSize = 4096;
  std::array<float, kSize + 1> lin;
  SrgbTable() {
    for (int i = 0; i <= kSize; ++i) {
      const double v = double(i) / kSize;
      lin[i] = static_cast<float>(v <= 0.04045 ? v / 12.92 : std::pow((v + 0.055) / 1.055, 2.4));
    }
  }
  float operator()(float v) const {
    const float x = v * kSize;
    const int i = std::min(static_cast<int>(x), kSize - 1);
    return lin[i] + (x - i) * (lin[i + 1] - lin[i]);
  }
};

// Bins of the 8 directional responses of n pixels x c channels; to_bin[k * 8 + o] maps channel
// k's direction-o response to [0, kTextureBins).
CONVLOC_ALWAYS_INLINE void texture_bins_of(const float* __restrict gx, const float* __restrict gy, int64_t n, int64_t c,
                                           const float* cosv, const float* sinv, const float* to_bin,
                                           uint8_t* __restrict out) {
  for (int64_t i = 0; i < n * c; ++i) {
    const float* scale = to_bin + (i % c) * kOrientations;
    for (int o = 0; o < kOrientations; ++o) {
      const float r = std::max(0.f, cosv[o] * gx[i] + sinv[o] * gy[i]) * scale[o];
      out[i * kOrientations + o] = static_cast<uint8_t>(std::min(float(kTextureBins - 1), r));
    }
  }
}
CONVLOC_SIMD_FN(void, texture_bins,
                (const float* __restrict gx, const float* __restrict gy, int64_t n, int64_t c, const float* cosv,
                 const float* sinv, const float* to_bin, uint8_t* __restrict out),
                { texture_bins_of(gx, gy, n, c, cosv, sinv, to_bin, out); })

inline float lab_f(float t) { return t > 0.008856f ? std::cbrt(t) : 7.787f * t + 16.f / 116.f; }

}  // namespace

void convert_colour_cpu(const float* rgb, int64_t n, ColourSpace cs, float* out) {
  static const SrgbTable srgb;
  parallel_for(n, 1 << 14, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const float r = clamp01(rgb[3 * i]), g = clamp01(rgb[3 * i + 1]), b = clamp01(rgb[3 * i + 2]);
      const float mx = std::max(r, std::max(g, b)), mn = std::min(r, std::min(g, b)), s = r + g + b;
      switch (cs) {
        case ColourSpace::RGB:
          out[3 * i] = r, out[3 * i + 1] = g, out[3 * i + 2] = b;
          break;
        case ColourSpace::HSV:
          out[3 * i] = hue(r, g, b, mx, mx - mn);
          out[3 * i + 1] = mx > 0 ? (mx - mn) / mx : 0.f;
          out[3 * i + 2] = mx;
          break;
        case ColourSpace::Lab: {
          const float lr = srgb(r), lg = srgb(g), lb = srgb(b);
          const float x = (0.4124564f * lr + 0.3575761f * lg + 0.1804375f * lb) / 0.95047f;
          const float y = 0.2126729f * lr + 0.7151522f * lg + 0.0721750f * lb;
          const float z = (0.0193339f * lr + 0.1191920f * lg + 0.9503041f * lb) / 1.08883f;
          const float fx = lab_f(x), fy = lab_f(y), fz = lab_f(z);
          out[3 * i] = clamp01((116.f * fy - 16.f) / 100.f);
          out[3 * i + 1] = clamp01((500.f * (fx - fy) + 128.f) / 255.f);
          out[3 * i + 2] = clamp01((200.f * (fy - fz) + 128.f) / 255.f);
          break;
        }
        case ColourSpace::rgI:
          out[3 * i] = s > 0 ? r / s : 1.f / 3.f;
          out[3 * i + 1] = s > 0 ? g / s : 1.f / 3.f;
          out[3 * i + 2] = s / 3.f;
          break;
        case ColourSpace::I:
          out[i] = s / 3.f;
          break;
        case ColourSpace::H:
          out[i] = hue(r, g, b, mx, mx - mn);
          break;
      }
    }
  });
}

void region_features_cpu(const float* image, int64_t h, int64_t w, int64_t c, uint8_t* colour, uint8_t* texture) {
  const int64_t n = h * w;
  parallel_for(n * c, 1 << 15, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      colour[i] = static_cast<uint8_t>(std::min(kColourBins - 1, static_cast<int>(clamp01(image[i]) * kColourBins)));
  });
  // Gaussian derivatives (sigma 1) along x and y; the response in direction theta is
  // cos(theta) gx + sin(theta) gy, half-wave rectified so that opposite directions differ.
  const std::vector<float> g = gaussian_taps(1.0), dg = gaussian_taps(1.0, true);
  std::vector<float> gx(n * c), gy(n * c);
  separable_filter_cpu(image, h, w, c, dg, g, gx.data());
  separable_filter_cpu(image, h, w, c, g, dg, gy.data());
  float cosv[kOrientations], sinv[kOrientations];
  for (int o = 0; o < kOrientations; ++o) {
    cosv[o] = static_cast<float>(std::cos(o * kPi / 4));
    sinv[o] = static_cast<float>(std::sin(o * kPi / 4));
  }
  auto response = [&](int64_t i, int o) { return std::max(0.f, cosv[o] * gx[i] + sinv[o] * gy[i]); };
  // Maxima per channel and direction, reduced per row first (order-independent: max is exact).
  const int64_t m = c * kOrientations;
  std::vector<float> row_max(h * m, 0.f);
  parallel_for(h, 8, [&](int64_t lo, int64_t hi) {
    for (int64_t y = lo; y < hi; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int64_t k = 0; k < c; ++k)
          for (int o = 0; o < kOrientations; ++o) {
            float& mx = row_max[y * m + k * kOrientations + o];
            mx = std::max(mx, response((y * w + x) * c + k, o));
          }
  });
  std::vector<float> to_bin(m, 0.f);
  for (int64_t j = 0; j < m; ++j) {
    float mx = 0.f;
    for (int64_t y = 0; y < h; ++y) mx = std::max(mx, row_max[y * m + j]);
    to_bin[j] = mx > 0 ? kTextureBins / mx : 0.f;
  }
  parallel_for(n, 1 << 12, [&](int64_t lo, int64_t hi) {
    texture_bins(gx.data() + lo * c, gy.data() + lo * c, hi - lo, c, cosv, sinv, to_bin.data(), texture + lo * m);
  });
}

}  // namespace convloc
