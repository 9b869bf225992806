// GCC/Clang vector extensions shared by the CPU kernels. Plain loops over these types compile to
// each SIMD clone's widest instructions (CONVLOC_SIMD_CLONES); every operation works lane by lane,
// so all clones compute the same bits. The vectors never cross a non-inlined call (hence
// -Wno-psabi: GCC's note on the vector calling convention does not apply).
#pragma once

#include <array>
#include <cstring>

#include "core/common.h"

namespace convloc {

// A vector of N values of T (N * sizeof(T) a power of two).
template <typename T, int N>
struct VecOf {
  typedef T type __attribute__((vector_size(N * sizeof(T))));
};
template <typename T, int N>
using Vec = typename VecOf<T, N>::type;

// Whole vectors from and to memory at any alignment (memcpy: no alignment or aliasing assumptions).
template <typename V, typename T>
CONVLOC_ALWAYS_INLINE V load_lanes(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename V, typename T>
CONVLOC_ALWAYS_INLINE void store_lanes(T* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

// N values of T in registers: as many 64-byte vectors (one AVX-512 register; GCC handles wider
// generic vectors poorly) as fit, then one narrower vector for the rest, a power of two of values
// (24 floats: 16 + 8, moved by the AVX-512 clone in two instructions instead of three).
template <typename T, int N>
struct Lanes {
  static constexpr int kWide = 64 / static_cast<int>(sizeof(T));
  static constexpr int kFull = N / kWide, kTail = N % kWide, kTails = kTail ? 1 : 0;
  static_assert((kTail & (kTail - 1)) == 0, "Lanes: the values past the 64-byte vectors must be a power of two");
  using Wide = Vec<T, kWide>;
  using Tail = Vec<T, kTail ? kTail : 1>;
  std::array<Wide, kFull> w;
  std::array<Tail, kTails> t;  // (int loops over these counts: GCC schedules them better than size())

  static CONVLOC_ALWAYS_INLINE Lanes load(const T* p) {
    Lanes r;
    for (int j = 0; j < kFull; ++j) r.w[j] = load_lanes<Wide>(p + kWide * j);
    for (int j = 0; j < kTails; ++j) r.t[j] = load_lanes<Tail>(p + kWide * kFull);
    return r;
  }
  static CONVLOC_ALWAYS_INLINE Lanes fill(T a) {
    Lanes r;
    for (int j = 0; j < kFull; ++j) r.w[j] = Wide{} + a;
    for (int j = 0; j < kTails; ++j) r.t[j] = Tail{} + a;
    return r;
  }
  CONVLOC_ALWAYS_INLINE void store(T* p) const {
    for (int j = 0; j < kFull; ++j) store_lanes(p + kWide * j, w[j]);
    for (int j = 0; j < kTails; ++j) store_lanes(p + kWide * kFull, t[j]);
  }
  // f applied to each vector (of either width) of this and of `o`.
  template <typename F>
  CONVLOC_ALWAYS_INLINE Lanes zip(const Lanes& o, F f) const {
    Lanes r;
    for (int j = 0; j < kFull; ++j) r.w[j] = f(w[j], o.w[j]);
    for (int j = 0; j < kTails; ++j) r.t[j] = f(t[j], o.t[j]);
    return r;
  }
  CONVLOC_ALWAYS_INLINE Lanes operator+(const Lanes& o) const {
    return zip(o, [](auto a, auto b) { return a + b; });
  }
  CONVLOC_ALWAYS_INLINE Lanes operator-(const Lanes& o) const {
    return zip(o, [](auto a, auto b) { return a - b; });
  }
  CONVLOC_ALWAYS_INLINE Lanes operator*(const Lanes& o) const {
    return zip(o, [](auto a, auto b) { return a * b; });
  }
  CONVLOC_ALWAYS_INLINE friend Lanes operator*(T s, const Lanes& a) {
    return a.zip(a, [s](auto x, auto) { return s * x; });
  }
};

}  // namespace convloc
