#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <tuple>

#include "core/py_array.h"
#include "core/py_gil.h"
#include "proposals/proposals_ops.h"

namespace convloc {
namespace {

using py::arg;

int64_t py_felzenszwalb(py::handle image_obj, py::handle labels_obj, double scale, double sigma, int64_t min_size) {
  Array image = as_array(image_obj, "image"), labels = as_output(labels_obj, "labels");
  ReleaseGil nogil;
  return ops::felzenszwalb(*image, *labels, scale, sigma, min_size);
}

using StrategyTuple = std::tuple<int, double, int64_t, bool, bool, bool, bool>;

std::vector<SelectiveSearchStrategy> strategies_of(const std::vector<StrategyTuple>& tuples) {
  std::vector<SelectiveSearchStrategy> strategies;
  for (const auto& [space, k, min_size, colour, texture, size, fill] : tuples)
    strategies.push_back({static_cast<ColourSpace>(space), k, min_size, colour, texture, size, fill});
  return strategies;
}

// Returns, per strategy, (boxes int32 [2 n - 1, 4] in generation order, n initial regions).
py::list py_selective_search(py::handle image_obj, const std::vector<StrategyTuple>& strategy_tuples, double sigma) {
  Array image = as_array(image_obj, "image");
  const std::vector<SelectiveSearchStrategy> strategies = strategies_of(strategy_tuples);
  std::vector<Hierarchy> result;
  {
    ReleaseGil nogil;
    result = ops::selective_search(*image, strategies, sigma);
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

int64_t py_selective_search_ranked(py::handle image_obj, const std::vector<StrategyTuple>& strategies, double sigma,
                                   py::handle randoms_obj, py::handle boxes_obj) {
  Array image = as_array(image_obj, "image"), randoms = as_array(randoms_obj, "randoms");
  Array boxes = as_output(boxes_obj, "boxes");
  const std::vector<SelectiveSearchStrategy> s = strategies_of(strategies);
  ReleaseGil nogil;
  return ops::selective_search_ranked(*image, s, sigma, *randoms, *boxes);
}

}  // namespace

void bind_proposals(py::module_& m) {
  m.def("felzenszwalb", &py_felzenszwalb, arg("image"), arg("labels"), arg("scale"), arg("sigma"), arg("min_size"),
        "Felzenszwalb-Huttenlocher segmentation of a float32 [H, W, C] image into labels (int32 [H, W]); "
        "returns the number of segments.");
  m.def("selective_search", &py_selective_search, arg("image"), arg("strategies"), arg("sigma"),
        "Selective-search hierarchies of a float32 [H, W, 3] RGB image in [0, 1]. strategies: "
        "(colour space, k, min_size, colour, texture, size, fill) tuples. Returns [(boxes, initial)].");
  m.def("selective_search_ranked", &py_selective_search_ranked, arg("image"), arg("strategies"), arg("sigma"),
        arg("randoms"), arg("boxes"),
        "Selective search's proposals, ranked as in the paper with randoms (float64, one per hierarchy box: at least "
        "selective_search_randoms(H, W, strategies)): writes the best to boxes (float32 [M, 4]), returns how many.");
  m.def(
      "selective_search_randoms",
      [](int64_t h, int64_t w, const std::vector<StrategyTuple>& strategies) {
        return ops::selective_search_randoms(h, w, strategies_of(strategies));
      },
      arg("height"), arg("width"), arg("strategies"),
      "The random numbers selective_search_ranked may use: the most boxes the strategies' hierarchies can hold.");
}

}  // namespace convloc
