#include <thrust/execution_policy.h>
#include <thrust/sequence.h>
#include <thrust/sort.h>

#include <vector>

#include "boxes/boxes.h"
#include "core/cuda.h"

namespace convloc {
namespace {

constexpr int kMaskBits = 64;

template <typename T>
__global__ void box_area_kernel(const T* boxes, int64_t n, T* out) {
  CONVLOC_CUDA_LOOP(i, n) {
    const T* b = boxes + 4 * i;
    out[i] = box_area(b[0], b[1], b[2], b[3]);
  }
}

template <typename T>
__global__ void box_iou_kernel(const T* a, int64_t n, const T* b, int64_t m, T* out) {
  CONVLOC_CUDA_LOOP(k, n * m) {
    const T* p = a + 4 * (k / m);
    const T* q = b + 4 * (k % m);
    out[k] = box_iou_pair(p[0], p[1], p[2], p[3], box_area(p[0], p[1], p[2], p[3]), q[0], q[1], q[2], q[3],
                          box_area(q[0], q[1], q[2], q[3]));
  }
}

template <typename T>
__global__ void boxes_valid_kernel(const T* boxes, int64_t n, int* invalid) {
  CONVLOC_CUDA_LOOP(i, n) {
    const T* b = boxes + 4 * i;
    const bool ok =
        isfinite(b[0]) && isfinite(b[1]) && isfinite(b[2]) && isfinite(b[3]) && b[2] >= b[0] && b[3] >= b[1];
    if (!ok) *invalid = 1;
  }
}

// Bit j of mask[i * words + w] is set when sorted box (64 w + j) > i overlaps sorted box i above the threshold.
template <typename T>
__global__ void nms_mask_kernel(const T* boxes, const int64_t* order, const int64_t* classes, int64_t n, int64_t words,
                                T thr, uint64_t* mask) {
  CONVLOC_CUDA_LOOP(k, n * words) {
    const int64_t i = k / words, w = k % words;
    const T* a = boxes + 4 * order[i];
    const T area_a = box_area(a[0], a[1], a[2], a[3]);
    uint64_t bits = 0;
    for (int j = 0; j < kMaskBits; ++j) {
      const int64_t jj = w * kMaskBits + j;
      if (jj <= i || jj >= n) continue;
      if (classes && classes[order[jj]] != classes[order[i]]) continue;
      const T* b = boxes + 4 * order[jj];
      if (box_iou_pair(a[0], a[1], a[2], a[3], area_a, b[0], b[1], b[2], b[3], box_area(b[0], b[1], b[2], b[3])) > thr)
        bits |= uint64_t(1) << j;
    }
    mask[k] = bits;
  }
}

template <typename T>
struct ScoreGreater {
  const T* scores;
  __device__ bool operator()(int64_t a, int64_t b) const { return scores[a] > scores[b]; }
};

}  // namespace

template <typename T>
void box_area_cuda(const T* boxes, int64_t n, T* out, void* stream) {
  if (n == 0) return;
  box_area_kernel<<<blocks_for(n), kThreadsPerBlock, 0, (cudaStream_t)stream>>>(boxes, n, out);
  CONVLOC_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void box_iou_cuda(const T* a, int64_t n, const T* b, int64_t m, T* out, void* stream) {
  if (n * m == 0) return;
  box_iou_kernel<<<blocks_for(n * m), kThreadsPerBlock, 0, (cudaStream_t)stream>>>(a, n, b, m, out);
  CONVLOC_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
bool boxes_valid_cuda(const T* boxes, int64_t n, void* stream) {
  if (n == 0) return true;
  auto s = (cudaStream_t)stream;
  return cuda_none_flagged(
      s, [&](int* flag) { boxes_valid_kernel<<<blocks_for(n), kThreadsPerBlock, 0, s>>>(boxes, n, flag); });
}

template <typename T>
int64_t nms_cuda(const T* boxes, const T* scores, const int64_t* classes, int64_t n, double iou_threshold,
                 int64_t* keep, void* stream) {
  if (n == 0) return 0;
  auto s = (cudaStream_t)stream;
  const int64_t words = (n + kMaskBits - 1) / kMaskBits;
  int64_t* order = nullptr;
  uint64_t* mask = nullptr;
  CONVLOC_CUDA_CHECK(cudaMallocAsync(&order, n * sizeof(int64_t), s));
  CONVLOC_CUDA_CHECK(cudaMallocAsync(&mask, n * words * sizeof(uint64_t), s));
  thrust::sequence(thrust::cuda::par.on(s), order, order + n);
  thrust::stable_sort(thrust::cuda::par.on(s), order, order + n, ScoreGreater<T>{scores});
  nms_mask_kernel<<<blocks_for(n * words), kThreadsPerBlock, 0, s>>>(boxes, order, classes, n, words,
                                                                     threshold_below<T>(iou_threshold), mask);
  CONVLOC_CUDA_CHECK(cudaGetLastError());
  std::vector<uint64_t> host_mask(n * words);
  std::vector<int64_t> host_order(n);
  CONVLOC_CUDA_CHECK(cudaMemcpyAsync(host_mask.data(), mask, n * words * sizeof(uint64_t), cudaMemcpyDeviceToHost, s));
  CONVLOC_CUDA_CHECK(cudaMemcpyAsync(host_order.data(), order, n * sizeof(int64_t), cudaMemcpyDeviceToHost, s));
  CONVLOC_CUDA_CHECK(cudaFreeAsync(order, s));
  CONVLOC_CUDA_CHECK(cudaFreeAsync(mask, s));
  CONVLOC_CUDA_CHECK(cudaStreamSynchronize(s));
  // The greedy pass is sequential and cheap: OR the rows of kept boxes together.
  std::vector<uint64_t> removed(words, 0);
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < n; ++i) {
    if (removed[i / kMaskBits] >> (i % kMaskBits) & 1) continue;
    kept.push_back(host_order[i]);
    const uint64_t* row = host_mask.data() + i * words;
    for (int64_t w = i / kMaskBits; w < words; ++w) removed[w] |= row[w];
  }
  CONVLOC_CUDA_CHECK(cudaMemcpyAsync(keep, kept.data(), kept.size() * sizeof(int64_t), cudaMemcpyHostToDevice, s));
  CONVLOC_CUDA_CHECK(cudaStreamSynchronize(s));
  return static_cast<int64_t>(kept.size());
}

#define CONVLOC_INSTANTIATE(T)                                                    \
  template void box_area_cuda<T>(const T*, int64_t, T*, void*);                   \
  template void box_iou_cuda<T>(const T*, int64_t, const T*, int64_t, T*, void*); \
  template bool boxes_valid_cuda<T>(const T*, int64_t, void*);                    \
  template int64_t nms_cuda<T>(const T*, const T*, const int64_t*, int64_t, double, int64_t*, void*);
CONVLOC_INSTANTIATE(float)
CONVLOC_INSTANTIATE(double)

}  // namespace convloc
