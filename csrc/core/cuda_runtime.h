// What the CUDA runtime says about this machine. Safe without a driver or GPU.
#pragma once

#include <cstddef>

namespace convloc {

#ifdef CONVLOC_WITH_CUDA
int cuda_runtime_version();  // e.g. 13000
int cuda_device_count();     // 0 without a driver or a GPU
// Copies host memory to the device in the stream's order and waits for it (src may go out of scope on return).
void cuda_copy_to_device(void* dst, const void* src, size_t bytes, void* stream);
#else
inline int cuda_runtime_version() { return 0; }
inline int cuda_device_count() { return 0; }
#endif

}  // namespace convloc
