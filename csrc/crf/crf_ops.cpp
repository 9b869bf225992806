#include "crf/crf_ops.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/dispatch.h"
#include "core/workspace.h"
#include "crf/bilateral_features.h"
#include "crf/dense_crf.h"
#include "lattice/lattice.h"

namespace convloc::ops {
namespace {

// Gaussians up to this sigma (pixels) are filtered exactly and separably over the grid (no lattice to build;
// 2 x (2 ceil(3 sigma) + 1) multiply-adds per value); wider ones use the lattice.
constexpr double kGridMaxSigma = 6.0;
// 2-D Gaussians with sigma >= 2 kCoarseSigmaPerStep on both axes are filtered on a grid floor(sigma /
// kCoarseSigmaPerStep) times coarser (B-spline splat and slice around an exact blur): within 7.3 % of the kernel's
// peak at this ratio (1.3 % at 1.5), against 17 % for pydensecrf's lattice.
constexpr double kCoarseSigmaPerStep = 1.0;

// Per channel, the largest |value| of image [B, N, C] (float, CPU; uint8: 255, without a pass).
std::vector<double> largest_magnitudes(const TensorView& image) {
  const int64_t channels = image.size(2), n = image.numel() / std::max<int64_t>(channels, 1);
  std::vector<double> largest(channels, image.dtype == DType::UInt8 ? 255.0 : 0.0);
  const auto scan = [&](const auto* p) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < channels; ++c) largest[c] = std::max(largest[c], std::fabs(double(p[i * channels + c])));
  };
  if (image.dtype == DType::Float32)
    scan(image.ptr<float>());
  else if (image.dtype == DType::Float64)
    scan(image.ptr<double>());
  return largest;
}

void check_positive_finite(const std::vector<double>& values, const std::string& name) {
  for (double v : values)
    if (!(v > 0) || !std::isfinite(v)) fail_value(name, ": expected positive finite values, got ", v);
}

// A grid Gaussian needs the grid: one sigma and one step per axis of `spatial`, whose product is N.
void check_grid(const GridGaussian& g, const std::vector<int64_t>& spatial, int64_t grid_points, int64_t n,
                const std::string& name) {
  if (spatial.empty() || g.sigmas.size() != spatial.size() || g.steps.size() != spatial.size() || grid_points != n)
    fail_value(name, ": a grid kernel needs one sigma and one step per axis of `spatial`, whose product is N");
  check_positive_finite(g.sigmas, name + ".sigmas");
  bool coarse = false;
  for (size_t a = 0; a < spatial.size(); ++a) {
    if (g.sigmas[a] > kWidestGridSigma * double(spatial[a]))
      fail_value(name, ".sigmas: expected at most ", kWidestGridSigma, " times the grid's extent (", spatial[a],
                 ") along axis ", a, ", got ", g.sigmas[a]);
    if (g.steps[a] < 1) fail_value(name, ": expected steps >= 1, got ", g.steps[a]);
    // the blur on the coarse grid keeps the variance sigma^2 - step^2 / 2; sigma >= step bounds the error
    if (g.steps[a] > 1 && !(g.sigmas[a] >= g.steps[a]))
      fail_value(name, ": a coarse step needs sigma >= step, got sigma ", g.sigmas[a], " and step ", g.steps[a]);
    coarse = coarse || g.steps[a] > 1;
  }
  if (coarse && spatial.size() != 2) fail_value(name, ": coarse grid steps are for 2-D grids only");
}

// A bilateral kernel needs the image [B, N, C] (uint8 or the unary's dtype, on the CPU), a position
// scale per axis of `spatial` and an srgb per channel.
void check_bilateral(const Bilateral& k, const TensorView& unary, const TensorView* image,
                     const std::vector<int64_t>& spatial, int64_t grid_points, const std::string& name) {
  if (!image) fail_value("image: a bilateral kernel needs the image");
  check_shape(*image, {unary.size(0), unary.size(2), -1}, "[B, N, C]");
  if (image->is_cuda()) fail_type("image: expected a CPU array");
  if (image->dtype != DType::UInt8) check_same_dtype(unary, *image);
  check_finite(*image);
  if (spatial.empty() || k.pos_scale.size() != spatial.size() || grid_points != unary.size(2))
    fail_value(name, ": a bilateral kernel needs one position scale per axis of `spatial`, whose product is N");
  if (static_cast<int64_t>(k.srgb.size()) != image->size(2))
    fail_value(name, ": expected one srgb per image channel (", image->size(2), "), got ", k.srgb.size());
  check_positive_finite(k.pos_scale, name + ".pos_scale");
  check_positive_finite(k.srgb, name + ".srgb");
  const int64_t positions = static_cast<int64_t>(spatial.size()), channels = image->size(2);
  if (positions + channels > kLatticeMaxDim)
    fail_value("image: a bilateral kernel takes at most ", kLatticeMaxDim - positions, " channels (the lattice's ",
               kLatticeMaxDim, " dimensions less ", positions, " for the position), got ", channels);
  // The features' largest sum of |coordinates|, bounded by the last pixel's position and each channel's
  // largest value: beyond the lattice's reach the kernel's widths are too small for this image.
  double reach = 0;
  for (int64_t a = 0; a < positions; ++a) reach += double(spatial[positions - 1 - a] - 1) * k.pos_scale[a];
  const std::vector<double> largest = largest_magnitudes(*image);
  for (int64_t c = 0; c < channels; ++c) reach += largest[c] / k.srgb[c];
  if (!(reach < lattice_max_feature_sum(static_cast<int>(positions + channels))))
    fail_value(name, ": sxy or srgb too small for this image: its features span ", reach,
               " standard deviations (positions / sxy plus values / srgb), beyond the lattice's ",
               lattice_max_feature_sum(static_cast<int>(positions + channels)));
}

// unary [B, L, N]: at least 2 labels, at least one pixel. (Finite: dense_crf_cpu checks that as it
// transposes the unary, instead of a separate pass here.)
void check_unary(const TensorView& u) {
  check_ndim(u, 3, "[B, L, N]");
  check_float(u);
  if (u.size(1) < 2) fail_value(u.name, ": expected at least 2 labels, got ", u.size(1));
  if (u.size(2) < 1) fail_value(u.name, ": expected at least one pixel, got shape ", u.shape_str());
}

}  // namespace

GridGaussian grid_gaussian(std::vector<double> sigmas, const std::vector<int64_t>& spatial, bool exact) {
  if (sigmas.size() != spatial.size())
    fail_value("sigmas: expected one per axis of the grid (", spatial.size(), "), got ", sigmas.size());
  bool coarse = sigmas.size() == 2 && !exact, wide = false;
  std::vector<int> steps;
  for (size_t a = 0; a < sigmas.size(); ++a) {
    double& s = sigmas[a];
    if (!(s > 0) || !std::isfinite(s)) fail_value("sigmas: expected positive finite values, got ", s);
    if (spatial[a] < 1) fail_value("spatial: expected positive sizes, got ", spatial[a]);
    s = std::min(s, kWidestGridSigma * double(spatial[a]));
    steps.push_back(static_cast<int>(std::floor(s / kCoarseSigmaPerStep)));
    coarse = coarse && steps.back() >= 2;
    wide = wide || s > kGridMaxSigma;
  }
  if (coarse) return {sigmas, steps};
  if (exact || !wide) return {sigmas, std::vector<int>(sigmas.size(), 1)};
  return {sigmas, {}};
}

int64_t dense_crf(const TensorView& unary, const std::vector<CrfKernelArg>& args, const TensorView& compat,
                  const std::vector<int>& norms, int64_t iterations, bool exclude_self, const TensorView& q,
                  const TensorView* map, const TensorView* energy, const TensorView* init,
                  const std::vector<int64_t>& spatial, const TensorView* image, void* stream) {
  check_unary(unary);
  check_cpu_or_cuda(unary);
  const int64_t B = unary.size(0), L = unary.size(1), N = unary.size(2);
  const int64_t K = static_cast<int64_t>(args.size());
  if (K < 1) fail_value("kernels: expected at least one pairwise kernel");
  check_shape(compat, {K, L, L}, "[K, L, L]");
  check_same_dtype(unary, compat);
  check_same_device(unary, compat);
  check_finite(compat);
  if (static_cast<int64_t>(norms.size()) != K)
    fail_value("normalization: expected one mode per kernel (", K, "), got ", norms.size());
  if (iterations < 0) fail_value("iterations: expected a number >= 0, got ", iterations);
  check_shape(q, {B, L, N}, "[B, L, N]");
  check_same_dtype(unary, q);
  check_same_device(unary, q);
  if (map) {
    check_shape(*map, {B, N}, "[B, N]");
    check_dtype(*map, DType::Int64);
    check_same_device(unary, *map);
  }
  if (energy) {
    check_shape(*energy, {B, iterations + 1}, "[B, iterations + 1]");
    check_dtype(*energy, DType::Float64);
  }
  if (init) {
    check_shape(*init, {B, L, N}, "[B, L, N]");
    check_same_dtype(unary, *init);
    check_finite(*init);
  }
  int64_t grid_points = 1;
  for (int64_t v : spatial) {
    if (v < 1) fail_value("spatial: expected positive sizes");
    grid_points *= v;
  }
  for (int64_t k = 0; k < K; ++k) {
    if (norms[k] < 0 || norms[k] > 3)
      fail_value("normalization[", k, "]: expected 0 (none), 1 (before), 2 (after) or 3 (symmetric), got ", norms[k]);
    const CrfKernelArg& arg = args[k];
    const std::string name = "kernels[" + std::to_string(k) + "]";
    if (arg.grid || arg.bilateral) {
      if (unary.is_cuda())
        fail_type(name, ": grid and bilateral kernels run on the CPU; pass lattice features for CUDA");
      if (arg.grid)
        check_grid(*arg.grid, spatial, grid_points, N, name);
      else
        check_bilateral(*arg.bilateral, unary, image, spatial, grid_points, name);
      continue;
    }
    if (!arg.features) fail_value(name, ": expected lattice features, a grid Gaussian or a bilateral kernel");
    const TensorView& f = *arg.features;
    check_shape(f, {B, N, -1}, "[B, N, d]");
    if (f.size(2) < 1 || f.size(2) > kLatticeMaxDim)
      fail_value(f.name, ": expected 1 to ", kLatticeMaxDim, " features per point, got shape ", f.shape_str());
    check_same_dtype(unary, f);
    check_same_device(unary, f);
    check_finite(f);
  }
  if (unary.is_cuda() && (energy || init)) fail_type("energy, init: not available for CUDA arrays");
  int64_t bytes = 0;
  (void)stream;
  CONVLOC_DISPATCH_FLOAT(unary, [&] {
    using Features = std::vector<scalar_t, WorkspaceAllocator<scalar_t>>;
    std::vector<Features> bilateral_features(K);
    std::vector<CrfKernel<scalar_t>> kernels(K);
    for (int64_t k = 0; k < K; ++k) {
      const CrfKernelArg& arg = args[k];
      if (arg.grid) {
        kernels[k].grid_sigma = arg.grid->sigmas;
        const bool coarse = std::any_of(arg.grid->steps.begin(), arg.grid->steps.end(), [](int s) { return s > 1; });
        if (coarse) kernels[k].grid_step = arg.grid->steps;
      } else if (arg.bilateral) {
        const int64_t C = image->size(2), d = static_cast<int64_t>(spatial.size()) + C;
        Features& f = bilateral_features[k];
        f.resize(B * N * d);
        if (image->dtype == DType::UInt8)
          bilateral_features_cpu(image->ptr<uint8_t>(), B, N, C, spatial, arg.bilateral->pos_scale, arg.bilateral->srgb,
                                 f.data());
        else
          bilateral_features_cpu(image->ptr<scalar_t>(), B, N, C, spatial, arg.bilateral->pos_scale,
                                 arg.bilateral->srgb, f.data());
        kernels[k].features = f.data();
        kernels[k].dim = static_cast<int>(d);
      } else {
        kernels[k].features = arg.features->ptr<scalar_t>();
        kernels[k].dim = static_cast<int>(arg.features->size(2));
      }
      kernels[k].compat = compat.ptr<scalar_t>() + k * L * L;
      kernels[k].norm = static_cast<CrfNorm>(norms[k]);
    }
    int64_t* map_ptr = map ? map->ptr<int64_t>() : nullptr;
    CONVLOC_ON_DEVICE(unary,
                      dense_crf_cpu(unary.ptr<scalar_t>(), B, L, N, spatial, kernels, iterations, exclude_self,
                                    init ? init->ptr<scalar_t>() : nullptr, q.ptr<scalar_t>(), map_ptr,
                                    energy ? energy->ptr<double>() : nullptr, &bytes),
                      dense_crf_cuda(unary.ptr<scalar_t>(), B, L, N, kernels, compat.ptr<scalar_t>(), iterations,
                                     exclude_self, q.ptr<scalar_t>(), map_ptr, stream));
  });
  return bytes;
}

}  // namespace convloc::ops
