#include "boxes/boxes_ops.h"

#include "boxes/boxes.h"
#include "core/dispatch.h"

namespace convloc::ops {
namespace {

// boxes: [N, 4] float (or a CPU half type), finite, x2 >= x1 and y2 >= y1.
void check_boxes(const TensorView& b, void* stream) {
  check_float_or_half(b);
  check_shape(b, {-1, 4}, "[N, 4]");
  const bool ok = CONVLOC_DISPATCH_FLOAT_OR_HALF(b, [&] {
    const auto* p = b.ptr<scalar_t>();
    return CONVLOC_ON_DEVICE_OR_HALF(b, boxes_valid_cpu(p, b.size(0)), boxes_valid_cuda, p, b.size(0), stream);
  });
  (void)stream;
  if (!ok) fail_value(b.name, ": expected finite boxes (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1");
}

}  // namespace

void box_area(const TensorView& boxes, const TensorView& out, void* stream) {
  check_boxes(boxes, stream);
  check_same_device(boxes, out);
  check_same_dtype(boxes, out);
  check_shape(out, {boxes.size(0)}, "[N]");
  CONVLOC_DISPATCH_FLOAT_OR_HALF(boxes, [&] {
    const auto* b = boxes.ptr<scalar_t>();
    auto* o = out.ptr<scalar_t>();
    CONVLOC_ON_DEVICE_OR_HALF(boxes, box_area_cpu(b, boxes.size(0), o), box_area_cuda, b, boxes.size(0), o, stream);
  });
}

void box_iou(const TensorView& a, const TensorView& b, const TensorView& out, void* stream) {
  check_boxes(a, stream);
  check_boxes(b, stream);
  check_same_device(a, b);
  check_same_dtype(a, b);
  check_same_device(a, out);
  check_same_dtype(a, out);
  check_shape(out, {a.size(0), b.size(0)}, "[N, M]");
  checked_numel({a.size(0), b.size(0)}, "box_iou");
  CONVLOC_DISPATCH_FLOAT_OR_HALF(a, [&] {
    const auto *pa = a.ptr<scalar_t>(), *pb = b.ptr<scalar_t>();
    auto* o = out.ptr<scalar_t>();
    const int64_t n = a.size(0), m = b.size(0);
    CONVLOC_ON_DEVICE_OR_HALF(a, box_iou_cpu(pa, n, pb, m, o), box_iou_cuda, pa, n, pb, m, o, stream);
  });
}

int64_t nms(const TensorView& boxes, const TensorView& scores, const TensorView* idxs, double iou_threshold,
            const TensorView& keep, void* stream) {
  check_boxes(boxes, stream);
  check_shape(scores, {-1}, "[N]");
  check_same_size(boxes, 0, scores, 0);
  check_same_device(boxes, scores);
  check_same_dtype(boxes, scores);
  check_finite(scores);
  if (idxs) {
    check_shape(*idxs, {-1}, "[N]");
    if (idxs->dtype != DType::Int32) check_dtype(*idxs, DType::Int64);
    check_same_size(boxes, 0, *idxs, 0);
    check_same_device(boxes, *idxs);
  }
  check_shape(keep, {boxes.size(0)}, "[N]");
  check_dtype(keep, DType::Int64);
  check_same_device(boxes, keep);
  if (!(iou_threshold >= 0.0 && iou_threshold <= 1.0))
    fail_value("iou_threshold: expected a number in [0, 1], got ", iou_threshold);
  const auto run = [&](const auto* classes) {
    return CONVLOC_DISPATCH_FLOAT(boxes, [&] {
      const auto *b = boxes.ptr<scalar_t>(), *s = scores.ptr<scalar_t>();
      const int64_t n = boxes.size(0);
      auto* k = keep.ptr<int64_t>();
      return CONVLOC_ON_DEVICE(boxes, nms_cpu(b, s, classes, n, iou_threshold, k),
                               nms_cuda(b, s, classes, n, iou_threshold, k, stream));
    });
  };
  if (idxs && idxs->dtype == DType::Int32) return run(idxs->ptr<int32_t>());
  return run(idxs ? idxs->ptr<int64_t>() : nullptr);
}

}  // namespace convloc::ops
