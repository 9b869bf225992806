// The GPU lattice, for CUDA code that filters one set of features many times (included from .cu files).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace convloc {

template <typename T>  // float or double
class CudaLattice {
 public:
  // features [n, d] on the device, divided by the standard deviations. Builds on `stream` and waits for the
  // vertex count. Throws ValueError for out-of-range or non-finite features.
  CudaLattice(const T* features, int64_t n, int d, void* stream);
  ~CudaLattice();
  CudaLattice(const CudaLattice&) = delete;
  CudaLattice& operator=(const CudaLattice&) = delete;
  // As PermutohedralLattice::filter (exclude_self: minus each point's own weight), on the build's stream.
  void filter(const T* in, T* out, int64_t channels, bool transpose, bool exclude_self);

 private:
  void build(const T* features, std::vector<void*>& build_only);
  void* alloc(int64_t bytes, std::vector<void*>& owner);
  void release(std::vector<void*>& blocks);
  template <typename U>
  U* get(int64_t count, std::vector<void*>& owner) {
    return static_cast<U*>(alloc(count * static_cast<int64_t>(sizeof(U)), owner));
  }

  cudaStream_t stream_;
  int64_t n_, vertices_ = 0;
  int d_;
  std::vector<void*> blocks_;  // the arrays below, freed in stream order with the lattice
  T* weights_ = nullptr;
  uint8_t* ranks_ = nullptr;
  int32_t *offset_ = nullptr, *blur_ = nullptr, *starts_ = nullptr, *splat_point_ = nullptr;
  T *splat_weight_ = nullptr, *self_weight_ = nullptr;
};

}  // namespace convloc
