// convloc._C: one pybind11 module; each family binds itself in <family>/<family>_binding.cpp.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "core/check.h"
#include "core/cuda_runtime.h"
#include "core/parallel.h"
#include "core/py_gil.h"
#include "core/simd.h"
#include "core/workspace.h"

namespace py = pybind11;

namespace convloc {
void bind_boxes(py::module_& m);
void bind_proposals(py::module_& m);
void bind_deconv(py::module_& m);
void bind_crf(py::module_& m);
void bind_lattice(py::module_& m);
void bind_roi(py::module_& m);
#ifdef CONVLOC_WITH_XLA_FFI
void bind_ffi(py::module_& m);
#endif
}  // namespace convloc

namespace {

py::dict build_info() {
  py::dict d;
  d["version"] = CONVLOC_VERSION;
#ifdef CONVLOC_WITH_CUDA
  d["compiled_with_cuda"] = true;
#else
  d["compiled_with_cuda"] = false;
#endif
  d["cuda_architectures"] = std::string(CONVLOC_CUDA_ARCHS);  // empty without CUDA
  d["cuda_runtime_version"] = convloc::cuda_runtime_version();
  d["cuda_device_count"] = convloc::cuda_device_count();
  d["num_threads"] = convloc::get_num_threads();
  // The XLA FFI handlers of convloc._jax, and the jaxlib whose headers they were compiled with ("" without them).
#ifdef CONVLOC_WITH_XLA_FFI
  d["xla_ffi"] = std::string(CONVLOC_JAXLIB_VERSION);
#else
  d["xla_ffi"] = std::string();
#endif
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#else
  d["compiler"] = std::string("unknown");
#endif
  py::list simd;
#ifdef CONVLOC_X86_DISPATCH
  // Hot loops come in x86-64-v4 / v3 / baseline versions (CONVLOC_SIMD_FN); the levels this CPU runs
  // (v4 not in a build without AVX-512 code).
  if (convloc::simd_level() >= 4) simd.append("x86-64-v4");
  if (convloc::simd_level() >= 3) simd.append("x86-64-v3");
  simd.append("x86-64");
#endif
  d["simd"] = simd;
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "convloc's compiled kernels. Use the functions in convloc.ops instead of calling these.";
  convloc::remember_main_thread();
  py::register_exception<convloc::ValueError>(m, "ValueError", PyExc_ValueError);
  py::register_exception<convloc::TypeError>(m, "TypeError", PyExc_TypeError);
  m.def("info", &build_info, "What was compiled and what is usable.");
  m.def("get_num_threads", &convloc::get_num_threads);
  m.def("set_num_threads", &convloc::set_num_threads, py::arg("n"),
        "n <= 0: all cores; at most max_threads() (kMaxThreadsPerCore per hardware thread).");
  m.def("max_threads", &convloc::max_threads);
  m.def("empty_cache", &convloc::empty_workspace_cache, "Frees the cached scratch blocks; returns the bytes freed.");
  m.def("cached_bytes", &convloc::workspace_cached_bytes, "Bytes of scratch kept for reuse by later calls.");
  m.def("_hold_workspace_cache_lock", &convloc::hold_workspace_cache_lock, py::arg("seconds"),
        py::call_guard<convloc::ReleaseGil>(), "Test hook: holds the scratch cache's lock for `seconds`.");
  m.def(
      "_narrow_vectors", [](bool on) { convloc::narrow_vectors_forced() = on; }, py::arg("on"),
      "Test hook: run the 32-byte-vector kernels even where the CPU has AVX-512.");
  m.def("_wide_vectors", &convloc::wide_vectors, "Whether the 64-byte-vector kernels run.");
  convloc::bind_boxes(m);
  convloc::bind_proposals(m);
  convloc::bind_deconv(m);
  convloc::bind_crf(m);
  convloc::bind_lattice(m);
  convloc::bind_roi(m);
#ifdef CONVLOC_WITH_XLA_FFI
  convloc::bind_ffi(m);
#endif
}
