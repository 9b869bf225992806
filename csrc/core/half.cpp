#include "core/half.h"

#include "core/common.h"

#ifdef CONVLOC_X86_DISPATCH
#include <immintrin.h>
#endif

namespace convloc {
namespace {

template <typename S, typename D>
CONVLOC_ALWAYS_INLINE void convert_run(const S* __restrict src, D* __restrict dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

// Versions per x86-64 level (the bit arithmetic of half.h vectorises at each one's width).
CONVLOC_SIMD_FN(void, widen_f16, (const Half* src, float* dst, int64_t n), { convert_run(src, dst, n); })
CONVLOC_SIMD_FN(void, narrow_f16, (const float* src, Half* dst, int64_t n), { convert_run(src, dst, n); })
CONVLOC_SIMD_FN(void, widen_bf16, (const BFloat16* src, float* dst, int64_t n), { convert_run(src, dst, n); })
CONVLOC_SIMD_FN(void, narrow_bf16, (const float* src, BFloat16* dst, int64_t n), { convert_run(src, dst, n); })

#ifdef CONVLOC_X86_DISPATCH
// F16C, part of x86-64-v3: eight values an instruction, rounding to nearest even as to_float16.
CONVLOC_TARGET_V3 void widen_f16c(const Half* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  convert_run(src + i, dst + i, n - i);
}
CONVLOC_TARGET_V3 void narrow_f16c(const float* src, Half* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  convert_run(src + i, dst + i, n - i);
}
#endif

}  // namespace

void convert(const Half* src, float* dst, int64_t n) {
#ifdef CONVLOC_X86_DISPATCH
  if (simd_level() >= 3) return widen_f16c(src, dst, n);
#endif
  widen_f16(src, dst, n);
}
void convert(const float* src, Half* dst, int64_t n) {
#ifdef CONVLOC_X86_DISPATCH
  if (simd_level() >= 3) return narrow_f16c(src, dst, n);
#endif
  narrow_f16(src, dst, n);
}
void convert(const BFloat16* src, float* dst, int64_t n) { widen_bf16(src, dst, n); }
void convert(const float* src, BFloat16* dst, int64_t n) { narrow_bf16(src, dst, n); }

}  // namespace convloc
