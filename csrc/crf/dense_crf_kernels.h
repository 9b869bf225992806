// The dense CRF's pairwise kernels on the CPU, for one image: each kernel's filter, of one of three
// kinds, and what the mean-field updates apply around it (the normalisation's scales, the label
// compatibility) or exchange with it (its input and output rows). Rows hold one pixel's labels,
// padded to lp (LP), the label count rounded up to a multiple of 8.
//
// Two update paths read them. The general one writes every kernel's input pre * Q as [N, LP] rows
// and reads its output back. The fused one (dense_crf_rows.h) slices and splats lattice and coarse
// grid kernels pixel by pixel, band by band of pixels; those kernels then filter only between the
// splat and the slice (add the bands' sums, blur).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <variant>
#include <vector>

#include "core/parallel.h"
#include "core/workspace.h"
#include "crf/dense_crf.h"
#include "crf/dense_crf_rows.h"
#include "crf/grid_gaussian.h"
#include "lattice/lattice.h"

namespace convloc {

// The fused update's bands of pixels (band b: pixels [n b / bands, n (b + 1) / bands)): each splats
// into its own partial sums, added in band order, so the sums do not depend on the thread count. The
// lattice's band_tables() number the vertices of the same bands.
constexpr int64_t kPixelBands = kLatticeSplatBands;

// norm = K·1 for a lattice without its splat lists (the fused update never builds them): one channel
// splatted by scattering, each half of the points into its own sums (in parallel; the halves are fixed,
// so the sums do not depend on the thread count), blurred, sliced.
template <typename T>
void lattice_norm(const PermutohedralLattice<T>& lattice, T* norm) {
  const int64_t n = lattice.num_points(), k1 = lattice.dim() + 1, V = lattice.num_vertices();
  WorkspaceVector<T> a(V + 1), b(V + 1), halves(2 * V);  // (one value per vertex: blur() of stride 1)
  a[V] = b[V] = T(0);
  std::fill(halves.begin(), halves.end(), T(0));
  const int32_t* off = lattice.slice_offsets().data();
  const T* w = lattice.slice_weights().data();
  parallel_for(2, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      T* sums = halves.data() + h * V;
      for (int64_t e = n * h / 2 * k1; e < n * (h + 1) / 2 * k1; ++e) sums[off[e]] += w[e];
    }
  });
  for (int64_t v = 0; v < V; ++v) a[v] = halves[v] + halves[V + v];
  const T* blurred = lattice.blur(a.data(), b.data(), 1);
  const T amp = lattice.amplitude();
  parallel_for(n, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T acc = 0;
      for (int64_t j = 0; j < k1; ++j) acc += w[i * k1 + j] * blurred[off[i * k1 + j]];
      norm[i] = amp * acc;
    }
  });
}

// A Gaussian over the kernel's features (bilateral kernels; spatial ones too wide for the grid
// filters), filtered on the permutohedral lattice.
template <typename T>
class LatticeFilter {
 public:
  LatticeFilter(const T* features, int64_t n, int dim) : lattice_(features, n, dim) {}

  void ones_response(T* norm) const { lattice_norm(lattice_, norm); }
  // Each point's weight on itself, as the filter applies it.
  void self_weights(T* weight, int64_t) const { lattice_.diagonal(weight); }
  // out = K in, both [N, lp].
  void filter(const T* in, T* out, int64_t lp) { lattice_.filter(in, out, lp); }
  int64_t memory_bytes() const {
    const int64_t values = band_sums_.size() + band_blurred_.size() + blur_a_.size() + blur_b_.size();
    return lattice_.memory_bytes() + values * int64_t(sizeof(T)) + int64_t(vertex_row_.size() * sizeof(int32_t));
  }

  // The fused update splats each band into compact sums, addressed by int32 element offsets.
  bool fits_fused(int64_t lp) const {
    return lattice_.band_sums_fit() && lattice_.band_tables().first.back() * lp <= std::numeric_limits<int32_t>::max();
  }
  void prepare_fused(int64_t lp, const std::vector<T>& compat_diagonal) {
    const auto& bands = lattice_.band_tables();
    vertex_row_.resize(bands.offsets.size());
    parallel_for(int64_t(vertex_row_.size()), 1 << 16, [&](int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) vertex_row_[e] = bands.offsets[e] * int32_t(lp);
    });
    scaled_compat_.resize(lp);
    for (int64_t l = 0; l < lp; ++l) scaled_compat_[l] = lattice_.amplitude() * compat_diagonal[l];
    const int64_t band_rows = bands.first.back() * lp, blur_rows = (lattice_.num_vertices() + 1) * lp;
    band_sums_.resize(band_rows), band_blurred_.resize(band_rows);
    blur_a_.resize(blur_rows), blur_b_.resize(blur_rows);
    std::fill(blur_a_.end() - lp, blur_a_.end(), T(0));  // the always-zero row
    std::fill(blur_b_.end() - lp, blur_b_.end(), T(0));
  }
  LatticeTerm fused_term(const T* pre, const T* post) const {
    return LatticeTerm{nullptr, vertex_row_.data(), lattice_.slice_weights().data(), lattice_.dim() + 1, post, pre,
                       nullptr};
  }
  // The bands' splat sums, added into the blur's input (on all threads).
  void add_band_sums(int64_t lp) { lattice_.add_band_sums(band_sums_.data(), lp, blur_a_.data()); }
  void blur(int64_t lp) { blurred_ = lattice_.blur(blur_a_.data(), blur_b_.data(), lp); }
  // Band b's splat sums, zeroed.
  T* clear_band_sums(int64_t band, int64_t lp) {
    const auto& first = lattice_.band_tables().first;
    T* sums = band_sums_.data() + first[band] * lp;
    std::fill(sums, sums + (first[band + 1] - first[band]) * lp, T(0));
    return sums;
  }
  // The blurred vertices band b reads, times the amplitude and the compat diagonal, copied together in
  // band-table order (the band's slices then read one compact array).
  const T* copy_band_blurred(int64_t band, int64_t lp) {
    const auto& bands = lattice_.band_tables();
    const int64_t first = bands.first[band], count = bands.first[band + 1] - first;
    for (int64_t j = 0; j < count; ++j) {
      const T* src = blurred_ + int64_t(bands.vertices[first + j]) * lp;
      T* dst = band_blurred_.data() + (first + j) * lp;
      for (int64_t l = 0; l < lp; ++l) dst[l] = scaled_compat_[l] * src[l];
    }
    return band_blurred_.data() + first * lp;
  }

 private:
  PermutohedralLattice<T> lattice_;
  // The fused update's: band-local vertex ids times lp (element offsets), the amplitude times the
  // compat diagonal, the bands' splat sums and blurred vertices ([band vertices, lp] each, in
  // band-table order), the blur's two buffers ([V + 1, lp] each) and the one holding its result.
  WorkspaceVector<int32_t> vertex_row_;
  std::vector<T> scaled_compat_;
  WorkspaceVector<T> band_sums_, band_blurred_, blur_a_, blur_b_;
  const T* blurred_ = nullptr;
};

// A 2-D Gaussian over the pixel grid, approximated on a coarser grid (CoarseGaussian).
template <typename T>
class CoarseGridFilter {
 public:
  CoarseGridFilter(const std::vector<int64_t>& spatial, const std::vector<double>& sigma, const std::vector<int>& step,
                   int64_t lp)
      : gaussian_(spatial, sigma, step, kPixelBands), scratch_(gaussian_.scratch_size(lp)) {}

  void ones_response(T* norm) const { gaussian_.ones_response(norm); }
  void self_weights(T* weight, int64_t n) const { std::fill(weight, weight + n, T(1)); }  // exp(0)
  void filter(const T* in, T* out, int64_t lp) { gaussian_.filter(in, out, lp, scratch_.data()); }
  int64_t memory_bytes() const { return int64_t(scratch_.size() * sizeof(T)); }

  const CoarseGaussian<T>& gaussian() const { return gaussian_; }
  CoarseGridTerm fused_term(const T* pre, const T* post) const {
    return CoarseGridTerm{gaussian_.cols().node.data(), gaussian_.cols().weight.data(), post, pre, nullptr, nullptr};
  }
  // The fused update's filtering: the bands' splat sums added, blurred, times the compat diagonal.
  void add_and_blur(int64_t lp, const T* compat_diagonal) {
    const auto buffers = gaussian_.buffers(scratch_.data(), lp);
    gaussian_.add_partials(buffers.partial, lp, buffers.coarse);
    gaussian_.blur(buffers.coarse, buffers.blurred, lp, compat_diagonal);
  }
  const T* blurred(int64_t lp) { return gaussian_.buffers(scratch_.data(), lp).blurred; }
  // Band b's splat sums, zeroed.
  T* clear_band_sums(int64_t band, int64_t lp) {
    T* sums = gaussian_.buffers(scratch_.data(), lp).partial + gaussian_.partial_offset(band, lp);
    std::fill(sums, sums + (gaussian_.partial_offset(band + 1, lp) - gaussian_.partial_offset(band, lp)), T(0));
    return sums;
  }

 private:
  CoarseGaussian<T> gaussian_;
  WorkspaceVector<T> scratch_;  // gaussian_.buffers(): the bands' splat sums, their total, it blurred
};

// A Gaussian over the pixel grid of any dimension, exact and separable (GridGaussian).
template <typename T>
class ExactGridFilter {
 public:
  ExactGridFilter(const std::vector<int64_t>& spatial, const std::vector<double>& sigma, int64_t lp)
      : gaussian_(spatial, sigma), scratch_(gaussian_.scratch_size(lp)) {}

  void ones_response(T* norm) const { gaussian_.ones_response(norm); }
  void self_weights(T* weight, int64_t n) const { std::fill(weight, weight + n, T(1)); }  // exp(0)
  void filter(const T* in, T* out, int64_t lp) { gaussian_.filter(in, out, lp, scratch_.data()); }
  int64_t memory_bytes() const { return int64_t(scratch_.size() * sizeof(T)); }

 private:
  GridGaussian<T> gaussian_;
  WorkspaceVector<T> scratch_;
};

template <typename T>
using KernelFilter = std::variant<LatticeFilter<T>, CoarseGridFilter<T>, ExactGridFilter<T>>;

// The normalisation's per-pixel scales from norm = K·1 (crf_norm_scales), the mode a compile-time
// constant in the loop so that it vectorises.
template <typename T>
void normalisation_scales(CrfNorm mode, const T* norm, int64_t n, T* pre, T* post) {
  const auto scales = [&](auto constant_mode) {
    parallel_for(n, 16384, [&](int64_t i0, int64_t i1) {
      const T* __restrict in = norm;
      T* __restrict pre_out = pre;
      T* __restrict post_out = post;
      for (int64_t i = i0; i < i1; ++i) crf_norm_scales(constant_mode(), in[i], &pre_out[i], &post_out[i]);
    });
  };
  switch (mode) {
    case CrfNorm::None:
      return scales(std::integral_constant<CrfNorm, CrfNorm::None>());
    case CrfNorm::Before:
      return scales(std::integral_constant<CrfNorm, CrfNorm::Before>());
    case CrfNorm::After:
      return scales(std::integral_constant<CrfNorm, CrfNorm::After>());
    default:
      return scales(std::integral_constant<CrfNorm, CrfNorm::Symmetric>());
  }
}

// compat [L, L] zero off the diagonal.
template <typename T>
bool is_diagonal(const T* compat, int64_t labels) {
  for (int64_t a = 0; a < labels; ++a)
    for (int64_t b = 0; b < labels; ++b)
      if (a != b && compat[a * labels + b] != T(0)) return false;
  return true;
}

// One pairwise kernel of one image.
template <typename T>
struct PairwiseKernel {
  KernelFilter<T> filter;
  WorkspaceVector<T> pre, post;    // [N] the normalisation's scales of the filter's input and output
  const T* compat;                 // [L, L]
  std::vector<T> compat_diagonal;  // [LP] (zero padded) where compat is diagonal, else empty
  std::vector<T> self_weight;      // [N] each pixel's weight on itself (exclude_self only)
  WorkspaceVector<T> in, out;      // [N, LP] pre * Q and K (pre * Q), where the update exchanges rows

  // The kernel `spec` of image `image` over n pixels (grid `spatial`), for rows of lp >= labels.
  PairwiseKernel(const CrfKernel<T>& spec, int64_t image, int64_t n, const std::vector<int64_t>& spatial,
                 int64_t labels, int64_t lp, bool exclude_self)
      : filter(make_filter(spec, image, n, spatial, lp)), compat(spec.compat) {
    WorkspaceVector<T> norm(n);  // (from the workspace cache: fresh pages cost a fault each)
    std::visit([&](const auto& f) { f.ones_response(norm.data()); }, filter);
    if (exclude_self) {
      self_weight.resize(n);
      std::visit([&](const auto& f) { f.self_weights(self_weight.data(), n); }, filter);
      for (int64_t i = 0; i < n; ++i) norm[i] = std::max(norm[i] - self_weight[i], T(0));
    }
    pre.resize(n), post.resize(n);
    normalisation_scales(spec.norm, norm.data(), n, pre.data(), post.data());
    if (is_diagonal(spec.compat, labels)) {
      compat_diagonal.assign(lp, T(0));
      for (int64_t l = 0; l < labels; ++l) compat_diagonal[l] = spec.compat[l * labels + l];
    }
  }

  bool fits_fused(int64_t lp) const {
    const auto* lattice = std::get_if<LatticeFilter<T>>(&filter);
    return !compat_diagonal.empty() && (!lattice || lattice->fits_fused(lp));
  }
  // Allocates what the general update exchanges: the [N, LP] rows.
  void prepare_general(int64_t n, int64_t lp) { in.resize(n * lp), out.resize(n * lp); }
  // Allocates what the fused update exchanges: the lattice's band buffers; rows for an exact grid
  // Gaussian; nothing for a coarse one (its filter's scratch holds the splat sums).
  void prepare_fused(int64_t n, int64_t lp) {
    if (auto* lattice = std::get_if<LatticeFilter<T>>(&filter))
      lattice->prepare_fused(lp, compat_diagonal);
    else if (std::holds_alternative<ExactGridFilter<T>>(filter))
      prepare_general(n, lp);
  }
  // The general update's filtering: out = K in.
  void filter_general(int64_t lp) {
    std::visit([&](auto& f) { f.filter(in.data(), out.data(), lp); }, filter);
  }
  // The fused update's filtering, after the lattices' add_band_sums().
  void filter_fused(int64_t lp) {
    if (auto* lattice = std::get_if<LatticeFilter<T>>(&filter))
      lattice->blur(lp);
    else if (auto* coarse = std::get_if<CoarseGridFilter<T>>(&filter))
      coarse->add_and_blur(lp, compat_diagonal.data());
    else
      filter_general(lp);
  }
  int64_t memory_bytes() const {
    return std::visit([](const auto& f) { return f.memory_bytes(); }, filter);
  }

 private:
  static KernelFilter<T> make_filter(const CrfKernel<T>& spec, int64_t image, int64_t n,
                                     const std::vector<int64_t>& spatial, int64_t lp) {
    if (spec.grid_sigma.empty())
      return KernelFilter<T>(std::in_place_type<LatticeFilter<T>>, spec.features + image * n * spec.dim, n, spec.dim);
    if (!spec.grid_step.empty())
      return KernelFilter<T>(std::in_place_type<CoarseGridFilter<T>>, spatial, spec.grid_sigma, spec.grid_step, lp);
    return KernelFilter<T>(std::in_place_type<ExactGridFilter<T>>, spatial, spec.grid_sigma, lp);
  }
};

}  // namespace convloc
