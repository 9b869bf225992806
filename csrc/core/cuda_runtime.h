// What the CUDA runtime says about this machine. Safe without a driver or GPU.
#pragma once

namespace convloc {

int cuda_runtime_version();  // e.g. 13000; 0 when built without CUDA
int cuda_device_count();     // 0 without a driver, a GPU, or CUDA support

}  // namespace convloc
