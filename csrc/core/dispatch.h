// Calls a templated body with scalar_t bound to the array's float type.
#pragma once

#include "core/check.h"

#define CONVLOC_DISPATCH_FLOAT(view, ...)            \
  [&] {                                              \
    ::convloc::check_float(view);                    \
    if ((view).dtype == ::convloc::DType::Float32) { \
      using scalar_t = float;                        \
      return __VA_ARGS__();                          \
    }                                                \
    using scalar_t = double;                         \
    return __VA_ARGS__();                            \
  }()

// Runs the CPU or the CUDA variant of a kernel, by the array's device.
#ifdef CONVLOC_WITH_CUDA
#define CONVLOC_ON_DEVICE(view, cpu_call, cuda_call) ((view).is_cuda() ? (cuda_call) : (cpu_call))
#else
#define CONVLOC_ON_DEVICE(view, cpu_call, cuda_call) (cpu_call)
#endif
