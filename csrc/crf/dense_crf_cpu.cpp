#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "core/check.h"
#include "core/parallel.h"
#include "core/simd.h"
#include "core/workspace.h"
#include "crf/dense_crf.h"
#include "crf/grid_gaussian.h"
#include "lattice/lattice.h"

namespace convloc {
namespace {

// Pixels per block of the fused update: a fixed split, so energies summed per block and then in
// block order do not depend on the thread count.
constexpr int64_t kBlock = 2048;

// The fused update for float, diagonal compatibilities and no exclude_self (Potts: the common
// case): per pixel, logits -U - sum_k post_k c_k out_k, softmax, and the next filter inputs pre_k Q,
// in one pass. Rows are padded to B whole 8-lane vectors (B fixed at compile time), so every step
// is a vector operation: the padding lanes of -U are -1e30 and of c_k zero, so their exponentials
// are e^-70 (the clamp of exp_lanes: nothing next to the sum's >= 1) and never reach a message.
using v8f = Vec<float, 8>;
template <typename V>
CONVLOC_ALWAYS_INLINE V max_lanes(V a, V b) {
  return a > b ? a : b;
}
// exp(x) lane by lane for x <= 0 (softmax arguments): 2^n · p(r) with a degree-6 polynomial on
// |r| <= ln2/2 (relative error below 2e-7), x clamped at -70: e^-70 < 1e-30 keeps Q and its products
// with the filter weights clear of subnormal numbers, which cost the CPU a microcode assist each.
template <typename V>
CONVLOC_ALWAYS_INLINE V exp_lanes(V x) {
  using VI = decltype(x < x);
  x = x < -70.0f ? V{} - 70.0f : x;
  // t = 1.5 · 2^23 + n, n = round(x log2 e): n sits in t's low mantissa bits, whose integer value is
  // then bits(t) - bits(1.5 · 2^23) (no float-to-int conversion needed for 2^n).
  const V t = x * 1.44269504088896341f + 12582912.0f;
  const V n = t - 12582912.0f;
  const V r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  V p = r * 1.3888949e-3f + 8.3333334e-3f;
  p = p * r + 4.1666668e-2f;
  p = p * r + 1.6666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  VI tbits;
  std::memcpy(&tbits, &t, sizeof tbits);
  const VI bits = (tbits + (127 - 0x4B400000)) << 23;  // (n + 127) << 23: 2^n
  V scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// One pixel's row of 8 B labels in registers, in vectors of VB bytes.
template <int B, int VB>
using Row = Lanes<float, 8 * B, VB>;
CONVLOC_ALWAYS_INLINE v8f low8(Vec<float, 16> v) { return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7); }
CONVLOC_ALWAYS_INLINE v8f high8(Vec<float, 16> v) {
  return __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
}
// The row folded to 8 lanes with f, its groups of 8 labels in label order: the same operations in the
// same order at every vector width.
template <int B, int VB, typename F>
CONVLOC_ALWAYS_INLINE v8f fold8(const Row<B, VB>& r, F f) {
  using R = Row<B, VB>;
  v8f group[B];
  int g = 0;
  for (int j = 0; j < R::kFull; ++j) {
    if constexpr (R::kWide == 8)
      group[g++] = r.w[j];
    else
      group[g++] = low8(r.w[j]), group[g++] = high8(r.w[j]);
  }
  if constexpr (R::kTails == 1) group[g++] = r.tail();
  v8f m = group[0];
  for (int j = 1; j < B; ++j) m = f(m, group[j]);
  return m;
}
// exp(r - m) lane by lane.
template <int B, int VB>
CONVLOC_ALWAYS_INLINE Row<B, VB> row_exp_minus(const Row<B, VB>& r, float m) {
  return r.zip(r, [m](auto x, auto) { return exp_lanes(x - m); });
}

// exp in place over rows of whole vectors (count a multiple of 8); double uses std::exp.
CONVLOC_SIMD_CLONES void exp_inplace_f32(float* z, int64_t count) {
  for (int64_t j = 0; j < count; j += 8) store_lanes(z + j, exp_lanes(load_lanes<v8f>(z + j)));
}
inline void exp_inplace(float* z, int64_t count) { exp_inplace_f32(z, count); }
inline void exp_inplace(double* z, int64_t count) {
  for (int64_t j = 0; j < count; ++j) z[j] = std::exp(z[j]);
}

// A Gaussian term filtered outside the update: its input pre * Q is written here, its output read.
struct GridTerm {
  const float* out;   // [N, LP] filter output
  const float* post;  // [N]
  const float* c;     // [LP] compat diagonal (zero padding)
  const float* pre;   // [N]
  float* in;          // [N, LP] next filter input
};
// A lattice term sliced and splatted inside the update (the lattice's vertex rows stay in cache,
// and no [N, LP] input or output array is written and read back).
struct LatticeTerm {
  const float* blurred;   // the band's vertices after the blur, times amplitude · compat, [band vertices, LP]
  const int32_t* offset;  // [N, k1] simplex vertices, numbered within each point's band
  const float* weight;    // [N, k1] barycentric weights
  int k1;
  const float* post;  // [N]
  const float* pre;   // [N]
  float* partial;     // [band vertices, LP] this band's splat sums of pre * Q
};
// A coarse-grid Gaussian (CoarseGaussian) sliced and splatted inside the update, one image row at a
// time: per pixel only the horizontal weights, over the row's slice through the blurred coarse rows
// and into the row's splat sums (both [coarse columns, LP], in cache).
struct CoarseTerm {
  const int32_t* node;  // [W] the first coarse column of each image column
  const float* weight;  // [W, 3]
  const float* post;    // [N]
  const float* pre;     // [N]
  const float* row;     // the current image row's slice (of the blurred grid times the compat diagonal)
  float* splat;         // the current image row's splat sums of pre * Q
};
struct FusedTerms {
  const GridTerm* grid;
  int ngrid;
  const LatticeTerm* lattice;
  int nlattice;
  const CoarseTerm* coarse;
  int ncoarse;
  int64_t row_start;  // the pixel index of column 0 of the current image row (coarse terms)
};
constexpr int kMaxFused = 4;

// The fused update of pixels [i0, i1) goes in chunks of kChunk pixels through three passes: logits
// (the unary and every term's message), softmax, splats. Each pass is a short loop over independent
// pixels, and the softmax reduces 8 rows at a time instead of one row's long chain of shuffles.
constexpr int64_t kChunk = 32;

// The terms as the fused update's loops see them. Shape K1 > 0: exactly one lattice term, over simplices
// of K1 vertices, NC coarse terms and no grid term (the common CRF: a Gaussian and an RGB bilateral
// kernel); K1 = 0: any mix (counts and sizes read at run time). The terms are copied into locals
// first: read through FusedTerms, every store of a row could have changed them as far as the compiler
// knows, so each pixel would load them again; with a fixed shape the copies stay in registers.
template <int K1, int NC>
struct LocalTerms {
  static constexpr int kLattice = K1 ? 1 : kMaxFused, kCoarse = K1 ? NC : kMaxFused, kGrid = K1 ? 0 : kMaxFused;
  std::array<GridTerm, kGrid> grid;
  std::array<LatticeTerm, kLattice> lattice;
  std::array<CoarseTerm, kCoarse> coarse;
  int ngrid, nlattice, ncoarse;
  int64_t row_start;

  CONVLOC_ALWAYS_INLINE explicit LocalTerms(const FusedTerms& t)
      : ngrid(K1 ? 0 : t.ngrid), nlattice(K1 ? 1 : t.nlattice), ncoarse(K1 ? NC : t.ncoarse), row_start(t.row_start) {
    for (int k = 0; k < ngrid; ++k) grid[k] = t.grid[k];
    for (int k = 0; k < nlattice; ++k) lattice[k] = t.lattice[k];
    for (int k = 0; k < ncoarse; ++k) coarse[k] = t.coarse[k];
  }
  CONVLOC_ALWAYS_INLINE int k1(int k) const { return K1 ? K1 : lattice[k].k1; }
};

// z[i - c0] = -U_i - sum_k post_k c_k out_k(i) for pixels [c0, c1) (of [c0, end)).
template <int B, int VB, int K1, int NC>
CONVLOC_ALWAYS_INLINE void chunk_logits(const float* __restrict neg_unary, int64_t c0, int64_t c1, int64_t end,
                                        const FusedTerms& terms, float* __restrict z) {
  using R = Row<B, VB>;
  constexpr int64_t LP = 8 * B;
  const LocalTerms<K1, NC> t(terms);
  for (int64_t i = c0; i < c1; ++i) {
    // The unary a chunk ahead: 25 MB streamed per update, which the hardware prefetchers do not
    // keep up with while both cores share the memory bus.
    const float* ahead = neg_unary + std::min(i + kChunk, end - 1) * LP;
    __builtin_prefetch(ahead), __builtin_prefetch(ahead + LP - 1);
    R q = R::load(neg_unary + i * LP);
    for (int k = 0; k < t.ngrid; ++k) {
      const GridTerm& g = t.grid[k];
      q = q - g.post[i] * (R::load(g.c) * R::load(g.out + i * LP));
    }
    for (int k = 0; k < t.nlattice; ++k) {
      const LatticeTerm& l = t.lattice[k];
      const int k1 = t.k1(k);
      const int32_t* off = l.offset + i * k1;
      const float* w = l.weight + i * k1;
      R acc = w[0] * R::load(l.blurred + off[0]);
      for (int j = 1; j < k1; ++j) acc = acc + w[j] * R::load(l.blurred + off[j]);
      q = q - l.post[i] * acc;
    }
    for (int k = 0; k < t.ncoarse; ++k) {
      const CoarseTerm& g = t.coarse[k];
      const int64_t x = i - t.row_start;
      const float* w = g.weight + 3 * x;
      const float* row = g.row + int64_t(g.node[x]) * LP;
      const R acc = w[0] * R::load(row) + w[1] * R::load(row + LP) + w[2] * R::load(row + 2 * LP);
      q = q - g.post[i] * acc;
    }
    q.store(z + (i - c0) * LP);
  }
}

// Lane j of the result: f over the 8 lanes of the row whose slot is j (three levels of pairs: one
// reduction for 8 rows instead of one per row; a single row's reduction is a long chain).
constexpr int kSlotOf[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // the lane holding row p
template <typename F>
CONVLOC_ALWAYS_INLINE v8f reduce_8_rows(const v8f v[8], F f) {
  v8f c[4], d[2];
  for (int k = 0; k < 4; ++k)  // lanes 0-3: row 2k, 4-7: row 2k + 1
    c[k] = f(__builtin_shufflevector(v[2 * k], v[2 * k + 1], 0, 1, 2, 3, 8, 9, 10, 11),
             __builtin_shufflevector(v[2 * k], v[2 * k + 1], 4, 5, 6, 7, 12, 13, 14, 15));
  for (int k = 0; k < 2; ++k)  // rows 4k, 4k, 4k + 2, 4k + 2, 4k + 1, 4k + 1, 4k + 3, 4k + 3
    d[k] = f(__builtin_shufflevector(c[2 * k], c[2 * k + 1], 0, 1, 8, 9, 4, 5, 12, 13),
             __builtin_shufflevector(c[2 * k], c[2 * k + 1], 2, 3, 10, 11, 6, 7, 14, 15));
  return f(__builtin_shufflevector(d[0], d[1], 0, 2, 8, 10, 4, 6, 12, 14),
           __builtin_shufflevector(d[0], d[1], 1, 3, 9, 11, 5, 7, 13, 15));
}

// Rows r .. r + 7 of the `count` rows of x into q (a partial group repeats its last row, so every
// row's arithmetic is the same wherever it sits), and each one's largest value into mx[kSlotOf[p]].
template <int B, int VB>
CONVLOC_ALWAYS_INLINE void load_8_rows(const float* x, int64_t r, int64_t count, Row<B, VB> q[8], float mx[8]) {
  constexpr int64_t LP = 8 * B;
  const auto max_of = [](auto a, auto b) { return max_lanes(a, b); };
  v8f part[8];
  for (int p = 0; p < 8; ++p) q[p] = Row<B, VB>::load(x + std::min(r + p, count - 1) * LP);
  for (int p = 0; p < 8; ++p) part[p] = fold8<B, VB>(q[p], max_of);
  store_lanes(mx, reduce_8_rows(part, max_of));
}

// z = softmax of the `count` rows of x (x == z allowed), 8 rows at a time.
template <int B, int VB>
CONVLOC_ALWAYS_INLINE void chunk_softmax(const float* x, float* z, int64_t count) {
  using R = Row<B, VB>;
  constexpr int64_t LP = 8 * B;
  const auto sum_of = [](auto a, auto b) { return a + b; };
  for (int64_t r = 0; r < count; r += 8) {
    R q[8];
    v8f part[8];
    alignas(32) float mx[8], inv[8];
    load_8_rows<B, VB>(x, r, count, q, mx);
    for (int p = 0; p < 8; ++p) q[p] = row_exp_minus<B, VB>(q[p], mx[kSlotOf[p]]);
    for (int p = 0; p < 8; ++p) part[p] = fold8<B, VB>(q[p], sum_of);
    store_lanes(inv, 1.0f / reduce_8_rows(part, sum_of));
    for (int p = 0; p < 8 && r + p < count; ++p) (inv[kSlotOf[p]] * q[p]).store(z + (r + p) * LP);
  }
}

// The next filter inputs pre_k Q from Q = z[i - c0] for pixels [c0, c1): written (grid terms) or
// splatted (lattice and coarse terms; one pixel after another, so the additions' order is fixed).
template <int B, int VB, int K1, int NC>
CONVLOC_ALWAYS_INLINE void chunk_splat(const float* __restrict z, int64_t c0, int64_t c1, const FusedTerms& terms) {
  using R = Row<B, VB>;
  constexpr int64_t LP = 8 * B;
  const LocalTerms<K1, NC> t(terms);
  for (int64_t i = c0; i < c1; ++i) {
    const R q = R::load(z + (i - c0) * LP);
    for (int k = 0; k < t.ngrid; ++k) (t.grid[k].pre[i] * q).store(t.grid[k].in + i * LP);
    for (int k = 0; k < t.nlattice; ++k) {
      const int k1 = t.k1(k);
      const int32_t* off = t.lattice[k].offset + i * k1;
      const float* w = t.lattice[k].weight + i * k1;
      const R pq = t.lattice[k].pre[i] * q;
      float* const partial = t.lattice[k].partial;
      for (int j = 0; j < k1; ++j) {
        float* row = partial + off[j];
        (R::load(row) + w[j] * pq).store(row);
      }
    }
  }
  // Coarse terms: the pixels of a run with the same first node add into the same three node rows,
  // kept in registers across the run (the same additions in the same order; through memory, each
  // pixel would wait for the previous pixel's stores).
  for (int k = 0; k < t.ncoarse; ++k) {
    const CoarseTerm& g = t.coarse[k];
    for (int64_t i = c0; i < c1;) {
      const int32_t node = g.node[i - t.row_start];
      float* row = g.splat + int64_t(node) * LP;
      R a0 = R::load(row), a1 = R::load(row + LP), a2 = R::load(row + 2 * LP);
      for (; i < c1 && g.node[i - t.row_start] == node; ++i) {
        const float* w = g.weight + 3 * (i - t.row_start);
        const R pq = g.pre[i] * R::load(z + (i - c0) * LP);
        a0 = a0 + w[0] * pq, a1 = a1 + w[1] * pq, a2 = a2 + w[2] * pq;
      }
      a0.store(row), a1.store(row + LP), a2.store(row + 2 * LP);
    }
  }
}

// map[r] = the first label holding the largest Q of row r of z, for `count` rows, 8 rows at a time (as
// the softmax reduces them), while they are in L1. (The padding lanes hold e^-70 / sum: never a row's
// largest, which is at least 1 / L.)
template <int B, int VB>
CONVLOC_ALWAYS_INLINE void chunk_argmax(const float* z, int64_t count, int64_t* map) {
  using R = Row<B, VB>;
  alignas(64) static constexpr float kLabel[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                                   16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
  const R label = R::load(kLabel);
  const auto min_of = [](auto a, auto b) { return a < b ? a : b; };
  for (int64_t r = 0; r < count; r += 8) {
    R q[8];
    v8f part[8];
    alignas(32) float mx[8], first[8];
    load_8_rows<B, VB>(z, r, count, q, mx);
    for (int p = 0; p < 8; ++p) {
      const float m = mx[kSlotOf[p]];
      const R holders = q[p].zip(label, [m](auto x, auto l) { return x == m ? l : decltype(l){} + 99.0f; });
      part[p] = fold8<B, VB>(holders, min_of);
    }
    store_lanes(first, reduce_8_rows(part, min_of));
    for (int p = 0; p < 8 && r + p < count; ++p) map[r + p] = static_cast<int64_t>(first[kSlotOf[p]]);
  }
}

// Pixels [i0, i1) of rows of B vectors; z [i1 - i0, 8 B] (nullable) receives Q and map [i1 - i0]
// (nullable, needs z) the labels; splat: whether the next filters take this Q (not after the last
// iteration).
template <int B, int VB, int K1, int NC>
CONVLOC_ALWAYS_INLINE void fused_update(const float* __restrict neg_unary, int64_t i0, int64_t i1, const FusedTerms& t,
                                        bool with_message, bool splat, float* __restrict z, int64_t* map) {
  constexpr int64_t LP = 8 * B;
  alignas(64) float chunk[kChunk * LP];
  for (int64_t c0 = i0; c0 < i1; c0 += kChunk) {
    const int64_t c1 = std::min(i1, c0 + kChunk);
    float* zc = z ? z + (c0 - i0) * LP : chunk;
    if (with_message) chunk_logits<B, VB, K1, NC>(neg_unary, c0, c1, i1, t, zc);
    chunk_softmax<B, VB>(with_message ? zc : neg_unary + c0 * LP, zc, c1 - c0);
    if (map) chunk_argmax<B, VB>(zc, c1 - c0, map + (c0 - i0));
    if (splat) chunk_splat<B, VB, K1, NC>(zc, c0, c1, t);
  }
}
// Per row width and shape (LocalTerms): 32-byte vectors in every clone, and 64-byte ones where the
// CPU has AVX-512. The fixed shapes: an RGB bilateral kernel (d = 5: simplices of 6 vertices), with
// or without a coarse Gaussian.
using FusedUpdateFn = void (*)(const float*, int64_t, int64_t, const FusedTerms&, bool, bool, float*, int64_t*);
#define CONVLOC_FUSED_UPDATE(B, K1, NC)                                                                                \
  CONVLOC_FMA_CLONES void fused_update_##B##_##K1##_##NC(const float* neg_unary, int64_t i0, int64_t i1,               \
                                                         const FusedTerms& t, bool with_message, bool splat, float* z, \
                                                         int64_t* map) {                                               \
    fused_update<B, kVectorBytes, K1, NC>(neg_unary, i0, i1, t, with_message, splat, z, map);                          \
  }                                                                                                                    \
  CONVLOC_WIDE_FMA void fused_update_wide_##B##_##K1##_##NC(const float* neg_unary, int64_t i0, int64_t i1,            \
                                                            const FusedTerms& t, bool with_message, bool splat,        \
                                                            float* z, int64_t* map) {                                  \
    fused_update<B, kWideBytes, K1, NC>(neg_unary, i0, i1, t, with_message, splat, z, map);                            \
  }
#define CONVLOC_FUSED_SHAPES(B) \
  CONVLOC_FUSED_UPDATE(B, 0, 0) \
  CONVLOC_FUSED_UPDATE(B, 6, 0) \
  CONVLOC_FUSED_UPDATE(B, 6, 1)
CONVLOC_FUSED_SHAPES(1)
CONVLOC_FUSED_SHAPES(2)
CONVLOC_FUSED_SHAPES(3)
CONVLOC_FUSED_SHAPES(4)
#undef CONVLOC_FUSED_SHAPES
#undef CONVLOC_FUSED_UPDATE
// The update for rows of lp labels and these terms' shape.
// (conditionals, not tables: with `(wide ? table_a : table_b)[lp / 8 - 1]` a GCC 12 AddressSanitizer
// build read before the table's start, though the index printed as 2)
#define CONVLOC_PICK(B, K1, NC) (wide ? fused_update_wide_##B##_##K1##_##NC : fused_update_##B##_##K1##_##NC)
#define CONVLOC_PICK_SHAPE(B) \
  (shape == 2 ? CONVLOC_PICK(B, 6, 1) : shape == 1 ? CONVLOC_PICK(B, 6, 0) : CONVLOC_PICK(B, 0, 0))
FusedUpdateFn fused_update_for(int64_t lp, const FusedTerms& t) {
  const bool wide = wide_vectors();
  const int shape = t.ngrid == 0 && t.nlattice == 1 && t.lattice[0].k1 == 6 && t.ncoarse <= 1 ? 1 + t.ncoarse : 0;
  return lp == 8    ? CONVLOC_PICK_SHAPE(1)
         : lp == 16 ? CONVLOC_PICK_SHAPE(2)
         : lp == 24 ? CONVLOC_PICK_SHAPE(3)
                    : CONVLOC_PICK_SHAPE(4);
}
#undef CONVLOC_PICK_SHAPE
#undef CONVLOC_PICK
constexpr int64_t kMaxFusedLabels = 32;

// The fused update splats like the lattice's filter(): each band of pixels into its own compact partial
// sums, numbered by the lattice's band_tables(), added in band order before the blur.
constexpr int64_t kBands = kLatticeSplatBands;

// Softmax of `rows` rows of L labels (row stride LP) in place.
template <typename T>
void softmax_rows(T* z, int64_t rows, int64_t L, int64_t LP) {
  for (int64_t r = 0; r < rows; ++r) {
    T* zr = z + r * LP;
    const T m = *std::max_element(zr, zr + L);
    for (int64_t l = 0; l < L; ++l) zr[l] -= m;
    for (int64_t l = L; l < LP; ++l) zr[l] = T(-100);  // exp underflows to 0 (float)
  }
  exp_inplace(z, rows * LP);
  for (int64_t r = 0; r < rows; ++r) {
    T* zr = z + r * LP;
    T s = 0;
    for (int64_t l = 0; l < L; ++l) s += zr[l];
    const T inv = T(1) / s;
    for (int64_t l = 0; l < L; ++l) zr[l] *= inv;
    for (int64_t l = L; l < LP; ++l) zr[l] = 0;
  }
}

// out[r, :] = scale[r] * z[r, :] (whole padded rows of LP).
template <typename T>
void scale_rows(const T* __restrict z, const T* __restrict scale, int64_t rows, int64_t LP, T* __restrict out) {
  for (int64_t r = 0; r < rows; ++r) {
    const T s = scale[r];
    for (int64_t l = 0; l < LP; ++l) out[r * LP + l] = s * z[r * LP + l];
  }
}

// Argmax of each of `rows` rows of L labels (row stride LP), first on ties.
template <typename T>
void argmax_rows(const T* z, int64_t rows, int64_t L, int64_t LP, int64_t* map) {
  for (int64_t r = 0; r < rows; ++r) map[r] = std::max_element(z + r * LP, z + r * LP + L) - (z + r * LP);
}

// Between the public [L, N] layout and the kernels' [N, LP] rows (LP >= L; the padding lanes get
// `pad`), in tiles of kTransposeTile pixels: each label's values are read (written) contiguously
// while the tile's rows stay in L1 across all the labels. gather_rows returns whether every value it
// read is finite: the unary's check rides on its one transposition (a separate pass read 22 MB more
// at 512x512, from memory when pydensecrf ran just before).
constexpr int64_t kTransposeTile = 64;
template <typename T>
using BitsOf = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
template <typename T>
constexpr BitsOf<T> kExponentBits = sizeof(T) == 4 ? BitsOf<T>(0x7f800000u) : BitsOf<T>(0x7ff0000000000000ull);
template <typename T>
bool gather_rows(const T* src, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, T sign, T pad,
                 T* __restrict rows) {
  BitsOf<T> top = 0;  // the largest exponent field read (all ones: an inf or NaN)
  for (int64_t t0 = i0; t0 < i1; t0 += kTransposeTile) {
    const int64_t count = std::min(i1 - t0, kTransposeTile);
    T* __restrict tile = rows + (t0 - i0) * LP;
    for (int64_t l = 0; l < L; ++l) {
      const T* __restrict s = src + l * n + t0;
      for (int64_t r = 0; r < count; ++r) {
        BitsOf<T> bits;
        std::memcpy(&bits, s + r, sizeof bits);
        top = std::max(top, BitsOf<T>(bits & kExponentBits<T>));
        tile[r * LP + l] = sign * s[r];
      }
    }
    for (int64_t r = 0; r < count; ++r)
      for (int64_t l = L; l < LP; ++l) tile[r * LP + l] = pad;
  }
  return top != kExponentBits<T>;
}
template <typename T>
void scatter_rows(const T* __restrict rows, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, T* dst) {
  for (int64_t t0 = i0; t0 < i1; t0 += kTransposeTile) {
    const int64_t count = std::min(i1 - t0, kTransposeTile);
    const T* __restrict tile = rows + (t0 - i0) * LP;
    for (int64_t l = 0; l < L; ++l) {
      T* __restrict d = dst + l * n + t0;
      for (int64_t r = 0; r < count; ++r) d[r] = tile[r * LP + l];
    }
  }
}

// float (LP a multiple of 8): blocks of 8 pixels x 8 labels transposed in registers (the loops above
// store one value at a time), the remaining pixels by the loops above.
CONVLOC_ALWAYS_INLINE void transpose8x8(v8f r[8]) {
  v8f t[8], u[8];
  for (int k = 0; k < 4; ++k) {
    t[2 * k] = __builtin_shufflevector(r[2 * k], r[2 * k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[2 * k + 1] = __builtin_shufflevector(r[2 * k], r[2 * k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int k = 0; k < 2; ++k)
    for (int h = 0; h < 2; ++h) {
      const v8f a = t[4 * k + h], b = t[4 * k + h + 2];
      u[4 * k + 2 * h] = __builtin_shufflevector(a, b, 0, 1, 8, 9, 4, 5, 12, 13);
      u[4 * k + 2 * h + 1] = __builtin_shufflevector(a, b, 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int j = 0; j < 4; ++j) {
    r[j] = __builtin_shufflevector(u[j], u[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[j + 4] = __builtin_shufflevector(u[j], u[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}
CONVLOC_SIMD_CLONES bool gather_rows_f32(const float* src, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1,
                                         float sign, float pad, float* __restrict rows) {
  using v8u = Vec<uint32_t, 8>;
  v8u top = {};
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8)
    for (int64_t g = 0; g < LP; g += 8) {
      v8f r[8];
      for (int k = 0; k < 8; ++k) {
        if (g + k >= L) {
          r[k] = v8f{} + pad;
          continue;
        }
        const v8u bits = load_lanes<v8u>(src + (g + k) * n + i);
        top = (bits & kExponentBits<float>) > top ? bits & kExponentBits<float> : top;
        r[k] = sign * load_lanes<v8f>(src + (g + k) * n + i);
      }
      transpose8x8(r);
      for (int k = 0; k < 8; ++k) store_lanes(rows + (i + k - i0) * LP + g, r[k]);
    }
  bool finite = gather_rows<float>(src, n, L, LP, i, i1, sign, pad, rows + (i - i0) * LP);
  for (int k = 0; k < 8; ++k) finite = finite && top[k] != kExponentBits<float>;
  return finite;
}
CONVLOC_SIMD_CLONES void scatter_rows_f32(const float* rows, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1,
                                          float* dst) {
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8)
    for (int64_t g = 0; g < LP; g += 8) {
      v8f r[8];
      for (int k = 0; k < 8; ++k) r[k] = load_lanes<v8f>(rows + (i + k - i0) * LP + g);
      transpose8x8(r);
      for (int k = 0; k < 8 && g + k < L; ++k) store_lanes(dst + (g + k) * n + i, r[k]);
    }
  scatter_rows<float>(rows + (i - i0) * LP, n, L, LP, i, i1, dst);
}
inline bool gather_rows(const float* src, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, float sign,
                        float pad, float* rows) {
  return gather_rows_f32(src, n, L, LP, i0, i1, sign, pad, rows);
}
inline void scatter_rows(const float* rows, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, float* dst) {
  scatter_rows_f32(rows, n, L, LP, i0, i1, dst);
}

template <typename T>
struct KernelState {
  std::unique_ptr<PermutohedralLattice<T>> lattice;  // or
  std::unique_ptr<GridGaussian<T>> grid;             // or
  std::unique_ptr<CoarseGaussian<T>> coarse;
  WorkspaceVector<T> tmp;  // scratch of the grid filters (for LP channels)

  void filter(const T* in, T* out, int64_t channels) {
    if (lattice)
      lattice->filter(in, out, channels);
    else if (coarse)
      coarse->filter(in, out, channels, tmp.data());
    else
      grid->filter(in, out, channels, tmp.data());
  }
  WorkspaceVector<T> pre, post;  // [N] scales around the filtering
  WorkspaceVector<T> in, out;    // [N, LP] filter input (pre * Q, zero padding lanes) and output
  // Fused lattice terms instead of in/out: per band of pixels (the lattice's band_tables()) the partial
  // splat sums and a copy of the blurred vertices the band reads (rows in band-table order); the blur's
  // two buffers ([V + 1, LP] each), `blurred` pointing at the one holding the result.
  const typename PermutohedralLattice<T>::BandTables* bands = nullptr;
  WorkspaceVector<T> partial, local_blurred, blur_a, blur_b;
  const T* blurred = nullptr;
  std::vector<T> diag;      // [LP] compat diagonal (zero padded) when the matrix is diagonal, else empty
  std::vector<T> amp_diag;  // [LP] the lattice's amplitude times diag (fused lattice terms)
  std::vector<T> self;      // [N] the lattice's weight of each point on itself (exclude_self only)
  WorkspaceVector<int32_t>
      row_offset;  // fused lattice terms: the band offsets times LP (no index arithmetic per vertex)
  const T* compat = nullptr;
};

// norm = K·1 for a lattice kernel without the lattice's splat lists (the fused path never builds
// them): one channel splatted by scattering, each half of the points into its own compact sums (in
// parallel; the halves are fixed, so the sums do not depend on the thread count), blurred, sliced.
template <typename T>
void lattice_norm(const PermutohedralLattice<T>& lattice, T* norm) {
  const int64_t n = lattice.num_points(), k1 = lattice.dim() + 1, V = lattice.num_vertices();
  WorkspaceVector<T> a(V + 1), b(V + 1), halves(2 * V);  // (one value per vertex: blur() of stride 1)
  a[V] = b[V] = T(0);
  std::fill(halves.begin(), halves.end(), T(0));
  const int32_t* off = lattice.slice_offsets().data();
  const T* w = lattice.slice_weights().data();
  parallel_for(2, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      T* sums = halves.data() + h * V;
      for (int64_t e = n * h / 2 * k1; e < n * (h + 1) / 2 * k1; ++e) sums[off[e]] += w[e];
    }
  });
  for (int64_t v = 0; v < V; ++v) a[v] = halves[v] + halves[V + v];
  const T* blurred = lattice.blur(a.data(), b.data(), 1);
  const T amp = lattice.amplitude();
  parallel_for(n, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T acc = 0;
      for (int64_t j = 0; j < k1; ++j) acc += w[i * k1 + j] * blurred[off[i * k1 + j]];
      norm[i] = amp * acc;
    }
  });
}

template <typename T>
bool is_diagonal(const T* c, int64_t labels) {
  for (int64_t a = 0; a < labels; ++a)
    for (int64_t b = 0; b < labels; ++b)
      if (a != b && c[a * labels + b] != T(0)) return false;
  return true;
}

// Mean-field for one image. Every pass over the pixels is a parallel_for over fixed blocks. Rows of
// labels are padded to LP, a multiple of 8: the filters then move whole vectors, with no tails.
template <typename T>
class ImageCrf {
 public:
  // with_energy / with_init: run() will be given energy / init (the fused path has neither).
  ImageCrf(const T* unary, int64_t labels, int64_t n, const std::vector<int64_t>& spatial,
           const std::vector<CrfKernel<T>>& kernels, int64_t image, bool exclude_self, bool with_energy, bool with_init)
      : labels_(labels),
        lp_((labels + 7) & ~int64_t(7)),
        n_(n),
        exclude_self_(exclude_self),
        unary_(unary),
        neg_unary_(n * lp_),
        ks_(kernels.size()) {
    for (size_t k = 0; k < kernels.size(); ++k) {
      const CrfKernel<T>& spec = kernels[k];
      KernelState<T>& s = ks_[k];
      if (spec.grid_sigma.empty()) {
        s.lattice = std::make_unique<PermutohedralLattice<T>>(spec.features + image * n * spec.dim, n, spec.dim);
      } else if (!spec.grid_step.empty()) {
        s.coarse = std::make_unique<CoarseGaussian<T>>(spatial, spec.grid_sigma, spec.grid_step, kBands);
        s.tmp.resize(s.coarse->scratch_size(lp_));
      } else {
        s.grid = std::make_unique<GridGaussian<T>>(spatial, spec.grid_sigma);
        s.tmp.resize(s.grid->scratch_size(lp_));
      }
      WorkspaceVector<T> norm(n);  // (1 MB at 512x512: fresh pages would cost a fault each)
      if (s.lattice)
        lattice_norm(*s.lattice, norm.data());
      else if (s.coarse)
        s.coarse->ones_response(norm.data());
      else
        s.grid->ones_response(norm.data());
      if (exclude_self) {  // each point's weight on itself, as the filter applies it
        s.self.assign(n, T(1));
        if (s.lattice) s.lattice->diagonal(s.self.data());
        for (int64_t i = 0; i < n; ++i) norm[i] = std::max(norm[i] - s.self[i], T(0));
      }
      s.pre.resize(n), s.post.resize(n);
      // (the mode a constant in each loop: the loop then vectorises, 1.8 ms -> 0.1 at 512x512)
      const auto scales = [&](auto mode) {
        parallel_for(n, 16384, [&](int64_t i0, int64_t i1) {
          const T* __restrict in = norm.data();
          T* __restrict pre = s.pre.data();
          T* __restrict post = s.post.data();
          for (int64_t i = i0; i < i1; ++i) crf_norm_scales(mode(), in[i], &pre[i], &post[i]);
        });
      };
      switch (spec.norm) {
        case CrfNorm::None:
          scales(std::integral_constant<CrfNorm, CrfNorm::None>());
          break;
        case CrfNorm::Before:
          scales(std::integral_constant<CrfNorm, CrfNorm::Before>());
          break;
        case CrfNorm::After:
          scales(std::integral_constant<CrfNorm, CrfNorm::After>());
          break;
        default:
          scales(std::integral_constant<CrfNorm, CrfNorm::Symmetric>());
      }
      s.compat = spec.compat;
      if (is_diagonal(spec.compat, labels)) {
        s.diag.assign(lp_, T(0));
        for (int64_t l = 0; l < labels; ++l) s.diag[l] = spec.compat[l * labels + l];
      }
    }
    fused_ = std::is_same<T, float>::value && !exclude_self && !with_energy && !with_init &&
             ks_.size() <= size_t(kMaxFused) && lp_ <= kMaxFusedLabels;
    for (auto& s : ks_) {
      fused_ = fused_ && !s.diag.empty();
      if (fused_ && s.lattice)  // (row_offset: int32 element offsets)
        fused_ = s.lattice->band_sums_fit() &&
                 s.lattice->band_tables().first.back() * lp_ <= std::numeric_limits<int32_t>::max();
    }
    for (auto& s : ks_) {
      if (fused_ && s.lattice) {
        const int64_t rows = (s.lattice->num_vertices() + 1) * lp_;
        s.bands = &s.lattice->band_tables();
        s.row_offset.resize(s.bands->offsets.size());
        parallel_for(int64_t(s.row_offset.size()), 1 << 16, [&](int64_t e0, int64_t e1) {
          for (int64_t e = e0; e < e1; ++e) s.row_offset[e] = s.bands->offsets[e] * int32_t(lp_);
        });
        s.amp_diag.resize(lp_);
        for (int64_t l = 0; l < lp_; ++l) s.amp_diag[l] = s.lattice->amplitude() * s.diag[l];
        s.partial.resize(s.bands->first.back() * lp_), s.local_blurred.resize(s.bands->first.back() * lp_);
        s.blur_a.resize(rows), s.blur_b.resize(rows);
        std::fill(s.blur_a.end() - lp_, s.blur_a.end(), T(0));
        std::fill(s.blur_b.end() - lp_, s.blur_b.end(), T(0));
      } else if (!(fused_ && s.coarse)) {  // the fused coarse terms use the filter's scratch
        s.in.resize(n * lp_), s.out.resize(n * lp_);
      }
    }
    if (!fused_) gather_unary(0, n);  // (the fused first update gathers block by block)
  }

  int64_t lattice_bytes() const {
    int64_t b = 0;
    for (const auto& s : ks_)
      b += s.lattice ? s.lattice->memory_bytes() +
                           int64_t(s.partial.size() + s.local_blurred.size() + s.blur_a.size() + s.blur_b.size()) *
                               int64_t(sizeof(T)) +
                           int64_t(s.row_offset.size() * sizeof(int32_t))
                     : int64_t(s.tmp.size() * sizeof(T));
    return b;
  }

  // Runs the iterations; writes q [L, N], map [N] (nullable), energy [iterations + 1] (nullable).
  void run(int64_t iterations, const T* init, T* q, int64_t* map, double* energy) {
    if (energy) q_.resize(n_ * lp_);
    // Q_0 = softmax(-U).
    update(false, iterations == 0, energy ? q_.data() : nullptr, nullptr, iterations == 0 ? q : nullptr, map, init);
    if (!unary_finite_) fail_value("unary: expected finite values, got NaN or inf");
    for (int64_t it = 0; it < iterations; ++it) {
      filter_all();
      const bool last = it + 1 == iterations;
      update(true, last, energy ? q_.data() : nullptr, energy ? &energy[it] : nullptr, last ? q : nullptr,
             last ? map : nullptr);
    }
    if (energy) {
      filter_all();
      energy[iterations] = energy_only();
    }
  }

 private:
  // -U of pixels [i0, i1) into neg_unary_ (padding lanes -1e30); a NaN or inf clears unary_finite_.
  void gather_unary(int64_t i0, int64_t i1) {
    parallel_for((i1 - i0 + kBlock - 1) / kBlock, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t j0 = i0 + b * kBlock, j1 = std::min(i1, j0 + kBlock);
        if (!gather_rows(unary_, n_, labels_, lp_, j0, j1, T(-1), T(-1e30), neg_unary_.data() + j0 * lp_))
          unary_finite_.store(false, std::memory_order_relaxed);
      }
    });
  }

  // Every kernel's filtering. With no more threads than kernels, the kernels run side by side, one
  // thread each (a kernel's passes then need no barriers between them); otherwise one after the
  // other, each in parallel. Each kernel computes the same either way.
  void filter_all() {
    // The fused lattice terms' band sums first, on all threads: the lattice's blur, the longest of
    // the kernels' jobs below, then starts sooner.
    for (auto& s : ks_)
      if (s.bands) s.lattice->add_band_sums(s.partial.data(), lp_, s.blur_a.data());
    const auto one = [&](KernelState<T>& s) {
      if (s.bands) {
        s.blurred = s.lattice->blur(s.blur_a.data(), s.blur_b.data(), lp_);
      } else if (fused_ && s.coarse) {
        const auto buf = s.coarse->buffers(s.tmp.data(), lp_);
        s.coarse->add_partials(buf.partial, lp_, buf.coarse);
        s.coarse->blur(buf.coarse, buf.blurred, lp_, s.diag.data());
      } else {
        s.filter(s.in.data(), s.out.data(), lp_);
      }
    };
    const int64_t kernels = ks_.size();
    if (kernels > 1 && get_num_threads() <= kernels)
      parallel_for(kernels, 1, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) one(ks_[k]);
      });
    else
      for (auto& s : ks_) one(s);
  }

  // One fused pass over blocks of pixels: logits from the unary (and the messages when
  // with_message), softmax, the filter inputs of the next iteration; optionally Q in [N, LP] (q_nl,
  // also read for the energy of the previous iterate), Q in [L, N] and the argmax.
  // last: no iteration follows (the fused path then splats nothing).
  void update(bool with_message, bool last, T* q_nl, double* energy_prev, T* q_ln, int64_t* map,
              const T* init = nullptr) {
    const int64_t L = labels_, LP = lp_, n = n_;
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    std::vector<double> partial(energy_prev ? blocks : 0);
    if (fused_) return update_fused(with_message, !last, q_ln, map);
    parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
      std::vector<T> zbuf(kBlock * LP), tmp(L);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t i0 = b * kBlock, i1 = std::min(n, i0 + kBlock), count = i1 - i0;
        T* z = zbuf.data();
        if (init) {  // a given Q_0 instead of softmax(-U)
          gather_rows(init, n, L, LP, i0, i1, T(1), T(0), z);
        } else {
          std::copy(neg_unary_.data() + i0 * LP, neg_unary_.data() + i1 * LP, z);
          if (with_message) messages(i0, i1, z, tmp.data());
          if (energy_prev) {
            double e = 0;
            for (int64_t i = i0; i < i1; ++i)
              e += pixel_energy(q_nl + i * LP, neg_unary_.data() + i * LP, z + (i - i0) * LP);
            partial[b] = e;
          }
          softmax_rows(z, count, L, LP);
        }
        // (from Q itself: rounding in exp can make distinct logits equal probabilities)
        if (map) argmax_rows(z, count, L, LP, map + i0);
        for (auto& s : ks_) scale_rows(z, s.pre.data() + i0, count, LP, s.in.data() + i0 * LP);
        if (q_nl) std::copy(z, z + count * LP, q_nl + i0 * LP);
        if (q_ln) scatter_rows(z, n, L, LP, i0, i1, q_ln);
      }
    });
    if (energy_prev) *energy_prev = sum(partial);
  }

  // The fused update (float): pixel bands in parallel, blocks of a band in order (each band splats
  // into its own partial sums).
  void update_fused(bool with_message, bool splat, T* q_ln, int64_t* map) {
    if constexpr (std::is_same<T, float>::value) {
      const int64_t L = labels_, LP = lp_, n = n_;
      std::array<GridTerm, kMaxFused> grid{};
      std::array<LatticeTerm, kMaxFused> lattice{};
      std::array<CoarseTerm, kMaxFused> coarse{};
      std::array<KernelState<T>*, kMaxFused> state{}, coarse_state{};
      int ngrid = 0, nlattice = 0, ncoarse = 0;
      int64_t coarse_row = 0;  // the largest [max shared rows, coarse columns, LP] of the coarse terms
      for (auto& s : ks_) {
        if (s.coarse) {
          coarse_state[ncoarse] = &s;
          coarse_row = std::max(coarse_row, s.coarse->max_shared_rows() * s.coarse->cols().nodes * LP);
          coarse[ncoarse++] = CoarseTerm{s.coarse->cols().node.data(),
                                         s.coarse->cols().weight.data(),
                                         s.post.data(),
                                         s.pre.data(),
                                         nullptr,
                                         nullptr};
        } else if (s.lattice) {
          state[nlattice] = &s;
          lattice[nlattice++] = LatticeTerm{nullptr,
                                            s.row_offset.data(),
                                            s.lattice->slice_weights().data(),
                                            s.lattice->dim() + 1,
                                            s.post.data(),
                                            s.pre.data(),
                                            nullptr};
        } else {
          grid[ngrid++] = GridTerm{s.out.data(), s.post.data(), s.diag.data(), s.pre.data(), s.in.data()};
        }
      }
      parallel_for(kBands, 1, [&](int64_t band0, int64_t band1) {
        // Per coarse term: the slices and the splat sums of the image rows that share the current coarse
        // rows (sliced together when the first of them starts, spread together when the last ends).
        std::vector<T> zbuf(kBlock * LP), rows(2 * ncoarse * coarse_row);
        std::array<CoarseTerm, kMaxFused> mine_coarse = coarse;
        std::array<int64_t, kMaxFused> shared0{}, shared1{};  // each term's current rows [shared0, shared1)
        for (int64_t band = band0; band < band1; ++band) {
          shared1.fill(-1);
          std::array<T*, kMaxFused> coarse_partial{};
          for (int k = 0; k < ncoarse && splat; ++k) {
            const CoarseGaussian<T>& g = *coarse_state[k]->coarse;
            coarse_partial[k] = g.buffers(coarse_state[k]->tmp.data(), LP).partial + g.partial_offset(band, LP);
            std::fill(coarse_partial[k],
                      coarse_partial[k] + (g.partial_offset(band + 1, LP) - g.partial_offset(band, LP)), T(0));
          }
          std::array<LatticeTerm, kMaxFused> mine = lattice;
          for (int k = 0; k < nlattice; ++k) {
            // The band's rows: the blurred vertices it reads (copied together, times the lattice's
            // amplitude and the compat diagonal), its partial sums (zeroed).
            KernelState<T>& s = *state[k];
            const int64_t first = s.bands->first[band], count = s.bands->first[band + 1] - first;
            mine[k].partial = s.partial.data() + first * LP;
            if (splat) std::fill(mine[k].partial, mine[k].partial + count * LP, T(0));
            if (!with_message) continue;
            mine[k].blurred = s.local_blurred.data() + first * LP;
            for (int64_t j = 0; j < count; ++j) {
              const T* src = s.blurred + int64_t(s.bands->vertices[first + j]) * LP;
              T* dst = s.local_blurred.data() + (first + j) * LP;
              for (int64_t l = 0; l < LP; ++l) dst[l] = s.amp_diag[l] * src[l];
            }
          }
          FusedTerms terms{grid.data(), ngrid, mine.data(), nlattice, mine_coarse.data(), ncoarse, 0};
          const FusedUpdateFn update_pixels = fused_update_for(LP, terms);
          for (int64_t i0 = n * band / kBands; i0 < n * (band + 1) / kBands; i0 += kBlock) {
            const int64_t i1 = std::min(n * (band + 1) / kBands, i0 + kBlock);
            T* z = map || q_ln ? zbuf.data() : nullptr;  // Q only goes to the filters otherwise
            if (!with_message) gather_unary(i0, i1);     // (in L2 for the update that follows)
            if (ncoarse == 0) {
              update_pixels(neg_unary_.data(), i0, i1, terms, with_message, splat, z, map ? map + i0 : nullptr);
            } else {  // image row by image row
              const int64_t width = coarse_state[0]->coarse->width(), band_end = n * (band + 1) / kBands;
              for (int64_t s0 = i0; s0 < i1;) {
                const int64_t y = s0 / width, s1 = std::min(i1, (y + 1) * width);
                terms.row_start = y * width;
                for (int k = 0; k < ncoarse; ++k) {
                  const CoarseGaussian<T>& g = *coarse_state[k]->coarse;
                  const int64_t row = g.cols().nodes * LP;
                  T* slices = rows.data() + 2 * k * coarse_row;
                  if (y >= shared1[k]) {
                    shared0[k] = y, shared1[k] = g.shared_rows_end(y, (band_end - 1) / width + 1);
                    if (with_message)
                      g.slice_rows(g.buffers(coarse_state[k]->tmp.data(), LP).blurred, y, shared1[k], 0, g.cols().nodes,
                                   LP, slices, row);
                  }
                  mine_coarse[k].row = slices + (y - shared0[k]) * row;
                  mine_coarse[k].splat = slices + coarse_row + (y - shared0[k]) * row;
                }
                update_pixels(neg_unary_.data(), s0, s1, terms, with_message, splat, z ? z + (s0 - i0) * LP : nullptr,
                              map ? map + s0 : nullptr);
                for (int k = 0; k < ncoarse && splat; ++k) {
                  const CoarseGaussian<T>& g = *coarse_state[k]->coarse;
                  const int64_t row = g.cols().nodes * LP;
                  if (s1 == std::min(band_end, shared1[k] * width))  // the last shared row done
                    g.flush_rows(rows.data() + (2 * k + 1) * coarse_row, row, shared0[k], shared1[k], band, 0,
                                 g.cols().nodes, LP, coarse_partial[k]);
                }
                s0 = s1;
              }
            }
            if (q_ln) scatter_rows(z, n, L, LP, i0, i1, q_ln);
          }
        }
      });
    }
  }

  // z[i - i0, :] -= sum_k C_k (post_k[i] * (out_k - self_k)[i, :]) for pixels [i0, i1).
  void messages(int64_t i0, int64_t i1, T* z, T* tmp) const {
    const int64_t L = labels_, LP = lp_;
    for (const auto& s : ks_) {
      const T* __restrict out = s.out.data();
      const T* __restrict in = s.in.data();
      if (!s.diag.empty()) {
        const T* __restrict c = s.diag.data();
        for (int64_t i = i0; i < i1; ++i) {
          const T post = s.post[i];
          T* __restrict zi = z + (i - i0) * LP;
          const T* oi = out + i * LP;
          for (int64_t l = 0; l < L; ++l) zi[l] -= post * (c[l] * oi[l]);
          if (exclude_self_) {
            const T* ii = in + i * LP;
            const T ps = post * s.self[i];
            for (int64_t l = 0; l < L; ++l) zi[l] += ps * (c[l] * ii[l]);
          }
        }
      } else {
        for (int64_t i = i0; i < i1; ++i) {
          const T post = s.post[i];
          T* zi = z + (i - i0) * LP;
          const T* oi = out + i * LP;
          const T* ii = in + i * LP;
          for (int64_t l = 0; l < L; ++l) tmp[l] = post * (exclude_self_ ? oi[l] - s.self[i] * ii[l] : oi[l]);
          for (int64_t a = 0; a < L; ++a) {
            const T* row = s.compat + a * L;
            T acc = 0;
            for (int64_t b = 0; b < L; ++b) acc += row[b] * tmp[b];
            zi[a] -= acc;
          }
        }
      }
    }
  }

  // Energy of q at one pixel given its logits z = -U - message(q).
  static double pixel_energy(const T* q, const T* neg_unary, const T* z, int64_t L) {
    double e = 0;
    for (int64_t l = 0; l < L; ++l) {
      const double ql = q[l];
      const double msg = double(neg_unary[l]) - double(z[l]);
      e += ql * std::log(std::max(ql, 1e-20)) - ql * double(neg_unary[l]) + 0.5 * ql * msg;
    }
    return e;
  }
  double pixel_energy(const T* q, const T* neg_unary, const T* z) const {
    return pixel_energy(q, neg_unary, z, labels_);
  }

  double energy_only() {
    const int64_t L = labels_, LP = lp_, n = n_;
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    std::vector<double> partial(blocks);
    parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
      std::vector<T> zbuf(kBlock * LP), tmp(L);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t i0 = b * kBlock, i1 = std::min(n, i0 + kBlock);
        std::copy(neg_unary_.data() + i0 * LP, neg_unary_.data() + i1 * LP, zbuf.data());
        messages(i0, i1, zbuf.data(), tmp.data());
        double e = 0;
        for (int64_t i = i0; i < i1; ++i)
          e += pixel_energy(q_.data() + i * LP, neg_unary_.data() + i * LP, zbuf.data() + (i - i0) * LP);
        partial[b] = e;
      }
    });
    return sum(partial);
  }

  static double sum(const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s;
  }

  int64_t labels_, lp_, n_;
  bool exclude_self_, fused_ = false;
  std::atomic<bool> unary_finite_{true};  // (checked while the unary is gathered: all of it by Q_0)
  const T* unary_;                        // [L, N]
  WorkspaceVector<T> neg_unary_;          // [N, LP], padding lanes -1e30
  std::vector<KernelState<T>> ks_;
  WorkspaceVector<T> q_;  // [N, LP], kept only for the energy
};

}  // namespace

template <typename T>
void dense_crf_cpu(const T* unary, int64_t batch, int64_t labels, int64_t n, const std::vector<int64_t>& spatial,
                   const std::vector<CrfKernel<T>>& kernels, int64_t iterations, bool exclude_self, const T* init, T* q,
                   int64_t* map_labels, double* energy, int64_t* lattice_bytes) {
  std::vector<int64_t> bytes(batch, 0);
  auto one = [&](int64_t b) {
    ImageCrf<T> crf(unary + b * labels * n, labels, n, spatial, kernels, b, exclude_self, energy != nullptr,
                    init != nullptr);
    bytes[b] = crf.lattice_bytes();
    crf.run(iterations, init ? init + b * labels * n : nullptr, q + b * labels * n,
            map_labels ? map_labels + b * n : nullptr, energy ? energy + b * (iterations + 1) : nullptr);
  };
  if (batch == 1) {
    one(0);  // parallel inside
  } else {
    // Whole images per thread: lattices are built in parallel; the nested loops run inline.
    parallel_for(batch, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) one(b);
    });
  }
  if (lattice_bytes) *lattice_bytes = batch ? *std::max_element(bytes.begin(), bytes.end()) : 0;
}

template void dense_crf_cpu<float>(const float*, int64_t, int64_t, int64_t, const std::vector<int64_t>&,
                                   const std::vector<CrfKernel<float>>&, int64_t, bool, const float*, float*, int64_t*,
                                   double*, int64_t*);
template void dense_crf_cpu<double>(const double*, int64_t, int64_t, int64_t, const std::vector<int64_t>&,
                                    const std::vector<CrfKernel<double>>&, int64_t, bool, const double*, double*,
                                    int64_t*, double*, int64_t*);

}  // namespace convloc
