// The x86-64 level of the CPU that picks the SIMD versions (common.h): CPUID for the instructions,
// XGETBV for the registers the OS saves on a context switch (without those, the instructions fault).
#include "core/common.h"

#ifdef CONVLOC_X86_DISPATCH
#include <cpuid.h>

#include <initializer_list>

namespace convloc {
namespace {

struct CpuidWords {
  unsigned a = 0, b = 0, c = 0, d = 0;
};
CpuidWords cpuid(unsigned leaf) {
  CpuidWords r;
  __get_cpuid_count(leaf, 0, &r.a, &r.b, &r.c, &r.d);  // all zero where the CPU lacks the leaf
  return r;
}
constexpr unsigned bits(std::initializer_list<int> positions) {
  unsigned m = 0;
  for (int p : positions) m |= 1u << p;
  return m;
}
bool has(unsigned word, unsigned mask) { return (word & mask) == mask; }

}  // namespace

int detect_simd_level() {
  const CpuidWords l1 = cpuid(1), l7 = cpuid(7), ext = cpuid(0x80000001u);
  // x86-64-v2 and -v3: SSE3, SSSE3, FMA, CMPXCHG16B, SSE4.1, SSE4.2, MOVBE, POPCNT, OSXSAVE, AVX, F16C;
  // BMI1, AVX2, BMI2; LAHF, LZCNT.
  if (!has(l1.c, bits({0, 9, 12, 13, 19, 20, 22, 23, 27, 28, 29})) || !has(l7.b, bits({3, 5, 8})) ||
      !has(ext.c, bits({0, 5})))
    return 1;
  unsigned xcr0 = 0, xcr0_high = 0;
  __asm__("xgetbv" : "=a"(xcr0), "=d"(xcr0_high) : "c"(0));
  if (!has(xcr0, bits({1, 2}))) return 1;  // XMM and YMM state
#ifdef CONVLOC_HAS_WIDE
  // x86-64-v4: AVX512F, AVX512DQ, AVX512CD, AVX512BW, AVX512VL; opmask and ZMM state.
#ifdef __APPLE__
  const bool zmm_state = true;  // macOS enables it at a thread's first AVX-512 instruction
#else
  const bool zmm_state = has(xcr0, bits({5, 6, 7}));
#endif
  if (has(l7.b, bits({16, 17, 28, 30, 31})) && zmm_state) return 4;
#endif
  return 3;
}

}  // namespace convloc
#endif
