#include <algorithm>
#include <cmath>
#include <limits>

#include "core/dispatch.h"
#include "core/py_array.h"
#include "core/py_gil.h"
#include "roi/roi.h"

namespace convloc {
namespace {

using py::arg;

void* as_stream(uintptr_t s) { return reinterpret_cast<void*>(s); }

// input: [B, C, H, W] float with H, W >= 1 and H * W < 2^31 (argmax is int32).
void check_input(const TensorView& x) {
  check_ndim(x, 4, "[B, C, H, W]");
  check_float_or_half(x);
  if (x.size(2) < 1 || x.size(3) < 1)
    fail_value(x.name, ": expected a feature map with H, W >= 1, got shape ", x.shape_str());
  if (x.size(2) * x.size(3) > std::numeric_limits<int32_t>::max())
    fail_value(x.name, ": H * W must be below 2^31, got shape ", x.shape_str());
}

// Says what is wrong with the first bad row of CPU boxes.
template <typename S>
std::string explain_bad_row(const S* rois, int64_t k, int64_t batch) {
  for (int64_t i = 0; i < k; ++i) {
    compute_t<S> r[5];
    std::copy(rois + 5 * i, rois + 5 * i + 5, r);
    const std::string row = cat("row ", i, " = (", r[0], ", ", r[1], ", ", r[2], ", ", r[3], ", ", r[4], ")");
    if (!(std::isfinite(r[1]) && std::isfinite(r[2]) && std::isfinite(r[3]) && std::isfinite(r[4])))
      return cat(row, " has a NaN or infinite coordinate");
    if (!(std::isfinite(r[0]) && r[0] == std::floor(r[0]) && r[0] >= 0 && r[0] < batch))
      return cat(row, ": the batch index must be an integer in [0, ", batch, ")");
    if (!(r[3] >= r[1] && r[4] >= r[2])) return cat(row, ": expected x2 >= x1 and y2 >= y1");
  }
  return "";
}

// boxes: [K, 5] (batch index, x1, y1, x2, y2), input's dtype and device, every row valid.
void check_rois(const TensorView& rois, const TensorView& input, int64_t batch, void* stream) {
  check_shape(rois, {-1, 5}, "[K, 5]");
  check_same_device(input, rois);
  check_same_dtype(input, rois);
  CONVLOC_DISPATCH_FLOAT_OR_HALF(rois, [&] {
    const auto* p = rois.ptr<scalar_t>();
    const int64_t k = rois.size(0);
    const bool ok = CONVLOC_ON_DEVICE_OR_HALF(rois, rois_valid_cpu(p, k, batch), rois_valid_cuda, p, k, batch, stream);
    if (ok) return;
    if (!rois.is_cuda()) fail_value(rois.name, ": ", explain_bad_row(p, k, batch));
    fail_value(rois.name, ": expected rows (batch index, x1, y1, x2, y2) with an integer batch index in [0, ", batch,
               "), finite coordinates, x2 >= x1 and y2 >= y1");
  });
  (void)stream;
}

// The CUDA kernels read NCHW planes (CPU ones take channels-last input too).
void check_cuda_contiguous(const TensorView& x) {
  if (x.is_cuda()) check_contiguous(x);
}

void check_pooling(double spatial_scale, int64_t pooled_h, int64_t pooled_w) {
  if (!(std::isfinite(spatial_scale) && spatial_scale > 0))
    fail_value("spatial_scale: expected a finite number > 0, got ", spatial_scale);
  if (pooled_h < 1 || pooled_w < 1 || pooled_h > (1 << 20) || pooled_w > (1 << 20))
    fail_value("output_size: expected positive sizes (at most 2^20), got (", pooled_h, ", ", pooled_w, ")");
}

void check_output(const TensorView& out, const TensorView& like, std::initializer_list<int64_t> shape,
                  const char* pattern) {
  check_same_device(like, out);
  check_shape(out, shape, pattern);
}

void py_roi_pool_forward(py::handle input_obj, py::handle rois_obj, double spatial_scale, int64_t pooled_h,
                         int64_t pooled_w, py::handle out_obj, py::handle argmax_obj, uintptr_t stream_id) {
  Array input = as_feature_map(input_obj, "input"), rois = as_array(rois_obj, "boxes");
  Array out = as_output(out_obj, "out");
  Array argmax = argmax_obj.is_none() ? as_optional_array(argmax_obj, "argmax") : as_output(argmax_obj, "argmax");
  void* stream = as_stream(stream_id);
  check_input(*input);
  check_cuda_contiguous(*input);
  check_rois(*rois, *input, input->size(0), stream);
  check_pooling(spatial_scale, pooled_h, pooled_w);
  const int64_t k = rois->size(0), b = input->size(0), c = input->size(1), h = input->size(2), w = input->size(3);
  checked_numel({k, c, pooled_h, pooled_w}, "roi_pool output");
  check_output(*out, *input, {k, c, pooled_h, pooled_w}, "[K, C, PH, PW]");
  check_same_dtype(*input, *out);
  if (!argmax_obj.is_none()) {
    check_output(*argmax, *input, {k, c, pooled_h, pooled_w}, "[K, C, PH, PW]");
    check_dtype(*argmax, DType::Int32);
  }
  const bool nhwc = !input->is_contiguous();
  ReleaseGil nogil;
  CONVLOC_DISPATCH_FLOAT_OR_HALF(*input, [&] {
    const auto *x = input->ptr<scalar_t>(), *r = rois->ptr<scalar_t>();
    auto* o = out->ptr<scalar_t>();
    auto* am = argmax_obj.is_none() ? nullptr : argmax->ptr<int32_t>();
    const auto s = static_cast<compute_t<scalar_t>>(spatial_scale);
    const int ph = int(pooled_h), pw = int(pooled_w);
    CONVLOC_ON_DEVICE_OR_HALF(*input, roi_pool_forward_cpu(x, nhwc, b, c, h, w, r, k, s, ph, pw, o, am),
                              roi_pool_forward_cuda, x, b, c, h, w, r, k, s, ph, pw, o, am, stream);
  });
}

// grad broadcastable to [K, C, PH, PW] (each size equal or 1) and grad_input [B, C, H, W], of one
// dtype and device; boxes as in the forward. Returns grad's view with stride 0 on broadcast sizes.
template <typename T>
GradView<T> check_backward(const TensorView& grad, const TensorView& rois, const TensorView& gi, int64_t pooled_h,
                           int64_t pooled_w, double spatial_scale, void* stream) {
  check_ndim(grad, 4, "[K, C, PH, PW]");
  check_input(gi);
  check_same_device(gi, grad);
  check_same_dtype(gi, grad);
  check_rois(rois, gi, gi.size(0), stream);
  check_pooling(spatial_scale, pooled_h, pooled_w);
  const int64_t want[4] = {rois.size(0), gi.size(1), pooled_h, pooled_w};
  int64_t strides[4], stride = 1;
  for (int i = 3; i >= 0; --i) {
    if (grad.size(i) != want[i] && grad.size(i) != 1)
      fail_value(grad.name, ": expected a shape broadcastable to [K, C, PH, PW] = [", want[0], ", ", want[1], ", ",
                 want[2], ", ", want[3], "], got ", grad.shape_str());
    strides[i] = grad.size(i) == 1 ? 0 : stride;
    stride *= grad.size(i);
  }
  return GradView<T>{grad.ptr<T>(), strides[0], strides[1], strides[2], strides[3]};
}

void py_roi_pool_backward(py::handle grad_obj, py::handle rois_obj, py::handle input_obj, double spatial_scale,
                          int64_t pooled_h, int64_t pooled_w, py::handle gi_obj, uintptr_t stream_id) {
  Array grad = as_array(grad_obj, "grad"), rois = as_array(rois_obj, "boxes");
  Array input = as_feature_map(input_obj, "input"), gi = as_output(gi_obj, "grad_input");
  void* stream = as_stream(stream_id);
  check_output(*input, *gi, {gi->size(0), gi->size(1), gi->size(2), gi->size(3)}, "[B, C, H, W] (grad_input's)");
  check_same_dtype(*gi, *input);
  check_cuda_contiguous(*input);
  const bool nhwc = !input->is_contiguous();
  CONVLOC_DISPATCH_FLOAT_OR_HALF(*gi, [&] {
    const auto g = check_backward<scalar_t>(*grad, *rois, *gi, pooled_h, pooled_w, spatial_scale, stream);
    ReleaseGil nogil;
    const auto *x = input->ptr<scalar_t>(), *r = rois->ptr<scalar_t>();
    auto* o = gi->ptr<scalar_t>();
    const int64_t k = rois->size(0), b = gi->size(0), c = gi->size(1), h = gi->size(2), w = gi->size(3);
    const auto s = static_cast<compute_t<scalar_t>>(spatial_scale);
    const int ph = int(pooled_h), pw = int(pooled_w);
    CONVLOC_ON_DEVICE_OR_HALF(*gi, roi_pool_backward_cpu(g, x, nhwc, r, k, b, c, h, w, s, ph, pw, o),
                              roi_pool_backward_cuda, g, x, r, k, b, c, h, w, s, ph, pw, o, stream);
  });
}

void py_roi_align_forward(py::handle input_obj, py::handle rois_obj, double spatial_scale, int64_t pooled_h,
                          int64_t pooled_w, int64_t sampling_ratio, bool aligned, py::handle out_obj,
                          uintptr_t stream_id) {
  Array input = as_feature_map(input_obj, "input"), rois = as_array(rois_obj, "boxes");
  Array out = as_output(out_obj, "out");
  void* stream = as_stream(stream_id);
  check_input(*input);
  check_cuda_contiguous(*input);
  check_rois(*rois, *input, input->size(0), stream);
  check_pooling(spatial_scale, pooled_h, pooled_w);
  if (sampling_ratio > (1 << 16)) fail_value("sampling_ratio: expected at most 65536, got ", sampling_ratio);
  const int64_t k = rois->size(0), b = input->size(0), c = input->size(1), h = input->size(2), w = input->size(3);
  checked_numel({k, c, pooled_h, pooled_w}, "roi_align output");
  check_output(*out, *input, {k, c, pooled_h, pooled_w}, "[K, C, PH, PW]");
  check_same_dtype(*input, *out);
  const bool nhwc = !input->is_contiguous();
  ReleaseGil nogil;
  CONVLOC_DISPATCH_FLOAT_OR_HALF(*input, [&] {
    const auto *x = input->ptr<scalar_t>(), *r = rois->ptr<scalar_t>();
    auto* o = out->ptr<scalar_t>();
    const auto s = static_cast<compute_t<scalar_t>>(spatial_scale);
    const int ph = int(pooled_h), pw = int(pooled_w), sr = int(sampling_ratio);
    CONVLOC_ON_DEVICE_OR_HALF(*input, roi_align_forward_cpu(x, nhwc, b, c, h, w, r, k, s, ph, pw, sr, aligned, o),
                              roi_align_forward_cuda, x, b, c, h, w, r, k, s, ph, pw, sr, aligned, o, stream);
  });
}

void py_roi_align_backward(py::handle grad_obj, py::handle rois_obj, double spatial_scale, int64_t pooled_h,
                           int64_t pooled_w, int64_t sampling_ratio, bool aligned, py::handle gi_obj,
                           uintptr_t stream_id) {
  Array grad = as_array(grad_obj, "grad"), rois = as_array(rois_obj, "boxes"), gi = as_output(gi_obj, "grad_input");
  void* stream = as_stream(stream_id);
  check_input(*gi);
  if (sampling_ratio > (1 << 16)) fail_value("sampling_ratio: expected at most 65536, got ", sampling_ratio);
  CONVLOC_DISPATCH_FLOAT_OR_HALF(*gi, [&] {
    const auto g = check_backward<scalar_t>(*grad, *rois, *gi, pooled_h, pooled_w, spatial_scale, stream);
    ReleaseGil nogil;
    const auto* r = rois->ptr<scalar_t>();
    auto* o = gi->ptr<scalar_t>();
    const int64_t k = rois->size(0), b = gi->size(0), c = gi->size(1), h = gi->size(2), w = gi->size(3);
    const auto s = static_cast<compute_t<scalar_t>>(spatial_scale);
    const int ph = int(pooled_h), pw = int(pooled_w), sr = int(sampling_ratio);
    CONVLOC_ON_DEVICE_OR_HALF(*gi, roi_align_backward_cpu(g, r, k, b, c, h, w, s, ph, pw, sr, aligned, o),
                              roi_align_backward_cuda, g, r, k, b, c, h, w, s, ph, pw, sr, aligned, o, stream);
  });
}

// Test hook (CPU): the CUDA backward's per-cell gather; input given: roi_pool's, None: roi_align's.
void py_roi_backward_gather(py::handle grad_obj, py::handle rois_obj, py::handle input_obj, double spatial_scale,
                            int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio, bool aligned,
                            py::handle gi_obj) {
  Array grad = as_array(grad_obj, "grad"), rois = as_array(rois_obj, "boxes");
  Array input = as_optional_array(input_obj, "input"), gi = as_output(gi_obj, "grad_input");
  if (gi->is_cuda()) fail_value("grad_input: expected a CPU array (a CPU test hook)");
  if (input->data) {
    check_output(*input, *gi, {gi->size(0), gi->size(1), gi->size(2), gi->size(3)}, "[B, C, H, W] (grad_input's)");
    check_same_dtype(*gi, *input);
  }
  CONVLOC_DISPATCH_FLOAT(*gi, [&] {
    const auto g = check_backward<scalar_t>(*grad, *rois, *gi, pooled_h, pooled_w, spatial_scale, nullptr);
    const int64_t k = rois->size(0), b = gi->size(0), c = gi->size(1), h = gi->size(2), w = gi->size(3);
    roi_backward_gather_cpu(g, input->data ? input->ptr<scalar_t>() : nullptr, rois->ptr<scalar_t>(), k, b, c, h, w,
                            static_cast<scalar_t>(spatial_scale), int(pooled_h), int(pooled_w), int(sampling_ratio),
                            aligned, gi->ptr<scalar_t>());
  });
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
