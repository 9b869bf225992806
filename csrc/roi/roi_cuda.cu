// CUDA RoI pool / align: one thread per output element in the forward passes, and one thread per
// input element in the backward passes (a gather: each thread walks the rois in order and sums
// the contributions to its own cell in (roi, ph, pw, iy, ix, tap) order — no atomics, and the
// same sums in the same order as the CPU kernels, so the gradients agree bit for bit). The
// empty-bin case needs no care in the pool backward: an empty bin has no cells, so no thread visits it.
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
    out[idx] = best;
    if (argmax) argmax[idx] = at;
  }
}

template <typename T>
__global__ void roi_pool_backward_kernel(GradView<T> grad, const T* input, const T* rois, int64_t k_n, int64_t b_n,
                                         int64_t c, int64_t h, int64_t w, T scale, int ph_n, int pw_n, T* grad_input) {
  CONVLOC_CUDA_LOOP(idx, b_n * c * h * w) {
    const int x = int(idx % w), y = int((idx / w) % h);
    const int64_t ch = (idx / (h * w)) % c, b = idx / (c * h * w);
    const int32_t p = int32_t(y * w + x);
    const T* plane = input + (b * c + ch) * h * w;
    T acc = T(0);
    for (int64_t k = 0; k < k_n; ++k) {
      if (static_cast<int64_t>(rois[5 * k]) != b) continue;
      // Only the bins that contain (y, x) can have it as their argmax; recompute theirs.
      const PoolRoi<T> r = pool_roi(rois + 5 * k, scale, ph_n, pw_n);
      for (int ph = 0; ph < ph_n; ++ph) {
        int hs, he;
        pool_bin(ph, r.bin_h, r.start_h, int(h), hs, he);
        if (y < hs || y >= he) continue;
        for (int pw = 0; pw < pw_n; ++pw) {
          int ws, we;
          pool_bin(pw, r.bin_w, r.start_w, int(w), ws, we);
          if (x < ws || x >= we) continue;
          T best = pool_initial_max<T>();
          int32_t at = -1;
          for (int yy = hs; yy < he; ++yy)
            for (int xx = ws; xx < we; ++xx)
              if (plane[yy * w + xx] > best) best = plane[yy * w + xx], at = int32_t(yy * w + xx);
          if (at == p) acc = add_rn(acc, grad(k, ch, ph, pw));
        }
      }
    }
    grad_input[idx] = acc;
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
__global__ void roi_align_backward_kernel(GradView<T> grad, const T* rois, int64_t k_n, int64_t b_n, int64_t c,
                                          int64_t h, int64_t w, T scale, int ph_n, int pw_n, int sampling_ratio,
                                          bool aligned, T* grad_input) {
  CONVLOC_CUDA_LOOP(idx, b_n * c * h * w) {
    const int x = int(idx % w), y = int((idx / w) % h);
    const int64_t ch = (idx / (h * w)) % c, b = idx / (c * h * w);
    T acc = T(0);
    for (int64_t k = 0; k < k_n; ++k) {
      if (static_cast<int64_t>(rois[5 * k]) != b) continue;
      const AlignRoi<T> r = align_roi(rois + 5 * k, scale, ph_n, pw_n, sampling_ratio, aligned);
      if (r.grid_h <= 0 || r.grid_w <= 0) continue;
      // Samples lie in [start, start + n bin] and touch at most floor(sample) + 1: skip far rois.
      const T end_h = add_rn(r.start_h, mul_rn(r.bin_h, T(ph_n))), end_w = add_rn(r.start_w, mul_rn(r.bin_w, T(pw_n)));
      if (T(y) + 2 < r.start_h || T(y) - 2 > end_h || T(x) + 2 < r.start_w || T(x) - 2 > end_w) continue;
      for (int ph = 0; ph < ph_n; ++ph)
        for (int pw = 0; pw < pw_n; ++pw)
          for (int iy = 0; iy < r.grid_h; ++iy) {
            const AlignAxis<T> ya = align_axis(align_sample(r.start_h, r.bin_h, ph, iy, r.grid_h), int(h));
            if (!ya.valid || (ya.lo != y && ya.hi != y)) continue;
            for (int ix = 0; ix < r.grid_w; ++ix) {
              const AlignAxis<T> xa = align_axis(align_sample(r.start_w, r.bin_w, pw, ix, r.grid_w), int(w));
              if (!xa.valid || (xa.lo != x && xa.hi != x)) continue;
              const AlignSample<T> s = align_sample_at(ya, xa, w);
              const T gv = grad(k, ch, ph, pw);
              if (ya.lo == y && xa.lo == x) acc = add_rn(acc, mul_rn(gv, s.w1) / r.count);
              if (ya.lo == y && xa.hi == x) acc = add_rn(acc, mul_rn(gv, s.w2) / r.count);
              if (ya.hi == y && xa.lo == x) acc = add_rn(acc, mul_rn(gv, s.w3) / r.count);
              if (ya.hi == y && xa.hi == x) acc = add_rn(acc, mul_rn(gv, s.w4) / r.count);
            }
          }
    }
    grad_input[idx] = acc;
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
  const int64_t n = b * c * h * w;
  if (n == 0) return;
  roi_pool_backward_kernel<<<blocks_for(n), kThreadsPerBlock, 0, (cudaStream_t)stream>>>(
      grad, input, rois, k, b, c, h, w, scale, pooled_h, pooled_w, grad_input);
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
  roi_align_backward_kernel<<<blocks_for(n), kThreadsPerBlock, 0, (cudaStream_t)stream>>>(
      grad, rois, k, b, c, h, w, scale, pooled_h, pooled_w, sampling_ratio, aligned, grad_input);
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
