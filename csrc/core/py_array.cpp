#include "core/py_array.h"

#include <cstring>

#include "core/dlpack.h"

namespace convloc {
namespace {

DType dtype_from_format(const std::string& f, py::ssize_t itemsize) {
  char c = f.empty() ? '?' : f.back();  // skip byte-order prefixes like '<' or '='
  switch (c) {
    case 'f':
      return itemsize == 4 ? DType::Float32 : DType::Other;
    case 'd':
      return itemsize == 8 ? DType::Float64 : DType::Other;
    case 'e':
      return DType::Float16;
    case 'q':
    case 'l':
      return itemsize == 8 ? DType::Int64 : itemsize == 4 ? DType::Int32 : DType::Other;
    case 'i':
      return itemsize == 4 ? DType::Int32 : DType::Other;
    case 'h':
      return DType::Int16;
    case 'b':
      return DType::Int8;
    case 'B':
      return DType::UInt8;
    case '?':
      return itemsize == 1 ? DType::Bool : DType::Other;
    default:
      return DType::Other;
  }
}

// Whether a buffer format's byte order is this machine's: no prefix, '@' or '=', or the '<' / '>' ('!') that names it.
bool native_byte_order(const char* format) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  const char foreign = '<';
#else
  const char foreign = '>';
#endif
  return !format || (format[0] != foreign && !(foreign == '>' && format[0] == '!'));
}

Array from_buffer(py::handle obj, const char* name, bool writable) {
  Py_buffer buf;
  const int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
  if (PyObject_GetBuffer(obj.ptr(), &buf, flags) != 0) {
    PyErr_Clear();
    if (writable) fail_value(name, ": expected a writable array, got a read-only one");
    fail_type(name, ": the object does not expose a strided buffer");
  }
  if (buf.itemsize > 1 && !native_byte_order(buf.format)) {
    const std::string format = buf.format;
    PyBuffer_Release(&buf);
    fail_type(name, ": expected an array in this machine's byte order, got format '", format,
              "' (byte-swapped; x.astype(x.dtype.newbyteorder('=')) converts it)");
  }
  Array a;
  a.view.name = name;
  a.view.data = buf.buf;
  a.view.readonly = buf.readonly != 0;
  a.view.dtype = dtype_from_format(buf.format ? buf.format : "B", buf.itemsize);
  for (int i = 0; i < buf.ndim; ++i) {
    a.view.shape.push_back(buf.shape[i]);
    if (buf.strides[i] % buf.itemsize != 0) {
      PyBuffer_Release(&buf);
      fail_value(name, ": strides are not a multiple of the item size");
    }
    a.view.strides.push_back(buf.strides[i] / buf.itemsize);
  }
  PyBuffer_Release(&buf);  // the exporting object itself keeps the memory alive
  a.owner = py::reinterpret_borrow<py::object>(obj);
  return a;
}

// DLPack 1.0 first: a versioned capsule, whose flags say whether the memory may be written. Producers of the
// earlier protocol refuse max_version (TypeError) and are asked again without it.
Array from_dlpack(py::handle obj, const char* name) {
  py::object capsule;
  try {
    capsule = obj.attr("__dlpack__")(py::arg("max_version") = py::make_tuple(1, 0));
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;
    capsule = obj.attr("__dlpack__")();
  }
  Array a;
  if (PyCapsule_IsValid(capsule.ptr(), "dltensor_versioned")) {
    auto* managed = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor_versioned"));
    if (managed->version.major != 1)
      fail_type(name, ": __dlpack__ gave DLPack ", managed->version.major, ".", managed->version.minor,
                " where 1.x was asked for");
    a.view = view_of(managed->dl_tensor, name, (managed->flags & kDLFlagReadOnly) != 0);
  } else if (PyCapsule_IsValid(capsule.ptr(), "dltensor")) {
    a.view = view_of(static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"))->dl_tensor, name);
  } else {
    fail_type(name, ": __dlpack__ did not return an unused DLPack capsule");
  }
  // The capsule stays unconsumed: its destructor calls the producer's deleter,
  // which releases the memory only after we have dropped the capsule.
  a.owner = capsule;
  return a;
}

// Whether obj says (through DLPack) that its memory is on a device: such an array may still claim the
// buffer protocol (CuPy's does), which only host memory can honour.
bool on_device(py::handle obj) {
  if (!py::hasattr(obj, "__dlpack_device__")) return false;
  const int type = py::cast<py::tuple>(obj.attr("__dlpack_device__")())[0].cast<int>();
  return type != kDLCPU && type != kDLCUDAHost;
}

Array make(py::handle obj, const char* name, bool writable, bool channels_last_ok = false) {
  if (obj.is_none()) fail_type(name, ": expected an array, got None");
  Array a = PyObject_CheckBuffer(obj.ptr()) && !on_device(obj) ? from_buffer(obj, name, writable)
            : py::hasattr(obj, "__dlpack__")
                ? from_dlpack(obj, name)
                : (fail_type(name, ": expected an array (NumPy, PyTorch, CuPy or any DLPack producer), got ",
                             std::string(py::str(py::type::of(obj).attr("__name__")))),
                   Array{});
  check_array(a.view, writable, channels_last_ok);
  return a;
}

}  // namespace

Array as_array(py::handle obj, const char* name) { return make(obj, name, false); }
Array as_output(py::handle obj, const char* name) { return make(obj, name, true); }
Array as_feature_map(py::handle obj, const char* name, bool writable) { return make(obj, name, writable, true); }
Array as_optional_array(py::handle obj, const char* name) {
  if (obj.is_none()) return Array{TensorView{}, py::none()};
  return make(obj, name, false);
}

}  // namespace convloc
