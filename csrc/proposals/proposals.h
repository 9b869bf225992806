// Region proposals: Felzenszwalb-Huttenlocher graph segmentation and selective search
// (Uijlings et al., IJCV 2013). CPU only: both are sequential graph algorithms (Kruskal merging,
// greedy hierarchical grouping) with little data parallelism; the parallelism used is across
// image rows (filtering) and across selective-search strategies.
//
// Images are float32, H x W x C, channels innermost, contiguous.
#pragma once

#include <cstdint>
#include <vector>

namespace convloc {

// The widest smoothing before segmentation: its taps (8 sigma + 1) and each row's padding are sized
// from sigma, and with replicated borders a wider Gaussian does not become a constant.
constexpr double kMaxSmoothingSigma = 100;

// Normalised Gaussian taps exp(-x^2 / (2 sigma^2)), x = -r..r with r = ceil(4 sigma), summed in
// double from -r upward; derivative = true gives the taps of the Gaussian's first derivative
// (-x / sigma^2 times the normalised Gaussian). sigma <= 0 gives the identity {1}.
std::vector<float> gaussian_taps(double sigma, bool derivative = false);

// out = (image filtered along x with kx) filtered along y with ky; borders replicate the edge
// pixel. Each output is accumulated in float32 from the first tap to the last, so a NumPy
// reference doing the same reproduces it bit for bit. out may not alias image.
void separable_filter_cpu(const float* image, int64_t h, int64_t w, int64_t c, const std::vector<float>& kx,
                          const std::vector<float>& ky, float* out);

// Felzenszwalb-Huttenlocher segmentation: Gaussian smoothing (sigma), 8-neighbour graph with
// Euclidean colour distances, Kruskal merging with threshold Int(C) + scale / |C|, then merging of
// components smaller than min_size along the sorted edges. Edges are sorted by weight with ties in
// edge order (pixel raster order, then right, down, down-right, up-right). Writes labels
// 0..K-1 numbered in raster order of first appearance and returns K.
int64_t felzenszwalb_cpu(const float* image, int64_t h, int64_t w, int64_t c, double scale, double sigma,
                         int64_t min_size, int32_t* labels);

// Colour spaces of the selective-search diversification; every channel is scaled to [0, 1].
enum class ColourSpace : int { RGB = 0, HSV = 1, Lab = 2, rgI = 3, I = 4, H = 5 };
int colour_channels(ColourSpace cs);
// rgb: [n, 3] in [0, 1]; out: [n, colour_channels(cs)].
void convert_colour_cpu(const float* rgb, int64_t n, ColourSpace cs, float* out);

// Per-pixel histogram bin indices for selective search's region descriptors.
constexpr int kColourBins = 25;   // per channel
constexpr int kOrientations = 8;  // Gaussian derivatives (sigma 1) in 8 directions
constexpr int kTextureBins = 10;  // per channel and direction
// colour: [h*w, c] bin of each channel value; texture: [h*w, c, 8] bin of each directional
// derivative response (half-wave rectified, scaled by its maximum over the image).
void region_features_cpu(const float* image, int64_t h, int64_t w, int64_t c, uint8_t* colour, uint8_t* texture);

struct SelectiveSearchStrategy {
  ColourSpace space;
  double k;          // Felzenszwalb threshold in 0..255 units (scale = k / 255 on [0, 1] channels)
  int64_t min_size;  // Felzenszwalb's minimum component size
  bool colour, texture, size, fill;
};

// Boxes (x1, y1, x2, y2), x2/y2 exclusive, of one strategy's hierarchy in generation order: the
// initial regions (label order), then each merged region as it is formed; the last is the whole
// image. `initial` is the number of initial regions.
struct Hierarchy {
  std::vector<int32_t> boxes;
  int64_t initial = 0;
};

// rgb: [h, w, 3] in [0, 1]. Strategies run in parallel; the result does not depend on threads.
std::vector<Hierarchy> selective_search_cpu(const float* rgb, int64_t h, int64_t w,
                                            const std::vector<SelectiveSearchStrategy>& strategies, double sigma);

// The most boxes a hierarchy of an h x w image can hold when no region is smaller than min_size pixels (what
// Felzenszwalb's last pass ensures): 2 n - 1 for n = max(1, h w / max(min_size, 1)) initial regions.
int64_t max_hierarchy_boxes(int64_t h, int64_t w, int64_t min_size);

// The paper's ranking of the hierarchies' boxes: in each hierarchy the region formed last has position 1, the one
// before it 2, and so on; every box is ranked by its position times randoms[i] (i: the box's index in the
// hierarchies one after the other), smallest first, ties in that order, and a box equal to a better-ranked one is
// dropped. Writes the best max_boxes (or all) to out [max_boxes, 4] as float32 and returns how many.
int64_t rank_proposals(const std::vector<Hierarchy>& hierarchies, const double* randoms, int64_t max_boxes, float* out);

}  // namespace convloc
