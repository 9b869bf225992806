// XLA FFI targets of the box ops (csrc/core/ffi.h): box_area, box_iou, nms and batched_nms, whose kept indices
// fill keep[:count] (the rest is left to the caller) and count.
#include "boxes/boxes_ops.h"
#include "core/ffi.h"

namespace convloc {
namespace {

using namespace ffi;  // arg, ret, Place, Ret, Span, xf

xf::Error box_area_impl(Place p, xf::AnyBuffer boxes, Ret out) {
  return ffi::guarded([&] {
    ffi::for_each_item(p, {ret(out, 1, "out"), arg(boxes, 2, "boxes")},
                       [&](const auto& v) { ops::box_area(v[1], v[0], p.stream); });
  });
}

xf::Error box_iou_impl(Place p, xf::AnyBuffer boxes1, xf::AnyBuffer boxes2, Ret out) {
  return ffi::guarded([&] {
    ffi::for_each_item(p, {ret(out, 2, "out"), arg(boxes1, 2, "boxes1"), arg(boxes2, 2, "boxes2")},
                       [&](const auto& v) { ops::box_iou(v[1], v[2], v[0], p.stream); });
  });
}

xf::Error nms_impl(Place p, xf::AnyBuffer boxes, xf::AnyBuffer scores, double iou_threshold, Ret keep, Ret count) {
  return ffi::guarded([&] {
    ffi::for_each_item(p,
                       {ret(keep, 1, "keep"), ret(count, 0, "count"), arg(boxes, 2, "boxes"), arg(scores, 1, "scores")},
                       [&](const auto& v) {
                         ffi::write_int64(v[1], ops::nms(v[2], v[3], nullptr, iou_threshold, v[0], p.stream), p);
                       });
  });
}

xf::Error batched_nms_impl(Place p, xf::AnyBuffer boxes, xf::AnyBuffer scores, xf::AnyBuffer idxs, double iou_threshold,
                           Ret keep, Ret count) {
  return ffi::guarded([&] {
    ffi::for_each_item(
        p,
        {ret(keep, 1, "keep"), ret(count, 0, "count"), arg(boxes, 2, "boxes"), arg(scores, 1, "scores"),
         arg(idxs, 1, "idxs")},
        [&](const auto& v) { ffi::write_int64(v[1], ops::nms(v[2], v[3], &v[4], iou_threshold, v[0], p.stream), p); });
  });
}

}  // namespace

CONVLOC_FFI_HANDLER(box_area, box_area_impl, .Arg<xf::AnyBuffer>().Ret<xf::AnyBuffer>());
CONVLOC_FFI_HANDLER(box_iou, box_iou_impl, .Arg<xf::AnyBuffer>().Arg<xf::AnyBuffer>().Ret<xf::AnyBuffer>());
CONVLOC_FFI_HANDLER(
    nms, nms_impl,
    .Arg<xf::AnyBuffer>().Arg<xf::AnyBuffer>().Attr<double>("iou_threshold").Ret<xf::AnyBuffer>().Ret<xf::AnyBuffer>());
CONVLOC_FFI_HANDLER(batched_nms, batched_nms_impl,
                    .Arg<xf::AnyBuffer>()
                        .Arg<xf::AnyBuffer>()
                        .Arg<xf::AnyBuffer>()
                        .Attr<double>("iou_threshold")
                        .Ret<xf::AnyBuffer>()
                        .Ret<xf::AnyBuffer>());

std::vector<ffi::Target> boxes_ffi_targets() {
  return {CONVLOC_FFI_TARGET(box_area), CONVLOC_FFI_TARGET(box_iou), CONVLOC_FFI_TARGET(nms),
          CONVLOC_FFI_TARGET(batched_nms)};
}

}  // namespace convloc
