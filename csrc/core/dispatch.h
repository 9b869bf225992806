// Calls a templated body with scalar_t bound to the array's float type.
#pragma once

#include <utility>

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

// Runs the CPU or the CUDA variant of a kernel, by the array's device.
#ifdef CONVLOC_WITH_CUDA
#define CONVLOC_ON_DEVICE(view, cpu_call, cuda_call) ((view).is_cuda() ? (cuda_call) : (cpu_call))
#else
#define CONVLOC_ON_DEVICE(view, cpu_call, cuda_call) (cpu_call)
#endif

// The same within CONVLOC_DISPATCH_FLOAT_OR_HALF, the CUDA call given as its function and arguments:
// the CUDA kernels have float and double instances only, so for the half types that call is never
// compiled (the arguments go through a generic lambda, instantiated for the other types only), and
// check_float_or_half has refused CUDA half arrays before.
#ifdef CONVLOC_WITH_CUDA
#define CONVLOC_ON_DEVICE_OR_HALF(view, cpu_call, cuda_fn, ...)                          \
  ((view).is_cuda() ? ::convloc::unless_half<scalar_t, decltype(cpu_call)>(              \
                          [&](auto&&... args) { return cuda_fn(args...); }, __VA_ARGS__) \
                    : (cpu_call))

namespace convloc {
template <typename S, typename R, typename F, typename... Args>
R unless_half(F&& f, Args&&... args) {
  if constexpr (is_half_v<S>)
    fail_type("expected float32 or float64 for CUDA arrays here");
  else
    return f(std::forward<Args>(args)...);
}
}  // namespace convloc
#else
#define CONVLOC_ON_DEVICE_OR_HALF(view, cpu_call, cuda_fn, ...) (cpu_call)
#endif
