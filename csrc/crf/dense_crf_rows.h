// The dense CRF's loops over rows of labels (CPU). Inside the update each pixel's distribution is one
// row of LP values, LP the label count rounded up to a multiple of 8, so every step moves whole
// vectors. Here: the moves between the public [L, N] layout and the rows, the general update's row
// loops, and the fused update's pixel loop.
#pragma once

#include <algorithm>
#include <cstdint>

namespace convloc {

// rows[i - i0, :] = sign * src[:, i] for pixels [i0, i1) of src [L, n], padding lanes `pad`; returns
// whether every value read is finite (the check rides on the one pass that reads the unary).
bool gather_rows(const float* src, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, float sign, float pad,
                 float* rows);
bool gather_rows(const double* src, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, double sign, double pad,
                 double* rows);
// dst[:, i] = rows[i - i0, :L] for pixels [i0, i1) of dst [L, n].
void scatter_rows(const float* rows, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, float* dst);
void scatter_rows(const double* rows, int64_t n, int64_t L, int64_t LP, int64_t i0, int64_t i1, double* dst);

// Softmax of `count` rows of L labels in place (padding lanes set to 0).
void softmax_rows(float* z, int64_t count, int64_t L, int64_t LP);
void softmax_rows(double* z, int64_t count, int64_t L, int64_t LP);
// out[r, :] = scale[r] * z[r, :] for `count` whole rows.
template <typename T>
void scale_rows(const T* __restrict z, const T* __restrict scale, int64_t count, int64_t LP, T* __restrict out) {
  for (int64_t r = 0; r < count; ++r) {
    const T s = scale[r];
    for (int64_t l = 0; l < LP; ++l) out[r * LP + l] = s * z[r * LP + l];
  }
}
// labels[r] = the first label holding the largest of row r's L values, for `count` rows.
template <typename T>
void argmax_rows(const T* z, int64_t count, int64_t L, int64_t LP, int64_t* labels) {
  for (int64_t r = 0; r < count; ++r) labels[r] = std::max_element(z + r * LP, z + r * LP + L) - (z + r * LP);
}

// The fused update, for float rows of at most kMaxFusedLabels, at most kMaxFusedKernels kernels, all of
// them with diagonal compatibilities, and no exclude_self (Potts: the common case). Per pixel: the
// logits -U - sum_k post_k c_k out_k, their softmax, and the next filterings' inputs pre_k Q, in one
// pass, without writing any [N, LP] array but Q where it is asked for. Each kernel is a term of one of
// three kinds.
constexpr int kMaxFusedKernels = 4;
constexpr int64_t kMaxFusedLabels = 32;

// An exact grid Gaussian, filtered outside the update: its input pre * Q is written here, its output read.
struct ExactGridTerm {
  const float* out;     // [N, LP] filter output
  const float* post;    // [N]
  const float* compat;  // [LP] compat diagonal (zero padding)
  const float* pre;     // [N]
  float* in;            // [N, LP] next filter input
};
// A lattice, sliced and splatted inside the update (the lattice's vertex rows stay in cache).
struct LatticeTerm {
  const float* blurred;   // the band's vertices after the blur, times amplitude · compat, [band vertices, LP]
  const int32_t* offset;  // [N, vertices] simplex vertices, numbered within each point's band, times LP
  const float* weight;    // [N, vertices] barycentric weights
  int vertices;           // of a simplex: the feature dimension + 1
  const float* post;      // [N]
  const float* pre;       // [N]
  float* splat_sums;      // [band vertices, LP] this band's splat sums of pre * Q
};
// A coarse grid Gaussian (CoarseGaussian), sliced and splatted inside the update one image row at a
// time: per pixel only the horizontal weights, over the row's slice through the blurred coarse rows
// and into the row's splat sums (both [coarse columns, LP], in cache).
struct CoarseGridTerm {
  const int32_t* node;  // [W] the first coarse column of each image column
  const float* weight;  // [W, 3]
  const float* post;    // [N]
  const float* pre;     // [N]
  const float* slice;   // the current image row's slice of the blurred grid (times the compat diagonal)
  float* splat_sums;    // the current image row's splat sums of pre * Q
};
struct FusedTerms {
  const ExactGridTerm* exact;
  int exact_count;
  const LatticeTerm* lattice;
  int lattice_count;
  const CoarseGridTerm* coarse;
  int coarse_count;
  int64_t row_start;  // the pixel index of column 0 of the current image row (coarse terms)
};

// Where an update's logits come from: -U alone (Q_0 = softmax(-U)), or -U minus the messages of the
// last filtering.
enum class Logits { Unary, WithMessages };

// What the fused update writes for pixels [i0, i1) (each optional).
struct FusedOutputs {
  bool filter_inputs = false;  // the next filtering's inputs pre_k Q
  float* q = nullptr;          // [i1 - i0, LP] Q
  int64_t* labels = nullptr;   // [i1 - i0] argmax Q (first on ties)
};

// The fused update of pixels [i0, i1), for neg_unary [N, LP] (-U, padding lanes -1e30).
using FusedPixelUpdate = void (*)(const float* neg_unary, int64_t i0, int64_t i1, const FusedTerms& terms,
                                  Logits logits, const FusedOutputs& out);
// The pixel loop for rows of lp labels (8, 16, 24 or 32) and these terms, the best the CPU runs.
FusedPixelUpdate fused_pixel_update_for(int64_t lp, const FusedTerms& terms);

}  // namespace convloc
