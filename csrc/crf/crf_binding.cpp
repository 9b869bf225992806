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
#include "crf/dense_crf.h"
#include "crf/probabilities.h"
#include "lattice/lattice.h"

namespace convloc {
namespace {

using py::arg;

// A Gaussian over the pixel grid (crf/grid_gaussian.h): a standard deviation per axis in pixels, and
// the step of the coarser grid it is filtered on per axis (all 1: exactly, over the pixels).
struct GridGaussian {
  std::vector<double> sigmas;
  std::vector<int> steps;
};

// The bilateral kernel over the call's image (crf/bilateral_features.h): its features are built here,
// so the image crosses into C++ once.
struct Bilateral {
  std::vector<double> pos_scale, srgb;
};

// One pairwise term of a dense_crf call as given: exactly one of the three is set.
struct KernelArg {
  Array features;  // [B, N, d] lattice features
  const GridGaussian* grid = nullptr;
  const Bilateral* bilateral = nullptr;
};

// Per channel, the largest |value| of image [B, N, C] (float, CPU; uint8: 255, without a pass).
std::vector<double> largest_magnitudes(const TensorView& image) {
  const int64_t channels = image.size(2), n = image.numel() / std::max<int64_t>(channels, 1);
  std::vector<double> largest(channels, image.dtype == DType::UInt8 ? 255.0 : 0.0);
  const auto scan = [&](const auto* p) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < channels; ++c) largest[c] = std::max(largest[c], std::fabs(double(p[i * channels + c])));
  };
  if (image.dtype == DType::Float32)
    scan(image.ptr<float>());
  else if (image.dtype == DType::Float64)
    scan(image.ptr<double>());
  return largest;
}

void check_positive_finite(const std::vector<double>& values, const std::string& name) {
  for (double v : values)
    if (!(v > 0) || !std::isfinite(v)) fail_value(name, ": expected positive finite values, got ", v);
}

// A grid Gaussian needs the grid: one sigma and one step per axis of `spatial`, whose product is N.
void check_grid(const GridGaussian& g, const std::vector<int64_t>& spatial, int64_t grid_points, int64_t n,
                const std::string& name) {
  if (spatial.empty() || g.sigmas.size() != spatial.size() || g.steps.size() != spatial.size() || grid_points != n)
    fail_value(name, ": a grid kernel needs one sigma and one step per axis of `spatial`, whose product is N");
  check_positive_finite(g.sigmas, name + ".sigmas");
  bool coarse = false;
  for (size_t a = 0; a < spatial.size(); ++a) {
    if (g.sigmas[a] > kWidestGridSigma * double(spatial[a]))
      fail_value(name, ".sigmas: expected at most ", kWidestGridSigma, " times the grid's extent (", spatial[a],
                 ") along axis ", a, ", got ", g.sigmas[a]);
    if (g.steps[a] < 1) fail_value(name, ": expected steps >= 1, got ", g.steps[a]);
    // the blur on the coarse grid keeps the variance sigma^2 - step^2 / 2; sigma >= step bounds the error
    if (g.steps[a] > 1 && !(g.sigmas[a] >= g.steps[a]))
      fail_value(name, ": a coarse step needs sigma >= step, got sigma ", g.sigmas[a], " and step ", g.steps[a]);
    coarse = coarse || g.steps[a] > 1;
  }
  if (coarse && spatial.size() != 2) fail_value(name, ": coarse grid steps are for 2-D grids only");
}

// A bilateral kernel needs the image [B, N, C] (uint8 or the unary's dtype, on the CPU), a position
// scale per axis of `spatial` and an srgb per channel.
void check_bilateral(const Bilateral& k, const TensorView& unary, const Array& image,
                     const std::vector<int64_t>& spatial, int64_t grid_points, const std::string& name) {
  if (image.owner.is_none()) fail_value("image: a bilateral kernel needs the image");
  check_shape(*image, {unary.size(0), unary.size(2), -1}, "[B, N, C]");
  if (image->is_cuda()) fail_type("image: expected a CPU array");
  if (image->dtype != DType::UInt8) check_same_dtype(unary, *image);
  check_finite(*image);
  if (spatial.empty() || k.pos_scale.size() != spatial.size() || grid_points != unary.size(2))
    fail_value(name, ": a bilateral kernel needs one position scale per axis of `spatial`, whose product is N");
  if (static_cast<int64_t>(k.srgb.size()) != image->size(2))
    fail_value(name, ": expected one srgb per image channel (", image->size(2), "), got ", k.srgb.size());
  check_positive_finite(k.pos_scale, name + ".pos_scale");
  check_positive_finite(k.srgb, name + ".srgb");
  const int64_t positions = static_cast<int64_t>(spatial.size()), channels = image->size(2);
  if (positions + channels > kLatticeMaxDim)
    fail_value("image: a bilateral kernel takes at most ", kLatticeMaxDim - positions, " channels (the lattice's ",
               kLatticeMaxDim, " dimensions less ", positions, " for the position), got ", channels);
  // The features' largest sum of |coordinates|, bounded by the last pixel's position and each channel's
  // largest value: beyond the lattice's reach the kernel's widths are too small for this image.
  double reach = 0;
  for (int64_t a = 0; a < positions; ++a) reach += double(spatial[positions - 1 - a] - 1) * k.pos_scale[a];
  const std::vector<double> largest = largest_magnitudes(*image);
  for (int64_t c = 0; c < channels; ++c) reach += largest[c] / k.srgb[c];
  if (!(reach < lattice_max_feature_sum(static_cast<int>(positions + channels))))
    fail_value(name, ": sxy or srgb too small for this image: its features span ", reach,
               " standard deviations (positions / sxy plus values / srgb), beyond the lattice's ",
               lattice_max_feature_sum(static_cast<int>(positions + channels)));
}

// unary [B, L, N]: at least 2 labels, at least one pixel. (Finite: dense_crf_cpu checks that as it
// transposes the unary, instead of a separate pass here.)
void check_unary(const TensorView& u) {
  check_ndim(u, 3, "[B, L, N]");
  check_float(u);
  if (u.size(1) < 2) fail_value(u.name, ": expected at least 2 labels, got ", u.size(1));
  if (u.size(2) < 1) fail_value(u.name, ": expected at least one pixel, got shape ", u.shape_str());
}

int64_t py_dense_crf(py::handle unary_obj, const py::sequence& kernels_obj, py::handle compat_obj,
                     const std::vector<int>& norms, int64_t iterations, bool exclude_self, py::handle q_obj,
                     py::handle map_obj, py::handle energy_obj, py::handle init_obj,
                     const std::vector<int64_t>& spatial, py::handle image_obj, uintptr_t stream_id) {
  Array unary = as_array(unary_obj, "unary"), compat = as_array(compat_obj, "compat"), q = as_output(q_obj, "q");
  Array map = as_optional_array(map_obj, "labels"), energy = as_optional_array(energy_obj, "energy");
  Array init = as_optional_array(init_obj, "init"), image = as_optional_array(image_obj, "image");
  check_unary(*unary);
  check_cpu_or_cuda(*unary);
  const int64_t B = unary->size(0), L = unary->size(1), N = unary->size(2);
  const int64_t K = static_cast<int64_t>(py::len(kernels_obj));
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
  std::vector<KernelArg> args(K);
  for (int64_t k = 0; k < K; ++k) {
    if (norms[k] < 0 || norms[k] > 3)
      fail_value("normalization[", k, "]: expected 0 (none), 1 (before), 2 (after) or 3 (symmetric), got ", norms[k]);
    py::handle item = kernels_obj[k];
    const std::string name = "kernels[" + std::to_string(k) + "]";
    if (py::isinstance<GridGaussian>(item) || py::isinstance<Bilateral>(item)) {
      if (unary->is_cuda())
        fail_type(name, ": grid and bilateral kernels run on the CPU; pass lattice features for CUDA");
      if (py::isinstance<GridGaussian>(item)) {
        args[k].grid = item.cast<const GridGaussian*>();
        check_grid(*args[k].grid, spatial, grid_points, N, name);
      } else {
        args[k].bilateral = item.cast<const Bilateral*>();
        check_bilateral(*args[k].bilateral, *unary, image, spatial, grid_points, name);
      }
      continue;
    }
    const std::string features_name = name + ".features";
    args[k].features = as_array(item, features_name.c_str());
    const TensorView& f = *args[k].features;
    check_shape(f, {B, N, -1}, "[B, N, d]");
    if (f.size(2) < 1 || f.size(2) > kLatticeMaxDim)
      fail_value(f.name, ": expected 1 to ", kLatticeMaxDim, " features per point, got shape ", f.shape_str());
    check_same_dtype(*unary, f);
    check_same_device(*unary, f);
    check_finite(f);
  }
  if (unary->is_cuda() && (!energy_obj.is_none() || !init_obj.is_none()))
    fail_type("energy, init: not available for CUDA arrays");
  int64_t bytes = 0;
  void* stream = reinterpret_cast<void*>(stream_id);
  (void)stream;
  ReleaseGil nogil;
  CONVLOC_DISPATCH_FLOAT(*unary, [&] {
    using Features = std::vector<scalar_t, WorkspaceAllocator<scalar_t>>;
    std::vector<Features> bilateral_features(K);
    std::vector<CrfKernel<scalar_t>> kernels(K);
    for (int64_t k = 0; k < K; ++k) {
      const KernelArg& arg = args[k];
      if (arg.grid) {
        kernels[k].grid_sigma = arg.grid->sigmas;
        const bool coarse = std::any_of(arg.grid->steps.begin(), arg.grid->steps.end(), [](int s) { return s > 1; });
        if (coarse) kernels[k].grid_step = arg.grid->steps;
      } else if (arg.bilateral) {
        const int64_t C = image->size(2), d = static_cast<int64_t>(spatial.size()) + C;
        Features& f = bilateral_features[k];
        f.resize(B * N * d);
        if (image->dtype == DType::UInt8)
          bilateral_features_cpu(image->ptr<uint8_t>(), B, N, C, spatial, arg.bilateral->pos_scale, arg.bilateral->srgb,
                                 f.data());
        else
          bilateral_features_cpu(image->ptr<scalar_t>(), B, N, C, spatial, arg.bilateral->pos_scale,
                                 arg.bilateral->srgb, f.data());
        kernels[k].features = f.data();
        kernels[k].dim = static_cast<int>(d);
      } else {
        kernels[k].features = arg.features->ptr<scalar_t>();
        kernels[k].dim = static_cast<int>(arg.features->size(2));
      }
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
