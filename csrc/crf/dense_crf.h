// Mean-field inference for CRFs with Potts-like label compatibilities:
//  - the fully connected CRF of Krähenbühl & Koltun (2011), Gaussian edge potentials filtered with
//    the permutohedral lattice (csrc/lattice), conventions of pydensecrf;
//  - the lecture's grid CRF (4/8-neighbour Potts, w1·exp(-beta·|x_i - x_j|²) + w2), the baseline.
//
// Layout inside the kernels: labels innermost ([N, LP], rows padded to a multiple of 8 lanes), so
// one pixel's distribution is one row of whole vectors. The public arrays are labels outermost
// ([B, L, N], like pydensecrf's Q); the kernels transpose once on the way in and once on the way out.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/common.h"

namespace convloc {

// pydensecrf's NormalizationType values.
enum class CrfNorm : int { None = 0, Before = 1, After = 2, Symmetric = 3 };

// The widest grid Gaussian, in extents of its axis: the callers filter wider ones as this wide (the
// kernel then varies by less than 5e-7 over the grid: a constant, as far as float32 tells), which
// bounds the work and the sizes derived from sigma.
constexpr double kWidestGridSigma = 1000;

// The most the pairwise terms may add to a pixel's energy (each sums at most N kernel values times
// its largest |compat|): beyond it float32 mean-field overflows to inf - inf and the marginals to NaN.
constexpr double kMaxPairwiseEnergy = 1e30;

// One pairwise term, for every image of the batch: a lattice over features, or (grid_sigma not
// empty) a Gaussian over the pixel grid with these standard deviations per axis: exact and separable,
// or (2-D, grid_step not all 1) approximated on a grid grid_step times coarser (CoarseGaussian).
template <typename T>
struct CrfKernel {
  const T* features = nullptr;  // [B, N, dim], already divided by the standard deviations
  int dim = 0;
  std::vector<double> grid_sigma;  // in grid steps, one per axis of `spatial`
  std::vector<int> grid_step;      // one per axis of `spatial`, or empty (exact)
  const T* compat = nullptr;       // [L, L], "apply" convention: message[l] = sum_l' compat[l, l'] (K̃Q)[l']
  CrfNorm norm = CrfNorm::Symmetric;
};

// Softmax of one row of logits, in place; returns the index of the largest logit (first on ties).
template <typename T>
CONVLOC_HD int64_t softmax_row(T* z, int64_t labels) {
  int64_t best = 0;
  T m = z[0];
  for (int64_t l = 1; l < labels; ++l)
    if (z[l] > m) m = z[l], best = l;
  T s = 0;
  for (int64_t l = 0; l < labels; ++l) {
    z[l] = std::exp(z[l] - m);
    s += z[l];
  }
  const T inv = T(1) / s;
  for (int64_t l = 0; l < labels; ++l) z[l] *= inv;
  return best;
}

// The per-pixel scales pydensecrf applies around the raw filtering, from norm = K·1.
// pre multiplies the filter's input, post its output (the non-transposed filter). None is the plain
// Gaussian sum (pydensecrf's raw lattice output instead carries its lattice's constant factor).
template <typename T>
CONVLOC_HD void crf_norm_scales(CrfNorm mode, T norm, T* pre, T* post) {
  switch (mode) {
    case CrfNorm::None:
      *pre = *post = 1;
      break;
    case CrfNorm::Before:
      *pre = T(1) / (norm + T(1e-20)), *post = 1;
      break;
    case CrfNorm::After:
      *pre = 1, *post = T(1) / (norm + T(1e-20));
      break;
    default:
      *pre = *post = T(1) / std::sqrt(norm + T(1e-20));
      break;
  }
}

// unary [B, L, N] (negative log-probabilities); q [B, L, N] the marginals after `iterations`
// updates; map_labels [B, N] (nullable) their argmax; energy [B, iterations + 1] (nullable): the
// KL divergence up to log Z, sum Q log Q + sum U Q + 1/2 sum Q·message(Q), of Q_0 .. Q_T.
// exclude_self drops j = i from the kernel sums (pydensecrf keeps it). init [B, L, N] (nullable):
// Q_0 instead of softmax(-U) (pydensecrf's stepInference from a given Q).
// lattice_bytes (nullable): receives the largest lattice memory of one image.
// spatial: the grid shape (product n), used by grid kernels.
template <typename T>
void dense_crf_cpu(const T* unary, int64_t batch, int64_t labels, int64_t n, const std::vector<int64_t>& spatial,
                   const std::vector<CrfKernel<T>>& kernels, int64_t iterations, bool exclude_self, const T* init, T* q,
                   int64_t* map_labels, double* energy, int64_t* lattice_bytes);

// Grid CRF: unary [B, L, H, W]; image [B, H, W, C]; q [B, L, H, W].
template <typename T>
void grid_crf_cpu(const T* unary, const T* image, int64_t batch, int64_t labels, int64_t h, int64_t w, int64_t channels,
                  int neighbors, double w1, double w2, double beta, int64_t iterations, T* q);

#ifdef CONVLOC_WITH_CUDA
// Grid CRF on the device (all arrays on the device, the caller's stream).
template <typename T>
void grid_crf_cuda(const T* unary, const T* image, int64_t batch, int64_t labels, int64_t h, int64_t w,
                   int64_t channels, int neighbors, double w1, double w2, double beta, int64_t iterations, T* q,
                   void* stream);
// Dense CRF on the device: lattice kernels only (features on the device), compat [K, L, L] on the
// device; no energy, no init, no exclude_self beyond the lattice's own. Rebuilds the lattices per
// filtering (the lattice's device API is one-shot).
template <typename T>
void dense_crf_cuda(const T* unary, int64_t batch, int64_t labels, int64_t n, const std::vector<CrfKernel<T>>& kernels,
                    const T* compat, int64_t iterations, bool exclude_self, T* q, int64_t* map_labels, void* stream);
#endif

}  // namespace convloc
