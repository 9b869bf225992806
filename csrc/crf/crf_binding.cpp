#include <pybind11/stl.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/dispatch.h"
#include "core/py_array.h"
#include "crf/bilateral_features.h"
#include "crf/dense_crf.h"

namespace convloc {
namespace {

using py::arg;

// unary [B, L, N]: at least 2 labels, at least one pixel. (Finite: dense_crf_cpu checks that as it
// transposes the unary, instead of a separate pass here.)
void check_unary(const TensorView& u) {
  check_ndim(u, 3, "[B, L, N]");
  check_float(u);
  if (u.size(1) < 2) fail_value(u.name, ": expected at least 2 labels, got ", u.size(1));
  if (u.size(2) < 1) fail_value(u.name, ": expected at least one pixel, got shape ", u.shape_str());
}

int64_t py_dense_crf(py::handle unary_obj, const py::sequence& features_obj, py::handle compat_obj,
                     const std::vector<int>& norms, int64_t iterations, bool exclude_self, py::handle q_obj,
                     py::handle map_obj, py::handle energy_obj, py::handle init_obj,
                     const std::vector<int64_t>& spatial, uintptr_t stream_id) {
  Array unary = as_array(unary_obj, "unary"), compat = as_array(compat_obj, "compat"), q = as_output(q_obj, "q");
  Array map = as_optional_array(map_obj, "labels"), energy = as_optional_array(energy_obj, "energy");
  Array init = as_optional_array(init_obj, "init");
  check_unary(*unary);
  check_cpu_or_cuda(*unary);
  const int64_t B = unary->size(0), L = unary->size(1), N = unary->size(2);
  const int64_t K = static_cast<int64_t>(py::len(features_obj));
  if (K < 1) fail_value("kernels: expected at least one pairwise kernel");
  check_shape(*compat, {K, L, L}, "[K, L, L]");
  check_same_dtype(*unary, *compat);
  check_same_device(*unary, *compat);
  check_finite(*compat);
  if (static_cast<int64_t>(norms.size()) != K)
    fail_value("normalization: expected one mode per kernel (", K, "), got ", norms.size());
  if (iterations < 0) fail_value("iterations: expected a number >= 0, got ", iterations);
  check_shape(*q, {B, L, N}, "[B, L, N]");
  check_same_dtype(*unary, *q);
  check_same_device(*unary, *q);
  if (!map_obj.is_none()) {
    check_shape(*map, {B, N}, "[B, N]");
    check_dtype(*map, DType::Int64);
    check_writable(*map);
  }
  if (!energy_obj.is_none()) {
    check_shape(*energy, {B, iterations + 1}, "[B, iterations + 1]");
    check_dtype(*energy, DType::Float64);
    check_writable(*energy);
  }
  if (!init_obj.is_none()) {
    check_shape(*init, {B, L, N}, "[B, L, N]");
    check_same_dtype(*unary, *init);
    check_finite(*init);
  }
  int64_t grid_points = 1;
  for (int64_t v : spatial) {
    if (v < 1) fail_value("spatial: expected positive sizes");
    grid_points *= v;
  }
  std::vector<Array> feats(K);
  std::vector<std::vector<double>> sigmas(K);
  std::vector<std::vector<int>> steps(K);
  for (int64_t k = 0; k < K; ++k) {
    if (norms[k] < 0 || norms[k] > 3)
      fail_value("normalization[", k, "]: expected 0 (none), 1 (before), 2 (after) or 3 (symmetric), got ", norms[k]);
    py::handle item = features_obj[k];
    const std::string name = "features[" + std::to_string(k) + "]";
    if (py::isinstance<py::tuple>(item)) {  // a grid Gaussian: (sigma per axis, coarse step per axis)
      if (unary->is_cuda()) fail_type(name, ": grid kernels run on the CPU; pass lattice features for CUDA");
      std::pair<std::vector<double>, std::vector<int>> spec;
      try {
        spec = item.cast<decltype(spec)>();
      } catch (const py::cast_error&) {
        fail_type(name, ": expected a grid kernel as (sigmas, steps)");
      }
      sigmas[k] = spec.first, steps[k] = spec.second;
      if (spatial.empty() || sigmas[k].size() != spatial.size() || steps[k].size() != spatial.size() ||
          grid_points != N)
        fail_value(name, ": a grid kernel needs one sigma and one step per axis of `spatial`, whose product is N");
      bool coarse = false;
      for (size_t a = 0; a < spatial.size(); ++a) {
        const double sg = sigmas[k][a];
        if (!(sg > 0) || !std::isfinite(sg)) fail_value(name, ": expected positive finite sigmas");
        if (steps[k][a] < 1) fail_value(name, ": expected steps >= 1, got ", steps[k][a]);
        // the blur on the coarse grid keeps the variance sigma^2 - step^2 / 2; sigma >= step bounds the error
        if (steps[k][a] > 1 && !(sg >= steps[k][a]))
          fail_value(name, ": a coarse step needs sigma >= step, got sigma ", sg, " and step ", steps[k][a]);
        coarse = coarse || steps[k][a] > 1;
      }
      if (coarse && spatial.size() != 2) fail_value(name, ": coarse grid steps are for 2-D grids only");
      if (!coarse) steps[k].clear();
      continue;
    }
    feats[k] = as_array(item, name.c_str());
    const TensorView& f = *feats[k];
    check_shape(f, {B, N, -1}, "[B, N, d]");
    if (f.size(2) < 1) fail_value(f.name, ": expected at least one feature, got shape ", f.shape_str());
    check_same_dtype(*unary, f);
    check_same_device(*unary, f);
    check_finite(f);
  }
  if (unary->is_cuda() && (!energy_obj.is_none() || !init_obj.is_none()))
    fail_type("energy, init: not available for CUDA arrays");
  int64_t bytes = 0;
  void* stream = reinterpret_cast<void*>(stream_id);
  (void)stream;
  py::gil_scoped_release nogil;
  CONVLOC_DISPATCH_FLOAT(*unary, [&] {
    std::vector<CrfKernel<scalar_t>> kernels(K);
    for (int64_t k = 0; k < K; ++k) {
      if (sigmas[k].empty()) {
        kernels[k].features = feats[k]->ptr<scalar_t>();
        kernels[k].dim = static_cast<int>(feats[k]->size(2));
      }
      kernels[k].grid_sigma = sigmas[k];
      kernels[k].grid_step = steps[k];
      kernels[k].compat = compat->ptr<scalar_t>() + k * L * L;
      kernels[k].norm = static_cast<CrfNorm>(norms[k]);
    }
    int64_t* map_ptr = map_obj.is_none() ? nullptr : map->ptr<int64_t>();
    CONVLOC_ON_DEVICE(*unary,
                      dense_crf_cpu(unary->ptr<scalar_t>(), B, L, N, spatial, kernels, iterations, exclude_self,
                                    init_obj.is_none() ? nullptr : init->ptr<scalar_t>(), q->ptr<scalar_t>(), map_ptr,
                                    energy_obj.is_none() ? nullptr : energy->ptr<double>(), &bytes),
                      dense_crf_cuda(unary->ptr<scalar_t>(), B, L, N, kernels, compat->ptr<scalar_t>(), iterations,
                                     exclude_self, q->ptr<scalar_t>(), map_ptr, stream));
  });
  return bytes;
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
  py::gil_scoped_release nogil;
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
  py::gil_scoped_release nogil;
  CONVLOC_DISPATCH_FLOAT(*out, [&] {
    auto* f = out->ptr<scalar_t>();
    if (image->dtype == DType::UInt8)
      bilateral_features_cpu(image->ptr<uint8_t>(), B, N, C, spatial, pos_scale, srgb, f);
    else
      bilateral_features_cpu(image->ptr<scalar_t>(), B, N, C, spatial, pos_scale, srgb, f);
  });
}

}  // namespace

void bind_crf(py::module_& m) {
  m.def("dense_crf", &py_dense_crf, arg("unary"), arg("features"), arg("compat"), arg("normalization"),
        arg("iterations"), arg("exclude_self"), arg("q"), arg("labels") = py::none(), arg("energy") = py::none(),
        arg("init") = py::none(), arg("spatial") = std::vector<int64_t>(), py::kw_only(), arg("stream") = 0,
        "Dense CRF mean-field. unary [B, L, N]; features: K arrays [B, N, d_k] (lattice kernels) or tuples of "
        "(per-axis sigmas, per-axis coarse steps) (Gaussians over the grid `spatial`: exact where the steps are all 1, "
        "else approximated on a coarser grid, 2-D only); compat [K, L, L] (apply "
        "convention); normalization: K pydensecrf modes. Writes q [B, L, N], labels [B, N] (int64, optional), "
        "energy [B, iterations + 1] (float64, optional); init [B, L, N] (optional): Q_0 instead of softmax(-U). "
        "Returns the lattice memory of one image in bytes.");
  m.def("bilateral_features", &py_bilateral_features, arg("image"), arg("spatial"), arg("pos_scale"), arg("srgb"),
        arg("out"),
        "The bilateral kernel's features: out [B, N, ndim + C] = positions (last axis first) times pos_scale, then "
        "image [B, N, C] (uint8 or out's dtype) / srgb.");
  m.def("grid_crf", &py_grid_crf, arg("unary"), arg("image"), arg("neighbors"), arg("w1"), arg("w2"), arg("beta"),
        arg("iterations"), arg("q"), py::kw_only(), arg("stream") = 0,
        "Grid (4/8-neighbour) Potts CRF mean-field. unary [B, L, H, W]; image [B, H, W, C]; writes q [B, L, H, W].");
}

}  // namespace convloc
