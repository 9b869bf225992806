#include <algorithm>
#include <cstring>
#include <limits>

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
        lattice_simplex(f, d, scale, key, &weight_[i * k1]);
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

  // 4. Slice offsets and the splat gather lists (vertex-major, point order within a vertex).
  offset_.resize(entries);
  splat_start_.assign(vertices + 1, 0);
  splat_point_.resize(entries);
  splat_weight_.resize(entries);
  parallel_for(kShards, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const Shard& sh = shards[s];
      for (size_t t = 0; t < sh.entries.size(); ++t) {
        offset_[sh.entries[t]] = static_cast<int32_t>(sh.base + sh.entry_vertex[t]);
        ++splat_start_[sh.base + sh.entry_vertex[t] + 1];
      }
    }
  });
  for (int64_t v = 0; v < vertices; ++v) splat_start_[v + 1] += splat_start_[v];
  parallel_for(kShards, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const Shard& sh = shards[s];
      std::vector<int64_t> fill(sh.size());
      for (int64_t v = 0; v < sh.size(); ++v) fill[v] = splat_start_[sh.base + v];
      for (size_t t = 0; t < sh.entries.size(); ++t) {
        const int64_t e = sh.entries[t];
        const int64_t pos = fill[sh.entry_vertex[t]]++;
        splat_point_[pos] = static_cast<int32_t>(e / k1);
        splat_weight_[pos] = weight_[e];
      }
    }
  });

  // 5. Blur neighbours, looked up once here so that filter() never hashes.
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
            blur_[((sh.base + v) * k1 + j) * 2 + side] =
                static_cast<int32_t>(u < 0 ? vertices : other.base + u);
          }
    }
  });
}

template <typename T>
int64_t PermutohedralLattice<T>::memory_bytes() const {
  return static_cast<int64_t>(offset_.capacity() * sizeof(int32_t) + weight_.capacity() * sizeof(T) +
                              splat_start_.capacity() * sizeof(int64_t) +
                              splat_point_.capacity() * sizeof(int32_t) + splat_weight_.capacity() * sizeof(T) +
                              blur_.capacity() * sizeof(int32_t)) +
         static_cast<int64_t>(sizeof(*this));
}

template <typename T>
void PermutohedralLattice<T>::filter(const T* in, T* out, int64_t channels, bool transpose) const {
  const int64_t n = n_, k1 = d_ + 1, c = channels, V = num_vertices_;
  if (n == 0 || c == 0) return;
  // Vertex rows padded to whole SIMD vectors; row V stays zero (absent neighbours point at it).
  const int64_t stride = (c + 7) & ~int64_t(7);
  std::unique_ptr<T[]> buf_a(new T[(V + 1) * stride]), buf_b(new T[(V + 1) * stride]);
  T* a = buf_a.get();
  T* b = buf_b.get();
  std::fill(a + V * stride, a + (V + 1) * stride, T(0));
  std::fill(b + V * stride, b + (V + 1) * stride, T(0));
  const int64_t grain = std::max<int64_t>(1, 4096 / stride);

  // Splat (a gather per vertex).
  parallel_for(V, grain, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
      T* row = a + v * stride;
      for (int64_t q = 0; q < stride; ++q) row[q] = 0;
      for (int64_t e = splat_start_[v]; e < splat_start_[v + 1]; ++e) {
        const T w = splat_weight_[e];
        const T* src = in + static_cast<int64_t>(splat_point_[e]) * c;
        for (int64_t q = 0; q < c; ++q) row[q] += w * src[q];
      }
    }
  });
  // Blur along each lattice direction ([1 2 1] / 2); the adjoint runs the directions in reverse order.
  for (int step = 0; step < k1; ++step) {
    const int64_t j = transpose ? k1 - 1 - step : step;
    parallel_for(V, grain, [&](int64_t v0, int64_t v1) {
      for (int64_t v = v0; v < v1; ++v) {
        const int32_t* nb = &blur_[(v * k1 + j) * 2];
        const T* p = a + v * stride;
        const T* lo = a + static_cast<int64_t>(nb[0]) * stride;
        const T* hi = a + static_cast<int64_t>(nb[1]) * stride;
        T* dst = b + v * stride;
        for (int64_t q = 0; q < stride; ++q) dst[q] = p[q] + T(0.5) * (lo[q] + hi[q]);
      }
    });
    std::swap(a, b);
  }
  // Slice.
  const T amp = amplitude_;
  parallel_for(n, std::max<int64_t>(1, 2048 / stride), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T* dst = out + i * c;
      for (int64_t q = 0; q < c; ++q) dst[q] = 0;
      for (int64_t k = 0; k < k1; ++k) {
        const T w = weight_[i * k1 + k] * amp;
        const T* src = a + static_cast<int64_t>(offset_[i * k1 + k]) * stride;
        for (int64_t q = 0; q < c; ++q) dst[q] += w * src[q];
      }
    }
  });
}

template class PermutohedralLattice<float>;
template class PermutohedralLattice<double>;

}  // namespace convloc
