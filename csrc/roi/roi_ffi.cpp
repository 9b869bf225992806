// XLA FFI targets of RoI pool / RoI align, forward and backward (csrc/core/ffi.h).
#include "core/ffi.h"
#include "roi/roi_ops.h"

namespace convloc {
namespace {

using namespace ffi;  // arg, ret, Place, Ret, Span, xf

xf::Error roi_pool_impl(Place p, xf::AnyBuffer input, xf::AnyBuffer boxes, double spatial_scale, int64_t pooled_h,
                        int64_t pooled_w, Ret out) {
  return ffi::guarded([&] {
    ffi::for_each_item(p, {ret(out, 4, "out"), arg(input, 4, "input"), arg(boxes, 2, "boxes")}, [&](const auto& v) {
      ops::roi_pool_forward(v[1], v[2], spatial_scale, pooled_h, pooled_w, v[0], nullptr, p.stream);
    });
  });
}

xf::Error roi_pool_backward_impl(Place p, xf::AnyBuffer grad, xf::AnyBuffer boxes, xf::AnyBuffer input,
                                 double spatial_scale, int64_t pooled_h, int64_t pooled_w, Ret grad_input) {
  return ffi::guarded([&] {
    ffi::for_each_item(
        p, {ret(grad_input, 4, "grad_input"), arg(grad, 4, "grad"), arg(boxes, 2, "boxes"), arg(input, 4, "input")},
        [&](const auto& v) {
          ops::roi_pool_backward(v[1], v[2], v[3], spatial_scale, pooled_h, pooled_w, v[0], p.stream);
        });
  });
}

xf::Error roi_align_impl(Place p, xf::AnyBuffer input, xf::AnyBuffer boxes, double spatial_scale, int64_t pooled_h,
                         int64_t pooled_w, int64_t sampling_ratio, bool aligned, Ret out) {
  return ffi::guarded([&] {
    ffi::for_each_item(p, {ret(out, 4, "out"), arg(input, 4, "input"), arg(boxes, 2, "boxes")}, [&](const auto& v) {
      ops::roi_align_forward(v[1], v[2], spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned, v[0], p.stream);
    });
  });
}

xf::Error roi_align_backward_impl(Place p, xf::AnyBuffer grad, xf::AnyBuffer boxes, double spatial_scale,
                                  int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio, bool aligned,
                                  Ret grad_input) {
  return ffi::guarded([&] {
    ffi::for_each_item(p, {ret(grad_input, 4, "grad_input"), arg(grad, 4, "grad"), arg(boxes, 2, "boxes")},
                       [&](const auto& v) {
                         ops::roi_align_backward(v[1], v[2], spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned,
                                                 v[0], p.stream);
                       });
  });
}

}  // namespace

CONVLOC_FFI_HANDLER(roi_pool, roi_pool_impl,
                    .Arg<xf::AnyBuffer>()
                        .Arg<xf::AnyBuffer>()
                        .Attr<double>("spatial_scale")
                        .Attr<int64_t>("pooled_h")
                        .Attr<int64_t>("pooled_w")
                        .Ret<xf::AnyBuffer>());
CONVLOC_FFI_HANDLER(roi_pool_backward, roi_pool_backward_impl,
                    .Arg<xf::AnyBuffer>()
                        .Arg<xf::AnyBuffer>()
                        .Arg<xf::AnyBuffer>()
                        .Attr<double>("spatial_scale")
                        .Attr<int64_t>("pooled_h")
                        .Attr<int64_t>("pooled_w")
                        .Ret<xf::AnyBuffer>());
CONVLOC_FFI_HANDLER(roi_align, roi_align_impl,
                    .Arg<xf::AnyBuffer>()
                        .Arg<xf::AnyBuffer>()
                        .Attr<double>("spatial_scale")
                        .Attr<int64_t>("pooled_h")
                        .Attr<int64_t>("pooled_w")
                        .Attr<int64_t>("sampling_ratio")
                        .Attr<bool>("aligned")
                        .Ret<xf::AnyBuffer>());
CONVLOC_FFI_HANDLER(roi_align_backward, roi_align_backward_impl,
                    .Arg<xf::AnyBuffer>()
                        .Arg<xf::AnyBuffer>()
                        .Attr<double>("spatial_scale")
                        .Attr<int64_t>("pooled_h")
                        .Attr<int64_t>("pooled_w")
                        .Attr<int64_t>("sampling_ratio")
                        .Attr<bool>("aligned")
                        .Ret<xf::AnyBuffer>());

std::vector<ffi::Target> roi_ffi_targets() {
  return {CONVLOC_FFI_TARGET(roi_pool), CONVLOC_FFI_TARGET(roi_pool_backward), CONVLOC_FFI_TARGET(roi_align),
          CONVLOC_FFI_TARGET(roi_align_backward)};
}

}  // namespace convloc
