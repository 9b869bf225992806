#include "core/dlpack.h"

namespace convloc {
namespace {

DType dtype_of(DLDataType t) {
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

DeviceType device_of(DLDevice d) {
  switch (d.device_type) {
    case kDLCPU:
    case kDLCUDAHost:
      return DeviceType::CPU;
    case kDLCUDA:
    case kDLCUDAManaged:
      return DeviceType::CUDA;
    default:
      return DeviceType::Other;
  }
}

}  // namespace

TensorView view_of(const DLTensor& t, const char* name, bool readonly) {
  TensorView v;
  v.name = name;
  v.data = t.data ? static_cast<char*>(t.data) + t.byte_offset : nullptr;
  v.dtype = dtype_of(t.dtype);
  v.device = device_of(t.device);
  v.device_id = t.device.device_id;
  v.readonly = readonly;
  const int ndim = t.ndim > 0 ? t.ndim : 0;
  v.shape.assign(t.shape, t.shape + ndim);
  v.strides.resize(ndim);
  int64_t expected = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    v.strides[i] = t.strides ? t.strides[i] : expected;
    expected *= t.shape[i];
  }
  return v;
}

}  // namespace convloc
