#include "boxes/boxes_ops.h"
#include "core/py_array.h"
#include "core/py_gil.h"

namespace convloc {
namespace {

using py::arg;

void* as_stream(uintptr_t s) { return reinterpret_cast<void*>(s); }

void py_box_area(py::handle boxes_obj, py::handle out_obj, uintptr_t stream) {
  Array boxes = as_array(boxes_obj, "boxes"), out = as_output(out_obj, "out");
  ReleaseGil nogil;
  ops::box_area(*boxes, *out, as_stream(stream));
}

void py_box_iou(py::handle a_obj, py::handle b_obj, py::handle out_obj, uintptr_t stream) {
  Array a = as_array(a_obj, "boxes1"), b = as_array(b_obj, "boxes2"), out = as_output(out_obj, "out");
  ReleaseGil nogil;
  ops::box_iou(*a, *b, *out, as_stream(stream));
}

int64_t py_nms(py::handle boxes_obj, py::handle scores_obj, py::handle idxs_obj, double iou_threshold,
               py::handle keep_obj, uintptr_t stream) {
  Array boxes = as_array(boxes_obj, "boxes"), scores = as_array(scores_obj, "scores");
  Array idxs = as_optional_array(idxs_obj, "idxs"), keep = as_output(keep_obj, "keep");
  ReleaseGil nogil;
  return ops::nms(*boxes, *scores, idxs_obj.is_none() ? nullptr : &*idxs, iou_threshold, *keep, as_stream(stream));
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
        "idxs (int32/int64 [N] or None): boxes of different idxs never suppress each other.");
}

}  // namespace convloc
