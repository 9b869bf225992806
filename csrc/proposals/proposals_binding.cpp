#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <tuple>

#include "core/py_array.h"
#include "core/py_gil.h"
#include "proposals/proposals.h"

namespace convloc {
namespace {

using py::arg;

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

int64_t py_felzenszwalb(py::handle image_obj, py::handle labels_obj, double scale, double sigma, int64_t min_size) {
  Array image = as_array(image_obj, "image"), labels = as_output(labels_obj, "labels");
  check_image(*image);
  check_shape(*labels, {image->size(0), image->size(1)}, "[H, W]");
  check_dtype(*labels, DType::Int32);
  if (!(scale > 0)) fail_value("scale: expected a positive number, got ", scale);
  check_smoothing(sigma);
  if (min_size < 0) fail_value("min_size: expected an integer >= 0, got ", min_size);
  ReleaseGil nogil;
  return felzenszwalb_cpu(image->ptr<float>(), image->size(0), image->size(1), image->size(2), scale, sigma, min_size,
                          labels->ptr<int32_t>());
}

using StrategyTuple = std::tuple<int, double, int64_t, bool, bool, bool, bool>;

// Returns, per strategy, (boxes int32 [2 n - 1, 4] in generation order, n initial regions).
py::list py_selective_search(py::handle image_obj, const std::vector<StrategyTuple>& strategy_tuples, double sigma) {
  Array image = as_array(image_obj, "image");
  check_image(*image);
  if (image->size(2) != 3) fail_value("image: expected 3 channels (RGB), got shape ", image->shape_str());
  check_smoothing(sigma);
  std::vector<SelectiveSearchStrategy> strategies;
  for (const auto& [space, k, min_size, colour, texture, size, fill] : strategy_tuples) {
    if (space < 0 || space > static_cast<int>(ColourSpace::H)) fail_value("strategies: unknown colour space ", space);
    if (!(k > 0)) fail_value("k: expected a positive number, got ", k);
    if (min_size < 0) fail_value("min_size: expected an integer >= 0, got ", min_size);
    if (!(colour || texture || size || fill)) fail_value("strategies: a strategy needs at least one similarity");
    strategies.push_back({static_cast<ColourSpace>(space), k, min_size, colour, texture, size, fill});
  }
  std::vector<Hierarchy> result;
  {
    ReleaseGil nogil;
    result = selective_search_cpu(image->ptr<float>(), image->size(0), image->size(1), strategies, sigma);
  }
  // Output sizes are only known after segmentation, so these arrays are made here.
  py::list out;
  for (const Hierarchy& hy : result) {
    const auto rows = static_cast<py::ssize_t>(hy.boxes.size() / 4);
    py::array_t<int32_t> boxes({rows, py::ssize_t(4)});
    std::copy(hy.boxes.begin(), hy.boxes.end(), boxes.mutable_data());
    out.append(py::make_tuple(boxes, hy.initial));
  }
  return out;
}

}  // namespace

void bind_proposals(py::module_& m) {
  m.def("felzenszwalb", &py_felzenszwalb, arg("image"), arg("labels"), arg("scale"), arg("sigma"), arg("min_size"),
        "Felzenszwalb-Huttenlocher segmentation of a float32 [H, W, C] image into labels (int32 [H, W]); "
        "returns the number of segments.");
  m.def("selective_search", &py_selective_search, arg("image"), arg("strategies"), arg("sigma"),
        "Selective-search hierarchies of a float32 [H, W, 3] RGB image in [0, 1]. strategies: "
        "(colour space, k, min_size, colour, texture, size, fill) tuples. Returns [(boxes, initial)].");
}

}  // namespace convloc
