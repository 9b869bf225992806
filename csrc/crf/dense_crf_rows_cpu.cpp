#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "core/simd.h"
#include "crf/dense_crf_rows.h"

namespace convloc {
namespace {

using v8f = Vec<float, 8>;

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

// ---- Layout: [L, n] <-> rows [n, LP] ----

// In tiles of kTransposeTile pixels: each label's values are read (written) contiguously while the
// tile's rows stay in L1 across all the labels.
constexpr int64_t kTransposeTile = 64;
template <typename T>
using BitsOf = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
template <typename T>
constexpr BitsOf<T> kExponentBits = sizeof(T) == 4 ? BitsOf<T>(0x7f800000u) : BitsOf<T>(0x7ff0000000000000ull);

template <typename T>
bool gather_rows_tiled(const T* src, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, T sign, T pad,
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
void scatter_rows_tiled(const T* __restrict rows, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, T* dst) {
  for (int64_t t0 = i0; t0 < i1; t0 += kTransposeTile) {
    const int64_t count = std::min(i1 - t0, kTransposeTile);
    const T* __restrict tile = rows + (t0 - i0) * LP;
    for (int64_t l = 0; l < L; ++l) {
      T* __restrict d = dst + l * n + t0;
      for (int64_t r = 0; r < count; ++r) d[r] = tile[r * LP + l];
    }
  }
}

// float: blocks of 8 pixels x 8 labels transposed in registers (the tiled loops store one value at a
// time), the remaining pixels by the tiled loops.
CONVLOC_ALWAYS_INLINE void transpose8x8(v8f r[8]) {
  v8f t[8], u[8];
  for (int k = 0; k < 4; ++k) {
    t[2 * k] = shuffle<0, 8, 1, 9, 4, 12, 5, 13>(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = shuffle<2, 10, 3, 11, 6, 14, 7, 15>(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 2; ++k)
    for (int h = 0; h < 2; ++h) {
      const v8f a = t[4 * k + h], b = t[4 * k + h + 2];
      u[4 * k + 2 * h] = shuffle<0, 1, 8, 9, 4, 5, 12, 13>(a, b);
      u[4 * k + 2 * h + 1] = shuffle<2, 3, 10, 11, 6, 7, 14, 15>(a, b);
    }
  for (int j = 0; j < 4; ++j) {
    r[j] = shuffle<0, 1, 2, 3, 8, 9, 10, 11>(u[j], u[j + 4]);
    r[j + 4] = shuffle<4, 5, 6, 7, 12, 13, 14, 15>(u[j], u[j + 4]);
  }
}
CONVLOC_ALWAYS_INLINE bool gather_rows_8x8(const float* src, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1,
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
  bool finite = gather_rows_tiled<float>(src, n, L, LP, i, i1, sign, pad, rows + (i - i0) * LP);
  for (int k = 0; k < 8; ++k) finite = finite && top[k] != kExponentBits<float>;
  return finite;
}
CONVLOC_ALWAYS_INLINE void scatter_rows_8x8(const float* rows, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1,
                                            float* dst) {
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8)
    for (int64_t g = 0; g < LP; g += 8) {
      v8f r[8];
      for (int k = 0; k < 8; ++k) r[k] = load_lanes<v8f>(rows + (i + k - i0) * LP + g);
      transpose8x8(r);
      for (int k = 0; k < 8 && g + k < L; ++k) store_lanes(dst + (g + k) * n + i, r[k]);
    }
  scatter_rows_tiled<float>(rows + (i - i0) * LP, n, L, LP, i, i1, dst);
}
CONVLOC_SIMD_FN(bool, gather_rows_f32,
                (const float* src, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, float sign, float pad,
                 float* __restrict rows),
                { return gather_rows_8x8(src, n, L, LP, i0, i1, sign, pad, rows); })
CONVLOC_SIMD_FN(void, scatter_rows_f32,
                (const float* rows, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, float* dst),
                { scatter_rows_8x8(rows, n, L, LP, i0, i1, dst); })

// ---- The general update's softmax ----

// exp in place over rows of whole vectors (count a multiple of 8); double uses std::exp.
CONVLOC_ALWAYS_INLINE void exp_vectors(float* z, int64_t count) {
  for (int64_t j = 0; j < count; j += 8) store_lanes(z + j, exp_lanes(load_lanes<v8f>(z + j)));
}
CONVLOC_SIMD_FN(void, exp_inplace_f32, (float* z, int64_t count), { exp_vectors(z, count); })
void exp_inplace(float* z, int64_t count) { exp_inplace_f32(z, count); }
void exp_inplace(double* z, int64_t count) {
  for (int64_t j = 0; j < count; ++j) z[j] = std::exp(z[j]);
}

template <typename T>
void softmax_rows_of(T* z, int64_t count, int64_t L, int64_t LP) {
  for (int64_t r = 0; r < count; ++r) {
    T* zr = z + r * LP;
    const T m = *std::max_element(zr, zr + L);
    for (int64_t l = 0; l < L; ++l) zr[l] -= m;
    for (int64_t l = L; l < LP; ++l) zr[l] = T(-100);  // exp underflows to 0 (float)
  }
  exp_inplace(z, count * LP);
  for (int64_t r = 0; r < count; ++r) {
    T* zr = z + r * LP;
    T s = 0;
    for (int64_t l = 0; l < L; ++l) s += zr[l];
    const T inv = T(1) / s;
    for (int64_t l = 0; l < L; ++l) zr[l] *= inv;
    for (int64_t l = L; l < LP; ++l) zr[l] = 0;
  }
}

// ---- The fused update's pixel loop ----
//
// Rows are padded to B whole 8-lane vectors (B fixed at compile time), so every step is a vector
// operation: the padding lanes of -U are -1e30 and of the compat diagonals zero, so their exponentials
// are e^-70 (the clamp of exp_lanes: nothing next to the sum's >= 1) and never reach a message.

template <typename V>
CONVLOC_ALWAYS_INLINE V max_lanes(V a, V b) {
  return a > b ? a : b;
}

// One pixel's row of 8 B labels in registers, in vectors of VB bytes.
template <int B, int VB>
using Row = Lanes<float, 8 * B, VB>;
CONVLOC_ALWAYS_INLINE v8f low8(Vec<float, 16> v) { return shuffle<0, 1, 2, 3, 4, 5, 6, 7>(v, v); }
CONVLOC_ALWAYS_INLINE v8f high8(Vec<float, 16> v) { return shuffle<8, 9, 10, 11, 12, 13, 14, 15>(v, v); }
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

// The pixels [i0, i1) go in chunks of kChunk pixels through three passes: logits (the unary and every
// term's message), softmax, splats. Each pass is a short loop over independent pixels, and the softmax
// reduces 8 rows at a time instead of one row's long chain of shuffles.
constexpr int64_t kChunk = 32;

// The terms as the pixel loops see them. Shape K1 > 0: exactly one lattice term, over simplices of K1
// vertices, NC coarse terms and no exact grid term (the common CRF: a Gaussian and an RGB bilateral
// kernel); K1 = 0: any mix (counts and sizes read at run time). The terms are copied into locals first:
// read through FusedTerms, every store of a row could have changed them as far as the compiler knows,
// so each pixel would load them again; with a fixed shape the copies stay in registers.
template <int K1, int NC>
struct LocalTerms {
  static constexpr int kLattice = K1 ? 1 : kMaxFusedKernels, kCoarse = K1 ? NC : kMaxFusedKernels,
                       kExact = K1 ? 0 : kMaxFusedKernels;
  std::array<ExactGridTerm, kExact> exact;
  std::array<LatticeTerm, kLattice> lattice;
  std::array<CoarseGridTerm, kCoarse> coarse;
  int exact_count, lattice_count, coarse_count;
  int64_t row_start;

  CONVLOC_ALWAYS_INLINE explicit LocalTerms(const FusedTerms& t)
      : exact_count(K1 ? 0 : t.exact_count),
        lattice_count(K1 ? 1 : t.lattice_count),
        coarse_count(K1 ? NC : t.coarse_count),
        row_start(t.row_start) {
    for (int k = 0; k < exact_count; ++k) exact[k] = t.exact[k];
    for (int k = 0; k < lattice_count; ++k) lattice[k] = t.lattice[k];
    for (int k = 0; k < coarse_count; ++k) coarse[k] = t.coarse[k];
  }
  CONVLOC_ALWAYS_INLINE int vertices(int k) const { return K1 ? K1 : lattice[k].vertices; }
};

// z[i - c0] = -U_i - sum_k post_k c_k out_k(i) for pixels [c0, c1) (of [c0, end)).
template <int B, int VB, int K1, int NC>
CONVLOC_ALWAYS_INLINE void chunk_logits(const float* __restrict neg_unary, int64_t c0, int64_t c1, int64_t end,
                                        const FusedTerms& terms, float* __restrict z) {
  using R = Row<B, VB>;
  constexpr int64_t LP = 8 * B;
  const LocalTerms<K1, NC> t(terms);
  for (int64_t i = c0; i < c1; ++i) {
    // The unary a chunk ahead: it streams from memory, faster than the hardware prefetchers fetch it.
    const float* ahead = neg_unary + std::min(i + kChunk, end - 1) * LP;
    __builtin_prefetch(ahead), __builtin_prefetch(ahead + LP - 1);
    R q = R::load(neg_unary + i * LP);
    for (int k = 0; k < t.exact_count; ++k) {
      const ExactGridTerm& g = t.exact[k];
      q = q - g.post[i] * (R::load(g.compat) * R::load(g.out + i * LP));
    }
    for (int k = 0; k < t.lattice_count; ++k) {
      const LatticeTerm& l = t.lattice[k];
      const int vertices = t.vertices(k);
      const int32_t* off = l.offset + i * vertices;
      const float* w = l.weight + i * vertices;
      R acc = w[0] * R::load(l.blurred + off[0]);
      for (int j = 1; j < vertices; ++j) acc = acc + w[j] * R::load(l.blurred + off[j]);
      q = q - l.post[i] * acc;
    }
    for (int k = 0; k < t.coarse_count; ++k) {
      const CoarseGridTerm& g = t.coarse[k];
      const int64_t x = i - t.row_start;
      const float* w = g.weight + 3 * x;
      const float* slice = g.slice + int64_t(g.node[x]) * LP;
      const R acc = w[0] * R::load(slice) + w[1] * R::load(slice + LP) + w[2] * R::load(slice + 2 * LP);
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
    c[k] = f(shuffle<0, 1, 2, 3, 8, 9, 10, 11>(v[2 * k], v[2 * k + 1]),
             shuffle<4, 5, 6, 7, 12, 13, 14, 15>(v[2 * k], v[2 * k + 1]));
  for (int k = 0; k < 2; ++k)  // rows 4k, 4k, 4k + 2, 4k + 2, 4k + 1, 4k + 1, 4k + 3, 4k + 3
    d[k] = f(shuffle<0, 1, 8, 9, 4, 5, 12, 13>(c[2 * k], c[2 * k + 1]),
             shuffle<2, 3, 10, 11, 6, 7, 14, 15>(c[2 * k], c[2 * k + 1]));
  return f(shuffle<0, 2, 8, 10, 4, 6, 12, 14>(d[0], d[1]), shuffle<1, 3, 9, 11, 5, 7, 13, 15>(d[0], d[1]));
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

// The next filter inputs pre_k Q from Q = z[i - c0] for pixels [c0, c1): written (exact grid terms) or
// splatted (lattice and coarse terms; one pixel after another, so the additions' order is fixed).
template <int B, int VB, int K1, int NC>
CONVLOC_ALWAYS_INLINE void chunk_splat(const float* __restrict z, int64_t c0, int64_t c1, const FusedTerms& terms) {
  using R = Row<B, VB>;
  constexpr int64_t LP = 8 * B;
  const LocalTerms<K1, NC> t(terms);
  for (int64_t i = c0; i < c1; ++i) {
    const R q = R::load(z + (i - c0) * LP);
    for (int k = 0; k < t.exact_count; ++k) (t.exact[k].pre[i] * q).store(t.exact[k].in + i * LP);
    for (int k = 0; k < t.lattice_count; ++k) {
      const int vertices = t.vertices(k);
      const int32_t* off = t.lattice[k].offset + i * vertices;
      const float* w = t.lattice[k].weight + i * vertices;
      const R pq = t.lattice[k].pre[i] * q;
      float* const sums = t.lattice[k].splat_sums;
      for (int j = 0; j < vertices; ++j) {
        float* row = sums + off[j];
        (R::load(row) + w[j] * pq).store(row);
      }
    }
  }
  // Coarse terms: the pixels of a run with the same first node add into the same three node rows,
  // kept in registers across the run (the same additions in the same order; through memory, each
  // pixel would wait for the previous pixel's stores).
  for (int k = 0; k < t.coarse_count; ++k) {
    const CoarseGridTerm& g = t.coarse[k];
    for (int64_t i = c0; i < c1;) {
      const int32_t node = g.node[i - t.row_start];
      float* row = g.splat_sums + int64_t(node) * LP;
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

// labels[r] = the first label holding the largest Q of row r of z, for `count` rows, 8 rows at a time
// (as the softmax reduces them), while they are in L1. (The padding lanes hold e^-70 / sum: never a
// row's largest, which is at least 1 / L.)
template <int B, int VB>
CONVLOC_ALWAYS_INLINE void chunk_argmax(const float* z, int64_t count, int64_t* labels) {
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
    for (int p = 0; p < 8 && r + p < count; ++p) labels[r + p] = static_cast<int64_t>(first[kSlotOf[p]]);
  }
}

// Pixels [i0, i1) of rows of B vectors: every chunk through the passes `logits` and `out` ask for
// (Q goes through a chunk buffer when out.q is null).
template <int B, int VB, int K1, int NC>
CONVLOC_ALWAYS_INLINE void fused_update(const float* __restrict neg_unary, int64_t i0, int64_t i1, const FusedTerms& t,
                                        Logits logits, const FusedOutputs& out) {
  constexpr int64_t LP = 8 * B;
  const bool with_messages = logits == Logits::WithMessages, filter_inputs = out.filter_inputs;
  float* const q_out = out.q;
  int64_t* const labels = out.labels;
  alignas(64) float chunk[kChunk * LP];
  for (int64_t c0 = i0; c0 < i1; c0 += kChunk) {
    const int64_t c1 = std::min(i1, c0 + kChunk);
    float* q = q_out ? q_out + (c0 - i0) * LP : chunk;
    if (with_messages) chunk_logits<B, VB, K1, NC>(neg_unary, c0, c1, i1, t, q);
    chunk_softmax<B, VB>(with_messages ? q : neg_unary + c0 * LP, q, c1 - c0);
    if (labels) chunk_argmax<B, VB>(q, c1 - c0, labels + (c0 - i0));
    if (filter_inputs) chunk_splat<B, VB, K1, NC>(q, c0, c1, t);
  }
}
// Per row width and shape (LocalTerms): 32-byte vectors in every SIMD version, and 64-byte ones where the
// CPU has AVX-512. The fixed shapes: an RGB bilateral kernel (d = 5: simplices of 6 vertices), with
// or without a coarse Gaussian.
#define CONVLOC_FUSED_UPDATE(B, K1, NC)                                                                              \
  CONVLOC_FMA_FN(                                                                                                    \
      void, fused_update_##B##_##K1##_##NC,                                                                          \
      (const float* neg_unary, int64_t i0, int64_t i1, const FusedTerms& t, Logits logits, const FusedOutputs& out), \
      { fused_update<B, kVectorBytes, K1, NC>(neg_unary, i0, i1, t, logits, out); })                                 \
  CONVLOC_WIDE_FMA void fused_update_wide_##B##_##K1##_##NC(                                                         \
      const float* neg_unary, int64_t i0, int64_t i1, const FusedTerms& t, Logits logits, const FusedOutputs& out) { \
    fused_update<B, kWideBytes, K1, NC>(neg_unary, i0, i1, t, logits, out);                                          \
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

}  // namespace

bool gather_rows(const float* src, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, float sign, float pad,
                 float* rows) {
  return gather_rows_f32(src, n, L, LP, i0, i1, sign, pad, rows);
}
bool gather_rows(const double* src, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, double sign, double pad,
                 double* rows) {
  return gather_rows_tiled(src, n, L, LP, i0, i1, sign, pad, rows);
}
void scatter_rows(const float* rows, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, float* dst) {
  scatter_rows_f32(rows, n, L, LP, i0, i1, dst);
}
void scatter_rows(const double* rows, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, double* dst) {
  scatter_rows_tiled(rows, n, L, LP, i0, i1, dst);
}
void softmax_rows(float* z, int64_t count, int64_t L, int64_t LP) { softmax_rows_of(z, count, L, LP); }
void softmax_rows(double* z, int64_t count, int64_t L, int64_t LP) { softmax_rows_of(z, count, L, LP); }

// (Conditionals, not a table of function pointers: GCC's AddressSanitizer misreads such a table.)
#define CONVLOC_PICK(B, K1, NC) (wide ? fused_update_wide_##B##_##K1##_##NC : fused_update_##B##_##K1##_##NC)
#define CONVLOC_PICK_SHAPE(B) \
  (shape == 2 ? CONVLOC_PICK(B, 6, 1) : shape == 1 ? CONVLOC_PICK(B, 6, 0) : CONVLOC_PICK(B, 0, 0))
FusedPixelUpdate fused_pixel_update_for(int64_t lp, const FusedTerms& t) {
  const bool wide = wide_vectors();
  const bool one_5d_lattice = t.exact_count == 0 && t.lattice_count == 1 && t.lattice[0].vertices == 6;
  const int shape = one_5d_lattice && t.coarse_count <= 1 ? 1 + t.coarse_count : 0;
  return lp == 8    ? CONVLOC_PICK_SHAPE(1)
         : lp == 16 ? CONVLOC_PICK_SHAPE(2)
         : lp == 24 ? CONVLOC_PICK_SHAPE(3)
                    : CONVLOC_PICK_SHAPE(4);
}
#undef CONVLOC_PICK_SHAPE
#undef CONVLOC_PICK

}  // namespace convloc
