// GCC/Clang vector extensions shared by the CPU kernels. Plain loops over these types compile to
// each SIMD version's widest instructions (CONVLOC_SIMD_FN), and to NEON on Arm; every operation works
// lane by lane, so all versions compute the same bits. The vectors never cross a non-inlined call
// (hence -Wno-psabi: the compilers' note on the vector calling convention does not apply).
#pragma once

#include <array>
#include <atomic>
#include <cstring>
#include <type_traits>
#include <utility>

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

// shuffle<I...>(a, b): the lanes I... of a then b (-1: any value), as a vector of sizeof...(I) lanes.
#if __has_builtin(__builtin_shufflevector)
template <int... I, typename V>
CONVLOC_ALWAYS_INLINE auto shuffle(V a, V b) {
  return __builtin_shufflevector(a, b, I...);
}
constexpr bool kWidenInRegisters = true;
#else
// GCC 11 has only __builtin_shuffle, which keeps the width: the narrower results here are
// consecutive lanes of a, copied out; a wider one would go through memory (Lanes avoids them).
template <int... I, typename V>
CONVLOC_ALWAYS_INLINE auto shuffle(V a, V b) {
  using T = std::remove_reference_t<decltype(a[0])>;
  constexpr int n = sizeof(V) / sizeof(T), m = sizeof...(I);
  if constexpr (m == n) {
    using Index = Vec<std::conditional_t<sizeof(T) == 4, int32_t, int64_t>, n>;
    return __builtin_shuffle(a, b, Index{(I < 0 ? 0 : I)...});
  } else {
    constexpr int index[] = {I...};
    static_assert(m < n && [&] {
      for (int k = 1; k < m; ++k)
        if (index[k] != index[0] + k) return false;
      return true;
    }());
    Vec<T, m> r;
    std::memcpy(&r, reinterpret_cast<const char*>(&a) + index[0] * sizeof(T), sizeof r);
    return r;
  }
}
constexpr bool kWidenInRegisters = false;
#endif

// Vector widths in bytes. Where the registers are narrower than a vector, GCC compiles the vector's
// selects and shuffles lane by lane through memory, many times slower than in registers (the AVX2
// versions with 64-byte vectors, for instance). Kernels therefore work in
// kVectorBytes (AVX2 registers; the AVX-512 versions run them as 256-bit instructions), and the few
// that gain from AVX-512's full width are also compiled at kWideBytes (CONVLOC_WIDE_SIMD /
// CONVLOC_WIDE_FMA) and pick one by wide_vectors().
constexpr int kVectorBytes = 32, kWideBytes = 64;
// The values of T in one vector of VB bytes, and that vector.
template <typename T, int VB = kVectorBytes>
constexpr int kLanesIn = VB / static_cast<int>(sizeof(T));
template <typename T, int VB = kVectorBytes>
using VecIn = Vec<T, kLanesIn<T, VB>>;
// Test hook (_C._narrow_vectors): true makes wide_vectors() false, so that the tests compare the two
// widths on one machine.
inline std::atomic<bool>& narrow_vectors_forced() {
  static std::atomic<bool> forced{false};
  return forced;
}
inline bool wide_vectors() {
#ifdef CONVLOC_HAS_WIDE
  return simd_level() >= 4 && !narrow_vectors_forced().load(std::memory_order_relaxed);
#else
  return false;
#endif
}

// N values of T in registers, in vectors of VB bytes: as many full vectors as fit, then the rest, a
// power of two of values, in the low lanes of one more full vector whose other lanes are left
// undefined (loaded and stored as the narrower type): every vector then has one width, so a scalar
// operand is broadcast once (from memory, where it comes from there) rather than once per width.
// (Not with GCC 11, which would widen the rest through memory, many times slower than a second
// broadcast: there the rest stays in a vector of its own width.)
template <typename T, int N, int VB = kVectorBytes>
struct Lanes {
  static constexpr int kWide = kLanesIn<T, VB>;
  static constexpr int kFull = N / kWide, kTail = N % kWide, kTails = kTail ? 1 : 0;
  static_assert((kTail & (kTail - 1)) == 0, "Lanes: the values past the full vectors must be a power of two");
  using Wide = Vec<T, kWide>;
  using Tail = Vec<T, kTail ? kTail : 1>;  // the rest in memory
  static constexpr bool kWidened = kFull > 0 && kWidenInRegisters;
  using TailReg = std::conditional_t<kWidened, Wide, Tail>;  // and in a register
  std::array<Wide, kFull> w;
  std::array<TailReg, kTails> t;  // (int loops over these counts: GCC schedules them better than size())

  static CONVLOC_ALWAYS_INLINE Lanes load(const T* p) {
    Lanes r;
    for (int j = 0; j < kFull; ++j) r.w[j] = load_lanes<Wide>(p + kWide * j);
    if constexpr (kTails == 1) r.t[0] = widen(load_lanes<Tail>(p + kWide * kFull));
    return r;
  }
  static CONVLOC_ALWAYS_INLINE Lanes fill(T a) {
    Lanes r;
    for (int j = 0; j < kFull; ++j) r.w[j] = Wide{} + a;
    for (int j = 0; j < kTails; ++j) r.t[j] = TailReg{} + a;
    return r;
  }
  CONVLOC_ALWAYS_INLINE void store(T* p) const {
    for (int j = 0; j < kFull; ++j) store_lanes(p + kWide * j, w[j]);
    if constexpr (kTails == 1) store_lanes(p + kWide * kFull, tail());
  }
  // The values past the full vectors.
  CONVLOC_ALWAYS_INLINE Tail tail() const { return narrow(t[0]); }
  // f applied to each vector of this and of `o`.
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

 private:
  static CONVLOC_ALWAYS_INLINE TailReg widen(Tail v) {
    if constexpr (!kWidened)
      return v;
    else
      return widen_to_wide(v, std::make_integer_sequence<int, kTail>(),
                           std::make_integer_sequence<int, kWide - kTail>());
  }
  template <int... I, int... U>
  static CONVLOC_ALWAYS_INLINE Wide widen_to_wide(Tail v, std::integer_sequence<int, I...>,
                                                  std::integer_sequence<int, U...>) {
    return shuffle<I..., ((void)U, -1)...>(v, v);
  }
  static CONVLOC_ALWAYS_INLINE Tail narrow(TailReg v) {
    if constexpr (!kWidened)
      return v;
    else
      return narrow_from_wide(v, std::make_integer_sequence<int, kTail>());
  }
  template <int... I>
  static CONVLOC_ALWAYS_INLINE Tail narrow_from_wide(Wide v, std::integer_sequence<int, I...>) {
    return shuffle<I...>(v, v);
  }
};

}  // namespace convloc
