// CUDA RoI pool / align: one thread per output element in the forward passes, and one thread per
// input element (channels fastest) in the backward passes: a gather (roi_pool_grad_at / roi_align_grad_at in roi.h)
// that visits, for each RoI that can reach its cell, only the bins and samples near it, and adds their contributions in
// (roi, ph, pw, iy, ix, tap) order: no atomics, and the CPU kernels' sums in their order, so the gradients agree bit
// for bit. The pool backward first recomputes the forward's argmax.
#include "core/cuda.h"
#include "roi/roi.h"

namespace convloc {
namespace {

template <typename T>
__global__ void rois_valid_kernel(const T* rois, int64_t k, int64_t batch, int* invalid) {
  CONVLOC_CUDA_LOOP(i, k) {
    const T* r = rois + 5 * i;
    const bool ok = isfinite(r[0]) && isfinite(r[1]) && isfinite(r[2]) && isfinite(r[3]) && isfinite(r[4]) &&
                    r[0] >= 0 && r[0] < T(batch) && r[0] == floor_of(r[0]) && r[3] >= r[1] && r[4] >= r[2];
    if (!ok) *invalid = 1;
  }
}

template <typename T>
__global__ void roi_pool_forward_kernel(const T* input, int64_t c, int64_t h, int64_t w, const T* rois, int64_t n,
                                        T scale, int ph_n, int pw_n, T* out, int32_t* argmax) {
  CONVLOC_CUDA_LOOP(idx, n) {
    const int pw = int(idx % pw_n), ph = int((idx / pw_n) % ph_n);
    const int64_t ch = (idx / (int64_t(pw_n) * ph_n)) % c, k = idx / (int64_t(pw_n) * ph_n * c);
    const PoolRoi<T> r = pool_roi(rois + 5 * k, scale, ph_n, pw_n);
    int hs, he, ws, we;
    pool_bin(ph, r.bin_h, r.start_h, int(h), hs, he);
    pool_bin(pw, r.bin_w, r.start_w, int(w), ws, we);
    const bool empty = he <= hs || we <= ws;
    const T* plane = input + (r.batch * c + ch) * h * w;
    T best = empty ? T(0) : pool_initial_max<T>();
    int32_t at = -1;
    for (int y = hs; y < he; ++y)
      for (int x = ws; x < we; ++x) {
        const int32_t p = int32_t(y * w + x);
        if (plane[p] > best) best = plane[p], at = p;
      }
    if (out) out[idx] = best;
    if (argmax) argmax[idx] = at;
  }
}

template <typename T>
__global__ void pool_gather_kernel(const T* rois, int64_t k, T scale, int ph_n, int pw_n, PoolGather<T>* out) {
  CONVLOC_CUDA_LOOP(i, k) out[i] = pool_gather(rois + 5 * i, scale, ph_n, pw_n);
}

template <typename T>
__global__ void roi_pool_backward_kernel(GradView<T> grad, const int32_t* argmax, const PoolGather<T>* rois,
                                         int64_t k_n, int64_t b_n, int64_t c, int64_t h, int64_t w, int ph_n, int pw_n,
                                         T* grad_input) {
  CONVLOC_CUDA_LOOP(idx, b_n * c * h * w) {
    // Channels fastest: a warp's lanes share their cell, hence every branch of the RoI walk.
    const int64_t ch = idx % c, cell = idx / c;
    const int x = int(cell % w), y = int((cell / w) % h);
    const int64_t b = cell / (h * w);
    grad_input[((b * c + ch) * h + y) * w + x] =
        roi_pool_grad_at(grad, argmax, rois, k_n, b, ch, c, y, x, int(h), int(w), ph_n, pw_n);
  }
}

template <typename T>
__global__ void roi_align_forward_kernel(const T* input, int64_t c, int64_t h, int64_t w, const T* rois, int64_t n,
                                         T scale, int ph_n, int pw_n, int sampling_ratio, bool aligned, T* out) {
  CONVLOC_CUDA_LOOP(idx, n) {
    const int pw = int(idx % pw_n), ph = int((idx / pw_n) % ph_n);
    const int64_t ch = (idx / (int64_t(pw_n) * ph_n)) % c, k = idx / (int64_t(pw_n) * ph_n * c);
    const AlignRoi<T> r = align_roi(rois + 5 * k, scale, ph_n, pw_n, sampling_ratio, aligned);
    const T* plane = input + (r.batch * c + ch) * h * w;
    T acc = T(0);
    for (int iy = 0; iy < r.grid_h; ++iy) {
      const AlignAxis<T> ya = align_axis(align_sample(r.start_h, r.bin_h, ph, iy, r.grid_h), int(h));
      for (int ix = 0; ix < r.grid_w; ++ix) {
        const AlignAxis<T> xa = align_axis(align_sample(r.start_w, r.bin_w, pw, ix, r.grid_w), int(w));
        const AlignSample<T> s = align_sample_at(ya, xa, w);
        acc = add_rn(acc, align_interpolate(s, plane[s.p1], plane[s.p2], plane[s.p3], plane[s.p4]));
      }
    }
    out[idx] = acc / r.count;
  }
}

template <typename T>
__global__ void align_gather_kernel(const T* rois, int64_t k, T scale, int ph_n, int pw_n, int sampling_ratio,
                                    bool aligned, AlignGather<T>* out) {
  CONVLOC_CUDA_LOOP(i, k) out[i] = align_gather(rois + 5 * i, scale, ph_n, pw_n, sampling_ratio, aligned);
}

template <typename T>
__global__ void roi_align_backward_kernel(GradView<T> grad, const AlignGather<T>* rois, int64_t k_n, int64_t b_n,
                                          int64_t c, int64_t h, int64_t w, int ph_n, int pw_n, T* grad_input) {
  CONVLOC_CUDA_LOOP(idx, b_n * c * h * w) {
    // Channels fastest: a warp's lanes share their cell, hence every branch of the RoI walk.
    const int64_t ch = idx % c, cell = idx / c;
    const int x = int(cell % w), y = int((cell / w) % h);
    const int64_t b = cell / (h * w);
    grad_input[((b * c + ch) * h + y) * w + x] =
        roi_align_grad_at(grad, rois, k_n, b, ch, y, x, int(h), int(w), ph_n, pw_n);
  }
}

}  // namespace

template <typename T>
bool rois_valid_cuda(const T* rois, int64_t k, int64_t batch, void* stream) {
  if (k == 0) return true;
  auto s = (cudaStream_t)stream;
  return cuda_none_flagged(
      s, [&](int* flag) { rois_valid_kernel<<<blocks_for(k), kThreadsPerBlock, 0, s>>>(rois, k, batch, flag); });
}

template <typename T>
void roi_pool_forward_cuda(const T* input, int64_t b, int64_t c, int64_t h, int64_t w, const T* rois, int64_t k,
                           T scale, int pooled_h, int pooled_w, T* out, int32_t* argmax, void* stream) {
  (void)b;
  const int64_t n = k * c * pooled_h * pooled_w;
  if (n == 0) return;
  roi_pool_forward_kernel<<<blocks_for(n), kThreadsPerBlock, 0, (cudaStream_t)stream>>>(
      input, c, h, w, rois, n, scale, pooled_h, pooled_w, out, argmax);
  CONVLOC_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void roi_pool_backward_cuda(GradView<T> grad, const T* input, const T* rois, int64_t k, int64_t b, int64_t c, int64_t h,
                            int64_t w, T scale, int pooled_h, int pooled_w, T* grad_input, void* stream) {
  const int64_t n = b * c * h * w, bins = k * c * pooled_h * pooled_w;
  if (n == 0) return;
  auto s = (cudaStream_t)stream;
  StreamScratch<int32_t> argmax(bins, s);
  StreamScratch<PoolGather<T>> geometry(k, s);
  if (bins > 0) {
    roi_pool_forward_kernel<<<blocks_for(bins), kThreadsPerBlock, 0, s>>>(input, c, h, w, rois, bins, scale, pooled_h,
                                                                          pooled_w, (T*)nullptr, argmax.ptr);
    pool_gather_kernel<<<blocks_for(k), kThreadsPerBlock, 0, s>>>(rois, k, scale, pooled_h, pooled_w, geometry.ptr);
  }
  roi_pool_backward_kernel<<<blocks_for(n), kThreadsPerBlock, 0, s>>>(grad, argmax.ptr, geometry.ptr, bins > 0 ? k : 0,
                                                                      b, c, h, w, pooled_h, pooled_w, grad_input);
  CONVLOC_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void roi_align_forward_cuda(const T* input, int64_t b, int64_t c, int64_t h, int64_t w, const T* rois, int64_t k,
                            T scale, int pooled_h, int pooled_w, int sampling_ratio, bool aligned, T* out,
                            void* stream) {
  (void)b;
  const int64_t n = k * c * pooled_h * pooled_w;
  if (n == 0) return;
  roi_align_forward_kernel<<<blocks_for(n), kThreadsPerBlock, 0, (cudaStream_t)stream>>>(
      input, c, h, w, rois, n, scale, pooled_h, pooled_w, sampling_ratio, aligned, out);
  CONVLOC_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void roi_align_backward_cuda(GradView<T> grad, const T* rois, int64_t k, int64_t b, int64_t c, int64_t h, int64_t w,
                             T scale, int pooled_h, int pooled_w, int sampling_ratio, bool aligned, T* grad_input,
                             void* stream) {
  const int64_t n = b * c * h * w;
  if (n == 0) return;
  auto s = (cudaStream_t)stream;
  StreamScratch<AlignGather<T>> geometry(k, s);
  if (k > 0)
    align_gather_kernel<<<blocks_for(k), kThreadsPerBlock, 0, s>>>(rois, k, scale, pooled_h, pooled_w, sampling_ratio,
                                                                   aligned, geometry.ptr);
  roi_align_backward_kernel<<<blocks_for(n), kThreadsPerBlock, 0, s>>>(grad, geometry.ptr, k, b, c, h, w, pooled_h,
                                                                       pooled_w, grad_input);
  CONVLOC_CUDA_CHECK(cudaGetLastError());
}

#define CONVLOC_INSTANTIATE(T)                                                                                         \
  template bool rois_valid_cuda<T>(const T*, int64_t, int64_t, void*);                                                 \
  template void roi_pool_forward_cuda<T>(const T*, int64_t, int64_t, int64_t, int64_t, const T*, int64_t, T, int, int, \
                                         T*, int32_t*, void*);                                                         \
  template void roi_pool_backward_cuda<T>(GradView<T>, const T*, const T*, int64_t, int64_t, int64_t, int64_t,         \
                                          int64_t, T, int, int, T*, void*);                                            \
  template void roi_align_forward_cuda<T>(const T*, int64_t, int64_t, int64_t, int64_t, const T*, int64_t, T, int,     \
                                          int, int, bool, T*, void*);                                                  \
  template void roi_align_backward_cuda<T>(GradView<T>, const T*, int64_t, int64_t, int64_t, int64_t, int64_t, T, int, \
                                           int, int, bool, T*, void*);
CONVLOC_INSTANTIATE(float)
CONVLOC_INSTANTIATE(double)
#undef CONVLOC_INSTANTIATE

}  // namespace convloc
