// Macros and small helpers every kernel family uses.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define CONVLOC_HD __host__ __device__ __forceinline__
#else
#define CONVLOC_HD inline
#endif

// Portable SIMD: the hot loops are compiled for x86-64-v4 (AVX-512 with VL/BW/DQ), x86-64-v3 (AVX2,
// FMA) and baseline x86-64, and the best one is chosen at load time, so the wheel runs on any x86-64.
// CONVLOC_FMA_CLONES also fuses a * b + c into one instruction with one rounding, for kernels bound by
// their multiply-adds: the v4 and v3 clones fuse the same operations, so they compute the same bits;
// the baseline clone (CPUs before 2013) rounds twice.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__) && \
    !defined(__SANITIZE_ADDRESS__)
// CONVLOC_NO_AVX512 (CMake: -DCONVLOC_AVX512=OFF) leaves the AVX-512 code out: a build that runs
// the AVX2 clones on an AVX-512 machine, to test and time what CPUs without AVX-512 run.
#ifdef CONVLOC_NO_AVX512
#define CONVLOC_CLONE_TARGETS "arch=x86-64-v3", "default"
#else
#define CONVLOC_CLONE_TARGETS "arch=x86-64-v4", "arch=x86-64-v3", "default"
#define CONVLOC_HAS_WIDE 1
#endif
#define CONVLOC_SIMD_CLONES __attribute__((target_clones(CONVLOC_CLONE_TARGETS)))
#define CONVLOC_FMA_CLONES __attribute__((target_clones(CONVLOC_CLONE_TARGETS), optimize("fp-contract=fast")))
#endif
#ifndef CONVLOC_SIMD_CLONES
#define CONVLOC_SIMD_CLONES
#define CONVLOC_FMA_CLONES
#endif
// The 64-byte-vector version of a kernel (simd.h: kWideBytes), compiled for AVX-512 only and called
// only where wide_vectors() says the CPU has it.
#ifdef CONVLOC_HAS_WIDE
#define CONVLOC_WIDE_SIMD __attribute__((target("arch=x86-64-v4")))
#define CONVLOC_WIDE_FMA __attribute__((target("arch=x86-64-v4"), optimize("fp-contract=fast")))
#else
#define CONVLOC_WIDE_SIMD
#define CONVLOC_WIDE_FMA
#endif
// Helpers of SIMD-cloned functions must be inlined into each clone to get its instruction set.
#if defined(__GNUC__)
#define CONVLOC_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define CONVLOC_ALWAYS_INLINE inline
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

}  // namespace convloc
