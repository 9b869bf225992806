// A borrowed view of an array from any framework (NumPy buffer, DLPack capsule).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace convloc {

enum class DType { Float32, Float64, Float16, BFloat16, Int64, Int32, Int16, Int8, UInt8, Bool, Other };
enum class DeviceType { CPU, CUDA, Other };

const char* dtype_name(DType d);

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::Other;
  DeviceType device = DeviceType::CPU;
  int device_id = 0;
  bool readonly = false;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements
  std::string name;              // the argument's name, for error messages

  int64_t dim() const { return static_cast<int64_t>(shape.size()); }
  int64_t size(int64_t i) const { return shape.at(i < 0 ? i + dim() : i); }
  int64_t numel() const;
  bool is_contiguous() const;
  bool is_channels_last() const;  // 4-D [N, C, H, W] laid out as [N, H, W, C] (torch's channels_last)
  bool is_cuda() const { return device == DeviceType::CUDA; }
  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data);
  }
  std::string shape_str() const;
  std::string device_str() const;
};

}  // namespace convloc
