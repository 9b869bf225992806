// convloc._C.ffi_targets(): the families' XLA FFI handlers as PyCapsules, which convloc._jax registers with
// jax.ffi.register_ffi_target. Compiled only when jaxlib's FFI headers were found at build time.
#include "core/ffi.h"

#include <pybind11/pybind11.h>

#include <vector>

namespace py = pybind11;

namespace convloc {

std::vector<ffi::Target> boxes_ffi_targets();
std::vector<ffi::Target> crf_ffi_targets();
std::vector<ffi::Target> deconv_ffi_targets();
std::vector<ffi::Target> lattice_ffi_targets();
std::vector<ffi::Target> proposals_ffi_targets();
std::vector<ffi::Target> roi_ffi_targets();

void bind_ffi(py::module_& m) {
  m.def(
      "ffi_targets",
      [] {
        py::list out;
        for (const auto& family : {boxes_ffi_targets(), crf_ffi_targets(), deconv_ffi_targets(), lattice_ffi_targets(),
                                   proposals_ffi_targets(), roi_ffi_targets()})
          for (const ffi::Target& t : family) {
            out.append(py::make_tuple(t.name, "cpu", py::capsule(reinterpret_cast<void*>(t.cpu))));
            if (t.cuda) out.append(py::make_tuple(t.name, "CUDA", py::capsule(reinterpret_cast<void*>(t.cuda))));
          }
        return out;
      },
      "[(target name, platform, handler capsule)] of the XLA FFI targets, for jax.ffi.register_ffi_target.");
}

}  // namespace convloc
