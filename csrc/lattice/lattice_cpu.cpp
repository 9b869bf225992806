#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/check.h"
#include "core/parallel.h"
#include "lattice/lattice.h"

namespace convloc {
namespace {

// The build runs on kChunks fixed chunks of points (the same for any thread count). Each chunk deduplicates
// its vertices in a small local table; the chunks' tables are then merged, in chunk order, into the global
// one, so the vertices are numbered by first use: the numbering depends on the input only, and vertices close
// in the numbering are close in space (the splat gathers and the slice walk memory nearly in order).
constexpr int64_t kChunks = 64;

int64_t chunk_begin(int64_t n, int64_t c) { return n * c / kChunks; }

// Open-addressing table of keys (d int32 coordinates) → dense ids in insertion order; grows at half load.
class KeyTable {
 public:
  explicit KeyTable(int d) : d_(d) { rehash(64); }
  int64_t size() const { return static_cast<int64_t>(hashes_.size()); }
  const int32_t* key(int64_t id) const { return &keys_[id * d_]; }
  uint64_t hash(int64_t id) const { return hashes_[id]; }

  int32_t find(const int32_t* key, uint64_t h) const {
    for (uint64_t slot = h & mask_;; slot = (slot + 1) & mask_) {
      const int32_t id = table_[slot];
      if (id < 0) return -1;
      if (hashes_[id] == h && lattice_key_equal(&keys_[static_cast<int64_t>(id) * d_], key, d_)) return id;
    }
  }

  int32_t insert(const int32_t* key, uint64_t h) {
    for (uint64_t slot = h & mask_;; slot = (slot + 1) & mask_) {
      const int32_t id = table_[slot];
      if (id < 0) {
        const int32_t fresh = static_cast<int32_t>(hashes_.size());
        table_[slot] = fresh;
        hashes_.push_back(h);
        keys_.insert(keys_.end(), key, key + d_);
        if (2 * hashes_.size() > table_.size()) rehash(2 * table_.size());
        return fresh;
      }
      if (hashes_[id] == h && lattice_key_equal(&keys_[static_cast<int64_t>(id) * d_], key, d_)) return id;
    }
  }

 private:
  void rehash(size_t slots) {
    table_.assign(slots, -1);
    mask_ = slots - 1;
    for (size_t id = 0; id < hashes_.size(); ++id) {
      uint64_t slot = hashes_[id] & mask_;
      while (table_[slot] >= 0) slot = (slot + 1) & mask_;
      table_[slot] = static_cast<int32_t>(id);
    }
  }
  int d_;
  uint64_t mask_ = 0;
  std::vector<int32_t> table_;
  std::vector<int32_t> keys_;
  std::vector<uint64_t> hashes_;
};

// Step 1 of the build for one chunk of points: simplices, weights, ranks and chunk-local vertex ids. An entry
// whose key equals the previous point's entry of the same remainder (neighbouring pixels mostly share
// vertices) skips the hash. D > 0: the dimension, fixed at compile time; D == 0: d at run time.
// Returns true if a point's coordinates are out of range (or not finite).
template <typename T>
struct BuildChunk {
  const T* features;
  int64_t n;
  const T* scale;
  T* weight;
  uint8_t* rank;
  int32_t* offset;

  template <int D>
  bool run(int64_t c, int d_runtime, KeyTable& table) const {
    const int d = D > 0 ? D : d_runtime;
    const int64_t k1 = d + 1;
    int32_t keys[2][(kLatticeMaxDim + 1) * kLatticeMaxDim];
    for (int64_t i = chunk_begin(n, c), first = i; i < chunk_begin(n, c + 1); ++i) {
      const T* f = features + i * d;
      double reach = 0;
      for (int k = 0; k < d; ++k) reach += std::fabs(double(f[k]) * double(scale[k]));
      if (!(reach * k1 < kLatticeMaxCoord)) return true;  // also catches NaN
      int32_t* key = keys[i & 1];
      const int32_t* prev = keys[(i & 1) ^ 1];
      lattice_simplex(f, d, scale, key, weight + i * k1, rank + i * k1);
      for (int k = 0; k <= d; ++k) {
        const int32_t* kk = key + k * d;
        offset[i * k1 + k] = i > first && lattice_key_equal(kk, prev + k * d, d)
                                 ? offset[(i - 1) * k1 + k]
                                 : table.insert(kk, lattice_hash(kk, d));
      }
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
  const int64_t entries = n * k1;
  weight_.resize(entries);
  rank_.resize(entries);
  offset_.resize(entries);

  // 1. Per chunk: simplices, weights, and chunk-local vertex ids in offset_ (BuildChunk).
  std::vector<KeyTable> local(kChunks, KeyTable(d));
  std::vector<uint8_t> bad(kChunks, 0);
  const BuildChunk<T> chunk{features, n, scale, weight_.data(), rank_.data(), offset_.data()};
  parallel_for(kChunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      // Small dimensions with the dimension known at compile time: the per-point loops unroll.
      switch (d) {
        case 2:
          bad[c] = chunk.template run<2>(c, d, local[c]);
          break;
        case 3:
          bad[c] = chunk.template run<3>(c, d, local[c]);
          break;
        case 5:
          bad[c] = chunk.template run<5>(c, d, local[c]);
          break;
        default:
          bad[c] = chunk.template run<0>(c, d, local[c]);
          break;
      }
    }
  });
  if (std::find(bad.begin(), bad.end(), 1) != bad.end()) {
    for (int64_t i = 0; i < n * d; ++i)
      if (!std::isfinite(features[i])) fail_value("features: expected finite values, got NaN or inf");
    fail_value("features: coordinates too large for the lattice (|f| * ", lattice_scale(d),
               " summed over a point must stay below ", kLatticeMaxCoord, "); rescale the features");
  }

  // 2. Merge the chunks' vertices in order into the global table.
  KeyTable global(d);
  std::vector<std::vector<int32_t>> to_global(kChunks);
  for (int64_t c = 0; c < kChunks; ++c) {
    const KeyTable& table = local[c];
    to_global[c].resize(table.size());
    for (int64_t id = 0; id < table.size(); ++id) to_global[c][id] = global.insert(table.key(id), table.hash(id));
    if (global.size() >= std::numeric_limits<int32_t>::max()) fail_value("features: too many lattice vertices");
  }
  const int64_t vertices = global.size();
  num_vertices_ = vertices;

  // 3. Chunk-local → global vertex ids.
  parallel_for(kChunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int32_t* map = to_global[c].data();
      for (int64_t e = chunk_begin(n, c) * k1; e < chunk_begin(n, c + 1) * k1; ++e) offset_[e] = map[offset_[e]];
    }
  });

  // 4. Blur neighbours, looked up once here so that filter() never hashes.
  blur_.resize(vertices * k1 * 2);
  parallel_for(vertices, 1024, [&](int64_t v0, int64_t v1) {
    int32_t nkey[kLatticeMaxDim];
    for (int64_t v = v0; v < v1; ++v)
      for (int j = 0; j <= d; ++j)
        for (int side = 0; side < 2; ++side) {
          lattice_neighbour(global.key(v), d, j, side ? 1 : -1, nkey);
          const int32_t u = global.find(nkey, lattice_hash(nkey, d));
          blur_[(v * k1 + j) * 2 + side] = static_cast<int32_t>(u < 0 ? vertices : u);
        }
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
    s.point.resize(entries);
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
int64_t PermutohedralLattice<T>::memory_bytes() const {
  return static_cast<int64_t>(offset_.capacity() * sizeof(int32_t) + weight_.capacity() * sizeof(T) +
                              splat_->start.capacity() * sizeof(int64_t) + splat_->point.capacity() * sizeof(int32_t) +
                              splat_->weight.capacity() * sizeof(T) + blur_.capacity() * sizeof(int32_t) +
                              rank_.capacity() + scratch_->data.capacity() * sizeof(T)) +
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

// 8-lane vectors (GCC/Clang vector extensions): one AVX2 register of floats, whatever the clone's target.
// They never cross a non-inlined call, so the ABI note GCC gives for vector returns does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
template <typename T>
struct Vec8Of;
template <>
struct Vec8Of<float> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct Vec8Of<double> {
  typedef double type __attribute__((vector_size(64)));
};
template <typename T>
using Vec8 = typename Vec8Of<T>::type;

template <typename T>
CONVLOC_ALWAYS_INLINE Vec8<T> load8(const T* p) {
  Vec8<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
CONVLOC_ALWAYS_INLINE void store8(T* p, const Vec8<T>& v) {
  std::memcpy(p, &v, sizeof v);
}

// Vertex rows v0..v1 of the tile: sum of weight * in[point] over the vertex's entries.
template <typename T, int W>
CONVLOC_ALWAYS_INLINE void splat_tile(const FilterPass<T>& a, int64_t v0, int64_t v1) {
  constexpr int B = W / 8;
  // Points below `safe` can be read W lanes wide without leaving `in` (lanes past c fall on the next point
  // and only ever reach padding lanes, which are never written out).
  const int64_t room = a.n * a.c - a.cofs - W;
  const int64_t safe = room >= 0 ? room / a.c + 1 : 0;
  const int64_t live = std::min<int64_t>(W, a.c - a.cofs);
  for (int64_t v = v0; v < v1; ++v) {
    Vec8<T> acc[B] = {};
    for (int64_t e = a.start[v]; e < a.start[v + 1]; ++e) {
      const int64_t p = a.index[e];
      const T w = a.weight[e];
      const T* x = a.in + p * a.c + a.cofs;
      if (p < safe) {
        for (int b = 0; b < B; ++b) acc[b] += w * load8(x + 8 * b);
      } else {
        T tmp[W] = {};
        for (int64_t l = 0; l < live; ++l) tmp[l] = x[l];
        for (int b = 0; b < B; ++b) acc[b] += w * load8(tmp + 8 * b);
      }
    }
    T* row = a.dst + v * a.stride + a.cofs;
    for (int b = 0; b < B; ++b) store8(row + 8 * b, acc[b]);
  }
}

// Points i0..i1 of the tile: amp * sum_k weight * vertices[offset].
template <typename T, int W>
CONVLOC_ALWAYS_INLINE void slice_tile(const FilterPass<T>& a, int64_t i0, int64_t i1) {
  constexpr int B = W / 8;
  const int64_t live = std::min<int64_t>(W, a.c - a.cofs);
  const int full = static_cast<int>(live / 8);
  for (int64_t i = i0; i < i1; ++i) {
    Vec8<T> acc[B] = {};
    for (int64_t k = 0; k < a.k1; ++k) {
      const T w = a.weight[i * a.k1 + k];
      const T* x = a.vertices + static_cast<int64_t>(a.index[i * a.k1 + k]) * a.stride + a.cofs;
      for (int b = 0; b < B; ++b) acc[b] += w * load8(x + 8 * b);
    }
    T* y = a.out + i * a.c + a.cofs;
    for (int b = 0; b < full; ++b) store8(y + 8 * b, a.amp * acc[b]);
    if (full < B) {  // the last few channels: lane by lane (a copy loop here became a memcpy call per point)
      const Vec8<T> last = a.amp * acc[full];
      const int64_t rest = live - 8 * full;
      for (int l = 0; l < 8; ++l)
        if (l < rest) y[8 * full + l] = last[l];
    }
  }
}

// Whole padded rows v0..v1: dst = src + (src[lo] + src[hi]) / 2 along direction dir.
template <typename T>
CONVLOC_ALWAYS_INLINE void blur_rows(const FilterPass<T>& a, int64_t v0, int64_t v1) {
  for (int64_t v = v0; v < v1; ++v) {
    const int32_t* nb = a.index + (v * a.k1 + a.dir) * 2;
    const T* p = a.src + v * a.stride;
    const T* lo = a.src + static_cast<int64_t>(nb[0]) * a.stride;
    const T* hi = a.src + static_cast<int64_t>(nb[1]) * a.stride;
    T* y = a.dst + v * a.stride;
    for (int64_t q = 0; q < a.stride; q += 8) store8(y + q, load8(p + q) + T(0.5) * (load8(lo + q) + load8(hi + q)));
  }
}

// Plain functions per type and width, so that the SIMD clones apply (GCC clones no templates).
#define CONVLOC_LATTICE_TILES(T, W)                                                        \
  CONVLOC_SIMD_CLONES void splat_##T##_##W(const FilterPass<T>& a, int64_t b, int64_t e) { \
    splat_tile<T, W>(a, b, e);                                                             \
  }                                                                                        \
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
  if constexpr (std::is_same_v<T, float>)
    return w == 8 ? splat_float_8 : w == 16 ? splat_float_16 : w == 24 ? splat_float_24 : splat_float_32;
  else
    return w == 8 ? splat_double_8 : w == 16 ? splat_double_16 : w == 24 ? splat_double_24 : splat_double_32;
}
template <typename T>
void (*slice_fn(int64_t w))(const FilterPass<T>&, int64_t, int64_t) {
  if constexpr (std::is_same_v<T, float>)
    return w == 8 ? slice_float_8 : w == 16 ? slice_float_16 : w == 24 ? slice_float_24 : slice_float_32;
  else
    return w == 8 ? slice_double_8 : w == 16 ? slice_double_16 : w == 24 ? slice_double_24 : slice_double_32;
}
inline void blur_fn(const FilterPass<float>& a, int64_t b, int64_t e) { blur_float(a, b, e); }
inline void blur_fn(const FilterPass<double>& a, int64_t b, int64_t e) { blur_double(a, b, e); }

}  // namespace

template <typename T>
void PermutohedralLattice<T>::filter(const T* in, T* out, int64_t channels, bool transpose) const {
  const int64_t n = n_, k1 = d_ + 1, V = num_vertices_;
  if (n == 0 || channels == 0) return;
  const SplatLists& lists = splat_lists();
  // Vertex rows padded to whole 8-lane vectors; row V stays zero (absent neighbours point at it).
  const int64_t stride = (channels + 7) & ~int64_t(7);
  const int64_t need = 2 * (V + 1) * stride;
  std::unique_lock<std::mutex> lock(scratch_->mutex, std::try_to_lock);
  std::unique_ptr<T[]> own;
  T* a;
  if (lock.owns_lock()) {
    if (static_cast<int64_t>(scratch_->data.size()) < need) scratch_->data.resize(need);
    a = scratch_->data.data();
  } else {
    own.reset(new T[need]);
    a = own.get();
  }
  T* b = a + (V + 1) * stride;
  std::fill(a + V * stride, a + (V + 1) * stride, T(0));
  std::fill(b + V * stride, b + (V + 1) * stride, T(0));
  FilterPass<T> pass{n,
                     k1,
                     channels,
                     stride,
                     0,
                     in,
                     out,
                     nullptr,
                     a,
                     nullptr,
                     lists.start.data(),
                     lists.point.data(),
                     lists.weight.data(),
                     0,
                     amplitude_};
  const int64_t vgrain = std::max<int64_t>(64, 16384 / stride), pgrain = std::max<int64_t>(64, 8192 / stride);

  // Splat (a gather per vertex), one channel tile at a time.
  for (int64_t cofs = 0; cofs < stride; cofs += kTile) {
    pass.cofs = cofs;
    const auto fn = splat_fn<T>(std::min(kTile, stride - cofs));
    parallel_for(V, vgrain, [&](int64_t v0, int64_t v1) { fn(pass, v0, v1); });
  }
  // Slice.
  pass.vertices = blur(a, b, stride, transpose);
  pass.index = offset_.data();
  pass.weight = weight_.data();
  for (int64_t cofs = 0; cofs < stride; cofs += kTile) {
    pass.cofs = cofs;
    const auto fn = slice_fn<T>(std::min(kTile, stride - cofs));
    parallel_for(n, pgrain, [&](int64_t i0, int64_t i1) { fn(pass, i0, i1); });
  }
}

template <typename T>
T* PermutohedralLattice<T>::blur(T* a, T* b, int64_t stride, bool transpose) const {
  const int64_t k1 = d_ + 1, V = num_vertices_;
  FilterPass<T> pass{};
  pass.k1 = k1;
  pass.stride = stride;
  pass.index = blur_.data();
  // Along each lattice direction ([1 2 1] / 2); the adjoint runs the directions in reverse order.
  for (int64_t step = 0; step < k1; ++step) {
    pass.dir = transpose ? k1 - 1 - step : step;
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
                                                        blur_.data(), num_vertices_, d_));
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
