// Calls a templated body with scalar_t bound to the array's float type.
#pragma once

#include "core/check.h"
#include "core/half.h"

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

// The same, scalar_t also Half or BFloat16 (core/half.h) for CPU arrays: the CUDA kernels are compiled
// for float32 and float64 (the Python kernels layer hands them float32 copies of half arrays).
#define CONVLOC_DISPATCH_FLOAT_OR_HALF(view, ...) \
  [&] {                                           \
    ::convloc::check_float_or_half(view);         \
    switch ((view).dtype) {                       \
      case ::convloc::DType::Float32: {           \
        using scalar_t = float;                   \
        return __VA_ARGS__();                     \
      }                                           \
      case ::convloc::DType::Float16: {           \
        using scalar_t = ::convloc::Half;         \
        return __VA_ARGS__();                     \
      }                                           \
      case ::convloc::DType::BFloat16: {          \
        using scalar_t = ::convloc::BFloat16;     \
        return __VA_ARGS__();                     \
      }                                           \
      default: {                                  \
        using scalar_t = double;                  \
        return __VA_ARGS__();                     \
      }                                           \
    }                                             \
  }()

// Runs the CPU or the CUDA variant of a kernel, by the array's device. Within
// CONVLOC_DISPATCH_FLOAT_OR_HALF, CONVLOC_ON_DEVICE_OR_HALF leaves the CUDA call out for the half types
// (a discarded statement: no CUDA instance of them is needed).
#ifdef CONVLOC_WITH_CUDA
#define CONVLOC_ON_DEVICE(view, cpu_call, cuda_call) ((view).is_cuda() ? (cuda_call) : (cpu_call))
#define CONVLOC_ON_DEVICE_OR_HALF(view, cpu_call, cuda_call) \
  [&] {                                                      \
    if constexpr (::convloc::is_half_v<scalar_t>)            \
      return (cpu_call);                                     \
    else                                                     \
      return CONVLOC_ON_DEVICE(view, cpu_call, cuda_call);   \
  }()
#else
#define CONVLOC_ON_DEVICE(view, cpu_call, cuda_call) (cpu_call)
#define CONVLOC_ON_DEVICE_OR_HALF(view, cpu_call, cuda_call) (cpu_call)
#endif
