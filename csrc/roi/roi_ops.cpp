#include "roi/roi_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/dispatch.h"
#include "roi/roi.h"

namespace convloc::ops {
namespace {

// input: [B, C, H, W] float (or a CPU half type) with H, W >= 1 and H * W < 2^31 (argmax is int32).
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

// The boxes a kernel reads. On the CPU a copy, taken before the checks: another thread writing to the caller's array
// meanwhile can then change nothing that was checked (the kernels index the input by the batch index and size their
// work by the boxes). On CUDA the caller's array.
class CheckedRois {
 public:
  template <typename S>
  void take(const TensorView& rois) {
    data_ = rois.data;
    if (rois.is_cuda()) return;
    const size_t bytes = size_t(rois.numel()) * sizeof(S);
    copy_.resize((bytes + sizeof(double) - 1) / sizeof(double));  // (aligned for every dtype)
    if (bytes) std::memcpy(copy_.data(), rois.data, bytes);
    data_ = copy_.data();
  }
  template <typename S>
  const S* data() const {
    return static_cast<const S*>(data_);
  }

 private:
  std::vector<double> copy_;
  const void* data_ = nullptr;
};

// boxes: [K, 5] (batch index, x1, y1, x2, y2), input's dtype and device, every row valid: what the kernel reads.
CheckedRois check_rois(const TensorView& rois, const TensorView& input, int64_t batch, void* stream) {
  check_shape(rois, {-1, 5}, "[K, 5]");
  check_same_device(input, rois);
  check_same_dtype(input, rois);
  CheckedRois checked;
  CONVLOC_DISPATCH_FLOAT_OR_HALF(rois, [&] {
    checked.take<scalar_t>(rois);
    const auto* p = checked.data<scalar_t>();
    const int64_t k = rois.size(0);
    const bool ok = CONVLOC_ON_DEVICE_OR_HALF(rois, rois_valid_cpu(p, k, batch), rois_valid_cuda, p, k, batch, stream);
    if (ok) return;
    if (!rois.is_cuda()) fail_value(rois.name, ": ", explain_bad_row(p, k, batch));
    fail_value(rois.name, ": expected rows (batch index, x1, y1, x2, y2) with an integer batch index in [0, ", batch,
               "), finite coordinates, x2 >= x1 and y2 >= y1");
  });
  (void)stream;
  return checked;
}

template <typename S>
std::string row_str(const S* roi, int64_t i) {
  compute_t<S> r[5];
  std::copy(roi, roi + 5, r);
  return cat("row ", i, " = (", r[0], ", ", r[1], ", ", r[2], ", ", r[3], ", ", r[4], ")");
}

// roi_pool rounds the corners times spatial_scale to int pixels: at most 2^29 from 0 (CPU boxes; the CUDA kernels
// get the same arithmetic unchecked).
template <typename S>
void check_pool_extents(const CheckedRois& checked, const TensorView& rois, compute_t<S> scale) {
  if (rois.is_cuda()) return;
  const S* p = checked.data<S>();
  constexpr int64_t kMax = int64_t(1) << 29;
  for (int64_t i = 0; i < rois.size(0); ++i)
    for (int c = 1; c < 5; ++c) {
      const double v = round_half_away(static_cast<compute_t<S>>(p[5 * i + c]) * scale);
      if (!(std::fabs(v) <= double(kMax)))
        fail_value(rois.name, ": ", row_str(p + 5 * i, i), ": its corners times spatial_scale (", double(scale),
                   ") reach ", v, ", beyond the ", kMax, " (2^29) pixels roi_pool takes");
    }
}

// roi_align's geometry per CPU box: finite after spatial_scale, and (sampling_ratio <= 0) an adaptive grid within
// align_grid_limit (roi/roi.h).
template <typename S>
void check_align_extents(const CheckedRois& checked, const TensorView& rois, compute_t<S> scale, int pooled_h,
                         int pooled_w, int sampling_ratio, bool aligned) {
  if (rois.is_cuda()) return;
  using T = compute_t<S>;
  const S* p = checked.data<S>();
  for (int64_t i = 0; i < rois.size(0); ++i) {
    T row[5];
    std::copy(p + 5 * i, p + 5 * i + 5, row);
    const AlignRoi<T> r = align_roi(row, scale, pooled_h, pooled_w, sampling_ratio, aligned);
    if (!(std::isfinite(r.start_h) && std::isfinite(r.start_w) && std::isfinite(r.bin_h) && std::isfinite(r.bin_w)))
      fail_value(rois.name, ": ", row_str(p + 5 * i, i), ": its coordinates times spatial_scale (", double(scale),
                 ") overflow ", sizeof(T) == 4 ? "float32" : "float64");
    if (sampling_ratio > 0) continue;
    const double grid_h = ceil_of(r.bin_h), grid_w = ceil_of(r.bin_w);
    const int limit_h = align_grid_limit(pooled_h), limit_w = align_grid_limit(pooled_w);
    if (grid_h > limit_h || grid_w > limit_w)
      fail_value(rois.name, ": ", row_str(p + 5 * i, i),
                 ": the adaptive sampling grid (ceil(box size / output_size) per axis) would be ", grid_h, " x ",
                 grid_w, " samples per bin, beyond the ", limit_h, " x ", limit_w,
                 " roi_align takes with this output_size (", kMaxAlignGrid,
                 " per axis, and output_size x samples at most ", kMaxAlignAxisSamples,
                 " per axis); pass a positive sampling_ratio");
  }
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

// grad broadcastable to [K, C, PH, PW] (each size equal or 1) and grad_input [B, C, H, W], of one
// dtype and device (boxes checked by the caller, as in the forward). Returns grad's view with stride 0 on broadcast
// sizes.
template <typename T>
GradView<T> check_backward(const TensorView& grad, const TensorView& rois, const TensorView& gi, int64_t pooled_h,
                           int64_t pooled_w, double spatial_scale) {
  check_ndim(grad, 4, "[K, C, PH, PW]");
  check_input(gi);
  check_same_device(gi, grad);
  check_same_dtype(gi, grad);
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

// sampling_ratio <= 0 (adaptive, as 0) or at most align_grid_limit of both output sizes (checked first).
int checked_sampling_ratio(int64_t sampling_ratio, int64_t pooled_h, int64_t pooled_w) {
  const int limit = std::min(align_grid_limit(int(pooled_h)), align_grid_limit(int(pooled_w)));
  if (sampling_ratio > limit)
    fail_value("sampling_ratio: expected at most ", limit, " with this output_size (", kMaxAlignGrid,
               ", and output_size x sampling_ratio at most ", kMaxAlignAxisSamples, " per axis), got ", sampling_ratio);
  return int(std::max<int64_t>(sampling_ratio, 0));
}

// spatial_scale in the kernels' precision (float32 for float32 and the half types): finite and > 0 there too.
template <typename T>
T checked_scale(double spatial_scale) {
  const T s = static_cast<T>(spatial_scale);
  if (!(std::isfinite(s) && s > 0))
    fail_value("spatial_scale: expected a finite number > 0 in ", sizeof(T) == 4 ? "float32" : "float64",
               " (the kernel's precision), got ", spatial_scale);
  return s;
}

}  // namespace

void roi_pool_forward(const TensorView& input, const TensorView& rois, double spatial_scale, int64_t pooled_h,
                      int64_t pooled_w, const TensorView& out, const TensorView* argmax, void* stream) {
  check_input(input);
  check_cuda_contiguous(input);
  const CheckedRois checked = check_rois(rois, input, input.size(0), stream);
  check_pooling(spatial_scale, pooled_h, pooled_w);
  const int64_t k = rois.size(0), b = input.size(0), c = input.size(1), h = input.size(2), w = input.size(3);
  checked_numel({k, c, pooled_h, pooled_w}, "roi_pool output");
  check_output(out, input, {k, c, pooled_h, pooled_w}, "[K, C, PH, PW]");
  check_same_dtype(input, out);
  if (argmax) {
    check_output(*argmax, input, {k, c, pooled_h, pooled_w}, "[K, C, PH, PW]");
    check_dtype(*argmax, DType::Int32);
  }
  const bool nhwc = !input.is_contiguous();
  CONVLOC_DISPATCH_FLOAT_OR_HALF(input, [&] {
    const auto s = checked_scale<compute_t<scalar_t>>(spatial_scale);
    check_pool_extents<scalar_t>(checked, rois, s);
    const auto* x = input.ptr<scalar_t>();
    const auto* r = checked.data<scalar_t>();
    auto* o = out.ptr<scalar_t>();
    auto* am = argmax ? argmax->ptr<int32_t>() : nullptr;
    const int ph = int(pooled_h), pw = int(pooled_w);
    CONVLOC_ON_DEVICE_OR_HALF(input, roi_pool_forward_cpu(x, nhwc, b, c, h, w, r, k, s, ph, pw, o, am),
                              roi_pool_forward_cuda, x, b, c, h, w, r, k, s, ph, pw, o, am, stream);
  });
}

void roi_pool_backward(const TensorView& grad, const TensorView& rois, const TensorView& input, double spatial_scale,
                       int64_t pooled_h, int64_t pooled_w, const TensorView& gi, void* stream) {
  check_output(input, gi, {gi.size(0), gi.size(1), gi.size(2), gi.size(3)}, "[B, C, H, W] (grad_input's)");
  check_same_dtype(gi, input);
  check_cuda_contiguous(input);
  check_input(gi);
  const CheckedRois checked = check_rois(rois, gi, gi.size(0), stream);
  const bool nhwc = !input.is_contiguous();
  CONVLOC_DISPATCH_FLOAT_OR_HALF(gi, [&] {
    const auto g = check_backward<scalar_t>(grad, rois, gi, pooled_h, pooled_w, spatial_scale);
    const auto s = checked_scale<compute_t<scalar_t>>(spatial_scale);
    check_pool_extents<scalar_t>(checked, rois, s);
    const auto* x = input.ptr<scalar_t>();
    const auto* r = checked.data<scalar_t>();
    auto* o = gi.ptr<scalar_t>();
    const int64_t k = rois.size(0), b = gi.size(0), c = gi.size(1), h = gi.size(2), w = gi.size(3);
    const int ph = int(pooled_h), pw = int(pooled_w);
    CONVLOC_ON_DEVICE_OR_HALF(gi, roi_pool_backward_cpu(g, x, nhwc, r, k, b, c, h, w, s, ph, pw, o),
                              roi_pool_backward_cuda, g, x, r, k, b, c, h, w, s, ph, pw, o, stream);
  });
}

void roi_align_forward(const TensorView& input, const TensorView& rois, double spatial_scale, int64_t pooled_h,
                       int64_t pooled_w, int64_t sampling_ratio, bool aligned, const TensorView& out, void* stream) {
  check_input(input);
  check_cuda_contiguous(input);
  const CheckedRois checked = check_rois(rois, input, input.size(0), stream);
  check_pooling(spatial_scale, pooled_h, pooled_w);
  const int sr = checked_sampling_ratio(sampling_ratio, pooled_h, pooled_w);
  const int64_t k = rois.size(0), b = input.size(0), c = input.size(1), h = input.size(2), w = input.size(3);
  checked_numel({k, c, pooled_h, pooled_w}, "roi_align output");
  check_output(out, input, {k, c, pooled_h, pooled_w}, "[K, C, PH, PW]");
  check_same_dtype(input, out);
  const bool nhwc = !input.is_contiguous();
  CONVLOC_DISPATCH_FLOAT_OR_HALF(input, [&] {
    const auto s = checked_scale<compute_t<scalar_t>>(spatial_scale);
    const int ph = int(pooled_h), pw = int(pooled_w);
    check_align_extents<scalar_t>(checked, rois, s, ph, pw, sr, aligned);
    const auto* x = input.ptr<scalar_t>();
    const auto* r = checked.data<scalar_t>();
    auto* o = out.ptr<scalar_t>();
    CONVLOC_ON_DEVICE_OR_HALF(input, roi_align_forward_cpu(x, nhwc, b, c, h, w, r, k, s, ph, pw, sr, aligned, o),
                              roi_align_forward_cuda, x, b, c, h, w, r, k, s, ph, pw, sr, aligned, o, stream);
  });
}

void roi_align_backward(const TensorView& grad, const TensorView& rois, double spatial_scale, int64_t pooled_h,
                        int64_t pooled_w, int64_t sampling_ratio, bool aligned, const TensorView& gi, void* stream) {
  check_input(gi);
  const CheckedRois checked = check_rois(rois, gi, gi.size(0), stream);
  CONVLOC_DISPATCH_FLOAT_OR_HALF(gi, [&] {
    const auto g = check_backward<scalar_t>(grad, rois, gi, pooled_h, pooled_w, spatial_scale);
    const int sr = checked_sampling_ratio(sampling_ratio, pooled_h, pooled_w);
    const auto s = checked_scale<compute_t<scalar_t>>(spatial_scale);
    const int ph = int(pooled_h), pw = int(pooled_w);
    check_align_extents<scalar_t>(checked, rois, s, ph, pw, sr, aligned);
    const auto* r = checked.data<scalar_t>();
    auto* o = gi.ptr<scalar_t>();
    const int64_t k = rois.size(0), b = gi.size(0), c = gi.size(1), h = gi.size(2), w = gi.size(3);
    CONVLOC_ON_DEVICE_OR_HALF(gi, roi_align_backward_cpu(g, r, k, b, c, h, w, s, ph, pw, sr, aligned, o),
                              roi_align_backward_cuda, g, r, k, b, c, h, w, s, ph, pw, sr, aligned, o, stream);
  });
}

void roi_backward_gather(const TensorView& grad, const TensorView& rois, const TensorView* input, double spatial_scale,
                         int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio, bool aligned,
                         const TensorView& gi) {
  if (gi.is_cuda()) fail_value("grad_input: expected a CPU array (a CPU test hook)");
  if (input) {
    check_output(*input, gi, {gi.size(0), gi.size(1), gi.size(2), gi.size(3)}, "[B, C, H, W] (grad_input's)");
    check_same_dtype(gi, *input);
  }
  check_input(gi);
  const CheckedRois checked = check_rois(rois, gi, gi.size(0), nullptr);
  CONVLOC_DISPATCH_FLOAT(gi, [&] {
    const auto g = check_backward<scalar_t>(grad, rois, gi, pooled_h, pooled_w, spatial_scale);
    const int sr = checked_sampling_ratio(sampling_ratio, pooled_h, pooled_w);
    const auto s = checked_scale<scalar_t>(spatial_scale);
    const int ph = int(pooled_h), pw = int(pooled_w);
    if (input)
      check_pool_extents<scalar_t>(checked, rois, s);
    else
      check_align_extents<scalar_t>(checked, rois, s, ph, pw, sr, aligned);
    const int64_t k = rois.size(0), b = gi.size(0), c = gi.size(1), h = gi.size(2), w = gi.size(3);
    roi_backward_gather_cpu(g, input ? input->ptr<scalar_t>() : nullptr, checked.data<scalar_t>(), k, b, c, h, w, s, ph,
                            pw, sr, aligned, gi.ptr<scalar_t>());
  });
}

}  // namespace convloc::ops
