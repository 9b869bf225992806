#include <cuda_runtime.h>

#include "core/cuda.h"
#include "core/cuda_runtime.h"

namespace convloc {

int cuda_runtime_version() {
  int v = 0;
  return cudaRuntimeGetVersion(&v) == cudaSuccess ? v : 0;
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

void cuda_copy_to_device(void* dst, const void* src, size_t bytes, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  CONVLOC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
  CONVLOC_CUDA_CHECK(cudaStreamSynchronize(s));  // src may go out of scope on return
}

}  // namespace convloc
