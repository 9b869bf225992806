#include "core/py_array.h"

#include <cstring>

namespace convloc {
namespace {

// The DLPack ABI (v0.8, unversioned capsule "dltensor"), declared here for reading.
struct DLDevice {
  int32_t device_type;
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
enum { kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4, kDLBool = 6 };
enum { kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3, kDLCUDAManaged = 13 };

DType dtype_from_dlpack(DLDataType t) {
  if (t.lanes != 1) return DType::Other;
  switch (t.code) {
    case kDLFloat:
      return t.bits == 32   ? DType::Float32
             : t.bits == 64 ? DType::Float64
             : t.bits == 16 ? DType::Float16
                            : DType::Other;
    case kDLBfloat:
      return t.bits == 16 ? DType::BFloat16 : DType::Other;
    case kDLInt:
      return t.bits == 64   ? DType::Int64
             : t.bits == 32 ? DType::Int32
             : t.bits == 16 ? DType::Int16
             : t.bits == 8  ? DType::Int8
                            : DType::Other;
    case kDLUInt:
      return t.bits == 8 ? DType::UInt8 : DType::Other;
    case kDLBool:
      return t.bits == 8 ? DType::Bool : DType::Other;
    default:
      return DType::Other;
  }
}

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

Array from_buffer(py::handle obj, const char* name, bool writable) {
  Py_buffer buf;
  const int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
  if (PyObject_GetBuffer(obj.ptr(), &buf, flags) != 0) {
    PyErr_Clear();
    if (writable) fail_value(name, ": expected a writable array, got a read-only one");
    fail_type(name, ": the object does not expose a strided buffer");
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

Array from_dlpack(py::handle obj, const char* name) {
  py::object capsule = obj.attr("__dlpack__")();
  if (!PyCapsule_IsValid(capsule.ptr(), "dltensor"))
    fail_type(name, ": __dlpack__ did not return an unused DLPack capsule");
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
  const DLTensor& t = managed->dl_tensor;
  Array a;
  a.view.name = name;
  a.view.data = static_cast<char*>(t.data) + t.byte_offset;
  a.view.dtype = dtype_from_dlpack(t.dtype);
  switch (t.device.device_type) {
    case kDLCPU:
    case kDLCUDAHost:
      a.view.device = DeviceType::CPU;
      break;
    case kDLCUDA:
    case kDLCUDAManaged:
      a.view.device = DeviceType::CUDA;
      break;
    default:
      a.view.device = DeviceType::Other;
  }
  a.view.device_id = t.device.device_id;
  int64_t expected = 1;
  a.view.shape.assign(t.shape, t.shape + t.ndim);
  a.view.strides.resize(t.ndim);
  for (int i = t.ndim - 1; i >= 0; --i) {
    a.view.strides[i] = t.strides ? t.strides[i] : expected;
    expected *= t.shape[i];
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
  check_cpu_or_cuda(a.view);
  for (int64_t s : a.view.shape)
    if (s < 0) fail_value(name, ": negative size in shape ", a.view.shape_str());
  if (writable) check_writable(a.view);
  if (!(channels_last_ok && a.view.is_channels_last())) check_contiguous(a.view);
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
