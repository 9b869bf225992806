// Macros and small helpers every kernel family uses.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define CONVLOC_HD __host__ __device__ __forceinline__
#else
#define CONVLOC_HD inline
#endif

// Helpers of the SIMD versions below must be inlined into each version to get its instruction set.
#if defined(__GNUC__) || defined(__clang__)
#define CONVLOC_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define CONVLOC_ALWAYS_INLINE inline
#endif

// Lets GCC fuse a * b + c into one instruction with one rounding in this function (the build says
// -ffp-contract=off). GCC 11 pairs the products of a * b + c * d differently in a kernel's 32- and
// 64-byte versions (whose results then differ in the last bits), and Clang contracts per source
// expression, not per function: their builds leave these unfused, like the baseline x86-64 version.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define CONVLOC_CONTRACT __attribute__((optimize("fp-contract=fast")))
#else
#define CONVLOC_CONTRACT
#endif

// Portable SIMD: the hot loops are compiled for x86-64-v4 (AVX-512 with VL/BW/DQ), x86-64-v3 (AVX2,
// FMA) and baseline x86-64, and each call runs the best one this CPU has (simd_level()), so the wheel
// runs on any x86-64. CONVLOC_SIMD_FN(ret, name, (params), { body }) defines these versions of
// `ret name(params) { body }` and `name`, which calls the right one; elsewhere, the function once. The
// body hands no vectors to other functions, inlined or not (Clang refuses vector arguments between
// functions of different targets): it calls an inlined helper with the pointers.
// CONVLOC_FMA_FN also fuses a * b + c (CONVLOC_CONTRACT), for kernels bound by their multiply-adds: the
// v4 and v3 versions fuse the same operations, so they compute the same bits; the baseline version
// (CPUs before 2013) rounds twice. The choice is a test at each call rather than target_clones: GCC 11
// finds no dispatcher for the x86-64-v3/v4 levels, Clang 14 makes one that tests the CPU's vendor
// instead, and Mach-O and COFF have no ifunc to dispatch with.
#if defined(__x86_64__) && !defined(__CUDACC__) && !defined(__SANITIZE_ADDRESS__)
#define CONVLOC_X86_DISPATCH 1
#define CONVLOC_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
// CONVLOC_NO_AVX512 (CMake: -DCONVLOC_AVX512=OFF) leaves the AVX-512 code out: a build that runs
// the AVX2 versions on an AVX-512 machine, to test and time what CPUs without AVX-512 run.
#ifdef CONVLOC_NO_AVX512
#define CONVLOC_V4_VERSION(attrs, ret, name, params, ...) constexpr auto name##_v4 = name##_v3;
#else
#define CONVLOC_HAS_WIDE 1
#define CONVLOC_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#define CONVLOC_V4_VERSION(attrs, ret, name, params, ...) attrs CONVLOC_TARGET_V4 ret name##_v4 params __VA_ARGS__
#endif
// clang-format off
#define CONVLOC_VERSIONS(attrs, ret, name, params, ...)                         \
  attrs CONVLOC_TARGET_V3 ret name##_v3 params __VA_ARGS__                      \
  CONVLOC_V4_VERSION(attrs, ret, name, params, __VA_ARGS__)                     \
  attrs ret name##_v1 params __VA_ARGS__                                        \
  constexpr auto name = &SimdVersions<name##_v4, name##_v3, name##_v1>::call;
// clang-format on
#else
#define CONVLOC_VERSIONS(attrs, ret, name, params, ...) attrs ret name params __VA_ARGS__
#endif
#define CONVLOC_SIMD_FN(ret, name, params, ...) CONVLOC_VERSIONS(, ret, name, params, __VA_ARGS__)
#define CONVLOC_FMA_FN(ret, name, params, ...) CONVLOC_VERSIONS(CONVLOC_CONTRACT, ret, name, params, __VA_ARGS__)
// The 64-byte-vector version of a kernel (simd.h: kWideBytes), compiled for AVX-512 only and called
// only where wide_vectors() says the CPU has it.
#ifdef CONVLOC_HAS_WIDE
#define CONVLOC_WIDE_SIMD CONVLOC_TARGET_V4
#define CONVLOC_WIDE_FMA CONVLOC_CONTRACT CONVLOC_TARGET_V4
#else
#define CONVLOC_WIDE_SIMD
#define CONVLOC_WIDE_FMA
#endif

namespace convloc {

template <typename T>
CONVLOC_HD T min_of(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
CONVLOC_HD T max_of(T a, T b) {
  return a < b ? b : a;
}

#ifdef CONVLOC_X86_DISPATCH
// The x86-64 level whose versions run on this CPU: 4 (x86-64-v4; 3 in a build without AVX-512 code), 3
// (x86-64-v3) or 1 (baseline). From CPUID and XGETBV, once (core/cpu.cpp).
int detect_simd_level();
inline int simd_level() {
  static const int level = detect_simd_level();
  return level;
}

template <auto V4, auto V3, auto V1>
struct SimdVersions;
template <typename R, typename... A, R (*V4)(A...), R (*V3)(A...), R (*V1)(A...)>
struct SimdVersions<V4, V3, V1> {
  static R call(A... a) {
    const int level = simd_level();
    return level >= 4 ? V4(a...) : level >= 3 ? V3(a...) : V1(a...);
  }
};
#endif

}  // namespace convloc
