// Helpers for the CUDA kernels (included only from .cu files).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/check.h"

namespace convloc {

#define CONVLOC_CUDA_CHECK(expr)                                                                         \
  do {                                                                                                   \
    cudaError_t err_ = (expr);                                                                           \
    if (err_ != cudaSuccess)                                                                             \
      throw std::runtime_error(::convloc::cat("CUDA error in ", #expr, ": ", cudaGetErrorString(err_))); \
  } while (0)

constexpr int kThreadsPerBlock = 256;

inline unsigned blocks_for(int64_t n, int threads = kThreadsPerBlock) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

// Grid-stride loop over [0, n).
#define CONVLOC_CUDA_LOOP(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)blockDim.x * gridDim.x)

// Makes `device` current for the lifetime of the guard.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    CONVLOC_CUDA_CHECK(cudaGetDevice(&previous_));
    if (device != previous_) CONVLOC_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

}  // namespace convloc
