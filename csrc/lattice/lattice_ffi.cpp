// XLA FFI target of the one-shot lattice filter (build + filter; csrc/core/ffi.h). Features and values come as
// [B, N, d] and [B, N, C].
#include "core/ffi.h"
#include "lattice/lattice_ops.h"

namespace convloc {
namespace {

using namespace ffi;  // arg, ret, Place, Ret, Span, xf

xf::Error filter_impl(Place p, xf::AnyBuffer features, xf::AnyBuffer values, bool transpose, bool exclude_self,
                      Ret out) {
  return ffi::guarded([&] {
    ffi::for_each_item(
        p, {ret(out, 3, "out"), arg(features, 3, "features"), arg(values, 3, "values")},
        [&](const auto& v) { ops::permutohedral_filter(v[1], v[2], v[0], transpose, exclude_self, p.stream); });
  });
}

}  // namespace

CONVLOC_FFI_HANDLER(
    permutohedral_filter, filter_impl,
    .Arg<xf::AnyBuffer>().Arg<xf::AnyBuffer>().Attr<bool>("transpose").Attr<bool>("exclude_self").Ret<xf::AnyBuffer>());

std::vector<ffi::Target> lattice_ffi_targets() { return {CONVLOC_FFI_TARGET(permutohedral_filter)}; }

}  // namespace convloc
