// CUDA transposed convolution, deterministic throughout (no atomics).
//
// Dense path (any groups), as on the CPU: a tiled matrix product (gemm_cuda, shared-memory tiles, each
// output summed over k in order) gives per image and group the columns weightᵀ · input, and col2im
// gathers them into the output; the backward pass gathers grad_out into columns (im2col), then
// grad_input = weight · columns and grad_weight = sum over images of input · columnsᵀ.
// Depthwise path (FCN's bilinear upsampling): gather kernels, each thread owning one output or one
// input-gradient value, and block reductions (a fixed-order tree) for grad_weight and grad_bias.
#include <algorithm>

#include "core/cuda.h"
#include "deconv/deconv.h"

namespace convloc {
namespace {

constexpr int kReduceThreads = 256;

// ---- depthwise path (and the bias gradient) ----

// init + value(kh, kw, ih, iw) summed over the taps (kh, kw) that reach output pixel (oh, ow), in order.
template <typename T, typename Value>
__device__ T sum_over_taps(const DeconvShape& s, int64_t oh, int64_t ow, T init, Value value) {
  for (int64_t kh = 0; kh < s.kh; ++kh) {
    const int64_t ih = deconv_source(oh, kh, s.sh, s.ph, s.dh, s.h);
    if (ih < 0) continue;
    for (int64_t kw = 0; kw < s.kw; ++kw) {
      const int64_t iw = deconv_source(ow, kw, s.sw, s.pw, s.dw, s.w);
      if (iw >= 0) init += value(kh, kw, ih, iw);
    }
  }
  return init;
}

template <typename T>
__global__ void forward_kernel(DeconvShape s, const T* __restrict__ x, const T* __restrict__ w,
                               const T* __restrict__ bias, T* __restrict__ out) {
  const int64_t total = s.n * s.c_out * s.oh * s.ow;
  const int64_t cig = s.c_in_g(), cog = s.c_out_g();
  CONVLOC_CUDA_LOOP(i, total) {
    const int64_t ow = i % s.ow, oh = (i / s.ow) % s.oh, co = (i / (s.ow * s.oh)) % s.c_out;
    const int64_t n = i / (s.ow * s.oh * s.c_out), g = co / cog, co_g = co % cog;
    out[i] = sum_over_taps(s, oh, ow, bias ? bias[co] : T(0), [&](int64_t kh, int64_t kw, int64_t ih, int64_t iw) {
      const T* xp = x + ((n * s.c_in + g * cig) * s.h + ih) * s.w + iw;
      const T* wp = w + ((g * cig * cog + co_g) * s.kh + kh) * s.kw + kw;
      T sum = 0;
      for (int64_t c = 0; c < cig; ++c) sum += xp[c * s.h * s.w] * wp[c * cog * s.kh * s.kw];
      return sum;
    });
  }
}

template <typename T>
__global__ void grad_input_kernel(DeconvShape s, const T* __restrict__ gout, const T* __restrict__ w,
                                  T* __restrict__ gin) {
  const int64_t total = s.n * s.c_in * s.h * s.w;
  const int64_t cig = s.c_in_g(), cog = s.c_out_g();
  CONVLOC_CUDA_LOOP(i, total) {
    const int64_t iw = i % s.w, ih = (i / s.w) % s.h, ci = (i / (s.w * s.h)) % s.c_in;
    const int64_t n = i / (s.w * s.h * s.c_in), g = ci / cig;
    T sum = 0;
    for (int64_t kh = 0; kh < s.kh; ++kh) {
      const int64_t oh = ih * s.sh - s.ph + kh * s.dh;
      if (oh < 0 || oh >= s.oh) continue;
      for (int64_t kw = 0; kw < s.kw; ++kw) {
        const int64_t ow = iw * s.sw - s.pw + kw * s.dw;
        if (ow < 0 || ow >= s.ow) continue;
        const T* gp = gout + ((n * s.c_out + g * cog) * s.oh + oh) * s.ow + ow;
        const T* wp = w + ((ci * cog) * s.kh + kh) * s.kw + kw;
        for (int64_t c = 0; c < cog; ++c) sum += gp[c * s.oh * s.ow] * wp[c * s.kh * s.kw];
      }
    }
    gin[i] = sum;
  }
}

// Sums v over the block in a fixed order; thread 0 gets the total.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T partial[kReduceThreads];
  partial[threadIdx.x] = v;
  __syncthreads();
  for (int half = kReduceThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  return partial[0];
}

// One block per weight value (ci, co_g, kh, kw): sum over n, ih, iw of input * grad_out.
template <typename T>
__global__ void grad_weight_kernel(DeconvShape s, const T* __restrict__ x, const T* __restrict__ gout,
                                   T* __restrict__ gw) {
  const int64_t cig = s.c_in_g(), cog = s.c_out_g();
  const int64_t k = blockIdx.x;
  const int64_t kw = k % s.kw, kh = (k / s.kw) % s.kh, co_g = (k / (s.kw * s.kh)) % cog;
  const int64_t ci = k / (s.kw * s.kh * cog), co = ci / cig * cog + co_g;
  const int64_t per_image = s.h * s.w;
  T sum = 0;
  for (int64_t j = threadIdx.x; j < s.n * per_image; j += blockDim.x) {
    const int64_t n = j / per_image, ih = (j % per_image) / s.w, iw = j % s.w;
    const int64_t oh = ih * s.sh - s.ph + kh * s.dh, ow = iw * s.sw - s.pw + kw * s.dw;
    if (oh < 0 || oh >= s.oh || ow < 0 || ow >= s.ow) continue;
    sum += x[((n * s.c_in + ci) * s.h + ih) * s.w + iw] * gout[((n * s.c_out + co) * s.oh + oh) * s.ow + ow];
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) gw[k] = sum;
}

template <typename T>
__global__ void grad_bias_kernel(DeconvShape s, const T* __restrict__ gout, T* __restrict__ gb) {
  const int64_t co = blockIdx.x, plane = s.oh * s.ow;
  T sum = 0;
  for (int64_t j = threadIdx.x; j < s.n * plane; j += blockDim.x)
    sum += gout[((j / plane) * s.c_out + co) * plane + j % plane];
  sum = block_sum(sum);
  if (threadIdx.x == 0) gb[co] = sum;
}

// ---- dense path ----

// C[i, j] (+)= sum_k A[i, k] B[k, j] for `batch` products at once (blockIdx.z), operands by general strides
// (A[i, k] = a[i * a_row + k * a_col], likewise B; C row-major with ldc), one product per z offset by the
// *_batch strides. 64 x 64 tiles of C per block of 256 threads, 4 x 4 per thread; k in steps of 16 through
// shared memory, each C element summed in k order.
struct GemmShape {
  int64_t m, n, k, a_row, a_col, a_batch, b_row, b_col, b_batch, ldc, c_batch;
  bool accumulate;
};

constexpr int kGemmTile = 64, kGemmDepth = 16, kGemmThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kGemmThreads) gemm_kernel(GemmShape g, const T* a, const T* b, T* c) {
  __shared__ T as[kGemmDepth][kGemmTile + 1];
  __shared__ T bs[kGemmDepth][kGemmTile + 1];
  const int64_t z = blockIdx.z;
  a += z * g.a_batch;
  b += z * g.b_batch;
  c += z * g.c_batch;
  const int64_t i0 = int64_t(blockIdx.y) * kGemmTile, j0 = int64_t(blockIdx.x) * kGemmTile;
  const int t = threadIdx.x, tx = t % 16, ty = t / 16;
  T acc[4][4];
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int q = 0; q < 4; ++q) acc[r][q] = T(0);
  for (int64_t k0 = 0; k0 < g.k; k0 += kGemmDepth) {
    // Each operand's tile is read along its unit stride (coalesced).
    for (int l = t; l < kGemmTile * kGemmDepth; l += kGemmThreads) {
      const int ii = g.a_row == 1 ? l % kGemmTile : l / kGemmDepth;
      const int kk = g.a_row == 1 ? l / kGemmTile : l % kGemmDepth;
      const int64_t i = i0 + ii, k = k0 + kk;
      as[kk][ii] = i < g.m && k < g.k ? a[i * g.a_row + k * g.a_col] : T(0);
      const int jj = g.b_row == 1 ? l / kGemmDepth : l % kGemmTile;
      const int kb = g.b_row == 1 ? l % kGemmDepth : l / kGemmTile;
      const int64_t j = j0 + jj, kb0 = k0 + kb;
      bs[kb][jj] = j < g.n && kb0 < g.k ? b[kb0 * g.b_row + j * g.b_col] : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kGemmDepth; ++kk) {
      T av[4], bv[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) av[r] = as[kk][ty + 16 * r];
#pragma unroll
      for (int q = 0; q < 4; ++q) bv[q] = bs[kk][tx + 16 * q];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[r][q] = fma(av[r], bv[q], acc[r][q]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t i = i0 + ty + 16 * r, j = j0 + tx + 16 * q;
      if (i < g.m && j < g.n) {
        T* dst = c + i * g.ldc + j;
        *dst = g.accumulate ? *dst + acc[r][q] : acc[r][q];
      }
    }
}

template <typename T>
void gemm_cuda(const GemmShape& g, int64_t batch, const T* a, const T* b, T* c, cudaStream_t s) {
  if (g.m == 0 || g.n == 0 || batch == 0) return;
  const dim3 grid(unsigned((g.n + kGemmTile - 1) / kGemmTile), unsigned((g.m + kGemmTile - 1) / kGemmTile),
                  unsigned(batch));
  gemm_kernel<<<grid, kGemmThreads, 0, s>>>(g, a, b, c);
  CONVLOC_CUDA_CHECK(cudaGetLastError());
}

// cols [images * groups][(co, kh, kw), (ih, iw)] = grad_out of that image and group at the pixel the tap
// reads (0 outside); images [n0, n0 + images).
template <typename T>
__global__ void im2col_kernel(DeconvShape s, const T* __restrict__ gout, int64_t n0, int64_t images,
                              T* __restrict__ cols) {
  const int64_t hw = s.h * s.w, rows = s.c_out_g() * s.kh * s.kw;
  CONVLOC_CUDA_LOOP(e, images * s.groups * rows * hw) {
    const int64_t p = e % hw, r = (e / hw) % rows, ng = e / (hw * rows);
    const int64_t kw = r % s.kw, kh = (r / s.kw) % s.kh, co = r / (s.kw * s.kh);
    const int64_t g = ng % s.groups, n = n0 + ng / s.groups;
    const int64_t oh = (p / s.w) * s.sh - s.ph + kh * s.dh, ow = (p % s.w) * s.sw - s.pw + kw * s.dw;
    cols[e] = oh >= 0 && oh < s.oh && ow >= 0 && ow < s.ow
                  ? gout[((n * s.c_out + g * s.c_out_g() + co) * s.oh + oh) * s.ow + ow]
                  : T(0);
  }
}

// out[n, co, oh, ow] = bias[co] + the columns' entries of the taps reaching (oh, ow), in (kh, kw) order.
template <typename T>
__global__ void col2im_kernel(DeconvShape s, const T* __restrict__ cols, const T* __restrict__ bias, int64_t n0,
                              int64_t images, T* __restrict__ out) {
  const int64_t hw = s.h * s.w, cog = s.c_out_g(), rows = cog * s.kh * s.kw;
  CONVLOC_CUDA_LOOP(e, images * s.c_out * s.oh * s.ow) {
    const int64_t ow = e % s.ow, oh = (e / s.ow) % s.oh, co = (e / (s.ow * s.oh)) % s.c_out;
    const int64_t ni = e / (s.ow * s.oh * s.c_out), g = co / cog;
    const T* col = cols + ((ni * s.groups + g) * rows + (co % cog) * s.kh * s.kw) * hw;
    const T sum = sum_over_taps(s, oh, ow, bias ? bias[co] : T(0), [&](int64_t kh, int64_t kw, int64_t ih, int64_t iw) {
      return col[(kh * s.kw + kw) * hw + ih * s.w + iw];
    });
    out[(n0 * s.c_out) * s.oh * s.ow + e] = sum;
  }
}

// Images per pass of the dense path: its columns stay within about 256 MB (and the batched products
// within the grid's 65535 z-blocks).
int64_t images_per_pass(const DeconvShape& s, int64_t elem_size) {
  const int64_t per_image = std::max<int64_t>(s.groups * s.c_out_g() * s.kh * s.kw * s.h * s.w * elem_size, 1);
  return std::max<int64_t>(1, std::min<int64_t>({s.n, (int64_t(256) << 20) / per_image, 65535}));
}

template <typename T>
void dense_forward(const DeconvShape& s, const T* input, const T* weight, const T* bias, T* out, cudaStream_t st) {
  const int64_t cig = s.c_in_g(), rows = s.c_out_g() * s.kh * s.kw, hw = s.h * s.w;
  const int64_t chunk = images_per_pass(s, sizeof(T));
  StreamScratch<T> cols(chunk * s.groups * rows * hw, st);
  for (int64_t n0 = 0; n0 < s.n; n0 += chunk) {
    const int64_t images = std::min(chunk, s.n - n0);
    // per (image, group): cols [rows, hw] = weight_gᵀ [rows, cig] · input [cig, hw]
    for (int64_t g = 0; g < s.groups; ++g) {
      const GemmShape shape{rows, hw, cig, 1, rows, 0, hw, 1, s.c_in * hw, hw, s.groups * rows * hw, false};
      gemm_cuda(shape, images, weight + g * cig * rows, input + (n0 * s.c_in + g * cig) * hw, cols.ptr + g * rows * hw,
                st);
    }
    const int64_t total = images * s.c_out * s.oh * s.ow;
    if (total > 0) col2im_kernel<<<blocks_for(total), kThreadsPerBlock, 0, st>>>(s, cols.ptr, bias, n0, images, out);
  }
  CONVLOC_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void dense_backward(const DeconvShape& s, const T* grad_out, const T* input, const T* weight, T* grad_input,
                    T* grad_weight, cudaStream_t st) {
  const int64_t cig = s.c_in_g(), rows = s.c_out_g() * s.kh * s.kw, hw = s.h * s.w;
  if (grad_weight && s.n == 0) CONVLOC_CUDA_CHECK(cudaMemsetAsync(grad_weight, 0, s.c_in * rows * sizeof(T), st));
  if ((!grad_input && !grad_weight) || s.n == 0) return;
  const int64_t chunk = images_per_pass(s, sizeof(T));
  StreamScratch<T> cols(chunk * s.groups * rows * hw, st);
  for (int64_t n0 = 0; n0 < s.n; n0 += chunk) {
    const int64_t images = std::min(chunk, s.n - n0), count = images * s.groups * rows * hw;
    if (count > 0) im2col_kernel<<<blocks_for(count), kThreadsPerBlock, 0, st>>>(s, grad_out, n0, images, cols.ptr);
    for (int64_t g = 0; g < s.groups; ++g) {
      const T* cg = cols.ptr + g * rows * hw;
      if (grad_input) {  // per image: [cig, hw] = weight_g [cig, rows] · cols [rows, hw]
        const GemmShape shape{cig, hw, rows, rows, 1, 0, hw, 1, s.groups * rows * hw, hw, s.c_in * hw, false};
        gemm_cuda(shape, images, weight + g * cig * rows, cg, grad_input + (n0 * s.c_in + g * cig) * hw, st);
      }
      if (grad_weight)  // [cig, rows] (+)= input_g [cig, hw] · colsᵀ [hw, rows], image after image
        for (int64_t i = 0; i < images; ++i) {
          const GemmShape shape{cig, rows, hw, hw, 1, 0, 1, hw, 0, rows, 0, n0 + i > 0};
          gemm_cuda(shape, 1, input + ((n0 + i) * s.c_in + g * cig) * hw, cg + i * s.groups * rows * hw,
                    grad_weight + g * cig * rows, st);
        }
    }
  }
  CONVLOC_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

template <typename T>
void deconv2d_forward_cuda(const DeconvShape& s, const T* input, const T* weight, const T* bias, T* out, void* stream) {
  const int64_t total = s.n * s.c_out * s.oh * s.ow;
  if (total == 0) return;
  auto st = (cudaStream_t)stream;
  if (!s.depthwise()) return dense_forward(s, input, weight, bias, out, st);
  forward_kernel<<<blocks_for(total), kThreadsPerBlock, 0, st>>>(s, input, weight, bias, out);
  CONVLOC_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void deconv2d_backward_cuda(const DeconvShape& s, const T* grad_out, const T* input, const T* weight, T* grad_input,
                            T* grad_weight, T* grad_bias, void* stream) {
  auto st = (cudaStream_t)stream;
  const int64_t in_total = s.n * s.c_in * s.h * s.w;
  const bool dense = !s.depthwise();
  if (dense) {
    dense_backward(s, grad_out, input, weight, grad_input, grad_weight, st);
  } else if (grad_input && in_total > 0) {
    grad_input_kernel<<<blocks_for(in_total), kThreadsPerBlock, 0, st>>>(s, grad_out, weight, grad_input);
    CONVLOC_CUDA_CHECK(cudaGetLastError());
  }
  const int64_t w_total = s.c_in * s.c_out_g() * s.kh * s.kw;
  if (!dense && grad_weight && w_total > 0) {
    grad_weight_kernel<<<static_cast<unsigned>(w_total), kReduceThreads, 0, st>>>(s, input, grad_out, grad_weight);
    CONVLOC_CUDA_CHECK(cudaGetLastError());
  }
  if (grad_bias && s.c_out > 0) {
    grad_bias_kernel<<<static_cast<unsigned>(s.c_out), kReduceThreads, 0, st>>>(s, grad_out, grad_bias);
    CONVLOC_CUDA_CHECK(cudaGetLastError());
  }
}

#define CONVLOC_INSTANTIATE(T)                                                                         \
  template void deconv2d_forward_cuda<T>(const DeconvShape&, const T*, const T*, const T*, T*, void*); \
  template void deconv2d_backward_cuda<T>(const DeconvShape&, const T*, const T*, const T*, T*, T*, T*, void*);
CONVLOC_INSTANTIATE(float)
CONVLOC_INSTANTIATE(double)
#undef CONVLOC_INSTANTIATE

}  // namespace convloc
