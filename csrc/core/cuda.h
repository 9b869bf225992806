// Helpers for the CUDA kernels (included only from .cu files).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
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

// Validation on the device: launch(flag) starts a kernel that sets *flag = 1 on any bad element;
// returns true when none did. Synchronises the stream (the answer is needed on the host).
template <typename Launch>
bool cuda_none_flagged(cudaStream_t stream, Launch launch) {
  int* flag = nullptr;
  CONVLOC_CUDA_CHECK(cudaMallocAsync(&flag, sizeof(int), stream));
  CONVLOC_CUDA_CHECK(cudaMemsetAsync(flag, 0, sizeof(int), stream));
  launch(flag);
  CONVLOC_CUDA_CHECK(cudaGetLastError());
  int flagged = 0;
  CONVLOC_CUDA_CHECK(cudaMemcpyAsync(&flagged, flag, sizeof(int), cudaMemcpyDeviceToHost, stream));
  CONVLOC_CUDA_CHECK(cudaFreeAsync(flag, stream));
  CONVLOC_CUDA_CHECK(cudaStreamSynchronize(stream));
  return flagged == 0;
}

// Temporary storage for thrust algorithms, taken in stream order: thrust's default, cudaMalloc, would
// synchronise the device on every call. Use as thrust::cuda::par(StreamAllocator{s}).on(s).
struct StreamAllocator {
  using value_type = char;
  cudaStream_t stream;
  char* allocate(std::ptrdiff_t bytes) {
    void* p = nullptr;
    CONVLOC_CUDA_CHECK(cudaMallocAsync(&p, static_cast<size_t>(bytes), stream));
    return static_cast<char*>(p);
  }
  void deallocate(char* p, size_t) { cudaFreeAsync(p, stream); }
};

// count elements of device scratch, taken and freed in stream order.
template <typename U>
struct StreamScratch {
  U* ptr = nullptr;
  cudaStream_t stream;
  StreamScratch(int64_t count, cudaStream_t s) : stream(s) {
    CONVLOC_CUDA_CHECK(cudaMallocAsync(&ptr, sizeof(U) * (count > 0 ? count : 1), s));
  }
  ~StreamScratch() { cudaFreeAsync(ptr, stream); }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
};

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
