// CUDA transposed convolution: gather kernels (each thread owns one output or one input-gradient
// value, so no atomics and deterministic results) and block reductions for grad_weight and
// grad_bias (one block per weight value / channel, a fixed-order tree in shared memory).
#include "core/cuda.h"
#include "deconv/deconv.h"

namespace convloc {
namespace {

constexpr int kReduceThreads = 256;

template <typename T>
__global__ void forward_kernel(DeconvShape s, const T* __restrict__ x, const T* __restrict__ w,
                               const T* __restrict__ bias, T* __restrict__ out) {
  const int64_t total = s.n * s.c_out * s.oh * s.ow;
  const int64_t cig = s.c_in_g(), cog = s.c_out_g();
  CONVLOC_CUDA_LOOP(i, total) {
    const int64_t ow = i % s.ow, oh = (i / s.ow) % s.oh, co = (i / (s.ow * s.oh)) % s.c_out;
    const int64_t n = i / (s.ow * s.oh * s.c_out), g = co / cog, co_g = co % cog;
    T sum = bias ? bias[co] : T(0);
    for (int64_t kh = 0; kh < s.kh; ++kh) {
      const int64_t ih = deconv_source(oh, kh, s.sh, s.ph, s.dh, s.h);
      if (ih < 0) continue;
      for (int64_t kw = 0; kw < s.kw; ++kw) {
        const int64_t iw = deconv_source(ow, kw, s.sw, s.pw, s.dw, s.w);
        if (iw < 0) continue;
        const T* xp = x + ((n * s.c_in + g * cig) * s.h + ih) * s.w + iw;
        const T* wp = w + ((g * cig * cog + co_g) * s.kh + kh) * s.kw + kw;
        for (int64_t c = 0; c < cig; ++c) sum += xp[c * s.h * s.w] * wp[c * cog * s.kh * s.kw];
      }
    }
    out[i] = sum;
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

}  // namespace

template <typename T>
void deconv2d_forward_cuda(const DeconvShape& s, const T* input, const T* weight, const T* bias, T* out,
                           void* stream) {
  const int64_t total = s.n * s.c_out * s.oh * s.ow;
  if (total == 0) return;
  forward_kernel<<<blocks_for(total), kThreadsPerBlock, 0, (cudaStream_t)stream>>>(s, input, weight, bias, out);
  CONVLOC_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void deconv2d_backward_cuda(const DeconvShape& s, const T* grad_out, const T* input, const T* weight,
                            T* grad_input, T* grad_weight, T* grad_bias, void* stream) {
  auto st = (cudaStream_t)stream;
  const int64_t in_total = s.n * s.c_in * s.h * s.w;
  if (grad_input && in_total > 0) {
    grad_input_kernel<<<blocks_for(in_total), kThreadsPerBlock, 0, st>>>(s, grad_out, weight, grad_input);
    CONVLOC_CUDA_CHECK(cudaGetLastError());
  }
  const int64_t w_total = s.c_in * s.c_out_g() * s.kh * s.kw;
  if (grad_weight && w_total > 0) {
    grad_weight_kernel<<<static_cast<unsigned>(w_total), kReduceThreads, 0, st>>>(s, input, grad_out, grad_weight);
    CONVLOC_CUDA_CHECK(cudaGetLastError());
  }
  if (grad_bias && s.c_out > 0) {
    grad_bias_kernel<<<static_cast<unsigned>(s.c_out), kReduceThreads, 0, st>>>(s, grad_out, grad_bias);
    CONVLOC_CUDA_CHECK(cudaGetLastError());
  }
}

#define CONVLOC_INSTANTIATE(T)                                                                            \
  template void deconv2d_forward_cuda<T>(const DeconvShape&, const T*, const T*, const T*, T*, void*);  \
  template void deconv2d_backward_cuda<T>(const DeconvShape&, const T*, const T*, const T*, T*, T*, T*, \
                                          void*);
CONVLOC_INSTANTIATE(float)
CONVLOC_INSTANTIATE(double)
#undef CONVLOC_INSTANTIATE

}  // namespace convloc
