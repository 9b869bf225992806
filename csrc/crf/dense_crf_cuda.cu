// CUDA path of the CRFs: the grid CRF, and the dense CRF's mean-field loop with device lattices (built
// once per image and kernel) and a fused softmax + compatibility kernel.
// Same per-pixel math as the CPU path (softmax_row, crf_norm_scales in dense_crf.h).
#include <memory>
#include <vector>

#include "core/cuda.h"
#include "crf/dense_crf.h"
#include "lattice/lattice.h"
#include "lattice/lattice_cuda.h"

namespace convloc {
namespace {

constexpr int kMaxLabels = 64;  // per-thread logits live in registers/local memory

constexpr int kGridOffsets[8][2] = {{0, 1}, {1, 0}, {0, -1}, {-1, 0}, {1, 1}, {1, -1}, {-1, 1}, {-1, -1}};
__constant__ int kDevOffsets[8][2] = {{0, 1}, {1, 0}, {0, -1}, {-1, 0}, {1, 1}, {1, -1}, {-1, 1}, {-1, -1}};

// q [N, L] = softmax(-unary) with unary [L, N]; map (nullable) receives each row's argmax.
template <typename T>
__global__ void softmax_neg_kernel(const T* unary, int64_t n, int64_t labels, T* q, int64_t* map) {
  CONVLOC_CUDA_LOOP(i, n) {
    T z[kMaxLabels];
    for (int64_t l = 0; l < labels; ++l) z[l] = -unary[l * n + i];
    const int64_t best = softmax_row(z, labels);
    if (map) map[i] = best;
    for (int64_t l = 0; l < labels; ++l) q[i * labels + l] = z[l];
  }
}

template <typename T>
__global__ void grid_step_kernel(const T* unary, const T* image, int64_t h, int64_t w, int64_t channels, int64_t labels,
                                 int neighbors, T w1, T w2, T beta, const T* q, T* next) {
  CONVLOC_CUDA_LOOP(i, h * w) {
    const int64_t y = i / w, x = i % w;
    T z[kMaxLabels];
    for (int64_t l = 0; l < labels; ++l) z[l] = -unary[l * h * w + i];
    for (int k = 0; k < neighbors; ++k) {
      const int64_t yy = y + kDevOffsets[k][0], xx = x + kDevOffsets[k][1];
      if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
      const int64_t j = yy * w + xx;
      T d2 = 0;
      for (int64_t c = 0; c < channels; ++c) {
        const T d = image[i * channels + c] - image[j * channels + c];
        d2 += d * d;
      }
      const T wt = w1 * exp(-beta * d2) + w2;
      for (int64_t l = 0; l < labels; ++l) z[l] += wt * q[j * labels + l];
    }
    softmax_row(z, labels);
    for (int64_t l = 0; l < labels; ++l) next[i * labels + l] = z[l];
  }
}

// q_ln [L, N] from q [N, L].
template <typename T>
__global__ void transpose_kernel(const T* q, int64_t n, int64_t labels, T* q_ln) {
  CONVLOC_CUDA_LOOP(k, n * labels) {
    const int64_t l = k / n, i = k % n;
    q_ln[k] = q[i * labels + l];
  }
}

template <typename T>
__global__ void norm_scales_kernel(const T* norm, int64_t n, CrfNorm mode, T* pre, T* post) {
  CONVLOC_CUDA_LOOP(i, n) crf_norm_scales(mode, norm[i], &pre[i], &post[i]);
}

// in_k [N, L] = pre_k * q for every kernel k (pre: [K, N], in: [K, N, L]).
template <typename T>
__global__ void scale_inputs_kernel(const T* q, const T* pre, int64_t n, int64_t labels, int64_t kernels, T* in) {
  CONVLOC_CUDA_LOOP(e, kernels * n * labels) {
    const int64_t k = e / (n * labels), i = (e / labels) % n;
    in[e] = pre[k * n + i] * q[e % (n * labels)];
  }
}

// The fused update: logits = -U - sum_k C_k (post_k * out_k), softmax, then the next filter inputs.
template <typename T>
__global__ void dense_update_kernel(const T* unary, const T* out, const T* post, const T* pre, const T* compat,
                                    int64_t n, int64_t labels, int64_t kernels, T* q, T* in, int64_t* map) {
  CONVLOC_CUDA_LOOP(i, n) {
    T z[kMaxLabels];
    for (int64_t l = 0; l < labels; ++l) z[l] = -unary[l * n + i];
    for (int64_t k = 0; k < kernels; ++k) {
      const T p = post[k * n + i];
      const T* o = out + (k * n + i) * labels;
      const T* c = compat + k * labels * labels;
      for (int64_t a = 0; a < labels; ++a) {
        T acc = 0;
        for (int64_t b = 0; b < labels; ++b) acc += c[a * labels + b] * o[b];
        z[a] -= p * acc;
      }
    }
    const int64_t best = softmax_row(z, labels);
    if (map) map[i] = best;
    for (int64_t l = 0; l < labels; ++l) q[i * labels + l] = z[l];
    for (int64_t k = 0; k < kernels; ++k)
      for (int64_t l = 0; l < labels; ++l) in[(k * n + i) * labels + l] = pre[k * n + i] * z[l];
  }
}

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(int64_t count) { CONVLOC_CUDA_CHECK(cudaMalloc(&ptr, sizeof(T) * (count > 0 ? count : 1))); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace

template <typename T>
void grid_crf_cuda(const T* unary, const T* image, int64_t batch, int64_t labels, int64_t h, int64_t w,
                   int64_t channels, int neighbors, double w1, double w2, double beta, int64_t iterations, T* q,
                   void* stream) {
  (void)kGridOffsets;
  if (labels > kMaxLabels) fail_value("unary: the CUDA grid CRF supports up to ", kMaxLabels, " labels");
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t n = h * w;
  DeviceBuffer<T> a(n * labels), b(n * labels);
  for (int64_t im = 0; im < batch; ++im) {
    const T* u = unary + im * labels * n;
    const T* img = image + im * n * channels;
    softmax_neg_kernel<<<blocks_for(n), kThreadsPerBlock, 0, s>>>(u, n, labels, a.ptr, nullptr);
    T *cur = a.ptr, *next = b.ptr;
    for (int64_t it = 0; it < iterations; ++it) {
      grid_step_kernel<<<blocks_for(n), kThreadsPerBlock, 0, s>>>(u, img, h, w, channels, labels, neighbors, T(w1),
                                                                  T(w2), T(beta), cur, next);
      std::swap(cur, next);
    }
    transpose_kernel<<<blocks_for(n * labels), kThreadsPerBlock, 0, s>>>(cur, n, labels, q + im * labels * n);
  }
  CONVLOC_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void dense_crf_cuda(const T* unary, int64_t batch, int64_t labels, int64_t n, const std::vector<CrfKernel<T>>& kernels,
                    const T* compat, int64_t iterations, bool exclude_self, T* q, int64_t* map_labels, void* stream) {
  if (labels > kMaxLabels) fail_value("unary: the CUDA dense CRF supports up to ", kMaxLabels, " labels");
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t K = static_cast<int64_t>(kernels.size());
  DeviceBuffer<T> qn(n * labels), in(K * n * labels), out(K * n * labels), pre(K * n), post(K * n), ones(n), norm(n);
  std::vector<T> host_ones(n, T(1));
  CONVLOC_CUDA_CHECK(cudaMemcpyAsync(ones.ptr, host_ones.data(), sizeof(T) * n, cudaMemcpyHostToDevice, s));
  for (int64_t im = 0; im < batch; ++im) {
    const T* u = unary + im * labels * n;
    std::vector<std::unique_ptr<CudaLattice<T>>> lattices;  // built once per image and kernel
    for (int64_t k = 0; k < K; ++k) {
      const T* f = kernels[k].features + im * n * kernels[k].dim;
      lattices.push_back(std::make_unique<CudaLattice<T>>(f, n, kernels[k].dim, stream));
      lattices[k]->filter(ones.ptr, norm.ptr, 1, false, exclude_self);
      norm_scales_kernel<<<blocks_for(n), kThreadsPerBlock, 0, s>>>(norm.ptr, n, kernels[k].norm, pre.ptr + k * n,
                                                                    post.ptr + k * n);
    }
    softmax_neg_kernel<<<blocks_for(n), kThreadsPerBlock, 0, s>>>(
        u, n, labels, qn.ptr, (map_labels && iterations == 0) ? map_labels + im * n : nullptr);
    scale_inputs_kernel<<<blocks_for(K * n * labels), kThreadsPerBlock, 0, s>>>(qn.ptr, pre.ptr, n, labels, K, in.ptr);
    for (int64_t it = 0; it < iterations; ++it) {
      for (int64_t k = 0; k < K; ++k)
        lattices[k]->filter(in.ptr + k * n * labels, out.ptr + k * n * labels, labels, false, exclude_self);
      dense_update_kernel<<<blocks_for(n), kThreadsPerBlock, 0, s>>>(
          u, out.ptr, post.ptr, pre.ptr, compat, n, labels, K, qn.ptr, in.ptr,
          (map_labels && it + 1 == iterations) ? map_labels + im * n : nullptr);
    }
    transpose_kernel<<<blocks_for(n * labels), kThreadsPerBlock, 0, s>>>(qn.ptr, n, labels, q + im * labels * n);
  }
  CONVLOC_CUDA_CHECK(cudaGetLastError());
  CONVLOC_CUDA_CHECK(cudaStreamSynchronize(s));  // the scratch buffers are freed on return
}

#define CONVLOC_INSTANTIATE(T)                                                                                         \
  template void grid_crf_cuda<T>(const T*, const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int, double, double, \
                                 double, int64_t, T*, void*);                                                          \
  template void dense_crf_cuda<T>(const T*, int64_t, int64_t, int64_t, const std::vector<CrfKernel<T>>&, const T*,     \
                                  int64_t, bool, T*, int64_t*, void*);
CONVLOC_INSTANTIATE(float)
CONVLOC_INSTANTIATE(double)

}  // namespace convloc
