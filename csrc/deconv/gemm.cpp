// Blocked GEMM in the BLIS style: A and B are packed into panels that the micro-kernel
// streams with unit stride, and the micro-kernel keeps an MR x NR block of C in vector
// registers. The micro-kernel is compiled for AVX-512, AVX2+FMA and baseline x86-64 (other
// CPUs: baseline), each with its own register tile, and the best one the CPU has is chosen.
#include "deconv/gemm.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/common.h"
#include "core/parallel.h"
#include "core/simd.h"

namespace convloc {
namespace {

// C[0:mr, 0:nr] (+)= sum_k a[k, 0:MR] b[k, 0:NR] over packed panels, NR = NV * W.
template <typename T, int MR, int NV, int W>
__attribute__((always_inline)) inline void micro_kernel(int64_t kc, const T* __restrict a, const T* __restrict b,
                                                        T* __restrict c, int64_t ldc, bool accumulate, int mr, int nr) {
  using V = Vec<T, W>;
  constexpr int NR = NV * W;
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V{};
  for (int64_t p = 0; p < kc; ++p) {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = load_lanes<V>(b + p * NR + v * W);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const V ai = a[p * MR + i] - V{};  // broadcast
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] += ai * bv[v];
    }
  }
  if (mr == MR && nr == NR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        T* dst = c + i * ldc + v * W;
        V out = acc[i][v];
        if (accumulate) out += load_lanes<V>(dst);
        store_lanes(dst, out);
      }
    return;
  }
  T tile[MR][NR];
  std::memcpy(tile, acc, sizeof(tile));
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) c[i * ldc + j] = accumulate ? c[i * ldc + j] + tile[i][j] : tile[i][j];
}

template <typename T>
using MicroFn = void (*)(int64_t, const T*, const T*, T*, int64_t, bool, int, int);

// One plain function per (ISA, type): target attributes apply to whole functions, and
// contracting a * b + c into an FMA is allowed here only (CONVLOC_CONTRACT: the project builds with
// -ffp-contract=off so that the element-wise kernels match their references exactly).
#define CONVLOC_MICRO(name, attrs, T, MR, NV, W)                                                            \
  attrs void name(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, bool accumulate, int mr, int nr) { \
    micro_kernel<T, MR, NV, W>(kc, a, b, c, ldc, accumulate, mr, nr);                                       \
  }
// Register tiles: AVX-512 has 32 vector registers (24 accumulators), AVX2 and SSE 16 (12).
CONVLOC_MICRO(micro_base_f32, CONVLOC_CONTRACT, float, 6, 2, 4)
CONVLOC_MICRO(micro_base_f64, CONVLOC_CONTRACT, double, 6, 2, 2)
#ifdef CONVLOC_X86_DISPATCH
#define CONVLOC_AVX2 CONVLOC_CONTRACT __attribute__((target("avx2,fma")))
CONVLOC_MICRO(micro_avx2_f32, CONVLOC_AVX2, float, 6, 2, 8)
CONVLOC_MICRO(micro_avx2_f64, CONVLOC_AVX2, double, 6, 2, 4)
#endif
#ifdef CONVLOC_HAS_WIDE
#define CONVLOC_AVX512 CONVLOC_CONTRACT __attribute__((target("avx512f")))
CONVLOC_MICRO(micro_avx512_f32, CONVLOC_AVX512, float, 12, 2, 16)
CONVLOC_MICRO(micro_avx512_f64, CONVLOC_AVX512, double, 12, 2, 8)
#endif
#undef CONVLOC_MICRO

template <typename T>
struct Kernel {
  MicroFn<T> fn;
  int mr, nr;
};

template <typename T>
Kernel<T> pick_kernel() {
  constexpr bool f32 = std::is_same_v<T, float>;
#ifdef CONVLOC_HAS_WIDE
  if (simd_level() >= 4) {
    if constexpr (f32)
      return {micro_avx512_f32, 12, 32};
    else
      return {micro_avx512_f64, 12, 16};
  }
#endif
#ifdef CONVLOC_X86_DISPATCH
  if (simd_level() >= 3) {
    if constexpr (f32)
      return {micro_avx2_f32, 6, 16};
    else
      return {micro_avx2_f64, 6, 8};
  }
#endif
  if constexpr (f32)
    return {micro_base_f32, 6, 8};
  else
    return {micro_base_f64, 6, 4};
}

// Cache blocking: a kc x NR panel of B (256 KB at most) stays in L2 while the micro-kernel runs
// down the (kMPanels * MR) x kc block of A beside it; B's kc x nc block lives in L3. A deep kc
// matters more than an L1-sized panel: each pass over k re-reads and re-writes C, and the transposed
// convolution's input-gradient product is deep (k = C_out kH kW, often thousands).
constexpr int64_t kKc = 2048;
// ... unless A is tall: its packed kc block (kept per calling thread) stays within 2 Mi elements, at
// a depth of no less than 256.
constexpr int64_t kAPackElems = int64_t(1) << 21, kMinKc = 256;
constexpr int64_t kNc = 1024;
constexpr int64_t kMPanels = 8, kNPanels = 8;  // a parallel task is kMPanels x kNPanels micro-tiles

// dst[p][q][r] = src[(p * R + r) * s_r + q * s_q] for panels p of width R (zero beyond `rows`),
// q < depth. Packs A (r = row, q = k) and B (r = column, q = k) alike.
template <typename T>
void pack_panel(const T* __restrict src, int64_t rows, int64_t depth, int64_t s_r, int64_t s_q, int R,
                T* __restrict dst) {
  if (rows < R) std::fill(dst, dst + depth * R, T(0));
  if (s_r == 1) {
    for (int64_t q = 0; q < depth; ++q)
      for (int64_t r = 0; r < rows; ++r) dst[q * R + r] = src[q * s_q + r];
  } else {
    // Transposing: read 8 source rows at a time, so each output line gets 8 values per pass.
    int64_t r = 0;
    for (; r + 8 <= rows; r += 8)
      for (int64_t q = 0; q < depth; ++q)
        for (int i = 0; i < 8; ++i) dst[q * R + r + i] = src[(r + i) * s_r + q * s_q];
    for (; r < rows; ++r)
      for (int64_t q = 0; q < depth; ++q) dst[q * R + r] = src[r * s_r + q * s_q];
  }
}

template <typename T>
void pack(const T* src, int64_t rows, int64_t depth, int64_t s_r, int64_t s_q, int R, T* dst) {
  const int64_t panels = (rows + R - 1) / R;
  parallel_for(panels, 4, [&](int64_t lo, int64_t hi) {
    for (int64_t p = lo; p < hi; ++p)
      pack_panel(src + p * R * s_r, std::min<int64_t>(R, rows - p * R), depth, s_r, s_q, R, dst + p * R * depth);
  });
}

}  // namespace

template <typename T>
void gemm_cpu(int64_t m, int64_t n, int64_t k, const T* a, int64_t a_row, int64_t a_col, const T* b, int64_t b_row,
              int64_t b_col, bool accumulate, T* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, T(0));
    return;
  }
  const Kernel<T> ker = pick_kernel<T>();
  const int mr = ker.mr, nr = ker.nr;
  const int64_t m_panels = (m + mr - 1) / mr;
  // Scratch kept per calling thread: the packed blocks are a few MiB, reused call after call.
  thread_local std::vector<T> a_pack, b_pack;
  const int64_t depth = std::min(k, std::max(kMinKc, std::min(kKc, kAPackElems / (m_panels * mr))));
  a_pack.resize(m_panels * mr * depth);
  b_pack.resize(((std::min(n, kNc) + nr - 1) / nr) * nr * depth);
  for (int64_t pc = 0; pc < k; pc += depth) {
    const int64_t kc = std::min(depth, k - pc);
    const bool acc = accumulate || pc > 0;
    pack(a + pc * a_col, m, kc, a_row, a_col, mr, a_pack.data());
    for (int64_t jc = 0; jc < n; jc += kNc) {
      const int64_t nc = std::min(kNc, n - jc);
      const int64_t n_panels = (nc + nr - 1) / nr;
      pack(b + pc * b_row + jc * b_col, nc, kc, b_col, b_row, nr, b_pack.data());
      const int64_t tiles_m = (m_panels + kMPanels - 1) / kMPanels;
      const int64_t tiles_n = (n_panels + kNPanels - 1) / kNPanels;
      const T* ap = a_pack.data();
      const T* bp = b_pack.data();
      parallel_for(tiles_m * tiles_n, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t t = lo; t < hi; ++t) {
          const int64_t ti = t % tiles_m, tj = t / tiles_m;
          const int64_t i_end = std::min(m_panels, (ti + 1) * kMPanels);
          const int64_t j_end = std::min(n_panels, (tj + 1) * kNPanels);
          for (int64_t jp = tj * kNPanels; jp < j_end; ++jp) {
            const int cols = static_cast<int>(std::min<int64_t>(nr, nc - jp * nr));
            for (int64_t ip = ti * kMPanels; ip < i_end; ++ip) {
              const int rows = static_cast<int>(std::min<int64_t>(mr, m - ip * mr));
              ker.fn(kc, ap + ip * mr * kc, bp + jp * nr * kc, c + ip * mr * ldc + jc + jp * nr, ldc, acc, rows, cols);
            }
          }
        }
      });
    }
  }
}

template void gemm_cpu<float>(int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*, int64_t, int64_t,
                              bool, float*, int64_t);
template void gemm_cpu<double>(int64_t, int64_t, int64_t, const double*, int64_t, int64_t, const double*, int64_t,
                               int64_t, bool, double*, int64_t);

}  // namespace convloc
