#include "proposals/proposals_ops.h"

#include <algorithm>

#include "core/check.h"

namespace convloc::ops {
namespace {

// image: float32 [H, W, C] on the CPU, non-empty, finite.
void check_image(const TensorView& im) {
  check_ndim(im, 3, "[H, W, C]");
  check_dtype(im, DType::Float32);
  if (im.is_cuda()) fail_value(im.name, ": region proposals run on the CPU, got a ", im.device_str(), " array");
  if (im.numel() == 0) fail_value(im.name, ": expected a non-empty image, got shape ", im.shape_str());
  check_finite(im);
}

void check_smoothing(double sigma) {
  if (!(sigma >= 0 && sigma <= kMaxSmoothingSigma))
    fail_value("sigma: expected a number in [0, ", kMaxSmoothingSigma, "], got ", sigma);
}

}  // namespace

int64_t felzenszwalb(const TensorView& image, const TensorView& labels, double scale, double sigma, int64_t min_size) {
  check_image(image);
  check_shape(labels, {image.size(0), image.size(1)}, "[H, W]");
  check_dtype(labels, DType::Int32);
  if (!(scale > 0)) fail_value("scale: expected a positive number, got ", scale);
  check_smoothing(sigma);
  if (min_size < 0) fail_value("min_size: expected an integer >= 0, got ", min_size);
  return felzenszwalb_cpu(image.ptr<float>(), image.size(0), image.size(1), image.size(2), scale, sigma, min_size,
                          labels.ptr<int32_t>());
}

std::vector<Hierarchy> selective_search(const TensorView& image, const std::vector<SelectiveSearchStrategy>& strategies,
                                        double sigma) {
  check_image(image);
  if (image.size(2) != 3) fail_value("image: expected 3 channels (RGB), got shape ", image.shape_str());
  const auto [lo, hi] = std::minmax_element(image.ptr<float>(), image.ptr<float>() + image.numel());
  if (*lo < 0 || *hi > 1)
    fail_value("image: float images must be in [0, 1], got values in [", *lo, ", ", *hi,
               "]; pass uint8 or divide by 255");
  check_smoothing(sigma);
  for (const SelectiveSearchStrategy& s : strategies) {
    if (static_cast<int>(s.space) < 0 || static_cast<int>(s.space) > static_cast<int>(ColourSpace::H))
      fail_value("strategies: unknown colour space ", static_cast<int>(s.space));
    if (!(s.k > 0)) fail_value("k: expected a positive number, got ", s.k);
    if (s.min_size < 0) fail_value("min_size: expected an integer >= 0, got ", s.min_size);
    if (!(s.colour || s.texture || s.size || s.fill))
      fail_value("strategies: a strategy needs at least one similarity");
  }
  return selective_search_cpu(image.ptr<float>(), image.size(0), image.size(1), strategies, sigma);
}

int64_t selective_search_randoms(int64_t h, int64_t w, const std::vector<SelectiveSearchStrategy>& strategies) {
  int64_t total = 0;
  for (const SelectiveSearchStrategy& s : strategies) total += max_hierarchy_boxes(h, w, s.min_size);
  return total;
}

int64_t selective_search_ranked(const TensorView& image, const std::vector<SelectiveSearchStrategy>& strategies,
                                double sigma, const TensorView& randoms, const TensorView& boxes) {
  check_ndim(boxes, 2, "[M, 4]");
  check_shape(boxes, {-1, 4}, "[M, 4]");
  check_dtype(boxes, DType::Float32);
  check_shape(randoms, {-1}, "[R]");
  check_dtype(randoms, DType::Float64);
  if (randoms.is_cuda() || boxes.is_cuda()) fail_value("randoms, boxes: region proposals run on the CPU");
  const std::vector<Hierarchy> found = selective_search(image, strategies, sigma);
  int64_t total = 0;
  for (const Hierarchy& hy : found) total += static_cast<int64_t>(hy.boxes.size() / 4);
  if (randoms.size(0) < total)
    fail_value("randoms: expected at least ", total, " numbers (one per box of the hierarchies), got ",
               randoms.size(0));
  return rank_proposals(found, randoms.ptr<double>(), boxes.size(0), boxes.ptr<float>());
}

}  // namespace convloc::ops
