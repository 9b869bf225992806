// XLA FFI target of the dense CRF (csrc/core/ffi.h). Its pairwise terms come as attributes: kinds[k] is 0 (lattice
// features: the next remaining argument), 1 (a grid Gaussian: the next ndim sigmas and steps) or 2 (a bilateral
// kernel over the image, the first remaining argument: the next ndim position scales, then one srgb per channel).
// The labels and the energy are optional trailing results, present as their attributes say.
#include <string>

#include "core/ffi.h"
#include "crf/crf_ops.h"

namespace convloc {
namespace {

using namespace ffi;  // arg, ret, Place, Ret, Span, xf

enum Kind : int64_t { kFeatures = 0, kGrid = 1, kBilateral = 2 };

// The next n values of a flat attribute, or ValueError naming it.
template <typename T>
std::vector<T> take(Span<T> values, size_t& next, size_t n, const char* name) {
  if (next + n > values.size()) fail_value(name, ": expected more values for the kernels described");
  std::vector<T> out(values.begin() + next, values.begin() + next + n);
  next += n;
  return out;
}

xf::Error dense_crf_impl(Place p, xf::AnyBuffer unary, xf::AnyBuffer compat, xf::RemainingArgs rest,
                         Span<int64_t> kinds, Span<double> grid_sigmas, Span<int64_t> grid_steps,
                         Span<double> bilateral_params, Span<int64_t> norms, int64_t iterations, bool exclude_self,
                         Span<int64_t> spatial, bool labels, bool energy, Ret q, xf::RemainingRets optional) {
  return ffi::guarded([&] {
    const size_t K = kinds.size(), ndim = spatial.size();
    bool bilateral = false;
    for (int64_t kind : kinds) bilateral = bilateral || kind == kBilateral;
    std::vector<ffi::Operand> operands{ret(q, 3, "q"), arg(unary, 3, "unary"), arg(compat, 3, "compat")};
    size_t next_arg = 0;
    const auto next_input = [&](const char* name) {
      if (next_arg >= rest.size()) fail_value(name, ": missing from the call's arguments");
      operands.push_back(arg(rest.get<xf::AnyBuffer>(next_arg++).value(), 3, name));
    };
    if (bilateral) next_input("image");
    const size_t image_channels = bilateral && !operands.back().dims.empty() ? operands.back().dims.back() : 0;
    std::vector<std::string> names(K);
    std::vector<ops::GridGaussian> grids(K);
    std::vector<ops::Bilateral> bilaterals(K);
    size_t next_sigma = 0, next_step = 0, next_param = 0;
    for (size_t k = 0; k < K; ++k) {
      names[k] = "kernels[" + std::to_string(k) + "].features";
      if (kinds[k] == kFeatures) {
        next_input(names[k].c_str());
      } else if (kinds[k] == kGrid) {
        grids[k].sigmas = take(grid_sigmas, next_sigma, ndim, "grid_sigmas");
        for (int64_t s : take(grid_steps, next_step, ndim, "grid_steps")) grids[k].steps.push_back(int(s));
      } else if (kinds[k] == kBilateral) {
        bilaterals[k].pos_scale = take(bilateral_params, next_param, ndim, "bilateral_params");
        bilaterals[k].srgb = take(bilateral_params, next_param, image_channels, "bilateral_params");
      } else {
        fail_value("kinds[", k, "]: expected 0 (features), 1 (grid) or 2 (bilateral), got ", kinds[k]);
      }
    }
    const size_t first_output = operands.size();
    if (labels) operands.push_back(ret(optional.get<xf::AnyBuffer>(0).value(), 2, "labels"));
    if (energy) operands.push_back(ret(optional.get<xf::AnyBuffer>(labels ? 1 : 0).value(), 2, "energy"));
    const std::vector<int> modes(norms.begin(), norms.end());
    const std::vector<int64_t> grid(spatial.begin(), spatial.end());
    ffi::for_each_item(p, operands, [&](const std::vector<TensorView>& v) {
      std::vector<ops::CrfKernelArg> kernels(K);
      size_t next_features = bilateral ? 4 : 3;
      for (size_t k = 0; k < K; ++k) {
        if (kinds[k] == kFeatures) kernels[k].features = &v[next_features++];
        if (kinds[k] == kGrid) kernels[k].grid = &grids[k];
        if (kinds[k] == kBilateral) kernels[k].bilateral = &bilaterals[k];
      }
      const TensorView* map = labels ? &v[first_output] : nullptr;
      const TensorView* kl = energy ? &v[first_output + (labels ? 1 : 0)] : nullptr;
      ops::dense_crf(v[1], kernels, v[2], modes, iterations, exclude_self, v[0], map, kl, nullptr, grid,
                     bilateral ? &v[3] : nullptr, p.stream);
    });
  });
}

}  // namespace

CONVLOC_FFI_HANDLER(dense_crf, dense_crf_impl,
                    .Arg<xf::AnyBuffer>()
                        .Arg<xf::AnyBuffer>()
                        .RemainingArgs()
                        .Attr<Span<int64_t>>("kinds")
                        .Attr<Span<double>>("grid_sigmas")
                        .Attr<Span<int64_t>>("grid_steps")
                        .Attr<Span<double>>("bilateral_params")
                        .Attr<Span<int64_t>>("norms")
                        .Attr<int64_t>("iterations")
                        .Attr<bool>("exclude_self")
                        .Attr<Span<int64_t>>("spatial")
                        .Attr<bool>("labels")
                        .Attr<bool>("energy")
                        .Ret<xf::AnyBuffer>()
                        .RemainingRets());

std::vector<ffi::Target> crf_ffi_targets() { return {CONVLOC_FFI_TARGET(dense_crf)}; }

}  // namespace convloc
