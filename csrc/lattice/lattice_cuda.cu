// The permutohedral lattice on the GPU: the same per-point math as the CPU lattice (lattice.h), vertices
// deduplicated in a global open-addressing hash table filled with atomic compare-and-swap. Built once,
// filtered any number of times (the dense CRF's iterations); every filtering is deterministic.
#include <thrust/execution_policy.h>
#include <thrust/scan.h>
#include <thrust/sort.h>

#include "core/cuda.h"
#include "lattice/lattice.h"
#include "lattice/lattice_cuda.h"

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

// The splat as a gather, one warp per vertex: lane l sums list entries l, l + 32, ... of the vertex (the
// points and weights at positions starts[v] .. starts[v + 1] of the entries sorted by vertex, in entry
// order) per channel, then a fixed shuffle tree adds the lanes: deterministic sums (no atomics).
template <typename T>
__global__ void splat_kernel(const T* in, const int32_t* point, const T* weight, const int32_t* starts,
                             int64_t vertices, int64_t c, T* buf) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t v = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; v < vertices; v += warps) {
    const int32_t first = starts[v], last = starts[v + 1];
    for (int64_t q = 0; q < c; ++q) {
      T acc = 0;
      for (int32_t i = first + lane; i < last; i += 32) acc += weight[i] * in[int64_t(point[i]) * c + q];
      for (int offset = 16; offset > 0; offset /= 2) acc += __shfl_down_sync(0xffffffffu, acc, offset);
      if (lane == 0) buf[v * c + q] = acc;
    }
  }
}

// The splat lists' points and weights, from the entries sorted by vertex.
template <typename T>
__global__ void splat_lists_kernel(const int32_t* sorted, const T* weights, int64_t entries, int64_t k1, int32_t* point,
                                   T* weight) {
  CONVLOC_CUDA_LOOP(i, entries) {
    point[i] = static_cast<int32_t>(sorted[i] / k1);
    weight[i] = weights[sorted[i]];
  }
}

// starts[v] = first position of vertex v in the sorted entry list (every vertex has an entry).
__global__ void starts_kernel(const int32_t* sorted_vertex, int64_t entries, int64_t vertices, int32_t* starts) {
  CONVLOC_CUDA_LOOP(i, entries) {
    if (i == 0 || sorted_vertex[i] != sorted_vertex[i - 1]) starts[sorted_vertex[i]] = static_cast<int32_t>(i);
    if (i == 0) starts[vertices] = static_cast<int32_t>(entries);
  }
}

__global__ void iota_kernel(int32_t* out, int64_t n) { CONVLOC_CUDA_LOOP(i, n) out[i] = static_cast<int32_t>(i); }

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
    out[i] = static_cast<T>(
        lattice_self_weight(offset + i * k1, weights + i * k1, ranks + i * k1, blur, k1, 1, vertices, d));
  }
}

}  // namespace

template <typename T>
void* CudaLattice<T>::alloc(int64_t bytes, std::vector<void*>& owner) {
  void* p = nullptr;
  CONVLOC_CUDA_CHECK(cudaMallocAsync(&p, static_cast<size_t>(bytes > 0 ? bytes : 1), stream_));
  owner.push_back(p);
  return p;
}

template <typename T>
void CudaLattice<T>::release(std::vector<void*>& blocks) {
  for (void* p : blocks) cudaFreeAsync(p, stream_);
  blocks.clear();
}

template <typename T>
CudaLattice<T>::~CudaLattice() {
  release(blocks_);
}

template <typename T>
CudaLattice<T>::CudaLattice(const T* features, int64_t n, int d, void* stream)
    : stream_(static_cast<cudaStream_t>(stream)), n_(n), d_(d) {
  if (d < 1 || d > kLatticeMaxDim) fail_value("features: expected 1 <= d <= ", kLatticeMaxDim, ", got d = ", d);
  if (n * (d + 1) >= INT32_MAX) fail_value("features: too many points for the lattice, got ", n);
  if (n == 0) return;
  std::vector<void*> build_only;  // freed at the end of the build, in stream order
  try {
    build(features, build_only);
  } catch (...) {
    release(build_only);
    release(blocks_);
    throw;
  }
  release(build_only);
}

template <typename T>
void CudaLattice<T>::build(const T* features, std::vector<void*>& tmp) {
  const int64_t n = n_, k1 = d_ + 1, entries = n * k1;
  const int d = d_;
  auto s = stream_;
  T scale_host[kLatticeMaxDim];
  lattice_scale_factors(d, scale_host);
  T* scale = get<T>(d, tmp);
  CONVLOC_CUDA_CHECK(cudaMemcpyAsync(scale, scale_host, d * sizeof(T), cudaMemcpyHostToDevice, s));
  int32_t* keys = get<int32_t>(entries * d, tmp);
  weights_ = get<T>(entries, blocks_);
  ranks_ = get<uint8_t>(entries, blocks_);
  uint64_t* hashes = get<uint64_t>(entries, tmp);
  int* out_of_range = get<int>(1, tmp);
  CONVLOC_CUDA_CHECK(cudaMemsetAsync(out_of_range, 0, sizeof(int), s));
  simplex_kernel<<<blocks_for(n), kThreadsPerBlock, 0, s>>>(features, n, d, scale, keys, weights_, ranks_, hashes,
                                                            out_of_range);
  CONVLOC_CUDA_CHECK(cudaGetLastError());

  uint64_t size = 1024;
  while (size < static_cast<uint64_t>(2 * entries)) size <<= 1;
  int32_t* table = get<int32_t>(size, tmp);
  CONVLOC_CUDA_CHECK(cudaMemsetAsync(table, 0xFF, size * sizeof(int32_t), s));  // kEmpty everywhere
  int32_t* rep = get<int32_t>(entries, tmp);
  insert_kernel<<<blocks_for(entries), kThreadsPerBlock, 0, s>>>(keys, hashes, entries, d, table, size - 1, rep);
  CONVLOC_CUDA_CHECK(cudaGetLastError());

  int32_t* ids = get<int32_t>(entries, tmp);
  flag_kernel<<<blocks_for(entries), kThreadsPerBlock, 0, s>>>(rep, entries, ids);
  thrust::exclusive_scan(thrust::cuda::par(StreamAllocator{s}).on(s), ids, ids + entries, ids);
  int32_t last_id = 0, last_rep = 0;
  int bad_points = 0;
  CONVLOC_CUDA_CHECK(cudaMemcpyAsync(&last_id, ids + entries - 1, sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  CONVLOC_CUDA_CHECK(cudaMemcpyAsync(&last_rep, rep + entries - 1, sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  CONVLOC_CUDA_CHECK(cudaMemcpyAsync(&bad_points, out_of_range, sizeof(int), cudaMemcpyDeviceToHost, s));
  CONVLOC_CUDA_CHECK(cudaStreamSynchronize(s));
  if (bad_points) fail_value("features: coordinates out of range or not finite");
  vertices_ = last_id + (last_rep == entries - 1 ? 1 : 0);

  offset_ = get<int32_t>(entries, blocks_);
  int32_t* vertex_entry = get<int32_t>(vertices_, tmp);
  offset_kernel<<<blocks_for(entries), kThreadsPerBlock, 0, s>>>(rep, ids, entries, offset_, vertex_entry);
  blur_ = get<int32_t>(vertices_ * k1 * 2, blocks_);
  neighbour_kernel<<<blocks_for(vertices_ * k1 * 2), kThreadsPerBlock, 0, s>>>(keys, hashes, table, size - 1, ids,
                                                                               vertex_entry, vertices_, d, blur_);
  // Entries grouped by vertex, in entry order within a vertex (a stable sort): the splat's gather lists.
  int32_t* sorted_vertex = get<int32_t>(entries, tmp);
  CONVLOC_CUDA_CHECK(cudaMemcpyAsync(sorted_vertex, offset_, entries * sizeof(int32_t), cudaMemcpyDeviceToDevice, s));
  int32_t* sorted = get<int32_t>(entries, tmp);
  iota_kernel<<<blocks_for(entries), kThreadsPerBlock, 0, s>>>(sorted, entries);
  thrust::stable_sort_by_key(thrust::cuda::par(StreamAllocator{s}).on(s), sorted_vertex, sorted_vertex + entries,
                             sorted);
  starts_ = get<int32_t>(vertices_ + 1, blocks_);
  starts_kernel<<<blocks_for(entries), kThreadsPerBlock, 0, s>>>(sorted_vertex, entries, vertices_, starts_);
  splat_point_ = get<int32_t>(entries, blocks_);
  splat_weight_ = get<T>(entries, blocks_);
  splat_lists_kernel<<<blocks_for(entries), kThreadsPerBlock, 0, s>>>(sorted, weights_, entries, k1, splat_point_,
                                                                      splat_weight_);
  CONVLOC_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void CudaLattice<T>::filter(const T* in, T* out, int64_t channels, bool transpose, bool exclude_self) {
  if (n_ == 0 || channels == 0) return;
  auto s = stream_;
  const int64_t k1 = d_ + 1, c = channels;
  if (exclude_self && !self_weight_) {
    self_weight_ = get<T>(n_, blocks_);
    self_weight_kernel<<<blocks_for(n_), kThreadsPerBlock, 0, s>>>(offset_, weights_, ranks_, blur_, n_, vertices_, d_,
                                                                   self_weight_);
  }
  // Row `vertices` of both buffers stays zero: absent neighbours point at it.
  T *a = nullptr, *b = nullptr;
  CONVLOC_CUDA_CHECK(cudaMallocAsync(&a, (vertices_ + 1) * c * sizeof(T), s));
  CONVLOC_CUDA_CHECK(cudaMallocAsync(&b, (vertices_ + 1) * c * sizeof(T), s));
  CONVLOC_CUDA_CHECK(cudaMemsetAsync(a + vertices_ * c, 0, c * sizeof(T), s));
  CONVLOC_CUDA_CHECK(cudaMemsetAsync(b + vertices_ * c, 0, c * sizeof(T), s));
  splat_kernel<<<blocks_for(vertices_ * 32), kThreadsPerBlock, 0, s>>>(in, splat_point_, splat_weight_, starts_,
                                                                       vertices_, c, a);
  for (int64_t step = 0; step < k1; ++step) {
    const int64_t j = transpose ? k1 - 1 - step : step;
    blur_kernel<<<blocks_for(vertices_ * c), kThreadsPerBlock, 0, s>>>(a, blur_, vertices_, k1, j, c, b);
    std::swap(a, b);
  }
  slice_kernel<<<blocks_for(n_ * c), kThreadsPerBlock, 0, s>>>(a, offset_, weights_, in,
                                                               exclude_self ? self_weight_ : nullptr, n_, k1, c,
                                                               static_cast<T>(lattice_amplitude(d_)), out);
  const cudaError_t launched = cudaGetLastError();
  cudaFreeAsync(a, s);
  cudaFreeAsync(b, s);
  CONVLOC_CUDA_CHECK(launched);
}

template <typename T>
void permutohedral_filter_cuda(const T* features, int64_t n, int d, const T* in, T* out, int64_t channels,
                               bool transpose, bool exclude_self, void* stream) {
  if (n == 0 || channels == 0) return;
  CudaLattice<T>(features, n, d, stream).filter(in, out, channels, transpose, exclude_self);
}

template class CudaLattice<float>;
template class CudaLattice<double>;
template void permutohedral_filter_cuda<float>(const float*, int64_t, int, const float*, float*, int64_t, bool, bool,
                                               void*);
template void permutohedral_filter_cuda<double>(const double*, int64_t, int, const double*, double*, int64_t, bool,
                                                bool, void*);

}  // namespace convloc
