// Probabilities in, labels out: the two passes around a dense CRF that users of pydensecrf and
// SimpleCRF make with NumPy (a clipped unary from probabilities; the argmax over the labels), each in
// one pass over the data.
#pragma once

#include <cstdint>

namespace convloc {

// out [L, N] (float32) = clip(scale * p + (1 - scale) / L, lo, hi) of the probabilities p of N pixels over
// L labels: probs [L, N], or [N, L] when labels_last. Returns the first pixel whose values are not a
// distribution (a NaN or negative value, or a sum off 1 by more than tolerance), or -1.
template <typename T>
int64_t clip_probabilities(const T* probs, bool labels_last, int64_t n, int64_t labels, double scale, double lo,
                           double hi, double tolerance, float* out);

// out [M] = the first index of the largest value along axis 0 of q [L, M] (NumPy's argmax: NaN wins).
template <typename T>
void argmax_axis0(const T* q, int64_t labels, int64_t m, int64_t* out);

}  // namespace convloc
