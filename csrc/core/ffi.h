// XLA FFI handlers (csrc/<family>/<family>_ffi.cpp) as thin layers over the families' entry points
// (<family>_ops.h): XLA's buffers become TensorViews, vmap's leading batch dimensions a loop over the entry
// point, and convloc's exceptions FFI errors with the same message. Compiled only when jaxlib's FFI headers are
// found at build time (CMakeLists.txt).
#pragma once

#include <xla/ffi/api/ffi.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "core/check.h"
#include "core/tensor.h"

namespace convloc::ffi {

namespace xf = ::xla::ffi;
using Ret = xf::Result<xf::AnyBuffer>;
template <typename T>
using Span = xf::Span<const T>;

// Where a handler runs: the CPU, or a CUDA device on XLA's stream.
struct Place {
  DeviceType device = DeviceType::CPU;
  void* stream = nullptr;
};

// One buffer of a call and the rank its entry point takes: dimensions in front of those are vmap's.
struct Operand {
  void* data;
  DType dtype;
  int64_t item_bytes;
  std::vector<int64_t> dims;
  int rank;
  const char* name;
};
Operand arg(const xf::AnyBuffer& buffer, int rank, const char* name);
Operand ret(Ret buffer, int rank, const char* name);

// Calls fn(views) once per item of the batch dimensions that vmap (vmap_method="expand_dims") put in front of the
// entry point's own: operands[0] is an output and carries them in full; each other operand carries each of them in
// full or as 1 (one array shared by every item). views[i] is operand i's item, named, on the place's device.
void for_each_item(const Place& place, const std::vector<Operand>& operands,
                   const std::function<void(const std::vector<TensorView>&)>& fn);

// Runs fn: convloc's ValueError and TypeError become INVALID_ARGUMENT, other exceptions INTERNAL, with their message.
xf::Error guarded(const std::function<void()>& fn) noexcept;

// out (an int64 scalar, device memory on CUDA) = value, in the place's stream order.
void write_int64(const TensorView& out, int64_t value, const Place& place);

// A target as registered with jax.ffi.register_ffi_target: its CPU handler and its CUDA one (nullptr where there is
// none: a CPU-only op or a build without CUDA).
struct Target {
  const char* name;
  XLA_FFI_Handler* cpu;
  XLA_FFI_Handler* cuda;
};

}  // namespace convloc::ffi

// The Target of handlers defined with CONVLOC_FFI_HANDLER(name, ...) / CONVLOC_FFI_CPU_HANDLER(name, ...).
#ifdef CONVLOC_WITH_CUDA
#define CONVLOC_FFI_TARGET(name) \
  ::convloc::ffi::Target { "convloc_" #name, convloc_ffi_##name##_cpu, convloc_ffi_##name##_cuda }
#else
#define CONVLOC_FFI_TARGET(name) CONVLOC_FFI_CPU_TARGET(name)
#endif
#define CONVLOC_FFI_CPU_TARGET(name) \
  ::convloc::ffi::Target { "convloc_" #name, convloc_ffi_##name##_cpu, nullptr }

// Defines the handler symbols convloc_ffi_<name>_cpu and (in a CUDA build) convloc_ffi_<name>_cuda, which decode a
// call as `binding` says (a chain of .Arg, .Attr, .Ret, ...) and pass the values to impl(Place, ...).
#define CONVLOC_FFI_CPU_HANDLER(name, impl, binding)                                                 \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(                                                                     \
      convloc_ffi_##name##_cpu, [](auto... args) { return impl(::convloc::ffi::Place{}, args...); }, \
      ::xla::ffi::Ffi::Bind() binding)
#ifdef CONVLOC_WITH_CUDA
#define CONVLOC_FFI_HANDLER(name, impl, binding)                                          \
  CONVLOC_FFI_CPU_HANDLER(name, impl, binding);                                           \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(                                                          \
      convloc_ffi_##name##_cuda,                                                          \
      [](void* stream, auto... args) {                                                    \
        return impl(::convloc::ffi::Place{::convloc::DeviceType::CUDA, stream}, args...); \
      },                                                                                  \
      ::xla::ffi::Ffi::Bind().Ctx<::xla::ffi::PlatformStream<void*>>() binding)
#else
#define CONVLOC_FFI_HANDLER(name, impl, binding) CONVLOC_FFI_CPU_HANDLER(name, impl, binding)
#endif
