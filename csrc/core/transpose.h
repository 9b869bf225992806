// Cache-blocked transposes, for kernels that change an array's layout on the way in or out (NCHW and
// channels-last), and plain copies; a copy between element types converts (core/half.h).
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/common.h"
#include "core/half.h"
#include "core/parallel.h"

namespace convloc {

// dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols.
template <typename S, typename D>
CONVLOC_ALWAYS_INLINE void transpose(const S* __restrict src, int64_t src_stride, D* __restrict dst, int64_t dst_stride,
                                     int64_t rows, int64_t cols) {
  constexpr int64_t kTile = 32;
  for (int64_t i0 = 0; i0 < rows; i0 += kTile)
    for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
      const int64_t i1 = std::min(rows, i0 + kTile), j1 = std::min(cols, j0 + kTile);
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t i = i0; i < i1; ++i) dst[j * dst_stride + i] = src[i * src_stride + j];
    }
}

// dst [B, cols, rows] = src [B, rows, cols] transposed per item (NCHW [B, C, HW] to channels-last
// [B, HW, C] with rows = C, and back with rows = HW), in parallel.
template <typename S, typename D>
void transpose_batch(const S* src, D* dst, int64_t batch, int64_t rows, int64_t cols) {
  constexpr int64_t kCols = 64;  // per task
  const int64_t per_item = (cols + kCols - 1) / kCols;
  parallel_for(batch * per_item, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t b = t / per_item, j0 = (t % per_item) * kCols, nj = std::min(kCols, cols - j0);
      transpose(src + b * rows * cols + j0, cols, dst + (b * cols + j0) * rows, rows, rows, nj);
    }
  });
}

// dst[i] = src[i] for i < n, converting (core/half.h), in parallel.
template <typename S, typename D>
void copy_parallel(const S* src, D* dst, int64_t n) {
  parallel_for(n, int64_t(1) << 16, [&](int64_t lo, int64_t hi) { convert(src + lo, dst + lo, hi - lo); });
}

}  // namespace convloc
