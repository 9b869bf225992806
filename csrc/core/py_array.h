// Python arrays as TensorViews, for the families' bindings (<family>/<family>_binding.cpp): NumPy
// through the buffer protocol, everything else (torch, CuPy, JAX, ...) through DLPack. No copies are made.
#pragma once

#include <pybind11/pybind11.h>

#include "core/check.h"
#include "core/tensor.h"

namespace convloc {

namespace py = pybind11;

// A view plus the Python object that keeps its memory alive. Destroy with the GIL held.
struct Array {
  TensorView view;
  py::object owner;
  const TensorView* operator->() const { return &view; }
  const TensorView& operator*() const { return view; }
};

// `obj` must be C-contiguous and on a CPU or (when compiled with it) CUDA device.
Array as_array(py::handle obj, const char* name);
// Same, for an output: also writable.
Array as_output(py::handle obj, const char* name);
// A feature map [N, C, H, W], C-contiguous or channels-last (view.is_channels_last()), on a CPU or CUDA
// device (writable: an output): kernels that handle both layouts take either without a copy.
Array as_feature_map(py::handle obj, const char* name, bool writable = false);
// None gives an empty Array (view.data == nullptr, owner is None).
Array as_optional_array(py::handle obj, const char* name);

}  // namespace convloc
