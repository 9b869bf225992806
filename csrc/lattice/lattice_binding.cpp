#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <memory>
#include <vector>

#include "core/dispatch.h"
#include "core/py_array.h"
#include "core/py_gil.h"
#include "lattice/lattice.h"
#include "lattice/lattice_batch.h"
#include "lattice/lattice_ops.h"

namespace convloc {
namespace {

using py::arg;

using ops::check_features;
using ops::FeatureShape;

std::unique_ptr<LatticeBatch> py_lattice_batch(py::handle features_obj) {
  Array f = as_array(features_obj, "features");
  if (f->is_cuda())
    fail_value("features: PermutohedralLattice is built on the CPU; use ops.permutohedral_filter for CUDA arrays");
  check_cpu_or_cuda(*f);
  const FeatureShape s = check_features(*f);
  ReleaseGil nogil;
  return CONVLOC_DISPATCH_FLOAT(
      *f, [&] { return std::make_unique<LatticeBatch>(f->ptr<scalar_t>(), s.batch, s.n, s.d, f->dim() == 3); });
}

void py_lattice_filter(const LatticeBatch& self, py::handle values_obj, py::handle out_obj, bool transpose) {
  Array v = as_array(values_obj, "values"), out = as_output(out_obj, "out");
  if (v->is_cuda()) fail_value("values: expected a CPU array (the lattice lives on the CPU)");
  const DType want = self.is_double() ? DType::Float64 : DType::Float32;
  if (v->dtype != want)
    fail_type("values: expected ", dtype_name(want), " like the lattice's features, got ", dtype_name(v->dtype));
  if (self.batched())
    check_shape(*v, {self.batch(), self.num_points(), -1}, "[B, N, C] (B, N from the lattice)");
  else
    check_shape(*v, {self.num_points(), -1}, "[N, C] (N from the lattice)");
  check_same_dtype(*v, *out);
  check_same_device(*v, *out);
  if (out->shape != v->shape) fail_value("out: expected shape ", v->shape_str(), ", got ", out->shape_str());
  const int64_t c = v->size(-1);
  ReleaseGil nogil;
  CONVLOC_DISPATCH_FLOAT(*v, [&] { self.filter(v->ptr<scalar_t>(), out->ptr<scalar_t>(), c, transpose); });
}

void py_lattice_diagonal(const LatticeBatch& self, py::handle out_obj) {
  Array out = as_output(out_obj, "out");
  const DType want = self.is_double() ? DType::Float64 : DType::Float32;
  check_dtype(*out, want);
  if (self.batched())
    check_shape(*out, {self.batch(), self.num_points()}, "[B, N] (B, N from the lattice)");
  else
    check_shape(*out, {self.num_points()}, "[N] (N from the lattice)");
  ReleaseGil nogil;
  CONVLOC_DISPATCH_FLOAT(*out, [&] { self.diagonal(out->ptr<scalar_t>()); });
}

// Item b's structure as NumPy arrays: offsets [N, d+1] int32, weights [N, d+1], neighbours [V, d+1, 2] int32
// (V = absent), amplitude.
py::dict lattice_structure(const LatticeBatch& self, int64_t b) {
  if (b < 0 || b >= self.batch()) fail_value("item: expected 0 <= item < ", self.batch(), ", got ", b);
  const py::ssize_t n = self.num_points(), k1 = self.dim() + 1;
  py::dict out;
  const auto fill = [&](auto type) {
    using T = decltype(type);
    const PermutohedralLattice<T>& lat = self.item<T>(b);
    py::array_t<int32_t> nb({py::ssize_t(lat.num_vertices()), k1, py::ssize_t(2)});
    self.neighbours_by_vertex(b, nb.mutable_data());
    out["offsets"] = py::array_t<int32_t>({n, k1}, lat.slice_offsets().data());
    out["weights"] = py::array_t<T>({n, k1}, lat.slice_weights().data());
    out["neighbours"] = nb;
    out["amplitude"] = static_cast<double>(lat.amplitude());
  };
  if (self.is_double())
    fill(double());
  else
    fill(float());
  return out;
}

void py_permutohedral_filter(py::handle features_obj, py::handle values_obj, py::handle out_obj, bool transpose,
                             bool exclude_self, uintptr_t stream) {
  Array f = as_array(features_obj, "features"), v = as_array(values_obj, "values"), out = as_output(out_obj, "out");
  ReleaseGil nogil;
  ops::permutohedral_filter(*f, *v, *out, transpose, exclude_self, reinterpret_cast<void*>(stream));
}

// Test hook: (keys [N, d+1, d], weights [N, d+1], ranks [N, d+1]) of features [N, d] on the CPU, from the build's
// vectorised simplices or from the scalar lattice_simplex.
py::tuple py_lattice_simplices(py::handle features_obj, bool vectorised) {
  Array f = as_array(features_obj, "features");
  if (f->is_cuda() || f->dim() != 2) fail_value("features: expected a CPU array [N, d], got ", f->shape_str());
  const FeatureShape s = check_features(*f);
  const py::ssize_t n = s.n, d = s.d, k1 = d + 1;
  py::tuple out;
  CONVLOC_DISPATCH_FLOAT(*f, [&] {
    py::array_t<int32_t> keys({n, k1, d});
    py::array_t<scalar_t> weights({n, k1});
    py::array_t<uint8_t> ranks({n, k1});
    int32_t* pk = keys.mutable_data();
    scalar_t* pw = weights.mutable_data();
    uint8_t* pr = ranks.mutable_data();
    {
      ReleaseGil nogil;
      lattice_simplices_cpu(f->ptr<scalar_t>(), s.n, s.d, vectorised, pk, pw, pr);
    }
    out = py::make_tuple(keys, weights, ranks);
  });
  return out;
}

}  // namespace

void bind_lattice(py::module_& m) {
  py::class_<LatticeBatch>(m, "PermutohedralLattice",
                           "B permutohedral lattices built from features [B, N, d] (or one from [N, d]).")
      .def(py::init(&py_lattice_batch), arg("features"))
      .def("filter", &py_lattice_filter, arg("values"), arg("out"), py::kw_only(), arg("transpose") = false,
           "out ≈ Gaussian filtering of values [B?, N, C] (transpose: the exact adjoint).")
      .def("diagonal", &py_lattice_diagonal, arg("out"), "out[b, i] = the lattice's own weight of point i.")
      .def("structure", &lattice_structure, arg("item") = 0,
           "Item's simplex offsets/weights per point, blur neighbours per vertex, amplitude (copies).")
      .def_property_readonly("batch", &LatticeBatch::batch)
      .def_property_readonly("batched", &LatticeBatch::batched)
      .def_property_readonly("num_points", &LatticeBatch::num_points)
      .def_property_readonly("dim", &LatticeBatch::dim)
      .def_property_readonly("dtype", [](const LatticeBatch& s) { return s.is_double() ? "float64" : "float32"; })
      .def_property_readonly("num_vertices", &LatticeBatch::num_vertices)
      .def_property_readonly("memory_bytes", &LatticeBatch::memory_bytes);
  m.def("permutohedral_filter", &py_permutohedral_filter, arg("features"), arg("values"), arg("out"), py::kw_only(),
        arg("transpose") = false, arg("exclude_self") = false, arg("stream") = 0,
        "Builds the lattice of features [B?, N, d] and filters values [B?, N, C] into out "
        "(exclude_self: minus each point's own lattice weight).");
  m.attr("LATTICE_MAX_DIM") = kLatticeMaxDim;
  m.def("lattice_max_feature_sum", &lattice_max_feature_sum, arg("d"),
        "The most sum_k |f_k| may be for every point of d features to fit the lattice.");
  m.def("_lattice_simplices", &py_lattice_simplices, arg("features"), arg("vectorised"),
        "Test hook: (keys, weights, ranks) of features [N, d], vectorised as the build or by lattice_simplex.");
}

}  // namespace convloc
