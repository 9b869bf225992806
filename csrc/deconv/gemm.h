// The one matrix product behind the dense transposed convolution (CPU).
//
// C[m, n] (+)= sum_k A[m, k] B[k, n], with A and B given by general strides (so a
// transposed operand costs nothing) and C row-major. This is the whole BLAS surface
// convloc needs: a BLAS backend would replace gemm_cpu's body with one sgemm/dgemm call.
#pragma once

#include <cstdint>

namespace convloc {

// A[i, k] = a[i * a_row + k * a_col]; B[k, j] = b[k * b_row + j * b_col]; C[i, j] = c[i * ldc + j].
// accumulate = false overwrites C without reading it (C may hold garbage or NaN).
// Parallel over blocks of C with a static split: the result does not depend on the thread count.
template <typename T>
void gemm_cpu(int64_t m, int64_t n, int64_t k, const T* a, int64_t a_row, int64_t a_col, const T* b,
              int64_t b_row, int64_t b_col, bool accumulate, T* c, int64_t ldc);

}  // namespace convloc
