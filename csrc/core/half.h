// float16 and bfloat16 as stored in arrays (CPU kernels). Kernels compute in float32 and store back:
// a value converts to float exactly, and a float converts back rounding to nearest, ties to even (as
// torch's and NumPy's casts do), so a kernel over half arrays gives the float32 kernel's result on the
// same values, rounded once. Portable bit arithmetic without branches, so loops over these vectorise
// (and GCC 11 and Clang 14, which lack _Float16 on x86, build it).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace convloc {

namespace half_bits {

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// yes where c, else no, as a mask rather than a branch: with trapping floating-point math (the
// default), a compiler keeps a ternary between float results as a branch, and the loop scalar.
inline uint32_t pick(bool c, uint32_t yes, uint32_t no) {
  const uint32_t m = 0u - uint32_t(c);
  return (yes & m) | (no & ~m);
}

inline float from_float16(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, em = h & 0x7fffu;
  const uint32_t normal = (em << 13) + ((127u - 15u) << 23);
  const uint32_t special = 0x7f800000u | ((em & 0x3ffu) << 13);                    // inf, NaN (payload kept)
  const uint32_t subnormal = bits_of(static_cast<float>(int32_t(em)) * 0x1p-24f);  // exact: em < 2^10
  return float_of(sign | pick(em >= 0x7c00u, special, pick(em >= 0x0400u, normal, subnormal)));
}

inline uint16_t to_float16(float f) {
  const uint32_t u = bits_of(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  // Normal results: drop 13 mantissa bits rounding to nearest even (a carry may reach the exponent,
  // and from the largest finite value, infinity).
  const uint32_t normal = (a + 0xfffu + ((a >> 13) & 1u) - ((127u - 15u) << 23)) >> 13;
  // Below 2^-14: multiples of 2^-24; adding 0.5 (whose last bit is 2^-24) rounds to one in hardware.
  const uint32_t subnormal = bits_of(float_of(a) + 0.5f) - bits_of(0.5f);
  const uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
  const uint32_t h =
      pick(a > 0x7f800000u, nan, pick(a >= 0x477ff000u, 0x7c00u, pick(a >= 0x38800000u, normal, subnormal)));
  return static_cast<uint16_t>(sign | h);
}

inline float from_bfloat16(uint16_t b) { return float_of(uint32_t(b) << 16); }

inline uint16_t to_bfloat16(float f) {
  const uint32_t u = bits_of(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(pick((u & 0x7fffffffu) > 0x7f800000u, (u >> 16) | 0x40u, rounded));  // NaN: quiet
}

}  // namespace half_bits

// Storage types: a float converts in and out implicitly, so copies between arrays of these and of
// float (kernels' transposes, gathers) convert on the way.
struct Half {
  uint16_t bits;
  Half() = default;
  Half(float f) : bits(half_bits::to_float16(f)) {}  // NOLINT: implicit on purpose
  operator float() const { return half_bits::from_float16(bits); }
};
struct BFloat16 {
  uint16_t bits;
  BFloat16() = default;
  BFloat16(float f) : bits(half_bits::to_bfloat16(f)) {}  // NOLINT: implicit on purpose
  operator float() const { return half_bits::from_bfloat16(bits); }
};

template <typename S>
constexpr bool is_half_v = std::is_same_v<S, Half> || std::is_same_v<S, BFloat16>;

// The type a kernel computes in for arrays of S: float for the half types, S itself otherwise.
template <typename S>
using compute_t = std::conditional_t<is_half_v<S>, float, S>;

// dst[i] = src[i] for i < n, converting: for the half types, the widest vectors this CPU has
// (core/half.cpp; on x86 with F16C, float16 by its conversion instructions, which round alike).
template <typename S, typename D>
void convert(const S* src, D* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}
void convert(const Half* src, float* dst, int64_t n);
void convert(const float* src, Half* dst, int64_t n);
void convert(const BFloat16* src, float* dst, int64_t n);
void convert(const float* src, BFloat16* dst, int64_t n);

}  // namespace convloc
