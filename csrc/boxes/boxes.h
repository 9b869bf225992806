// Boxes (x1, y1, x2, y2): area, pairwise IoU, non-maximum suppression.
// Same arithmetic as torchvision.ops (no +1 in widths; IoU = inter / union).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "core/common.h"

namespace convloc {

template <typename T>
CONVLOC_HD T box_area(T x1, T y1, T x2, T y2) {
  return (x2 - x1) * (y2 - y1);
}

// IoU of box a with box b, given both areas. 0/0 (two empty boxes) gives NaN, as in torchvision.
template <typename T>
CONVLOC_HD T box_iou_pair(T ax1, T ay1, T ax2, T ay2, T area_a, T bx1, T by1, T bx2, T by2, T area_b) {
  const T w = max_of(min_of(ax2, bx2) - max_of(ax1, bx1), T(0));
  const T h = max_of(min_of(ay2, by2) - max_of(ay1, by1), T(0));
  const T inter = w * h;
  return inter / (area_a + area_b - inter);
}

// The largest T not above t: for any T value x, (x > t) == (x > threshold_below(t)),
// so comparing in T reproduces a comparison against the double threshold.
template <typename T>
inline T threshold_below(double t) {
  if constexpr (std::is_same_v<T, float>) {
    const float f = static_cast<float>(t);
    return static_cast<double>(f) > t ? std::nextafter(f, -INFINITY) : f;
  } else {
    return t;
  }
}

// CPU kernels. boxes [N, 4]; out [N] / [N, M]; all contiguous. T: float or double, and for box_area,
// box_iou and boxes_valid also Half / BFloat16 (computed in float; nms gets float32 copies).
template <typename T>
void box_area_cpu(const T* boxes, int64_t n, T* out);
template <typename T>
void box_iou_cpu(const T* a, int64_t n, const T* b, int64_t m, T* out);
// True when every coordinate is finite and x2 >= x1, y2 >= y1.
template <typename T>
bool boxes_valid_cpu(const T* boxes, int64_t n);
// Writes the kept indices (descending score, ties by index) to keep[0..count) and returns count.
// classes (nullable): boxes of different classes never suppress each other.
template <typename T>
int64_t nms_cpu(const T* boxes, const T* scores, const int64_t* classes, int64_t n, double iou_threshold,
                int64_t* keep);

#ifdef CONVLOC_WITH_CUDA
template <typename T>
void box_area_cuda(const T* boxes, int64_t n, T* out, void* stream);
template <typename T>
void box_iou_cuda(const T* a, int64_t n, const T* b, int64_t m, T* out, void* stream);
template <typename T>
bool boxes_valid_cuda(const T* boxes, int64_t n, void* stream);
template <typename T>
int64_t nms_cuda(const T* boxes, const T* scores, const int64_t* classes, int64_t n, double iou_threshold,
                 int64_t* keep, void* stream);
#endif

}  // namespace convloc
