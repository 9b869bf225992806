// Macros and small helpers every kernel family uses.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define CONVLOC_HD __host__ __device__ __forceinline__
#else
#define CONVLOC_HD inline
#endif

// Portable SIMD: the hot loops are compiled for AVX-512, AVX2 and baseline
// x86-64 and the best one is chosen at load time, so the wheel runs on any x86-64.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__) && !defined(__SANITIZE_ADDRESS__)
#define CONVLOC_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CONVLOC_SIMD_CLONES
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
