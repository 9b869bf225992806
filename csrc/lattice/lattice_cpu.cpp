#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>

#include "core/check.h"
#include "core/parallel.h"
#include "core/simd.h"
#include "lattice/lattice.h"

namespace convloc {
namespace {

// The gathering splat prefetches the input row of the entry this far ahead; the splat lists carry as
// many padding entries (point 0) so that the last reads stay inside.
constexpr int64_t kSplatAhead = 8;

// The build runs on chunks of about kChunkPoints points (their number depends on n only, never on the thread
// count), a whole number of them per splat band (kLatticeSplatBands). Each chunk deduplicates its vertices in a
// small local table; the chunks' tables are then merged in order, into their band's table (the band tables'
// numbering) and those into the global one, so the vertices are numbered by first use: the numbering depends on
// the input only (not even on the chunking), and vertices close in the numbering are close in space (the splat
// gathers and the slice walk memory nearly in order). Larger chunks share fewer vertices with each other (less
// to merge) but have larger tables.
constexpr int64_t kChunkPoints = 8192;

int64_t num_chunks(int64_t n) {
  constexpr int64_t kBandPoints = kChunkPoints * kLatticeSplatBands;
  return kLatticeSplatBands * std::clamp<int64_t>((n + kBandPoints - 1) / kBandPoints, 1, 32);
}
// Chunk c's first point; with chunks a multiple of the bands, band b's first chunk starts at band b's first
// point, n * b / kLatticeSplatBands.
int64_t chunk_begin(int64_t n, int64_t chunks, int64_t c) { return n * c / chunks; }

// 8-lane vectors: one AVX2 register of floats, whatever the SIMD version's target.
template <typename T>
using Vec8 = Vec<T, 8>;
typedef Vec<int32_t, 8> IVec8;
typedef Vec<uint32_t, 8> UVec8;
typedef Vec<int64_t, 8> LVec8;
template <typename T>
CONVLOC_ALWAYS_INLINE Vec8<T> load8(const T* p) {
  return load_lanes<Vec8<T>>(p);
}

// The CPU tables' hash of a key: sum_i key[i] * multiplier(i) mod 2^32, whose high bits pick the slot
// (multiply-shift hashing). Independent multiplies that vectorise across points, and a neighbour's hash is
// the vertex's plus a constant per direction. Only speed depends on it: keys are always compared.
uint32_t hash_multiplier(int i) {
  uint64_t z = (static_cast<uint64_t>(i) + 1) * 0x9E3779B97F4A7C15ull;  // a splitmix64 step
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return static_cast<uint32_t>(z >> 32) | 1;
}

// Open-addressing table of keys (d int32 coordinates) → dense ids in insertion order, probed linearly from the
// high bits of the hash. A slot holds the hash next to the id, so a probe reads one cache line, and the key only
// when the hashes match. Grows at half load. D > 0: the dimension, fixed at compile time.
class KeyTable {
 public:
  KeyTable(int d, int64_t expected) : d_(d) {
    int bits = 6;
    while ((int64_t(1) << bits) < 2 * expected) ++bits;
    rehash(bits);
    hashes_.reserve(expected);
    keys_.reserve(expected * d);
  }
  int64_t size() const { return static_cast<int64_t>(hashes_.size()); }
  const int32_t* key(int64_t id) const { return &keys_[id * d_]; }
  uint32_t hash(int64_t id) const { return hashes_[id]; }
  void prefetch(uint32_t h) const { __builtin_prefetch(&slots_[h >> shift_]); }

  template <int D>
  int32_t find(const int32_t* key, uint32_t h) const {
    for (uint32_t s = h >> shift_;; s = (s + 1) & mask_) {
      const Slot slot = slots_[s];
      if (slot.id < 0) return -1;
      if (slot.hash == h && lattice_key_equal(this->key(slot.id), key, D > 0 ? D : d_)) return slot.id;
    }
  }

  // The key's coordinates are key[i * stride].
  template <int D, int stride = 1>
  int32_t insert(const int32_t* key, uint32_t h) {
    const int d = D > 0 ? D : d_;
    for (uint32_t s = h >> shift_;; s = (s + 1) & mask_) {
      const Slot slot = slots_[s];
      if (slot.id < 0) {
        const int32_t fresh = static_cast<int32_t>(hashes_.size());
        slots_[s] = Slot{h, fresh};
        hashes_.push_back(h);
        for (int i = 0; i < d; ++i) keys_.push_back(key[i * stride]);
        if (2 * hashes_.size() > slots_.size()) rehash(bits_ + 1);
        return fresh;
      }
      if (slot.hash == h) {
        const int32_t* other = this->key(slot.id);
        int32_t diff = 0;  // branch-free, as lattice_key_equal
        for (int i = 0; i < d; ++i) diff |= other[i] ^ key[i * stride];
        if (diff == 0) return slot.id;
      }
    }
  }

 private:
  struct Slot {
    uint32_t hash;
    int32_t id;  // -1: empty
  };
  void rehash(int bits) {
    bits_ = bits;
    shift_ = 32 - bits;
    mask_ = static_cast<uint32_t>((uint64_t(1) << bits) - 1);  // bits may reach 32
    slots_.assign(size_t(1) << bits, Slot{0, -1});
    for (size_t id = 0; id < hashes_.size(); ++id) {
      uint32_t s = hashes_[id] >> shift_;
      while (slots_[s].id >= 0) s = (s + 1) & mask_;
      slots_[s] = Slot{hashes_[id], static_cast<int32_t>(id)};
    }
  }
  int d_;
  int bits_ = 0, shift_ = 0;
  uint32_t mask_ = 0;
  // (from the workspace cache: a sparse lattice's tables are tens of MB, fresh pages a fault each)
  WorkspaceVector<Slot> slots_;
  WorkspaceVector<int32_t> keys_;
  WorkspaceVector<uint32_t> hashes_;
};

// Lane masks (-1 where true) of a comparison of Vec8<T>, as 32-bit lanes; and T-wide selects on them.
CONVLOC_ALWAYS_INLINE IVec8 lanes32(IVec8 m) { return m; }
CONVLOC_ALWAYS_INLINE IVec8 lanes32(LVec8 m) { return __builtin_convertvector(m, IVec8); }
template <typename T>
CONVLOC_ALWAYS_INLINE Vec8<T> select_or_zero(IVec8 m, Vec8<T> a) {
  if constexpr (std::is_same_v<T, float>)
    return m ? a : Vec8<T>{};
  else
    return __builtin_convertvector(m, LVec8) ? a : Vec8<T>{};
}

// lattice_simplex for points [0, count) of f, 8 at a time in vector lanes: on each lane the same operations in
// the same order (no fused multiply-adds: -ffp-contract=off), hence bitwise the same keys, weights and ranks
// [count, d+1]. Keys are written by groups of 8 points, keys[((p / 8) * (d+1) * d + k * d + i) * 8 + p % 8],
// and read from group -1 for the point before p = 0. Also per entry, at ((p / 8) * (d+1) + k) * 8 + p % 8: the
// key's hash (multipliers mult[0..d)), and whether it equals the previous point's of the same remainder
// (-1, else 0). Returns true if a point is out of range or not finite: the same test as
// sum_k |f_k * scale_k| * (d + 1) < kLatticeMaxCoord in double, per point. D > 0: d fixed at compile time.
template <typename T, int D>
CONVLOC_ALWAYS_INLINE bool simplex_lanes(const T* f, int64_t count, int d_runtime, const T* scale, const uint32_t* mult,
                                         int32_t* keys, uint32_t* hashes, int32_t* same, T* weight, uint8_t* rank) {
  using V = Vec8<T>;
  using DV = Vec8<double>;
  constexpr int M = D > 0 ? D : kLatticeMaxDim;
  const int d = D > 0 ? D : d_runtime, k1 = d + 1;
  const T down_factor = T(1) / T(d + 1);
  const LVec8 kAllLanes = LVec8{} - 1;
  uint32_t mult_sum = 0;
  for (int i = 0; i < d; ++i) mult_sum += mult[i];
  for (int64_t p0 = 0; p0 < count; p0 += 8) {
    const int live = static_cast<int>(std::min<int64_t>(8, count - p0));
    // Lane l = point p0 + l (lanes past the last point repeat it).
    V x[M];
    for (int i = 0; i < d; ++i) {
      T lane[8];
      if (live == 8)
        for (int l = 0; l < 8; ++l) lane[l] = f[(p0 + l) * d + i];
      else
        for (int l = 0; l < 8; ++l) lane[l] = f[(p0 + std::min(l, live - 1)) * d + i];
      x[i] = load8(lane);
    }
    DV reach{};
    for (int i = 0; i < d; ++i) {
      const DV r = __builtin_convertvector(x[i], DV) * double(scale[i]);
      reach += r < 0 ? -r : r;
    }
    const LVec8 ok = reach * double(k1) < kLatticeMaxCoord;  // false for NaN
    if (std::memcmp(&ok, &kAllLanes, sizeof ok) != 0) return true;
    // Elevation.
    V elevated[M + 1];
    V sm{};
    for (int i = d; i > 0; --i) {
      const V cf = x[i - 1] * scale[i - 1];
      elevated[i] = sm - T(i) * cf;
      sm += cf;
    }
    elevated[0] = sm;
    // Nearest remainder-0 point.
    IVec8 rem0[M + 1], rk[M + 1], sum{};
    for (int i = 0; i <= d; ++i) {
      const V v = elevated[i] * down_factor;
      IVec8 fl = __builtin_convertvector(v, IVec8);
      fl += lanes32(__builtin_convertvector(fl, V) > v);
      const V down = __builtin_convertvector(fl, V) * T(d + 1);
      const IVec8 up = -lanes32(down + T(d + 1) - elevated[i] < elevated[i] - down);
      rem0[i] = (fl + up) * (d + 1);
      sum += fl + up;
      rk[i] = IVec8{};
    }
    // Ranks.
    for (int i = 0; i < d; ++i) {
      const V di = elevated[i] - __builtin_convertvector(rem0[i], V);
      for (int j = i + 1; j <= d; ++j) {
        const IVec8 lt = lanes32(di < elevated[j] - __builtin_convertvector(rem0[j], V));
        rk[i] -= lt;
        rk[j] += 1 + lt;
      }
    }
    // Onto the plane: both of lattice_simplex's branches as masks (sum == 0 changes nothing).
    const IVec8 pos = sum > 0, neg = sum < 0;
    for (int i = 0; i <= d; ++i) {
      const IVec8 move = ((d + 1) & (neg & (rk[i] < -sum))) - ((d + 1) & (pos & (rk[i] >= (d + 1) - sum)));
      rem0[i] += move;
      rk[i] += sum + move;
    }
    // Barycentric coordinates. lattice_simplex adds v_i to bary[d - rank_i] and subtracts it from
    // bary[d + 1 - rank_i], both from zero, so bary[m] = by_rank[d - m] - by_rank[d + 1 - m] exactly, whatever the
    // order (by_rank[r]: v of the coordinate of rank r, never -0).
    V by_rank[M + 1], bary[M + 1];
    for (int r = 0; r <= d; ++r) by_rank[r] = V{};
    for (int i = 0; i <= d; ++i) {
      const V v = (elevated[i] - __builtin_convertvector(rem0[i], V)) * down_factor;
      for (int r = 0; r <= d; ++r) by_rank[r] += select_or_zero<T>(rk[i] == r, v);
    }
    for (int m = 1; m <= d; ++m) bary[m] = by_rank[d - m] - by_rank[d + 1 - m];
    bary[0] = by_rank[d] + (T(1) - by_rank[0]);
    // Vertex keys, lane-major by groups of 8 points (after the previous group's: for the first, the caller's);
    // each entry's hash, and whether its key repeats the previous point's (a lane shift).
    int32_t* group = keys + (p0 / 8) * k1 * d * 8;
    // Hashes (mod 2^32, so exact in any order): sum_i key_i * mult_i with key_i = rem0_i + k - (d+1) [rank_i > d-k].
    UVec8 h0{};
    for (int i = 0; i < d; ++i) h0 += __builtin_convertvector(rem0[i], UVec8) * mult[i];
    for (int k = 0; k <= d; ++k) {
      UVec8 wrapped{};
      IVec8 diff{};
      for (int i = 0; i < d; ++i) {
        const IVec8 over = rk[i] > d - k;
        const IVec8 key = rem0[i] + k - ((d + 1) & over);
        const IVec8 before = load_lanes<IVec8>(group + (k * d + i - k1 * d) * 8);
        diff |= key ^ shuffle<7, 8, 9, 10, 11, 12, 13, 14>(before, key);
        store_lanes(group + (k * d + i) * 8, key);
        wrapped += __builtin_convertvector(over, UVec8) & mult[i];
      }
      const UVec8 h = h0 + uint32_t(k) * mult_sum - uint32_t(d + 1) * wrapped;
      store_lanes(hashes + ((p0 / 8) * k1 + k) * 8, h);
      store_lanes(same + ((p0 / 8) * k1 + k) * 8, IVec8(diff == 0));
    }
    T bary_lanes[M + 1][8];
    int32_t rank_lanes[M + 1][8];
    for (int k = 0; k <= d; ++k) {
      store_lanes(bary_lanes[k], bary[k]);
      store_lanes(rank_lanes[k], rk[k]);
    }
    for (int l = 0; l < live; ++l) {
      const int64_t p = p0 + l;
      for (int k = 0; k <= d; ++k) {
        weight[p * k1 + k] = bary_lanes[k][l];
        rank[p * k1 + k] = static_cast<uint8_t>(rank_lanes[k][l]);
      }
    }
  }
  return false;
}

// SIMD versions per type and dimension.
#define CONVLOC_LATTICE_SIMPLEX(T, D)                                                                     \
  CONVLOC_SIMD_FN(bool, simplex_##T##_##D,                                                                \
                  (const T* f, int64_t count, int d, const T* scale, const uint32_t* mult, int32_t* keys, \
                   uint32_t* hashes, int32_t* same, T* weight, uint8_t* rank),                            \
                  { return simplex_lanes<T, D>(f, count, d, scale, mult, keys, hashes, same, weight, rank); })
CONVLOC_LATTICE_SIMPLEX(float, 0)
CONVLOC_LATTICE_SIMPLEX(float, 2)
CONVLOC_LATTICE_SIMPLEX(float, 3)
CONVLOC_LATTICE_SIMPLEX(float, 5)
CONVLOC_LATTICE_SIMPLEX(double, 0)
CONVLOC_LATTICE_SIMPLEX(double, 2)
CONVLOC_LATTICE_SIMPLEX(double, 3)
CONVLOC_LATTICE_SIMPLEX(double, 5)
#undef CONVLOC_LATTICE_SIMPLEX

template <typename T, int D>
bool simplex_points(const T* f, int64_t count, int d, const T* scale, const uint32_t* mult, int32_t* keys,
                    uint32_t* hashes, int32_t* same, T* weight, uint8_t* rank) {
  if constexpr (std::is_same_v<T, float>)
    return (D == 2   ? simplex_float_2
            : D == 3 ? simplex_float_3
            : D == 5 ? simplex_float_5
                     : simplex_float_0)(f, count, d, scale, mult, keys, hashes, same, weight, rank);
  else
    return (D == 2   ? simplex_double_2
            : D == 3 ? simplex_double_3
            : D == 5 ? simplex_double_5
                     : simplex_double_0)(f, count, d, scale, mult, keys, hashes, same, weight, rank);
}

// Points per simplex_points call; table slots prefetched this many entries ahead.
constexpr int64_t kBlock = 64, kAhead = 8;

// fn(std::integral_constant<int, D>{}): D = d for the dimensions compiled specially (the per-point loops
// unroll), else 0 (d at run time).
template <typename F>
auto with_dim(int d, F&& fn) {
  switch (d) {
    case 2:
      return fn(std::integral_constant<int, 2>{});
    case 3:
      return fn(std::integral_constant<int, 3>{});
    case 5:
      return fn(std::integral_constant<int, 5>{});
    default:
      return fn(std::integral_constant<int, 0>{});
  }
}

// Step 1 of the build for one chunk of points: simplices, weights, ranks and chunk-local vertex ids. An entry
// whose key equals the previous point's entry of the same remainder (neighbouring pixels mostly share
// vertices) takes its id without a lookup. D > 0: the dimension, fixed at compile time; D == 0: d at run time.
// Returns true if a point's coordinates are out of range (or not finite).
template <typename T>
struct BuildChunk {
  const T* features;
  int64_t n, chunks;
  const T* scale;
  const uint32_t* mult;
  T* weight;
  uint8_t* rank;
  int32_t* offset;

  template <int D>
  bool run(int64_t c, int d_runtime, KeyTable& table) const {
    const int d = D > 0 ? D : d_runtime;
    const int64_t k1 = d + 1, kd = k1 * d, group = 8 * kd;
    // A block's keys (as simplex_points writes them), after the group of points before the block.
    std::vector<int32_t> keys((kBlock / 8 + 1) * group);
    std::vector<uint32_t> hashes(kBlock * k1);
    std::vector<int32_t> same(kBlock * k1), todo(kBlock * k1), todo_entry(kBlock * k1);
    const int64_t first = chunk_begin(n, chunks, c), end = chunk_begin(n, chunks, c + 1);
    for (int64_t b = first; b < end; b += kBlock) {
      const int64_t count = std::min(kBlock, end - b);
      const int32_t* key = &keys[group];
      int32_t* off = offset + b * k1;
      if (simplex_points<T, D>(features + b * d, count, d, scale, mult, &keys[group], hashes.data(), same.data(),
                               weight + b * k1, rank + b * k1))
        return true;
      if (b == first)  // the chunk's first point has no previous one
        for (int k = 0; k < k1; ++k) same[k * 8] = 0;
      // Branch-free passes (whether an entry repeats the previous point's is unpredictable): list the new
      // entries (as lane indices of simplex_points's layout), look them up (slots prefetched ahead), then copy
      // the repeated ones forward in order.
      int64_t m = 0;
      for (int64_t p = 0; p < count; ++p)
        for (int64_t k = 0; k < k1; ++k) {
          const int64_t lane = ((p / 8) * k1 + k) * 8 + p % 8;
          todo[m] = static_cast<int32_t>(lane);
          todo_entry[m] = static_cast<int32_t>(p * k1 + k);
          m += same[lane] + 1;
        }
      for (int64_t t = 0; t < std::min(m, kAhead); ++t) table.prefetch(hashes[todo[t]]);
      for (int64_t t = 0; t < m; ++t) {
        if (t + kAhead < m) table.prefetch(hashes[todo[t + kAhead]]);
        const int64_t lane = todo[t];  // the key's coordinates: (lane / 8) * 8 * d + lane % 8, step 8
        off[todo_entry[t]] = table.template insert<D, 8>(key + (lane / 8) * 8 * d + lane % 8, hashes[lane]);
      }
      for (int64_t p = 0; p < count; ++p)
        for (int64_t k = 0; k < k1; ++k) {
          const int64_t e = p * k1 + k;
          off[e] = off[e + k1 * same[((p / 8) * k1 + k) * 8 + p % 8]];  // (no branch: unpredictable)
        }
      std::copy_n(&keys[(count + 7) / 8 * group], group, keys.begin());
    }
    return false;
  }
};

}  // namespace

template <typename T>
PermutohedralLattice<T>::PermutohedralLattice(const T* features, int64_t n, int d) : n_(n), d_(d) {
  if (d < 1 || d > kLatticeMaxDim) fail_value("features: expected 1 <= d <= ", kLatticeMaxDim, ", got d = ", d);
  const int64_t k1 = d + 1;
  if (n < 0 || n * k1 >= std::numeric_limits<int32_t>::max())
    fail_value("features: at most ", std::numeric_limits<int32_t>::max() / k1 - 1, " points for d = ", d, ", got ", n);
  amplitude_ = static_cast<T>(lattice_amplitude(d));
  T scale[kLatticeMaxDim];
  lattice_scale_factors(d, scale);
  uint32_t mult[kLatticeMaxDim];
  for (int i = 0; i < d; ++i) mult[i] = hash_multiplier(i);
  const int64_t entries = n * k1;
  weight_.resize(entries);
  rank_.resize(entries);
  offset_.resize(entries);

  // 1. Per chunk: simplices, weights, and chunk-local vertex ids in offset_ (BuildChunk).
  const int64_t chunks = num_chunks(n);
  std::vector<std::optional<KeyTable>> local(chunks);  // made by the thread that fills it
  std::vector<uint8_t> bad(chunks, 0);
  const BuildChunk<T> chunk{features, n, chunks, scale, mult, weight_.data(), rank_.data(), offset_.data()};
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      // Sized for image-like features, whose neighbouring points share most vertices (only speed depends on it;
      // capped, so that the 256 chunks at most hold little memory before they grow).
      local[c].emplace(d, std::min<int64_t>((n / chunks + 1) * k1 / 16, 4096));
      bad[c] = with_dim(d, [&](auto D) { return chunk.template run<decltype(D)::value>(c, d, *local[c]); });
    }
  });
  if (std::find(bad.begin(), bad.end(), 1) != bad.end()) {
    for (int64_t i = 0; i < n * d; ++i)
      if (!std::isfinite(features[i])) fail_value("features: expected finite values, got NaN or inf");
    fail_value("features: coordinates too large for the lattice (|f| * ", lattice_scale(d),
               " summed over a point must stay below ", kLatticeMaxCoord, "); rescale the features");
  }

  // 2. Merge the chunks' vertices in order: each band's chunks into the band's table (in parallel), then the
  // bands' tables into the global one. (Sized by the largest part, not the sum: neighbouring parts share many
  // vertices, and the tables stay small enough to cache.)
  const int64_t per_band = chunks / kLatticeSplatBands;
  std::vector<std::optional<KeyTable>> band_table(kLatticeSplatBands);
  std::vector<std::vector<int32_t>> to_band(chunks);
  parallel_for(kLatticeSplatBands, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      int64_t largest = 0;
      for (int64_t c = b * per_band; c < (b + 1) * per_band; ++c) largest = std::max(largest, local[c]->size());
      band_table[b].emplace(d, 2 * largest);
      for (int64_t c = b * per_band; c < (b + 1) * per_band; ++c) {
        const KeyTable& table = *local[c];
        to_band[c].resize(table.size());
        with_dim(d, [&](auto D) {
          for (int64_t id = 0; id < table.size(); ++id)
            to_band[c][id] = band_table[b]->template insert<decltype(D)::value>(table.key(id), table.hash(id));
          return 0;
        });
        local[c].reset();
      }
    }
  });
  int64_t largest_band = 0;
  for (const auto& table : band_table) largest_band = std::max(largest_band, table->size());
  KeyTable global(d, 2 * largest_band);
  BandTables& t = bands_;
  t.first.assign(kLatticeSplatBands + 1, 0);
  for (int64_t b = 0; b < kLatticeSplatBands; ++b) t.first[b + 1] = t.first[b] + band_table[b]->size();
  if (t.first.back() >= std::numeric_limits<int32_t>::max()) fail_value("features: too many lattice vertices");
  t.vertices.resize(t.first.back());
  for (int64_t b = 0; b < kLatticeSplatBands; ++b) {
    const KeyTable& table = *band_table[b];
    int32_t* to_global = t.vertices.data() + t.first[b];
    with_dim(d, [&](auto D) {
      for (int64_t id = 0; id < table.size(); ++id)
        to_global[id] = global.template insert<decltype(D)::value>(table.key(id), table.hash(id));
      return 0;
    });
    band_table[b].reset();
  }
  const int64_t vertices = global.size();
  num_vertices_ = vertices;

  // 3. Chunk-local ids → band-local and global ids.
  t.offsets.resize(entries);
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int32_t* band_id = to_band[c].data();
      const int32_t* global_id = t.vertices.data() + t.first[c / per_band];
      for (int64_t e = chunk_begin(n, chunks, c) * k1; e < chunk_begin(n, chunks, c + 1) * k1; ++e) {
        const int32_t j = band_id[offset_[e]];
        t.offsets[e] = j;
        offset_[e] = global_id[j];
      }
    }
  });
  // The inverse of the bands' vertex lists, for add_band_sums().
  t.row_start.assign(vertices + 1, 0);
  for (int32_t v : t.vertices) ++t.row_start[v + 1];
  for (int64_t v = 0; v < vertices; ++v) t.row_start[v + 1] += t.row_start[v];
  t.rows.resize(t.first.back());
  std::vector<int64_t> next(t.row_start.begin(), t.row_start.end() - 1);
  for (int64_t j = 0; j < t.first.back(); ++j) t.rows[next[t.vertices[j]]++] = static_cast<int32_t>(j);

  // 4. Blur neighbours, looked up once here so that filter() never hashes. Only the forward ones are looked up:
  // u = v + direction j exactly when v = u - direction j, so each lookup fills both (every backward entry has
  // one writer at most). One step along direction j moves the (linear) hash by step[j]; the d+1 lookups' first
  // slots are prefetched before the probes.
  uint32_t step[kLatticeMaxDim + 1];
  uint32_t mult_sum = 0;
  for (int i = 0; i < d; ++i) mult_sum += mult[i];
  for (int j = 0; j <= d; ++j) step[j] = (j < d ? uint32_t(k1) * mult[j] : 0) - mult_sum;
  const int64_t rows = vertices + 1;  // (the zero row V is its own neighbour)
  blur_.resize(k1 * rows * 2);
  parallel_for(k1 * rows * 2, 16384, [&](int64_t e0, int64_t e1) {
    std::fill(blur_.begin() + e0, blur_.begin() + e1, static_cast<int32_t>(vertices));
  });
  with_dim(d, [&](auto D) {
    parallel_for(vertices, 1024, [&](int64_t v0, int64_t v1) {
      int32_t nkey[kLatticeMaxDim];
      for (int64_t v = v0; v < std::min(v0 + 2, v1); ++v)
        for (int j = 0; j < k1; ++j) global.prefetch(global.hash(v) + step[j]);
      for (int64_t v = v0; v < v1; ++v) {
        const uint32_t h = global.hash(v);
        if (v + 2 < v1)
          for (int j = 0; j < k1; ++j) global.prefetch(global.hash(v + 2) + step[j]);
        for (int j = 0; j < k1; ++j) {
          lattice_neighbour(global.key(v), decltype(D)::value > 0 ? decltype(D)::value : d, j, 1, nkey);
          const int32_t u = global.template find<decltype(D)::value>(nkey, h + step[j]);
          if (u < 0) continue;
          blur_[(j * rows + v) * 2 + 1] = static_cast<int32_t>(u);
          blur_[(j * rows + u) * 2] = static_cast<int32_t>(v);
        }
      }
    });
    return 0;
  });
}

template <typename T>
const typename PermutohedralLattice<T>::SplatLists& PermutohedralLattice<T>::splat_lists() const {
  std::call_once(splat_->once, [&] {
    // A counting sort of the slice entries by vertex; within a vertex, in point order.
    SplatLists& s = *splat_;
    const int64_t k1 = d_ + 1, entries = n_ * k1, V = num_vertices_;
    s.start.assign(V + 1, 0);
    for (int64_t e = 0; e < entries; ++e) ++s.start[offset_[e] + 1];
    for (int64_t v = 0; v < V; ++v) s.start[v + 1] += s.start[v];
    std::vector<int64_t> next(s.start.begin(), s.start.end() - 1);
    s.point.assign(entries + kSplatAhead, 0);
    s.weight.resize(entries);
    for (int64_t e = 0; e < entries; ++e) {
      const int64_t at = next[offset_[e]]++;
      s.point[at] = static_cast<int32_t>(e / k1);
      s.weight[at] = weight_[e];
    }
  });
  return *splat_;
}

template <typename T>
void PermutohedralLattice<T>::add_band_sums(const T* partial, int64_t stride, T* vertices) const {
  const BandTables& t = band_tables();
  // Each vertex sums its own band rows (in band order): one parallel pass, every row written once.
  parallel_for(num_vertices_, 256, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
      T* dst = vertices + v * stride;
      std::fill(dst, dst + stride, T(0));
      for (int64_t r = t.row_start[v]; r < t.row_start[v + 1]; ++r) {
        const T* src = partial + int64_t(t.rows[r]) * stride;
        for (int64_t l = 0; l < stride; ++l) dst[l] += src[l];
      }
    }
  });
}

template <typename T>
int64_t PermutohedralLattice<T>::memory_bytes() const {
  const BandTables& bands = bands_;
  return static_cast<int64_t>(offset_.capacity() * sizeof(int32_t) + weight_.capacity() * sizeof(T) +
                              splat_->start.capacity() * sizeof(int64_t) + splat_->point.capacity() * sizeof(int32_t) +
                              splat_->weight.capacity() * sizeof(T) + blur_.capacity() * sizeof(int32_t) +
                              (bands.offsets.capacity() + bands.vertices.capacity() + bands.rows.capacity()) *
                                  sizeof(int32_t) +
                              bands.row_start.capacity() * sizeof(int64_t) + rank_.capacity()) +
         static_cast<int64_t>(sizeof(*this));
}

namespace {

// The filtering passes work on tiles of up to kTile channels; W (a multiple of 8) is the tile's width, fixed
// at compile time so that the accumulators stay in vector registers.
constexpr int64_t kTile = 32;

template <typename T>
struct FilterPass {
  int64_t n, k1, c, stride, cofs;  // points, d + 1, channels, vertex row stride, first channel of the tile
  const T* in;
  T* out;
  const T* vertices;  // slice source
  T* dst;             // splat / blur destination
  const T* src;       // blur source
  const int64_t* start;
  const int32_t* index;  // splat: points; slice: vertices; blur: neighbours
  const T* weight;
  const int32_t* index2;  // blur: the second direction's neighbours (nullptr: one direction)
  T amp;
};

// The tiles work in vectors of kVectorBytes (8 floats, 4 doubles), as simd.h explains.
// Vertex rows v0..v1 of the tile: sum of weight * in[point] over the vertex's entries.
template <typename T, int W>
CONVLOC_ALWAYS_INLINE void splat_tile(const FilterPass<T>& a, int64_t v0, int64_t v1) {
  constexpr int L = kLanesIn<T>, B = W / L;
  // Points below `safe` can be read W lanes wide without leaving `in` (lanes past c fall on the next point
  // and only ever reach padding lanes, which are never written out).
  const int64_t room = a.n * a.c - a.cofs - W;
  const int64_t safe = room >= 0 ? room / a.c + 1 : 0;
  const int64_t live = std::min<int64_t>(W, a.c - a.cofs);
  for (int64_t v = v0; v < v1; ++v) {
    VecIn<T> acc[B] = {};
    for (int64_t e = a.start[v]; e < a.start[v + 1]; ++e) {
      // The points of a vertex lie all over the input: fetch a few entries ahead.
      __builtin_prefetch(a.in + static_cast<int64_t>(a.index[e + kSplatAhead]) * a.c + a.cofs);
      const int64_t p = a.index[e];
      const T w = a.weight[e];
      const T* x = a.in + p * a.c + a.cofs;
      if (p < safe) {
        for (int b = 0; b < B; ++b) acc[b] += w * load_lanes<VecIn<T>>(x + L * b);
      } else {
        T tmp[W] = {};
        for (int64_t l = 0; l < live; ++l) tmp[l] = x[l];
        for (int b = 0; b < B; ++b) acc[b] += w * load_lanes<VecIn<T>>(tmp + L * b);
      }
    }
    T* row = a.dst + v * a.stride + a.cofs;
    for (int b = 0; b < B; ++b) store_lanes(row + L * b, acc[b]);
  }
}

// Points i0..i1 of the tile added into their vertices' rows of dst (a scattering splat; index: band-local
// vertex ids, dst: the band's partial sums).
template <typename T, int W>
CONVLOC_ALWAYS_INLINE void scatter_tile(const FilterPass<T>& a, int64_t i0, int64_t i1) {
  constexpr int L = kLanesIn<T>, B = W / L;
  const int64_t room = a.n * a.c - a.cofs - W;
  const int64_t safe = room >= 0 ? room / a.c + 1 : 0;  // as in splat_tile
  const int64_t live = std::min<int64_t>(W, a.c - a.cofs);
  for (int64_t i = i0; i < i1; ++i) {
    VecIn<T> x[B];
    const T* src = a.in + i * a.c + a.cofs;
    if (i < safe) {
      for (int b = 0; b < B; ++b) x[b] = load_lanes<VecIn<T>>(src + L * b);
    } else {
      T tmp[W] = {};
      for (int64_t l = 0; l < live; ++l) tmp[l] = src[l];
      for (int b = 0; b < B; ++b) x[b] = load_lanes<VecIn<T>>(tmp + L * b);
    }
    for (int64_t k = 0; k < a.k1; ++k) {
      const T w = a.weight[i * a.k1 + k];
      T* row = a.dst + static_cast<int64_t>(a.index[i * a.k1 + k]) * a.stride + a.cofs;
      for (int b = 0; b < B; ++b) store_lanes(row + L * b, load_lanes<VecIn<T>>(row + L * b) + w * x[b]);
    }
  }
}

// Points i0..i1 of the tile: amp * sum_k weight * vertices[offset].
template <typename T, int W>
CONVLOC_ALWAYS_INLINE void slice_tile(const FilterPass<T>& a, int64_t i0, int64_t i1) {
  constexpr int L = kLanesIn<T>, B = W / L;
  const int64_t live = std::min<int64_t>(W, a.c - a.cofs);
  const int full = static_cast<int>(live / L);
  for (int64_t i = i0; i < i1; ++i) {
    VecIn<T> acc[B] = {};
    for (int64_t k = 0; k < a.k1; ++k) {
      const T w = a.weight[i * a.k1 + k];
      const T* x = a.vertices + static_cast<int64_t>(a.index[i * a.k1 + k]) * a.stride + a.cofs;
      for (int b = 0; b < B; ++b) acc[b] += w * load_lanes<VecIn<T>>(x + L * b);
    }
    T* y = a.out + i * a.c + a.cofs;
    for (int b = 0; b < full; ++b) store_lanes(y + L * b, a.amp * acc[b]);
    if (full < B) {  // the last few channels: lane by lane (a copy loop here would compile to a memcpy call per point)
      const VecIn<T> last = a.amp * acc[full];
      const int64_t rest = live - L * full;
      for (int l = 0; l < L; ++l)
        if (l < rest) y[L * full + l] = last[l];
    }
  }
}

// Whole padded rows v0..v1 of dst: B_j(B_i(src)), B(x)[u] = x[u] + (x[lo] + x[hi]) / 2 along a direction (index,
// index2: directions i and j, neighbours [V + 1, 2]), or B_i(src) alone (index2 null). Two directions per pass
// stream the buffers half as often; B_i at v's two j-neighbours is recomputed with the same operations, so the
// result has the bits of two single passes.
template <typename T, int W>
CONVLOC_ALWAYS_INLINE void blur_rows(const FilterPass<T>& a, int64_t v0, int64_t v1) {
  using L = Lanes<T, W>;
  const auto along_i = [&](int64_t u, int64_t q) {
    const int32_t* nb = a.index + u * 2;
    const T* p = a.src + q;
    return L::load(p + u * a.stride) + T(0.5) * (L::load(p + static_cast<int64_t>(nb[0]) * a.stride) +
                                                 L::load(p + static_cast<int64_t>(nb[1]) * a.stride));
  };
  if (!a.index2) {
    for (int64_t v = v0; v < v1; ++v)
      for (int64_t q = 0; q < a.stride; q += W) along_i(v, q).store(a.dst + v * a.stride + q);
    return;
  }
  for (int64_t v = v0; v < v1; ++v) {
    const int32_t* nb = a.index2 + v * 2;
    for (int64_t q = 0; q < a.stride; q += W)
      (along_i(v, q) + T(0.5) * (along_i(nb[0], q) + along_i(nb[1], q))).store(a.dst + v * a.stride + q);
  }
}

// SIMD versions per type and width.
#define CONVLOC_LATTICE_TILES(T, W)                                                        \
  CONVLOC_SIMD_FN(void, splat_##T##_##W, (const FilterPass<T>& a, int64_t b, int64_t e),   \
                  { splat_tile<T, W>(a, b, e); })                                          \
  CONVLOC_SIMD_FN(void, scatter_##T##_##W, (const FilterPass<T>& a, int64_t b, int64_t e), \
                  { scatter_tile<T, W>(a, b, e); })                                        \
  CONVLOC_SIMD_FN(void, slice_##T##_##W, (const FilterPass<T>& a, int64_t b, int64_t e), { slice_tile<T, W>(a, b, e); })
CONVLOC_LATTICE_TILES(float, 8)
CONVLOC_LATTICE_TILES(float, 16)
CONVLOC_LATTICE_TILES(float, 24)
CONVLOC_LATTICE_TILES(float, 32)
CONVLOC_LATTICE_TILES(double, 8)
CONVLOC_LATTICE_TILES(double, 16)
CONVLOC_LATTICE_TILES(double, 24)
CONVLOC_LATTICE_TILES(double, 32)
#undef CONVLOC_LATTICE_TILES
// The blur in whole rows of up to 32 values (one row per step: fewer, wider instructions), in
// 8-value pieces, or of single values (stride 1: one channel); its multiply-adds fused.
#define CONVLOC_LATTICE_BLUR(T)                                                    \
  CONVLOC_FMA_FN(void, blur_##T, (const FilterPass<T>& a, int64_t b, int64_t e), { \
    switch (a.stride) {                                                            \
      case 1:                                                                      \
        return blur_rows<T, 1>(a, b, e);                                           \
      case 16:                                                                     \
        return blur_rows<T, 16>(a, b, e);                                          \
      case 24:                                                                     \
        return blur_rows<T, 24>(a, b, e);                                          \
      case 32:                                                                     \
        return blur_rows<T, 32>(a, b, e);                                          \
      default:                                                                     \
        return blur_rows<T, 8>(a, b, e);                                           \
    }                                                                              \
  })
CONVLOC_LATTICE_BLUR(float)
CONVLOC_LATTICE_BLUR(double)
#undef CONVLOC_LATTICE_BLUR

// The tile functions of one kind by width w (8, 16, 24 or 32 lanes) at [w / 8 - 1].
template <typename T>
using TileFn = void (*)(const FilterPass<T>&, int64_t, int64_t);
template <typename T>
struct TileFns;
#define CONVLOC_TILE_TABLE(T)                                                                                 \
  template <>                                                                                                 \
  struct TileFns<T> {                                                                                         \
    static inline const TileFn<T> splat[4] = {splat_##T##_8, splat_##T##_16, splat_##T##_24, splat_##T##_32}; \
    static inline const TileFn<T> scatter[4] = {scatter_##T##_8, scatter_##T##_16, scatter_##T##_24,          \
                                                scatter_##T##_32};                                            \
    static inline const TileFn<T> slice[4] = {slice_##T##_8, slice_##T##_16, slice_##T##_24, slice_##T##_32}; \
  };
CONVLOC_TILE_TABLE(float)
CONVLOC_TILE_TABLE(double)
#undef CONVLOC_TILE_TABLE
inline void blur_fn(const FilterPass<float>& a, int64_t b, int64_t e) { blur_float(a, b, e); }
inline void blur_fn(const FilterPass<double>& a, int64_t b, int64_t e) { blur_double(a, b, e); }

}  // namespace

template <typename T>
void PermutohedralLattice<T>::filter(const T* in, T* out, int64_t channels, bool transpose) const {
  const int64_t n = n_, k1 = d_ + 1, V = num_vertices_;
  if (n == 0 || channels == 0) return;
  // Vertex rows padded to whole 8-lane vectors; row V stays zero (absent neighbours point at it). When
  // vertices gather many points (kScatterEntries or more on average: wide kernels, whose points lie far
  // apart in the input), the splat scatters each band of points into its own compact partial sums
  // (band_tables(), in cache) while the bands touch at most n vertices in all; otherwise it gathers
  // through the splat lists, which then read nearby rows.
  constexpr int64_t kScatterEntries = 32;
  const int64_t stride = (channels + 7) & ~int64_t(7), rows = (V + 1) * stride;
  const bool many = n * k1 >= kScatterEntries * V;
  const BandTables* bands = many ? &band_tables() : nullptr;
  const bool scatter = many && band_sums_fit();
  // Large vertex buffers come back warm from the workspace cache on the next call.
  WorkspaceVector<T> scratch(2 * rows + (scatter ? bands->first.back() * stride : 0));
  T* a = scratch.data();
  T* b = a + rows;
  std::fill(a + V * stride, a + rows, T(0));
  std::fill(b + V * stride, b + rows, T(0));
  FilterPass<T> pass{};
  pass.n = n, pass.k1 = k1, pass.c = channels, pass.stride = stride, pass.in = in, pass.out = out,
  pass.amp = amplitude_;
  const int64_t vgrain = std::max<int64_t>(64, 16384 / stride), pgrain = std::max<int64_t>(64, 8192 / stride);

  if (scatter) {
    T* partial = b + rows;
    pass.index = bands->offsets.data();
    pass.weight = weight_.data();
    parallel_for(kLatticeSplatBands, 1, [&](int64_t band0, int64_t band1) {
      for (int64_t band = band0; band < band1; ++band) {
        FilterPass<T> mine = pass;
        mine.dst = partial + bands->first[band] * stride;
        std::fill(mine.dst, partial + bands->first[band + 1] * stride, T(0));
        for (int64_t cofs = 0; cofs < stride; cofs += kTile) {
          mine.cofs = cofs;
          TileFns<T>::scatter[std::min(kTile, stride - cofs) / 8 - 1](mine, n * band / kLatticeSplatBands,
                                                                      n * (band + 1) / kLatticeSplatBands);
        }
      }
    });
    add_band_sums(partial, stride, a);
  } else {
    const SplatLists& lists = splat_lists();
    pass.dst = a;
    pass.start = lists.start.data(), pass.index = lists.point.data(), pass.weight = lists.weight.data();
    for (int64_t cofs = 0; cofs < stride; cofs += kTile) {  // a gather per vertex, one channel tile at a time
      pass.cofs = cofs;
      const auto fn = TileFns<T>::splat[std::min(kTile, stride - cofs) / 8 - 1];
      parallel_for(V, vgrain, [&](int64_t v0, int64_t v1) { fn(pass, v0, v1); });
    }
  }
  // Slice.
  pass.vertices = blur(a, b, stride, transpose);
  pass.index = offset_.data();
  pass.weight = weight_.data();
  for (int64_t cofs = 0; cofs < stride; cofs += kTile) {
    pass.cofs = cofs;
    const auto fn = TileFns<T>::slice[std::min(kTile, stride - cofs) / 8 - 1];
    parallel_for(n, pgrain, [&](int64_t i0, int64_t i1) { fn(pass, i0, i1); });
  }
}

template <typename T>
T* PermutohedralLattice<T>::blur(T* a, T* b, int64_t stride, bool transpose) const {
  const int64_t k1 = d_ + 1, V = num_vertices_;
  FilterPass<T> pass{};
  pass.k1 = k1;
  pass.stride = stride;
  const auto table = [&](int64_t j) { return blur_.data() + j * (V + 1) * 2; };
  // Along each lattice direction ([1 2 1] / 2); the adjoint runs the directions in reverse order. A pass
  // may take two directions (the buffers then stream half as often) at the cost of recomputing the first
  // direction at the second one's neighbours. Those rows are near in memory on a lattice of positions
  // alone (d <= 2: vertices numbered along the image), at any size; with more dimensions (colour,
  // modalities) neighbours lie far apart, and the recomputed rows are cache misses unless both buffers
  // fit in half the L2 cache (a 2.1 MB RGB lattice: one direction per pass blurs 2.2x faster on one
  // thread with 1 MiB of L2). Both give the same bits.
  const int64_t rows_bytes = (V + 1) * stride * int64_t(sizeof(T));
  const int64_t per_pass = d_ <= 2 || 4 * rows_bytes <= l2_cache_bytes() ? 2 : 1;
  for (int64_t step = 0; step < k1; step += per_pass) {
    pass.index = table(transpose ? k1 - 1 - step : step);
    pass.index2 = per_pass == 2 && step + 1 < k1 ? table(transpose ? k1 - 2 - step : step + 1) : nullptr;
    pass.src = a;
    pass.dst = b;
    parallel_for(V, std::max<int64_t>(64, 16384 / stride), [&](int64_t v0, int64_t v1) { blur_fn(pass, v0, v1); });
    std::swap(a, b);
  }
  return a;
}

template <typename T>
void PermutohedralLattice<T>::diagonal(T* out) const {
  const int64_t k1 = d_ + 1;
  const double amp = amplitude_;
  parallel_for(n_, 256, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      out[i] = static_cast<T>(amp * lattice_self_weight(&offset_[i * k1], &weight_[i * k1], &rank_[i * k1],
                                                        blur_.data(), 1, num_vertices_ + 1, num_vertices_, d_));
  });
}

template <typename T>
void permutohedral_filter_cpu(const T* features, int64_t n, int d, const T* in, T* out, int64_t channels,
                              bool transpose, bool exclude_self) {
  const PermutohedralLattice<T> lattice(features, n, d);
  lattice.filter(in, out, channels, transpose);
  if (!exclude_self) return;
  std::vector<T> diag(n);
  lattice.diagonal(diag.data());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < channels; ++c) out[i * channels + c] -= diag[i] * in[i * channels + c];
}

template <typename T>
void lattice_simplices_cpu(const T* features, int64_t n, int d, bool vectorised, int32_t* keys, T* weights,
                           uint8_t* ranks) {
  if (d < 1 || d > kLatticeMaxDim) fail_value("features: expected 1 <= d <= ", kLatticeMaxDim, ", got d = ", d);
  T scale[kLatticeMaxDim];
  lattice_scale_factors(d, scale);
  const int64_t k1 = d + 1, kd = k1 * d;
  if (!vectorised) {
    for (int64_t i = 0; i < n; ++i) {
      // before lattice_simplex converts coordinates to int32
      if (!lattice_point_in_range(features + i * d, d, scale))
        fail_value("features: coordinates out of range or not finite");
      lattice_simplex(features + i * d, d, scale, keys + i * kd, weights + i * k1, ranks + i * k1);
    }
    return;
  }
  uint32_t mult[kLatticeMaxDim];
  for (int i = 0; i < d; ++i) mult[i] = hash_multiplier(i);
  std::vector<int32_t> lanes((kBlock / 8 + 1) * 8 * kd), same(kBlock * k1);
  std::vector<uint32_t> hashes(kBlock * k1);
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t count = std::min(kBlock, n - b);
    const bool bad = with_dim(d, [&](auto D) {
      return simplex_points<T, decltype(D)::value>(features + b * d, count, d, scale, mult, &lanes[8 * kd],
                                                   hashes.data(), same.data(), weights + b * k1, ranks + b * k1);
    });
    if (bad) fail_value("features: coordinates out of range or not finite");
    for (int64_t p = 0; p < count; ++p)
      for (int64_t e = 0; e < kd; ++e) keys[(b + p) * kd + e] = lanes[((p / 8 + 1) * kd + e) * 8 + p % 8];
  }
}

template class PermutohedralLattice<float>;
template class PermutohedralLattice<double>;
template void permutohedral_filter_cpu<float>(const float*, int64_t, int, const float*, float*, int64_t, bool, bool);
template void permutohedral_filter_cpu<double>(const double*, int64_t, int, const double*, double*, int64_t, bool,
                                               bool);
template void lattice_simplices_cpu<float>(const float*, int64_t, int, bool, int32_t*, float*, uint8_t*);
template void lattice_simplices_cpu<double>(const double*, int64_t, int, bool, int32_t*, double*, uint8_t*);

}  // namespace convloc
