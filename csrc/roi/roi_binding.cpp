#include "core/py_array.h"
#include "core/py_gil.h"
#include "roi/roi_ops.h"

namespace convloc {
namespace {

using py::arg;

void* as_stream(uintptr_t s) { return reinterpret_cast<void*>(s); }

void py_roi_pool_forward(py::handle input_obj, py::handle rois_obj, double spatial_scale, int64_t pooled_h,
                         int64_t pooled_w, py::handle out_obj, py::handle argmax_obj, uintptr_t stream) {
  Array input = as_feature_map(input_obj, "input"), rois = as_array(rois_obj, "boxes");
  Array out = as_output(out_obj, "out");
  Array argmax = argmax_obj.is_none() ? as_optional_array(argmax_obj, "argmax") : as_output(argmax_obj, "argmax");
  ReleaseGil nogil;
  ops::roi_pool_forward(*input, *rois, spatial_scale, pooled_h, pooled_w, *out,
                        argmax_obj.is_none() ? nullptr : &*argmax, as_stream(stream));
}

void py_roi_pool_backward(py::handle grad_obj, py::handle rois_obj, py::handle input_obj, double spatial_scale,
                          int64_t pooled_h, int64_t pooled_w, py::handle gi_obj, uintptr_t stream) {
  Array grad = as_array(grad_obj, "grad"), rois = as_array(rois_obj, "boxes");
  Array input = as_feature_map(input_obj, "input"), gi = as_output(gi_obj, "grad_input");
  ReleaseGil nogil;
  ops::roi_pool_backward(*grad, *rois, *input, spatial_scale, pooled_h, pooled_w, *gi, as_stream(stream));
}

void py_roi_align_forward(py::handle input_obj, py::handle rois_obj, double spatial_scale, int64_t pooled_h,
                          int64_t pooled_w, int64_t sampling_ratio, bool aligned, py::handle out_obj,
                          uintptr_t stream) {
  Array input = as_feature_map(input_obj, "input"), rois = as_array(rois_obj, "boxes");
  Array out = as_output(out_obj, "out");
  ReleaseGil nogil;
  ops::roi_align_forward(*input, *rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned, *out,
                         as_stream(stream));
}

void py_roi_align_backward(py::handle grad_obj, py::handle rois_obj, double spatial_scale, int64_t pooled_h,
                           int64_t pooled_w, int64_t sampling_ratio, bool aligned, py::handle gi_obj,
                           uintptr_t stream) {
  Array grad = as_array(grad_obj, "grad"), rois = as_array(rois_obj, "boxes"), gi = as_output(gi_obj, "grad_input");
  ReleaseGil nogil;
  ops::roi_align_backward(*grad, *rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned, *gi,
                          as_stream(stream));
}

void py_roi_backward_gather(py::handle grad_obj, py::handle rois_obj, py::handle input_obj, double spatial_scale,
                            int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio, bool aligned,
                            py::handle gi_obj) {
  Array grad = as_array(grad_obj, "grad"), rois = as_array(rois_obj, "boxes");
  Array input = as_optional_array(input_obj, "input"), gi = as_output(gi_obj, "grad_input");
  ops::roi_backward_gather(*grad, *rois, input_obj.is_none() ? nullptr : &*input, spatial_scale, pooled_h, pooled_w,
                           sampling_ratio, aligned, *gi);
}

}  // namespace
void bind_roi(py::module_& m) {
  m.def("roi_pool_forward", &py_roi_pool_forward, arg("input"), arg("boxes"), arg("spatial_scale"), arg("pooled_h"),
        arg("pooled_w"), arg("out"), arg("argmax") = py::none(), py::kw_only(), arg("stream") = 0,
        "RoI max pooling: out [K, C, PH, PW] from input [B, C, H, W] and boxes [K, 5] = (batch index, x1, y1, "
        "x2, y2); argmax (int32 [K, C, PH, PW] or None) receives each bin's offset y * W + x, -1 for an empty bin.");
  m.def("roi_pool_backward", &py_roi_pool_backward, arg("grad"), arg("boxes"), arg("input"), arg("spatial_scale"),
        arg("pooled_h"), arg("pooled_w"), arg("grad_input"), py::kw_only(), arg("stream") = 0,
        "grad_input [B, C, H, W]: each grad [K, C, PH, PW] entry (sizes of 1 broadcast) added at its bin's argmax, "
        "recomputed from input; deterministic: fixed summation order, no atomics.");
  m.def("roi_align_forward", &py_roi_align_forward, arg("input"), arg("boxes"), arg("spatial_scale"), arg("pooled_h"),
        arg("pooled_w"), arg("sampling_ratio"), arg("aligned"), arg("out"), py::kw_only(), arg("stream") = 0,
        "RoI align (bilinear, averaged over a sample grid): out [K, C, PH, PW].");
  m.def("roi_align_backward", &py_roi_align_backward, arg("grad"), arg("boxes"), arg("spatial_scale"), arg("pooled_h"),
        arg("pooled_w"), arg("sampling_ratio"), arg("aligned"), arg("grad_input"), py::kw_only(), arg("stream") = 0,
        "grad_input [B, C, H, W] of roi_align from grad [K, C, PH, PW] (sizes of 1 broadcast); deterministic: "
        "fixed summation order, no atomics.");
  m.def("_roi_backward_gather", &py_roi_backward_gather, arg("grad"), arg("boxes"), arg("input"), arg("spatial_scale"),
        arg("pooled_h"), arg("pooled_w"), arg("sampling_ratio"), arg("aligned"), arg("grad_input"),
        "Test hook: the CUDA backward's gather per input cell, run on the CPU.");
}

}  // namespace convloc
