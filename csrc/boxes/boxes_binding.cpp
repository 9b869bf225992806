#include <cmath>

#include "boxes/boxes.h"
#include "core/dispatch.h"
#include "core/py_array.h"
#include "core/py_gil.h"

namespace convloc {
namespace {

using py::arg;

void* as_stream(uintptr_t s) { return reinterpret_cast<void*>(s); }

// boxes: [N, 4] float, finite, x2 >= x1 and y2 >= y1.
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

void py_box_area(py::handle boxes_obj, py::handle out_obj, uintptr_t stream_id) {
  Array boxes = as_array(boxes_obj, "boxes"), out = as_output(out_obj, "out");
  void* stream = as_stream(stream_id);
  check_boxes(*boxes, stream);
  check_same_device(*boxes, *out);
  check_same_dtype(*boxes, *out);
  check_shape(*out, {boxes->size(0)}, "[N]");
  ReleaseGil nogil;
  CONVLOC_DISPATCH_FLOAT_OR_HALF(*boxes, [&] {
    const auto* b = boxes->ptr<scalar_t>();
    auto* o = out->ptr<scalar_t>();
    CONVLOC_ON_DEVICE_OR_HALF(*boxes, box_area_cpu(b, boxes->size(0), o), box_area_cuda, b, boxes->size(0), o, stream);
  });
}

void py_box_iou(py::handle a_obj, py::handle b_obj, py::handle out_obj, uintptr_t stream_id) {
  Array a = as_array(a_obj, "boxes1"), b = as_array(b_obj, "boxes2"), out = as_output(out_obj, "out");
  void* stream = as_stream(stream_id);
  check_boxes(*a, stream);
  check_boxes(*b, stream);
  check_same_device(*a, *b);
  check_same_dtype(*a, *b);
  check_same_device(*a, *out);
  check_same_dtype(*a, *out);
  check_shape(*out, {a->size(0), b->size(0)}, "[N, M]");
  checked_numel({a->size(0), b->size(0)}, "box_iou");
  ReleaseGil nogil;
  CONVLOC_DISPATCH_FLOAT_OR_HALF(*a, [&] {
    const auto *pa = a->ptr<scalar_t>(), *pb = b->ptr<scalar_t>();
    auto* o = out->ptr<scalar_t>();
    const int64_t n = a->size(0), m = b->size(0);
    CONVLOC_ON_DEVICE_OR_HALF(*a, box_iou_cpu(pa, n, pb, m, o), box_iou_cuda, pa, n, pb, m, o, stream);
  });
}

int64_t py_nms(py::handle boxes_obj, py::handle scores_obj, py::handle classes_obj, double iou_threshold,
               py::handle keep_obj, uintptr_t stream_id) {
  Array boxes = as_array(boxes_obj, "boxes"), scores = as_array(scores_obj, "scores");
  Array classes = as_optional_array(classes_obj, "idxs"), keep = as_output(keep_obj, "keep");
  void* stream = as_stream(stream_id);
  check_boxes(*boxes, stream);
  check_shape(*scores, {-1}, "[N]");
  check_same_size(*boxes, 0, *scores, 0);
  check_same_device(*boxes, *scores);
  check_same_dtype(*boxes, *scores);
  check_finite(*scores);
  if (!classes_obj.is_none()) {
    check_shape(*classes, {-1}, "[N]");
    check_dtype(*classes, DType::Int64);
    check_same_size(*boxes, 0, *classes, 0);
    check_same_device(*boxes, *classes);
  }
  check_shape(*keep, {boxes->size(0)}, "[N]");
  check_dtype(*keep, DType::Int64);
  check_same_device(*boxes, *keep);
  if (!(iou_threshold >= 0.0 && iou_threshold <= 1.0))
    fail_value("iou_threshold: expected a number in [0, 1], got ", iou_threshold);
  const int64_t* cls = classes_obj.is_none() ? nullptr : classes->ptr<int64_t>();
  ReleaseGil nogil;
  return CONVLOC_DISPATCH_FLOAT(*boxes, [&] {
    const auto *b = boxes->ptr<scalar_t>(), *s = scores->ptr<scalar_t>();
    const int64_t n = boxes->size(0);
    auto* k = keep->ptr<int64_t>();
    return CONVLOC_ON_DEVICE(*boxes, nms_cpu(b, s, cls, n, iou_threshold, k),
                             nms_cuda(b, s, cls, n, iou_threshold, k, stream));
  });
}

}  // namespace

void bind_boxes(py::module_& m) {
  m.def("box_area", &py_box_area, arg("boxes"), arg("out"), py::kw_only(), arg("stream") = 0,
        "out[i] = area of boxes[i]; boxes [N, 4].");
  m.def("box_iou", &py_box_iou, arg("boxes1"), arg("boxes2"), arg("out"), py::kw_only(), arg("stream") = 0,
        "out[i, j] = IoU(boxes1[i], boxes2[j]).");
  m.def("nms", &py_nms, arg("boxes"), arg("scores"), arg("idxs"), arg("iou_threshold"), arg("keep"), py::kw_only(),
        arg("stream") = 0,
        "Greedy NMS; writes kept indices (descending score) to keep[:count] and returns count. "
        "idxs (int64 [N] or None): boxes of different idxs never suppress each other.");
}

}  // namespace convloc
