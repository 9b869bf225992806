// What the CUDA runtime says about this machine. Safe without a driver or GPU.
#pragma once

namespace convloc {

#ifdef CONVLOC_WITH_CUDA
int cuda_runtime_version();  // e.g. 13000
int cuda_device_count();     // 0 without a driver or a GPU
#else
inline int cuda_runtime_version() { return 0; }
inline int cuda_device_count() { return 0; }
#endif

}  // namespace convloc
