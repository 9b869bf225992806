// One-shot permutohedral filtering on the GPU: the same per-point math as the CPU lattice (lattice.h),
// vertices deduplicated in a global open-addressing hash table filled with atomic compare-and-swap.
#include <thrust/execution_policy.h>
#include <thrust/scan.h>

#include "core/cuda.h"
#include "lattice/lattice.h"

namespace convloc {
namespace {

constexpr int32_t kEmpty = -1;

// Per point: simplex keys, weights, ranks; then each (point, vertex) entry is inserted in the table, whose
// slots hold the index of the first entry seen with a given key (its representative).
template <typename T>
__global__ void simplex_kernel(const T* features, int64_t n, int d, const T* scale, int32_t* keys, T* weights,
                               uint8_t* ranks, uint64_t* hashes, int* out_of_range) {
  CONVLOC_CUDA_LOOP(i, n) {
    const int64_t k1 = d + 1;
    int32_t* key = keys + i * k1 * d;
    if (!lattice_point_in_range(features + i * d, d, scale)) *out_of_range = 1;  // reported after the build
    lattice_simplex(features + i * d, d, scale, key, weights + i * k1, ranks + i * k1);
    for (int k = 0; k <= d; ++k) hashes[i * k1 + k] = lattice_hash(key + k * d, d);
  }
}

__global__ void insert_kernel(const int32_t* keys, const uint64_t* hashes, int64_t entries, int d, int32_t* table,
                              uint64_t mask, int32_t* rep) {
  CONVLOC_CUDA_LOOP(e, entries) {
    const int32_t* key = keys + e * d;
    for (uint64_t slot = hashes[e] & mask;; slot = (slot + 1) & mask) {
      const int32_t prev = atomicCAS(&table[slot], kEmpty, static_cast<int32_t>(e));
      if (prev == kEmpty) {
        rep[e] = static_cast<int32_t>(e);
        break;
      }
      // keys were written by an earlier kernel, so the winner's key is visible here.
      if (hashes[prev] == hashes[e] && lattice_key_equal(keys + static_cast<int64_t>(prev) * d, key, d)) {
        rep[e] = prev;
        break;
      }
    }
  }
}

__global__ void flag_kernel(const int32_t* rep, int64_t entries, int32_t* flag) {
  CONVLOC_CUDA_LOOP(e, entries) flag[e] = rep[e] == e ? 1 : 0;
}

// ids = exclusive scan of the flags: vertex id of each representative. offset[e] = id of e's representative.
__global__ void offset_kernel(const int32_t* rep, const int32_t* ids, int64_t entries, int32_t* offset,
                              int32_t* vertex_entry) {
  CONVLOC_CUDA_LOOP(e, entries) {
    offset[e] = ids[rep[e]];
    if (rep[e] == e) vertex_entry[ids[e]] = static_cast<int32_t>(e);
  }
}

__global__ void neighbour_kernel(const int32_t* keys, const uint64_t* hashes, const int32_t* table, uint64_t mask,
                                 const int32_t* ids, const int32_t* vertex_entry, int64_t vertices, int d,
                                 int32_t* blur) {
  const int64_t k1 = d + 1;
  CONVLOC_CUDA_LOOP(t, vertices * k1 * 2) {
    const int64_t v = t / (k1 * 2);
    const int j = static_cast<int>((t / 2) % k1), side = static_cast<int>(t % 2);
    int32_t nkey[kLatticeMaxDim];
    lattice_neighbour(keys + static_cast<int64_t>(vertex_entry[v]) * d, d, j, side ? 1 : -1, nkey);
    const uint64_t h = lattice_hash(nkey, d);
    int32_t found = static_cast<int32_t>(vertices);
    for (uint64_t slot = h & mask;; slot = (slot + 1) & mask) {
      const int32_t e = table[slot];
      if (e == kEmpty) break;
      if (hashes[e] == h && lattice_key_equal(keys + static_cast<int64_t>(e) * d, nkey, d)) {
        found = ids[e];
        break;
      }
    }
    blur[t] = found;
  }
}

template <typename T>
__global__ void splat_kernel(const T* in, const int32_t* offset, const T* weights, int64_t entries, int64_t k1,
                             int64_t c, T* buf) {
  CONVLOC_CUDA_LOOP(t, entries * c) {
    const int64_t e = t / c, q = t % c;
    atomicAdd(&buf[static_cast<int64_t>(offset[e]) * c + q], weights[e] * in[(e / k1) * c + q]);
  }
}

template <typename T>
__global__ void blur_kernel(const T* src, const int32_t* blur, int64_t vertices, int64_t k1, int64_t j, int64_t c,
                            T* dst) {
  CONVLOC_CUDA_LOOP(t, vertices * c) {
    const int64_t v = t / c, q = t % c;
    const int32_t* nb = blur + (v * k1 + j) * 2;
    dst[t] = src[t] + T(0.5) * (src[static_cast<int64_t>(nb[0]) * c + q] + src[static_cast<int64_t>(nb[1]) * c + q]);
  }
}

template <typename T>
__global__ void slice_kernel(const T* buf, const int32_t* offset, const T* weights, const T* in, const T* self_weight,
                             int64_t n, int64_t k1, int64_t c, T amp, T* out) {
  CONVLOC_CUDA_LOOP(t, n * c) {
    const int64_t i = t / c, q = t % c;
    T acc = 0;
    for (int64_t k = 0; k < k1; ++k) acc += weights[i * k1 + k] * buf[static_cast<int64_t>(offset[i * k1 + k]) * c + q];
    acc *= amp;
    if (self_weight) acc -= amp * self_weight[i] * in[t];
    out[t] = acc;
  }
}

template <typename T>
__global__ void self_weight_kernel(const int32_t* offset, const T* weights, const uint8_t* ranks, const int32_t* blur,
                                   int64_t n, int64_t vertices, int d, T* out) {
  CONVLOC_CUDA_LOOP(i, n) {
    const int64_t k1 = d + 1;
    out[i] = static_cast<T>(lattice_self_weight(offset + i * k1, weights + i * k1, ranks + i * k1, blur, vertices, d));
  }
}

// Scratch memory on the caller's stream, freed on scope exit.
class Scratch {
 public:
  explicit Scratch(cudaStream_t s) : stream_(s) {}
  ~Scratch() {
    for (void* p : blocks_) cudaFreeAsync(p, stream_);
  }
  template <typename U>
  U* get(int64_t count) {
    void* p = nullptr;
    CONVLOC_CUDA_CHECK(cudaMallocAsync(&p, static_cast<size_t>(count > 0 ? count : 1) * sizeof(U), stream_));
    blocks_.push_back(p);
    return static_cast<U*>(p);
  }

 private:
  cudaStream_t stream_;
  std::vector<void*> blocks_;
};

}  // namespace

template <typename T>
void permutohedral_filter_cuda(const T* features, int64_t n, int d, const T* in, T* out, int64_t channels,
                               bool transpose, bool exclude_self, void* stream) {
  if (n == 0 || channels == 0) return;
  if (d < 1 || d > kLatticeMaxDim) fail_value("features: expected 1 <= d <= ", kLatticeMaxDim, ", got d = ", d);
  const int64_t k1 = d + 1, entries = n * k1, c = channels;
  if (entries >= INT32_MAX) fail_value("features: too many points for the lattice, got ", n);
  auto s = (cudaStream_t)stream;
  Scratch scratch(s);
  T scale_host[kLatticeMaxDim];
  lattice_scale_factors(d, scale_host);
  T* scale = scratch.get<T>(d);
  CONVLOC_CUDA_CHECK(cudaMemcpyAsync(scale, scale_host, d * sizeof(T), cudaMemcpyHostToDevice, s));

  int32_t* keys = scratch.get<int32_t>(entries * d);
  T* weights = scratch.get<T>(entries);
  uint8_t* ranks = scratch.get<uint8_t>(entries);
  uint64_t* hashes = scratch.get<uint64_t>(entries);
  int* out_of_range = scratch.get<int>(1);
  CONVLOC_CUDA_CHECK(cudaMemsetAsync(out_of_range, 0, sizeof(int), s));
  simplex_kernel<<<blocks_for(n), kThreadsPerBlock, 0, s>>>(features, n, d, scale, keys, weights, ranks, hashes,
                                                            out_of_range);
  CONVLOC_CUDA_CHECK(cudaGetLastError());

  uint64_t size = 1024;
  while (size < static_cast<uint64_t>(2 * entries)) size <<= 1;
  int32_t* table = scratch.get<int32_t>(size);
  CONVLOC_CUDA_CHECK(cudaMemsetAsync(table, 0xFF, size * sizeof(int32_t), s));  // kEmpty everywhere
  int32_t* rep = scratch.get<int32_t>(entries);
  insert_kernel<<<blocks_for(entries), kThreadsPerBlock, 0, s>>>(keys, hashes, entries, d, table, size - 1, rep);
  CONVLOC_CUDA_CHECK(cudaGetLastError());

  int32_t* ids = scratch.get<int32_t>(entries);
  flag_kernel<<<blocks_for(entries), kThreadsPerBlock, 0, s>>>(rep, entries, ids);
  thrust::exclusive_scan(thrust::cuda::par.on(s), ids, ids + entries, ids);
  int32_t last_id = 0, last_rep = 0;
  int bad_points = 0;
  CONVLOC_CUDA_CHECK(cudaMemcpyAsync(&last_id, ids + entries - 1, sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  CONVLOC_CUDA_CHECK(cudaMemcpyAsync(&last_rep, rep + entries - 1, sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  CONVLOC_CUDA_CHECK(cudaMemcpyAsync(&bad_points, out_of_range, sizeof(int), cudaMemcpyDeviceToHost, s));
  CONVLOC_CUDA_CHECK(cudaStreamSynchronize(s));
  if (bad_points) fail_value("features: coordinates out of range or not finite");
  const int64_t vertices = last_id + (last_rep == entries - 1 ? 1 : 0);

  int32_t* offset = scratch.get<int32_t>(entries);
  int32_t* vertex_entry = scratch.get<int32_t>(vertices);
  offset_kernel<<<blocks_for(entries), kThreadsPerBlock, 0, s>>>(rep, ids, entries, offset, vertex_entry);
  int32_t* blur = scratch.get<int32_t>(vertices * k1 * 2);
  neighbour_kernel<<<blocks_for(vertices * k1 * 2), kThreadsPerBlock, 0, s>>>(keys, hashes, table, size - 1, ids,
                                                                              vertex_entry, vertices, d, blur);
  CONVLOC_CUDA_CHECK(cudaGetLastError());

  // Row `vertices` of both buffers stays zero: absent neighbours point at it.
  T* a = scratch.get<T>((vertices + 1) * c);
  T* b = scratch.get<T>((vertices + 1) * c);
  CONVLOC_CUDA_CHECK(cudaMemsetAsync(a, 0, (vertices + 1) * c * sizeof(T), s));
  CONVLOC_CUDA_CHECK(cudaMemsetAsync(b + vertices * c, 0, c * sizeof(T), s));
  splat_kernel<<<blocks_for(entries * c), kThreadsPerBlock, 0, s>>>(in, offset, weights, entries, k1, c, a);
  for (int64_t step = 0; step < k1; ++step) {
    const int64_t j = transpose ? k1 - 1 - step : step;
    blur_kernel<<<blocks_for(vertices * c), kThreadsPerBlock, 0, s>>>(a, blur, vertices, k1, j, c, b);
    std::swap(a, b);
  }
  T* self_weight = nullptr;
  if (exclude_self) {
    self_weight = scratch.get<T>(n);
    self_weight_kernel<<<blocks_for(n), kThreadsPerBlock, 0, s>>>(offset, weights, ranks, blur, n, vertices, d,
                                                                  self_weight);
  }
  slice_kernel<<<blocks_for(n * c), kThreadsPerBlock, 0, s>>>(a, offset, weights, in, self_weight, n, k1, c,
                                                              static_cast<T>(lattice_amplitude(d)), out);
  CONVLOC_CUDA_CHECK(cudaGetLastError());
}

template void permutohedral_filter_cuda<float>(const float*, int64_t, int, const float*, float*, int64_t, bool, bool,
                                               void*);
template void permutohedral_filter_cuda<double>(const double*, int64_t, int, const double*, double*, int64_t, bool,
                                                bool, void*);

}  // namespace convloc
