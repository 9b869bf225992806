#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/dispatch.h"
#include "core/parallel.h"
#include "core/py_array.h"
#include "core/py_gil.h"
#include "core/workspace.h"
#include "crf/bilateral_features.h"
#include "crf/crf_ops.h"
#include "crf/dense_crf.h"
#include "crf/probabilities.h"

namespace convloc {
namespace {

using py::arg;

using ops::Bilateral;
using ops::GridGaussian;

int64_t py_dense_crf(py::handle unary_obj, const py::sequence& kernels_obj, py::handle compat_obj,
                     const std::vector<int>& norms, int64_t iterations, bool exclude_self, py::handle q_obj,
                     py::handle map_obj, py::handle energy_obj, py::handle init_obj,
                     const std::vector<int64_t>& spatial, py::handle image_obj, uintptr_t stream) {
  Array unary = as_array(unary_obj, "unary"), compat = as_array(compat_obj, "compat"), q = as_output(q_obj, "q");
  const auto output = [](py::handle obj, const char* name) {
    return obj.is_none() ? as_optional_array(obj, name) : as_output(obj, name);
  };
  Array map = output(map_obj, "labels"), energy = output(energy_obj, "energy");
  Array init = as_optional_array(init_obj, "init"), image = as_optional_array(image_obj, "image");
  // Grid Gaussians and bilateral kernels as given; anything else is a features array.
  const size_t K = py::len(kernels_obj);
  std::vector<ops::CrfKernelArg> kernels(K);
  std::vector<Array> features(K);
  std::vector<std::string> names(K);
  for (size_t k = 0; k < K; ++k) {
    py::handle item = kernels_obj[k];
    if (py::isinstance<GridGaussian>(item)) {
      kernels[k].grid = item.cast<const GridGaussian*>();
    } else if (py::isinstance<Bilateral>(item)) {
      kernels[k].bilateral = item.cast<const Bilateral*>();
    } else {
      names[k] = "kernels[" + std::to_string(k) + "].features";
      features[k] = as_array(item, names[k].c_str());
      kernels[k].features = &features[k].view;
    }
  }
  const auto optional = [](const Array& a) { return a.owner.is_none() ? nullptr : &a.view; };
  ReleaseGil nogil;
  return ops::dense_crf(*unary, kernels, *compat, norms, iterations, exclude_self, *q, optional(map), optional(energy),
                        optional(init), spatial, optional(image), reinterpret_cast<void*>(stream));
}

void py_grid_crf(py::handle unary_obj, py::handle image_obj, int neighbors, double w1, double w2, double beta,
                 int64_t iterations, py::handle q_obj, uintptr_t stream_id) {
  Array unary = as_array(unary_obj, "unary"), image = as_array(image_obj, "image"), q = as_output(q_obj, "q");
  check_ndim(*unary, 4, "[B, L, H, W]");
  check_float(*unary);
  if (unary->size(1) < 2) fail_value("unary: expected at least 2 labels, got ", unary->size(1));
  check_finite(*unary);
  const int64_t B = unary->size(0), L = unary->size(1), H = unary->size(2), W = unary->size(3);
  check_shape(*image, {B, H, W, -1}, "[B, H, W, C] matching the unary");
  check_same_dtype(*unary, *image);
  check_same_device(*unary, *image);
  check_finite(*image);
  check_shape(*q, {B, L, H, W}, "[B, L, H, W]");
  check_same_dtype(*unary, *q);
  check_same_device(*unary, *q);
  if (neighbors != 4 && neighbors != 8) fail_value("neighbors: expected 4 or 8, got ", neighbors);
  if (!(beta >= 0)) fail_value("beta: expected a number >= 0, got ", beta);
  if (!std::isfinite(w1) || !std::isfinite(w2)) fail_value("w1, w2: expected finite weights");
  if (iterations < 0) fail_value("iterations: expected a number >= 0, got ", iterations);
  void* stream = reinterpret_cast<void*>(stream_id);
  (void)stream;
  const int64_t C = image->size(3);
  ReleaseGil nogil;
  CONVLOC_DISPATCH_FLOAT(*unary, [&] {
    const auto *u = unary->ptr<scalar_t>(), *im = image->ptr<scalar_t>();
    auto* o = q->ptr<scalar_t>();
    CONVLOC_ON_DEVICE(*unary, grid_crf_cpu(u, im, B, L, H, W, C, neighbors, w1, w2, beta, iterations, o),
                      grid_crf_cuda(u, im, B, L, H, W, C, neighbors, w1, w2, beta, iterations, o, stream));
  });
}

// The bilateral kernel's features (crf/bilateral_features.h): out [B, N, ndim + C] (float32/64) from image
// [B, N, C] (uint8 or out's dtype).
void py_bilateral_features(py::handle image_obj, const std::vector<int64_t>& spatial,
                           const std::vector<double>& pos_scale, const std::vector<double>& srgb, py::handle out_obj) {
  Array image = as_array(image_obj, "image"), out = as_output(out_obj, "features");
  check_ndim(*image, 3, "[B, N, C]");
  check_ndim(*out, 3, "[B, N, d]");
  check_float(*out);
  if (image->is_cuda() || out->is_cuda()) fail_type("image, features: expected CPU arrays");
  if (image->dtype != DType::UInt8) check_same_dtype(*out, *image);
  const int64_t ndim = static_cast<int64_t>(spatial.size()), B = image->size(0), N = image->size(1), C = image->size(2);
  int64_t n = 1;
  for (int64_t s : spatial) n *= s;
  if (n != N) fail_value("image: expected ", n, " pixels (the grid's), got ", N);
  if (int64_t(pos_scale.size()) != ndim) fail_value("pos_scale: expected ", ndim, " values");
  if (int64_t(srgb.size()) != C) fail_value("srgb: expected ", C, " values (one per image channel)");
  check_shape(*out, {B, N, ndim + C}, "[B, N, ndim + C]");
  ReleaseGil nogil;
  CONVLOC_DISPATCH_FLOAT(*out, [&] {
    auto* f = out->ptr<scalar_t>();
    if (image->dtype == DType::UInt8)
      bilateral_features_cpu(image->ptr<uint8_t>(), B, N, C, spatial, pos_scale, srgb, f);
    else
      bilateral_features_cpu(image->ptr<scalar_t>(), B, N, C, spatial, pos_scale, srgb, f);
  });
}

int64_t py_clip_probabilities(py::handle probs_obj, bool labels_last, double scale, double lo, double hi,
                              double tolerance, py::handle out_obj) {
  Array probs = as_array(probs_obj, "probs"), out = as_output(out_obj, "out");
  check_ndim(*probs, 2, labels_last ? "[N, L]" : "[L, N]");
  if (probs->is_cuda() || out->is_cuda()) fail_type("probs, out: expected CPU arrays");
  const int64_t n = probs->size(labels_last ? 0 : 1), labels = probs->size(labels_last ? 1 : 0);
  check_shape(*out, {labels, n}, "[L, N]");
  check_dtype(*out, DType::Float32);
  ReleaseGil nogil;
  return CONVLOC_DISPATCH_FLOAT(*probs, [&] {
    return clip_probabilities(probs->ptr<scalar_t>(), labels_last, n, labels, scale, lo, hi, tolerance,
                              out->ptr<float>());
  });
}

// labels [M] = the first index of the largest value along axis 0 of q [L, M] (NumPy's argmax), in one
// pass over q instead of NumPy's transposed copy.
void py_argmax_axis0(py::handle q_obj, py::handle out_obj) {
  Array q = as_array(q_obj, "q"), out = as_output(out_obj, "labels");
  check_ndim(*q, 2, "[L, M]");
  if (q->is_cuda() || out->is_cuda()) fail_type("q, labels: expected CPU arrays");
  const int64_t labels = q->size(0), m = q->size(1);
  if (labels < 1) fail_value("q: expected at least one label, got shape ", q->shape_str());
  check_shape(*out, {m}, "[M]");
  check_dtype(*out, DType::Int64);
  ReleaseGil nogil;
  CONVLOC_DISPATCH_FLOAT(*q, [&] { argmax_axis0(q->ptr<scalar_t>(), labels, m, out->ptr<int64_t>()); });
}

}  // namespace

void bind_crf(py::module_& m) {
  py::class_<GridGaussian>(m, "GridGaussian",
                           "A dense-CRF Gaussian over the pixel grid `spatial`: a standard deviation per axis in "
                           "pixels, filtered exactly where every step is 1, else on a grid `steps` times coarser "
                           "(2-D only).")
      .def(py::init<std::vector<double>, std::vector<int>>(), arg("sigmas"), arg("steps"))
      .def_readonly("sigmas", &GridGaussian::sigmas)
      .def_readonly("steps", &GridGaussian::steps);
  py::class_<Bilateral>(m, "Bilateral",
                        "A dense-CRF bilateral kernel over the call's image: features positions (last axis first) "
                        "times pos_scale, then the image's channels / srgb.")
      .def(py::init<std::vector<double>, std::vector<double>>(), arg("pos_scale"), arg("srgb"))
      .def_readonly("pos_scale", &Bilateral::pos_scale)
      .def_readonly("srgb", &Bilateral::srgb);
  m.def(
      "grid_gaussian",
      [](const std::vector<double>& sigmas, const std::vector<int64_t>& spatial, bool exact) -> py::object {
        GridGaussian g = ops::grid_gaussian(sigmas, spatial, exact);
        if (g.steps.empty()) return py::none();
        return py::cast(std::move(g));
      },
      arg("sigmas"), arg("spatial"), arg("exact"),
      "How the CPU dense CRF filters a Gaussian of these sigmas (pixels per axis) over the grid `spatial`: a "
      "GridGaussian (sigmas wider than 1000 extents taken as that wide; steps all 1: exactly), or None for the "
      "permutohedral lattice.");
  m.attr("MAX_PAIRWISE_ENERGY") = kMaxPairwiseEnergy;
  m.def("dense_crf", &py_dense_crf, arg("unary"), arg("kernels"), arg("compat"), arg("normalization"),
        arg("iterations"), arg("exclude_self"), arg("q"), arg("labels") = py::none(), arg("energy") = py::none(),
        arg("init") = py::none(), arg("spatial") = std::vector<int64_t>(), arg("image") = py::none(), py::kw_only(),
        arg("stream") = 0,
        "Dense CRF mean-field. unary [B, L, N]; kernels: K terms, each lattice features [B, N, d_k], a GridGaussian "
        "(over the grid `spatial`) or a Bilateral (over `image` [B, N, C], uint8 or the unary's dtype); compat "
        "[K, L, L] (apply convention); normalization: K pydensecrf modes. Writes q [B, L, N], labels [B, N] (int64, "
        "optional), energy [B, iterations + 1] (float64, optional); init [B, L, N] (optional): Q_0 instead of "
        "softmax(-U). Returns the lattice memory of one image in bytes.");
  m.def("bilateral_features", &py_bilateral_features, arg("image"), arg("spatial"), arg("pos_scale"), arg("srgb"),
        arg("out"),
        "The bilateral kernel's features: out [B, N, ndim + C] = positions (last axis first) times pos_scale, then "
        "image [B, N, C] (uint8 or out's dtype) / srgb.");
  m.def("clip_probabilities", &py_clip_probabilities, arg("probs"), arg("labels_last"), arg("scale"), arg("lo"),
        arg("hi"), arg("tolerance"), arg("out"),
        "out [L, N] (float32) = clip(scale * p + (1 - scale) / L, lo, hi) of probabilities probs [N, L] (labels_last) "
        "or [L, N] (float32/64). Returns the first pixel whose values are not a distribution (NaN or negative, or "
        "summing to 1 +- more than tolerance), or -1.");
  m.def("argmax_axis0", &py_argmax_axis0, arg("q"), arg("labels"),
        "labels [M] (int64) = argmax over axis 0 of q [L, M] (float32/64; NumPy's ties and NaN).");
  m.def("grid_crf", &py_grid_crf, arg("unary"), arg("image"), arg("neighbors"), arg("w1"), arg("w2"), arg("beta"),
        arg("iterations"), arg("q"), py::kw_only(), arg("stream") = 0,
        "Grid (4/8-neighbour) Potts CRF mean-field. unary [B, L, H, W]; image [B, H, W, C]; writes q [B, L, H, W].");
}

}  // namespace convloc
