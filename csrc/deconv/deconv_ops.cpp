#include "deconv/deconv_ops.h"

#include <array>
#include <string>

#include "core/dispatch.h"

namespace convloc::ops {
namespace {

using Pair = std::array<int64_t, 2>;

std::string pair_str(const Pair& p) { return cat("(", p[0], ", ", p[1], ")"); }

void check_operand(const TensorView& t, const TensorView& ref) {
  check_float_or_half(t);
  check_same_dtype(ref, t);
  check_same_device(ref, t);
}

void check_out_shape(const TensorView& t, std::initializer_list<int64_t> dims, const char* pattern) {
  const std::vector<int64_t> want(dims);
  if (t.shape != want) {
    std::string s = "[";
    for (size_t i = 0; i < want.size(); ++i) s += cat(i ? ", " : "", want[i]);
    fail_value(t.name, ": expected shape ", pattern, " = ", s, "], got ", t.shape_str());
  }
}

// One output extent, (in - 1) stride - 2 padding + dilation (k - 1) + output_padding + 1, checked: ValueError naming
// the argument whose size makes it overflow int64 (the arguments are validated non-negative).
int64_t output_extent(int64_t in, int64_t k, const DeconvParams& p, int axis) {
  int64_t spread, reach, pad2, out;
  if (__builtin_mul_overflow(in - 1, p.stride[axis], &spread))
    fail_value("stride: ", pair_str(p.stride), " times the input's size (", in, ") overflows int64");
  if (__builtin_mul_overflow(p.dilation[axis], k - 1, &reach))
    fail_value("dilation: ", pair_str(p.dilation), " times the kernel's size (", k, ") overflows int64");
  if (__builtin_mul_overflow(p.padding[axis], int64_t(2), &pad2))
    fail_value("padding: ", pair_str(p.padding), " overflows int64 when doubled");
  if (__builtin_add_overflow(spread - pad2, reach, &out) || __builtin_add_overflow(out, p.output_padding[axis], &out) ||
      __builtin_add_overflow(out, int64_t(1), &out))
    fail_value("stride, dilation, output_padding: an output size beyond int64 (stride ", pair_str(p.stride),
               ", dilation ", pair_str(p.dilation), ", output_padding ", pair_str(p.output_padding), ")");
  return out;
}

}  // namespace

DeconvShape deconv2d_geometry(const std::vector<int64_t>& in, const std::vector<int64_t>& wt, const DeconvParams& p) {
  auto shape_str = [](const std::vector<int64_t>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += cat(i ? ", " : "", v[i]);
    return s + "]";
  };
  if (in.size() != 4) fail_value("input: expected shape [N, C_in, H, W], got ", shape_str(in));
  if (wt.size() != 4) fail_value("weight: expected shape [C_in, C_out / groups, kH, kW], got ", shape_str(wt));
  for (int64_t v : in)
    if (v < 0) fail_value("input: negative size in shape ", shape_str(in));
  for (int64_t v : wt)
    if (v < 0) fail_value("weight: negative size in shape ", shape_str(wt));
  if (in[1] == 0 || in[2] == 0 || in[3] == 0)
    fail_value("input: expected non-empty channels and spatial sizes, got ", shape_str(in));
  if (wt[1] == 0 || wt[2] == 0 || wt[3] == 0) fail_value("weight: expected a non-empty kernel, got ", shape_str(wt));
  if (p.groups < 1) fail_value("groups: expected a positive integer, got ", p.groups);
  for (int i = 0; i < 2; ++i) {
    if (p.stride[i] < 1) fail_value("stride: expected positive values, got ", pair_str(p.stride));
    if (p.dilation[i] < 1) fail_value("dilation: expected positive values, got ", pair_str(p.dilation));
    if (p.padding[i] < 0) fail_value("padding: expected non-negative values, got ", pair_str(p.padding));
    if (p.output_padding[i] < 0)
      fail_value("output_padding: expected non-negative values, got ", pair_str(p.output_padding));
    if (p.output_padding[i] >= p.stride[i] && p.output_padding[i] >= p.dilation[i])
      fail_value("output_padding: must be smaller than stride or dilation in each dimension, got output_padding ",
                 pair_str(p.output_padding), ", stride ", pair_str(p.stride), ", dilation ", pair_str(p.dilation));
  }
  if (in[1] % p.groups != 0)
    fail_value("groups: input channels (", in[1], ") are not divisible by groups (", p.groups, ")");
  if (wt[0] != in[1])
    fail_value("weight: expected shape [C_in, C_out / groups, kH, kW] with C_in = ", in[1],
               " (the input's channels), got ", shape_str(wt));
  int64_t c_out;
  if (__builtin_mul_overflow(wt[1], p.groups, &c_out))
    fail_value("groups: ", p.groups, " times the weight's C_out / groups (", wt[1], ") overflows int64");
  output_extent(in[2], wt[2], p, 0);  // (deconv_shape's arithmetic, checked first)
  output_extent(in[3], wt[3], p, 1);
  const DeconvShape s = deconv_shape(in.data(), wt.data(), p);
  if (s.oh < 1 || s.ow < 1)
    fail_value("padding: ", pair_str(p.padding), " leaves an empty output (", s.oh, " x ", s.ow, ") for input ",
               shape_str(in), " and kernel ", s.kh, " x ", s.kw);
  checked_numel({s.n, s.c_out, s.oh, s.ow}, "conv_transpose2d output");
  checked_numel({s.c_out_g() * s.kh * s.kw, s.h, s.w}, "conv_transpose2d columns");
  return s;
}

void deconv2d_forward(const TensorView& input, const TensorView& weight, const TensorView* bias, const TensorView& out,
                      const DeconvParams& params, void* stream) {
  check_float_or_half(input);
  check_operand(weight, input);
  check_operand(out, input);
  const DeconvShape s = deconv2d_geometry(input.shape, weight.shape, params);
  if (bias) {
    check_operand(*bias, input);
    check_out_shape(*bias, {s.c_out}, "[C_out]");
  }
  check_out_shape(out, {s.n, s.c_out, s.oh, s.ow}, "[N, C_out, OH, OW]");
  if (input.is_cuda()) {  // the CUDA kernels take NCHW arrays only
    check_contiguous(input);
    check_contiguous(out);
  }
  const DeconvLayout layout{!input.is_contiguous(), !out.is_contiguous()};
  (void)stream;
  CONVLOC_DISPATCH_FLOAT_OR_HALF(input, [&] {
    const auto *x = input.ptr<scalar_t>(), *w = weight.ptr<scalar_t>();
    const auto* b = bias ? bias->ptr<scalar_t>() : nullptr;
    auto* o = out.ptr<scalar_t>();
    CONVLOC_ON_DEVICE_OR_HALF(input, deconv2d_forward_cpu(s, x, w, b, o, layout), deconv2d_forward_cuda, s, x, w, b, o,
                              stream);
  });
}

void deconv2d_backward(const TensorView& grad_out, const TensorView* input, const TensorView& weight,
                       const TensorView* gi, const TensorView* gw, const TensorView* gb, const DeconvParams& params,
                       void* stream) {
  if (gw && !input) fail_value("input: needed to compute grad_weight");
  if (!input && !gi) fail_value("input: needed (or grad_input) for the input's shape");
  check_float_or_half(grad_out);
  check_operand(weight, grad_out);
  const TensorView& in_view = input ? *input : *gi;
  check_operand(in_view, grad_out);
  const DeconvShape s = deconv2d_geometry(in_view.shape, weight.shape, params);
  check_out_shape(grad_out, {s.n, s.c_out, s.oh, s.ow}, "[N, C_out, OH, OW]");
  if (gi) {
    check_operand(*gi, grad_out);
    check_out_shape(*gi, {s.n, s.c_in, s.h, s.w}, "[N, C_in, H, W]");
  }
  if (gw) {
    check_operand(*gw, grad_out);
    check_out_shape(*gw, {s.c_in, s.c_out_g(), s.kh, s.kw}, "[C_in, C_out / groups, kH, kW]");
  }
  if (gb) {
    check_operand(*gb, grad_out);
    check_out_shape(*gb, {s.c_out}, "[C_out]");
  }
  (void)stream;
  CONVLOC_DISPATCH_FLOAT_OR_HALF(grad_out, [&] {
    using T = scalar_t;
    const T* g = grad_out.ptr<T>();
    const T* x = input ? input->ptr<T>() : nullptr;
    const T* w = weight.ptr<T>();
    T* pgi = gi ? gi->ptr<T>() : nullptr;
    T* pgw = gw ? gw->ptr<T>() : nullptr;
    T* pgb = gb ? gb->ptr<T>() : nullptr;
    CONVLOC_ON_DEVICE_OR_HALF(grad_out, deconv2d_backward_cpu(s, g, x, w, pgi, pgw, pgb), deconv2d_backward_cuda, s, g,
                              x, w, pgi, pgw, pgb, stream);
  });
}

void deconv2d_grad_bias(const TensorView& grad_out, const TensorView& out, void* stream) {
  check_float_or_half(grad_out);
  check_operand(out, grad_out);
  check_ndim(grad_out, 4, "[N, C_out, OH, OW]");
  check_out_shape(out, {grad_out.size(1)}, "[C_out]");
  const int64_t n = grad_out.size(0), c = grad_out.size(1), oh = grad_out.size(2), ow = grad_out.size(3);
  const DeconvShape shape = deconv_bias_shape(n, c, oh, ow);
  (void)stream;
  CONVLOC_DISPATCH_FLOAT_OR_HALF(grad_out, [&] {
    using T = scalar_t;
    const T* gp = grad_out.ptr<T>();
    T* o = out.ptr<T>();
    CONVLOC_ON_DEVICE_OR_HALF(grad_out, deconv2d_backward_cpu<T>(shape, gp, nullptr, nullptr, nullptr, nullptr, o),
                              deconv2d_backward_cuda<T>, shape, gp, nullptr, nullptr, nullptr, nullptr, o, stream);
  });
}

}  // namespace convloc::ops
