#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/check.h"
#include "core/parallel.h"
#include "lattice/lattice.h"

namespace convloc {
namespace {

// The vertices are deduplicated in kShards independent hash tables (by the top bits of the key's hash),
// filled in point order: the numbering depends on the input only, never on the thread count.
constexpr int kShardBits = 6;
constexpr int kShards = 1 << kShardBits;
constexpr int64_t kChunks = 64;

int shard_of(uint64_t h) { return static_cast<int>(h >> (64 - kShardBits)); }

// One shard: an open-addressing table of local vertex ids, the vertices' keys and hashes.
struct Shard {
  std::vector<int64_t> entries;  // (point, simplex vertex) entries hashed here, in point order
  std::vector<int32_t> table;    // local vertex id or -1
  std::vector<int32_t> keys;     // [vertices, d]
  std::vector<uint64_t> hashes;  // [vertices]
  std::vector<int32_t> entry_vertex;  // local vertex of each entry
  int64_t base = 0;                   // global id of local vertex 0
  uint64_t mask = 0;

  int64_t size() const { return static_cast<int64_t>(hashes.size()); }

  int32_t find(const int32_t* key, uint64_t h, int d) const {
    for (uint64_t slot = h & mask;; slot = (slot + 1) & mask) {
      const int32_t v = table[slot];
      if (v < 0) return -1;
      if (hashes[v] == h && lattice_key_equal(&keys[static_cast<int64_t>(v) * d], key, d)) return v;
    }
  }

  int32_t insert(const int32_t* key, uint64_t h, int d) {
    for (uint64_t slot = h & mask;; slot = (slot + 1) & mask) {
      const int32_t v = table[slot];
      if (v < 0) {
        const int32_t id = static_cast<int32_t>(hashes.size());
        table[slot] = id;
        hashes.push_back(h);
        keys.insert(keys.end(), key, key + d);
        return id;
      }
      if (hashes[v] == h && lattice_key_equal(&keys[static_cast<int64_t>(v) * d], key, d)) return v;
    }
  }
};

uint64_t table_size_for(int64_t count) {
  uint64_t size = 16;
  while (size < static_cast<uint64_t>(2 * count)) size <<= 1;
  return size;
}

// Chunk c of [0, n) in kChunks equal parts (the same for any thread count).
int64_t chunk_begin(int64_t n, int64_t c) { return n * c / kChunks; }

}  // namespace

template <typename T>
PermutohedralLattice<T>::PermutohedralLattice(const T* features, int64_t n, int d) : n_(n), d_(d) {
  if (d < 1 || d > kLatticeMaxDim) fail_value("features: expected 1 <= d <= ", kLatticeMaxDim, ", got d = ", d);
  const int64_t k1 = d + 1;
  if (n < 0 || n * k1 >= std::numeric_limits<int32_t>::max())
    fail_value("features: at most ", std::numeric_limits<int32_t>::max() / k1 - 1, " points for d = ", d,
               ", got ", n);
  amplitude_ = static_cast<T>(lattice_amplitude(d));
  T scale[kLatticeMaxDim];
  lattice_scale_factors(d, scale);

  // 1. Per point: validity, simplex keys, barycentric weights, hashes.
  const int64_t entries = n * k1;
  std::vector<int32_t> keys(entries * d);
  std::vector<uint64_t> hashes(entries);
  weight_.resize(entries);
  rank_.resize(entries);
  std::vector<uint8_t> bad(kChunks, 0);
  parallel_for(kChunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t i = chunk_begin(n, c); i < chunk_begin(n, c + 1); ++i) {
        const T* f = features + i * d;
        double reach = 0;
        for (int k = 0; k < d; ++k) reach += std::fabs(double(f[k]) * double(scale[k]));
        if (!(reach * k1 < kLatticeMaxCoord)) {  // also catches NaN
          bad[c] = 1;
          continue;
        }
        int32_t* key = &keys[i * k1 * d];
        lattice_simplex(f, d, scale, key, &weight_[i * k1], &rank_[i * k1]);
        for (int k = 0; k <= d; ++k) hashes[i * k1 + k] = lattice_hash(key + k * d, d);
      }
  });
  if (std::find(bad.begin(), bad.end(), 1) != bad.end()) {
    for (int64_t i = 0; i < n * d; ++i)
      if (!std::isfinite(features[i])) fail_value("features: expected finite values, got NaN or inf");
    fail_value("features: coordinates too large for the lattice (|f| * ", lattice_scale(d),
               " summed over a point must stay below ", kLatticeMaxCoord, "); rescale the features");
  }

  // 2. Distribute the entries over the shards, keeping point order within each shard.
  std::vector<int64_t> counts(kChunks * kShards, 0);
  parallel_for(kChunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t e = chunk_begin(n, c) * k1; e < chunk_begin(n, c + 1) * k1; ++e)
        ++counts[c * kShards + shard_of(hashes[e])];
  });
  std::vector<Shard> shards(kShards);
  for (int s = 0; s < kShards; ++s) {
    int64_t total = 0;
    for (int64_t c = 0; c < kChunks; ++c) {
      const int64_t cnt = counts[c * kShards + s];
      counts[c * kShards + s] = total;
      total += cnt;
    }
    shards[s].entries.resize(total);
  }
  parallel_for(kChunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t e = chunk_begin(n, c) * k1; e < chunk_begin(n, c + 1) * k1; ++e) {
        const int s = shard_of(hashes[e]);
        shards[s].entries[counts[c * kShards + s]++] = e;
      }
  });

  // 3. Deduplicate the vertices of each shard.
  parallel_for(kShards, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      Shard& sh = shards[s];
      const int64_t m = static_cast<int64_t>(sh.entries.size());
      const uint64_t size = table_size_for(m);
      sh.mask = size - 1;
      sh.table.assign(size, -1);
      sh.entry_vertex.resize(m);
      for (int64_t t = 0; t < m; ++t) {
        const int64_t e = sh.entries[t];
        sh.entry_vertex[t] = sh.insert(&keys[e * d], hashes[e], d);
      }
    }
  });
  keys.clear();
  keys.shrink_to_fit();
  hashes.clear();
  hashes.shrink_to_fit();
  int64_t vertices = 0;
  for (auto& sh : shards) {
    sh.base = vertices;
    vertices += sh.size();
  }
  if (vertices >= std::numeric_limits<int32_t>::max()) fail_value("features: too many lattice vertices");
  num_vertices_ = vertices;

  // 4. Number the vertices in order of first use by the points, so that vertices close in the numbering are
  // close in space: the splat gathers and the slice then walk memory nearly in order.
  offset_.resize(entries);
  parallel_for(kShards, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const Shard& sh = shards[s];
      for (size_t t = 0; t < sh.entries.size(); ++t)
        offset_[sh.entries[t]] = static_cast<int32_t>(sh.base + sh.entry_vertex[t]);
    }
  });
  std::vector<int32_t> renumber(vertices, -1);
  int32_t next_id = 0;
  for (int64_t e = 0; e < entries; ++e) {
    int32_t& id = renumber[offset_[e]];
    if (id < 0) id = next_id++;
    offset_[e] = id;
  }

  // 5. The splat gather lists (vertex-major, point order within a vertex).
  splat_start_.assign(vertices + 1, 0);
  splat_point_.resize(entries);
  splat_weight_.resize(entries);
  parallel_for(kShards, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const Shard& sh = shards[s];
      for (size_t t = 0; t < sh.entries.size(); ++t) ++splat_start_[renumber[sh.base + sh.entry_vertex[t]] + 1];
    }
  });
  for (int64_t v = 0; v < vertices; ++v) splat_start_[v + 1] += splat_start_[v];
  parallel_for(kShards, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const Shard& sh = shards[s];
      std::vector<int64_t> fill(sh.size());
      for (int64_t v = 0; v < sh.size(); ++v) fill[v] = splat_start_[renumber[sh.base + v]];
      for (size_t t = 0; t < sh.entries.size(); ++t) {
        const int64_t e = sh.entries[t];
        const int64_t pos = fill[sh.entry_vertex[t]]++;
        splat_point_[pos] = static_cast<int32_t>(e / k1);
        splat_weight_[pos] = weight_[e];
      }
    }
  });

  // 6. Blur neighbours, looked up once here so that filter() never hashes.
  blur_.resize(vertices * k1 * 2);
  parallel_for(kShards, 1, [&](int64_t s0, int64_t s1) {
    int32_t nkey[kLatticeMaxDim];
    for (int64_t s = s0; s < s1; ++s) {
      const Shard& sh = shards[s];
      for (int64_t v = 0; v < sh.size(); ++v)
        for (int j = 0; j <= d; ++j)
          for (int side = 0; side < 2; ++side) {
            lattice_neighbour(&sh.keys[v * d], d, j, side ? 1 : -1, nkey);
            const uint64_t h = lattice_hash(nkey, d);
            const Shard& other = shards[shard_of(h)];
            const int32_t u = other.find(nkey, h, d);
            blur_[(renumber[sh.base + v] * k1 + j) * 2 + side] =
                static_cast<int32_t>(u < 0 ? vertices : renumber[other.base + u]);
          }
    }
  });
}

template <typename T>
int64_t PermutohedralLattice<T>::memory_bytes() const {
  return static_cast<int64_t>(offset_.capacity() * sizeof(int32_t) + weight_.capacity() * sizeof(T) +
                              splat_start_.capacity() * sizeof(int64_t) +
                              splat_point_.capacity() * sizeof(int32_t) + splat_weight_.capacity() * sizeof(T) +
                              blur_.capacity() * sizeof(int32_t) + rank_.capacity()) +
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
  int64_t dir;  // blur direction
  T amp;
};

// Vertex rows v0..v1 of the tile: sum of weight * in[point] over the vertex's entries.
template <typename T, int W>
inline void splat_tile(const FilterPass<T>& a, int64_t v0, int64_t v1) {
  // Points below `safe` can be read W lanes wide without leaving `in` (lanes past c fall on the next point
  // and only ever reach padding lanes, which are never written out).
  const int64_t room = a.n * a.c - a.cofs - W;
  const int64_t safe = room >= 0 ? room / a.c + 1 : 0;
  const int64_t live = std::min<int64_t>(W, a.c - a.cofs);
  for (int64_t v = v0; v < v1; ++v) {
    T acc[W] = {};
    for (int64_t e = a.start[v]; e < a.start[v + 1]; ++e) {
      const int64_t p = a.index[e];
      const T w = a.weight[e];
      const T* __restrict x = a.in + p * a.c + a.cofs;
      if (p < safe) {
        for (int l = 0; l < W; ++l) acc[l] += w * x[l];
      } else {
        for (int l = 0; l < live; ++l) acc[l] += w * x[l];
      }
    }
    T* __restrict row = a.dst + v * a.stride + a.cofs;
    for (int l = 0; l < W; ++l) row[l] = acc[l];
  }
}

// Points i0..i1 of the tile: amp * sum_k weight * vertices[offset].
template <typename T, int W>
inline void slice_tile(const FilterPass<T>& a, int64_t i0, int64_t i1) {
  const int64_t live = std::min<int64_t>(W, a.c - a.cofs);
  for (int64_t i = i0; i < i1; ++i) {
    T acc[W] = {};
    for (int64_t k = 0; k < a.k1; ++k) {
      const T w = a.weight[i * a.k1 + k];
      const T* __restrict x = a.vertices + static_cast<int64_t>(a.index[i * a.k1 + k]) * a.stride + a.cofs;
      for (int l = 0; l < W; ++l) acc[l] += w * x[l];
    }
    T* __restrict y = a.out + i * a.c + a.cofs;
    if (live == W) {
      for (int l = 0; l < W; ++l) y[l] = a.amp * acc[l];
    } else {
      for (int l = 0; l < live; ++l) y[l] = a.amp * acc[l];
    }
  }
}

// Whole padded rows v0..v1: dst = src + (src[lo] + src[hi]) / 2 along direction dir.
template <typename T>
inline void blur_rows(const FilterPass<T>& a, int64_t v0, int64_t v1) {
  for (int64_t v = v0; v < v1; ++v) {
    const int32_t* nb = a.index + (v * a.k1 + a.dir) * 2;
    const T* __restrict p = a.src + v * a.stride;
    const T* __restrict lo = a.src + static_cast<int64_t>(nb[0]) * a.stride;
    const T* __restrict hi = a.src + static_cast<int64_t>(nb[1]) * a.stride;
    T* __restrict y = a.dst + v * a.stride;
    for (int64_t q = 0; q < a.stride; q += 8)
      for (int l = 0; l < 8; ++l) y[q + l] = p[q + l] + T(0.5) * (lo[q + l] + hi[q + l]);
  }
}

// Plain functions per type and width, so that the SIMD clones apply (GCC clones no templates).
#define CONVLOC_LATTICE_TILES(T, W)                                                                       \
  CONVLOC_SIMD_CLONES void splat_##T##_##W(const FilterPass<T>& a, int64_t b, int64_t e) { splat_tile<T, W>(a, b, e); } \
  CONVLOC_SIMD_CLONES void slice_##T##_##W(const FilterPass<T>& a, int64_t b, int64_t e) { slice_tile<T, W>(a, b, e); }
CONVLOC_LATTICE_TILES(float, 8)
CONVLOC_LATTICE_TILES(float, 16)
CONVLOC_LATTICE_TILES(float, 24)
CONVLOC_LATTICE_TILES(float, 32)
CONVLOC_LATTICE_TILES(double, 8)
CONVLOC_LATTICE_TILES(double, 16)
CONVLOC_LATTICE_TILES(double, 24)
CONVLOC_LATTICE_TILES(double, 32)
#undef CONVLOC_LATTICE_TILES
CONVLOC_SIMD_CLONES void blur_float(const FilterPass<float>& a, int64_t b, int64_t e) { blur_rows(a, b, e); }
CONVLOC_SIMD_CLONES void blur_double(const FilterPass<double>& a, int64_t b, int64_t e) { blur_rows(a, b, e); }


template <typename T>
void (*splat_fn(int64_t w))(const FilterPass<T>&, int64_t, int64_t) {
  if constexpr (std::is_same_v<T, float>) return w == 8 ? splat_float_8 : w == 16 ? splat_float_16 : w == 24 ? splat_float_24 : splat_float_32;
  else return w == 8 ? splat_double_8 : w == 16 ? splat_double_16 : w == 24 ? splat_double_24 : splat_double_32;
}
template <typename T>
void (*slice_fn(int64_t w))(const FilterPass<T>&, int64_t, int64_t) {
  if constexpr (std::is_same_v<T, float>) return w == 8 ? slice_float_8 : w == 16 ? slice_float_16 : w == 24 ? slice_float_24 : slice_float_32;
  else return w == 8 ? slice_double_8 : w == 16 ? slice_double_16 : w == 24 ? slice_double_24 : slice_double_32;
}
inline void blur_fn(const FilterPass<float>& a, int64_t b, int64_t e) { blur_float(a, b, e); }
inline void blur_fn(const FilterPass<double>& a, int64_t b, int64_t e) { blur_double(a, b, e); }

}  // namespace

template <typename T>
void PermutohedralLattice<T>::filter(const T* in, T* out, int64_t channels, bool transpose) const {
  const int64_t n = n_, k1 = d_ + 1, V = num_vertices_;
  if (n == 0 || channels == 0) return;
  // Vertex rows padded to whole 8-lane vectors; row V stays zero (absent neighbours point at it).
  const int64_t stride = (channels + 7) & ~int64_t(7);
  std::unique_ptr<T[]> buf_a(new T[(V + 1) * stride]), buf_b(new T[(V + 1) * stride]);
  T* a = buf_a.get();
  T* b = buf_b.get();
  std::fill(a + V * stride, a + (V + 1) * stride, T(0));
  std::fill(b + V * stride, b + (V + 1) * stride, T(0));
  FilterPass<T> pass{n, k1, channels, stride, 0, in, out, nullptr, a, nullptr, splat_start_.data(),
                     splat_point_.data(), splat_weight_.data(), 0, amplitude_};
  const int64_t vgrain = std::max<int64_t>(64, 16384 / stride), pgrain = std::max<int64_t>(64, 8192 / stride);

  // Splat (a gather per vertex), one channel tile at a time.
  for (int64_t cofs = 0; cofs < stride; cofs += kTile) {
    pass.cofs = cofs;
    const auto fn = splat_fn<T>(std::min(kTile, stride - cofs));
    parallel_for(V, vgrain, [&](int64_t v0, int64_t v1) { fn(pass, v0, v1); });
  }
  // Blur along each lattice direction ([1 2 1] / 2); the adjoint runs the directions in reverse order.
  pass.index = blur_.data();
  for (int64_t step = 0; step < k1; ++step) {
    pass.dir = transpose ? k1 - 1 - step : step;
    pass.src = a;
    pass.dst = b;
    parallel_for(V, vgrain, [&](int64_t v0, int64_t v1) { blur_fn(pass, v0, v1); });
    std::swap(a, b);
  }
  // Slice.
  pass.vertices = a;
  pass.index = offset_.data();
  pass.weight = weight_.data();
  for (int64_t cofs = 0; cofs < stride; cofs += kTile) {
    pass.cofs = cofs;
    const auto fn = slice_fn<T>(std::min(kTile, stride - cofs));
    parallel_for(n, pgrain, [&](int64_t i0, int64_t i1) { fn(pass, i0, i1); });
  }
}

template <typename T>
void PermutohedralLattice<T>::diagonal(T* out) const {
  const int64_t k1 = d_ + 1;
  const double amp = amplitude_;
  parallel_for(n_, 256, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      out[i] = static_cast<T>(
          amp * lattice_self_weight(&offset_[i * k1], &weight_[i * k1], &rank_[i * k1], blur_.data(), num_vertices_, d_));
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

template class PermutohedralLattice<float>;
template class PermutohedralLattice<double>;
template void permutohedral_filter_cpu<float>(const float*, int64_t, int, const float*, float*, int64_t, bool, bool);
template void permutohedral_filter_cpu<double>(const double*, int64_t, int, const double*, double*, int64_t, bool,
                                               bool);

}  // namespace convloc
