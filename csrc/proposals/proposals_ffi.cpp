// XLA FFI targets of the region proposals (CPU; csrc/core/ffi.h): Felzenszwalb's labels and their count, and
// selective search's ranked boxes in a fixed-size array and their count. Selective search's strategies come as one
// attribute per field, its random numbers as an attribute (float64 whatever JAX's precision mode).
#include "core/ffi.h"
#include "proposals/proposals_ops.h"

namespace convloc {
namespace {

using namespace ffi;  // arg, ret, Place, Ret, Span, xf

xf::Error felzenszwalb_impl(Place p, xf::AnyBuffer image, double scale, double sigma, int64_t min_size, Ret labels,
                            Ret count) {
  return ffi::guarded([&] {
    ffi::for_each_item(
        p, {ret(labels, 2, "labels"), ret(count, 0, "count"), arg(image, 3, "image")},
        [&](const auto& v) { ffi::write_int64(v[1], ops::felzenszwalb(v[2], v[0], scale, sigma, min_size), p); });
  });
}

xf::Error selective_search_impl(Place p, xf::AnyBuffer image, Span<int64_t> spaces, Span<double> ks,
                                Span<int64_t> min_sizes, Span<int64_t> similarities, double sigma, Span<double> randoms,
                                Ret boxes, Ret count) {
  return ffi::guarded([&] {
    const size_t n = spaces.size();
    if (ks.size() != n || min_sizes.size() != n || similarities.size() != 4 * n)
      fail_value("strategies: expected one space, k, min_size and 4 similarities per strategy");
    std::vector<SelectiveSearchStrategy> strategies;
    for (size_t i = 0; i < n; ++i) {
      const int64_t* sim = similarities.begin() + 4 * i;
      strategies.push_back({static_cast<ColourSpace>(spaces[i]), ks[i], min_sizes[i], sim[0] != 0, sim[1] != 0,
                            sim[2] != 0, sim[3] != 0});
    }
    TensorView random_view;
    random_view.data = const_cast<double*>(randoms.begin());
    random_view.dtype = DType::Float64;
    random_view.shape = {static_cast<int64_t>(randoms.size())};
    random_view.strides = {1};
    random_view.name = "randoms";
    ffi::for_each_item(p, {ret(boxes, 2, "boxes"), ret(count, 0, "count"), arg(image, 3, "image")}, [&](const auto& v) {
      ffi::write_int64(v[1], ops::selective_search_ranked(v[2], strategies, sigma, random_view, v[0]), p);
    });
  });
}

}  // namespace

CONVLOC_FFI_CPU_HANDLER(felzenszwalb, felzenszwalb_impl,
                        .Arg<xf::AnyBuffer>()
                            .Attr<double>("scale")
                            .Attr<double>("sigma")
                            .Attr<int64_t>("min_size")
                            .Ret<xf::AnyBuffer>()
                            .Ret<xf::AnyBuffer>());
CONVLOC_FFI_CPU_HANDLER(selective_search, selective_search_impl,
                        .Arg<xf::AnyBuffer>()
                            .Attr<Span<int64_t>>("spaces")
                            .Attr<Span<double>>("ks")
                            .Attr<Span<int64_t>>("min_sizes")
                            .Attr<Span<int64_t>>("similarities")
                            .Attr<double>("sigma")
                            .Attr<Span<double>>("randoms")
                            .Ret<xf::AnyBuffer>()
                            .Ret<xf::AnyBuffer>());

std::vector<ffi::Target> proposals_ffi_targets() {
  return {CONVLOC_FFI_CPU_TARGET(felzenszwalb), CONVLOC_FFI_CPU_TARGET(selective_search)};
}

}  // namespace convloc
