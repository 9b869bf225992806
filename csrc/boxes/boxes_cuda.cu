// CUDA box ops: area, IoU, validation, and bitmask NMS (a tiled overlap mask, then the greedy pass on the
// device), sharing the IoU math with the CPU (boxes.h).
#include <thrust/execution_policy.h>
#include <thrust/sequence.h>
#include <thrust/sort.h>

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

// sorted [n, 4] (and sorted_classes [n], nullable): the boxes (classes) in score order.
template <typename T, typename C>
__global__ void gather_sorted_kernel(const T* boxes, const C* classes, const int64_t* order, int64_t n, T* sorted,
                                     int64_t* sorted_classes) {
  CONVLOC_CUDA_LOOP(i, n) {
    for (int c = 0; c < 4; ++c) sorted[4 * i + c] = boxes[4 * order[i] + c];
    if (classes) sorted_classes[i] = classes[order[i]];
  }
}

// Bit j of mask[i * words + w] is set when sorted box 64 w + j > i overlaps sorted box i above the threshold.
// Block (w, row block) of 64 threads: thread t owns row 64 row_block + t, against the block's 64 columns held
// in shared memory. Words left of a row's own are never read (the greedy pass starts at word i / 64).
template <typename T>
__global__ void nms_mask_kernel(const T* sorted, const int64_t* sorted_classes, int64_t n, int64_t words, T thr,
                                uint64_t* mask) {
  const int64_t col_block = blockIdx.x, row_block = blockIdx.y;
  if (col_block < row_block) return;
  __shared__ T cols[kMaskBits * 4];
  __shared__ int64_t col_class[kMaskBits];
  const int t = threadIdx.x;
  const int64_t j0 = col_block * kMaskBits, i = row_block * kMaskBits + t;
  const int cols_here = static_cast<int>(n - j0 < kMaskBits ? n - j0 : kMaskBits);
  if (t < cols_here) {
    for (int c = 0; c < 4; ++c) cols[4 * t + c] = sorted[4 * (j0 + t) + c];
    col_class[t] = sorted_classes ? sorted_classes[j0 + t] : 0;
  }
  __syncthreads();
  if (i >= n) return;
  const T* a = sorted + 4 * i;
  const T area_a = box_area(a[0], a[1], a[2], a[3]);
  const int64_t cls = sorted_classes ? sorted_classes[i] : 0;
  uint64_t bits = 0;
  for (int j = col_block == row_block ? t + 1 : 0; j < cols_here; ++j) {
    if (col_class[j] != cls) continue;
    const T* b = cols + 4 * j;
    if (box_iou_pair(a[0], a[1], a[2], a[3], area_a, b[0], b[1], b[2], b[3], box_area(b[0], b[1], b[2], b[3])) > thr)
      bits |= uint64_t(1) << j;
  }
  mask[i * words + col_block] = bits;
}

// The greedy pass in one block: box i (in score order) is kept unless a kept box before it removed it; a kept
// box ORs its mask row into `removed` (shared memory, or global when it does not fit). Word by word: every
// thread holds the current word in a register and takes the same decisions; the later words are ORed by their
// owner threads and read only after the barrier that starts their turn.
__global__ void nms_reduce_kernel(const uint64_t* mask, const int64_t* order, int64_t n, int64_t words,
                                  uint64_t* removed_global, int64_t* keep, int64_t* count) {
  extern __shared__ uint64_t removed_shared[];
  uint64_t* removed = removed_global ? removed_global : removed_shared;
  for (int64_t w = threadIdx.x; w < words; w += blockDim.x) removed[w] = 0;
  int64_t kept = 0;
  for (int64_t wb = 0; wb < words; ++wb) {
    __syncthreads();
    uint64_t current = removed[wb];
    const int64_t base = wb * kMaskBits;
    const int bits = static_cast<int>(n - base < kMaskBits ? n - base : kMaskBits);
    for (int j = 0; j < bits; ++j) {
      if (current >> j & 1) continue;
      if (threadIdx.x == 0) keep[kept] = order[base + j];
      ++kept;
      const uint64_t* row = mask + (base + j) * words;
      current |= row[wb];
      for (int64_t w = wb + 1 + threadIdx.x; w < words; w += blockDim.x) removed[w] |= row[w];
    }
  }
  if (threadIdx.x == 0) *count = kept;
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

template <typename T, typename C>
int64_t nms_cuda(const T* boxes, const T* scores, const C* classes, int64_t n, double iou_threshold, int64_t* keep,
                 void* stream) {
  if (n == 0) return 0;
  const int64_t words = (n + kMaskBits - 1) / kMaskBits;
  if (words > 65535) fail_value("boxes: at most ", 65535 * kMaskBits, " boxes on the GPU, got ", n);
  auto s = (cudaStream_t)stream;
  const int64_t removed_bytes = words * int64_t(sizeof(uint64_t));
  const bool removed_in_shared = removed_bytes <= 48 * 1024;
  void* scratch = nullptr;
  const int64_t bytes = n * int64_t(sizeof(int64_t)) * 3 + n * 4 * int64_t(sizeof(T)) + n * removed_bytes +
                        (removed_in_shared ? 0 : removed_bytes) + int64_t(sizeof(int64_t));
  CONVLOC_CUDA_CHECK(cudaMallocAsync(&scratch, bytes, s));
  auto* order = static_cast<int64_t*>(scratch);
  int64_t* sorted_classes = order + n;
  int64_t* count = sorted_classes + n;  // one, then padding to n
  T* sorted = reinterpret_cast<T*>(count + n);
  auto* mask = reinterpret_cast<uint64_t*>(sorted + 4 * n);
  uint64_t* removed = removed_in_shared ? nullptr : mask + n * words;
  thrust::sequence(thrust::cuda::par.on(s), order, order + n);
  thrust::stable_sort(thrust::cuda::par(StreamAllocator{s}).on(s), order, order + n, ScoreGreater<T>{scores});
  gather_sorted_kernel<<<blocks_for(n), kThreadsPerBlock, 0, s>>>(boxes, classes, order, n, sorted,
                                                                  classes ? sorted_classes : nullptr);
  nms_mask_kernel<<<dim3(unsigned(words), unsigned(words)), kMaskBits, 0, s>>>(
      sorted, classes ? sorted_classes : nullptr, n, words, threshold_below<T>(iou_threshold), mask);
  nms_reduce_kernel<<<1, 256, removed_in_shared ? removed_bytes : 0, s>>>(mask, order, n, words, removed, keep, count);
  const cudaError_t launched = cudaGetLastError();
  int64_t kept = 0;
  if (launched == cudaSuccess) cudaMemcpyAsync(&kept, count, sizeof(int64_t), cudaMemcpyDeviceToHost, s);
  cudaFreeAsync(scratch, s);
  CONVLOC_CUDA_CHECK(launched);
  CONVLOC_CUDA_CHECK(cudaStreamSynchronize(s));
  return kept;
}

#define CONVLOC_INSTANTIATE(T)                                                                        \
  template void box_area_cuda<T>(const T*, int64_t, T*, void*);                                       \
  template void box_iou_cuda<T>(const T*, int64_t, const T*, int64_t, T*, void*);                     \
  template bool boxes_valid_cuda<T>(const T*, int64_t, void*);                                        \
  template int64_t nms_cuda<T>(const T*, const T*, const int32_t*, int64_t, double, int64_t*, void*); \
  template int64_t nms_cuda<T>(const T*, const T*, const int64_t*, int64_t, double, int64_t*, void*);
CONVLOC_INSTANTIATE(float)
CONVLOC_INSTANTIATE(double)

}  // namespace convloc
