#include <pybind11/stl.h>

#include <array>
#include <vector>

#include "core/dispatch.h"
#include "core/py_array.h"
#include "core/py_gil.h"
#include "deconv/deconv.h"

namespace convloc {
namespace {

using py::arg;
using Pair = std::array<int64_t, 2>;

std::string pair_str(const Pair& p) { return cat("(", p[0], ", ", p[1], ")"); }

// Validates the geometry (torch's rules) and returns it with the output size filled in.
DeconvShape make_shape(const std::vector<int64_t>& in, const std::vector<int64_t>& wt, const DeconvParams& p) {
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
  const DeconvShape s = deconv_shape(in.data(), wt.data(), p);
  if (s.oh < 1 || s.ow < 1)
    fail_value("padding: ", pair_str(p.padding), " leaves an empty output (", s.oh, " x ", s.ow, ") for input ",
               shape_str(in), " and kernel ", s.kh, " x ", s.kw);
  checked_numel({s.n, s.c_out, s.oh, s.ow}, "conv_transpose2d output");
  checked_numel({s.c_out_g() * s.kh * s.kw, s.h, s.w}, "conv_transpose2d columns");
  return s;
}

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

std::vector<int64_t> py_output_shape(const std::vector<int64_t>& in, const std::vector<int64_t>& wt, Pair stride,
                                     Pair padding, Pair output_padding, Pair dilation, int64_t groups) {
  const DeconvShape s = make_shape(in, wt, {stride, padding, output_padding, dilation, groups});
  return {s.n, s.c_out, s.oh, s.ow};
}

void py_forward(py::handle input_obj, py::handle weight_obj, py::handle bias_obj, py::handle out_obj, Pair stride,
                Pair padding, Pair output_padding, Pair dilation, int64_t groups, uintptr_t stream_id) {
  Array input = as_feature_map(input_obj, "input"), weight = as_array(weight_obj, "weight");
  Array bias = as_optional_array(bias_obj, "bias"), out = as_feature_map(out_obj, "out", true);
  check_float_or_half(*input);
  check_operand(*weight, *input);
  check_operand(*out, *input);
  const DeconvShape s = make_shape(input->shape, weight->shape, {stride, padding, output_padding, dilation, groups});
  if (!bias_obj.is_none()) {
    check_operand(*bias, *input);
    check_out_shape(*bias, {s.c_out}, "[C_out]");
  }
  check_out_shape(*out, {s.n, s.c_out, s.oh, s.ow}, "[N, C_out, OH, OW]");
  if (input->is_cuda()) {  // the CUDA kernels take NCHW arrays only
    check_contiguous(*input);
    check_contiguous(*out);
  }
  const DeconvLayout layout{!input->is_contiguous(), !out->is_contiguous()};
  void* stream = reinterpret_cast<void*>(stream_id);
  (void)stream;
  ReleaseGil nogil;
  CONVLOC_DISPATCH_FLOAT_OR_HALF(*input, [&] {
    const auto *x = input->ptr<scalar_t>(), *w = weight->ptr<scalar_t>();
    const auto* b = bias_obj.is_none() ? nullptr : bias->ptr<scalar_t>();
    auto* o = out->ptr<scalar_t>();
    CONVLOC_ON_DEVICE_OR_HALF(*input, deconv2d_forward_cpu(s, x, w, b, o, layout), deconv2d_forward_cuda, s, x, w, b, o,
                              stream);
  });
}

// Any of input (needed for grad_weight only), grad_input, grad_weight, grad_bias may be None.
// The input's shape comes from input or grad_input.
void py_backward(py::handle grad_out_obj, py::handle input_obj, py::handle weight_obj, py::handle gi_obj,
                 py::handle gw_obj, py::handle gb_obj, Pair stride, Pair padding, Pair output_padding, Pair dilation,
                 int64_t groups, uintptr_t stream_id) {
  Array grad_out = as_array(grad_out_obj, "grad_output"), weight = as_array(weight_obj, "weight");
  Array input = as_optional_array(input_obj, "input");
  Array gi = as_optional_array(gi_obj, "grad_input"), gw = as_optional_array(gw_obj, "grad_weight");
  Array gb = as_optional_array(gb_obj, "grad_bias");
  if (!gi_obj.is_none()) gi = as_output(gi_obj, "grad_input");
  if (!gw_obj.is_none()) gw = as_output(gw_obj, "grad_weight");
  if (!gb_obj.is_none()) gb = as_output(gb_obj, "grad_bias");
  if (!gw_obj.is_none() && input_obj.is_none()) fail_value("input: needed to compute grad_weight");
  if (input_obj.is_none() && gi_obj.is_none()) fail_value("input: needed (or grad_input) for the input's shape");
  check_float_or_half(*grad_out);
  check_operand(*weight, *grad_out);
  const TensorView& in_view = input_obj.is_none() ? *gi : *input;
  check_operand(in_view, *grad_out);
  const DeconvShape s = make_shape(in_view.shape, weight->shape, {stride, padding, output_padding, dilation, groups});
  check_out_shape(*grad_out, {s.n, s.c_out, s.oh, s.ow}, "[N, C_out, OH, OW]");
  if (!gi_obj.is_none()) {
    check_operand(*gi, *grad_out);
    check_out_shape(*gi, {s.n, s.c_in, s.h, s.w}, "[N, C_in, H, W]");
  }
  if (!gw_obj.is_none()) {
    check_operand(*gw, *grad_out);
    check_out_shape(*gw, {s.c_in, s.c_out_g(), s.kh, s.kw}, "[C_in, C_out / groups, kH, kW]");
  }
  if (!gb_obj.is_none()) {
    check_operand(*gb, *grad_out);
    check_out_shape(*gb, {s.c_out}, "[C_out]");
  }
  void* stream = reinterpret_cast<void*>(stream_id);
  (void)stream;
  ReleaseGil nogil;
  CONVLOC_DISPATCH_FLOAT_OR_HALF(*grad_out, [&] {
    using T = scalar_t;
    const T* g = grad_out->ptr<T>();
    const T* x = input_obj.is_none() ? nullptr : input->ptr<T>();
    const T* w = weight->ptr<T>();
    T* pgi = gi_obj.is_none() ? nullptr : gi->ptr<T>();
    T* pgw = gw_obj.is_none() ? nullptr : gw->ptr<T>();
    T* pgb = gb_obj.is_none() ? nullptr : gb->ptr<T>();
    CONVLOC_ON_DEVICE_OR_HALF(*grad_out, deconv2d_backward_cpu(s, g, x, w, pgi, pgw, pgb), deconv2d_backward_cuda, s, g,
                              x, w, pgi, pgw, pgb, stream);
  });
}

}  // namespace

void bind_deconv(py::module_& m) {
  m.def("deconv2d_output_shape", &py_output_shape, arg("input_shape"), arg("weight_shape"), arg("stride"),
        arg("padding"), arg("output_padding"), arg("dilation"), arg("groups"),
        "Validates a transposed convolution's geometry (torch's rules) and returns [N, C_out, OH, OW].");
  m.def("deconv2d_forward", &py_forward, arg("input"), arg("weight"), arg("bias"), arg("out"), arg("stride"),
        arg("padding"), arg("output_padding"), arg("dilation"), arg("groups"), py::kw_only(), arg("stream") = 0,
        "out = conv_transpose2d(input, weight, bias); weight [C_in, C_out / groups, kH, kW], bias [C_out] or None; "
        "input and out C-contiguous or (CPU) channels-last; float16 / bfloat16 on the CPU.");
  m.def("deconv2d_backward", &py_backward, arg("grad_output"), arg("input"), arg("weight"), arg("grad_input"),
        arg("grad_weight"), arg("grad_bias"), arg("stride"), arg("padding"), arg("output_padding"), arg("dilation"),
        arg("groups"), py::kw_only(), arg("stream") = 0,
        "Writes the gradients that are not None (grad_weight needs input) in one pass over grad_output.");
  m.def(
      "deconv2d_grad_input",
      [](py::handle g, py::handle w, py::handle gi, Pair st, Pair pa, Pair op, Pair di, int64_t gr, uintptr_t s) {
        py_backward(g, py::none(), w, gi, py::none(), py::none(), st, pa, op, di, gr, s);
      },
      arg("grad_output"), arg("weight"), arg("grad_input"), arg("stride"), arg("padding"), arg("output_padding"),
      arg("dilation"), arg("groups"), py::kw_only(), arg("stream") = 0, "grad_input [N, C_in, H, W] of the output.");
  m.def(
      "deconv2d_grad_weight",
      [](py::handle g, py::handle x, py::handle w, py::handle gw, Pair st, Pair pa, Pair op, Pair di, int64_t gr,
         uintptr_t s) { py_backward(g, x, w, py::none(), gw, py::none(), st, pa, op, di, gr, s); },
      arg("grad_output"), arg("input"), arg("weight"), arg("grad_weight"), arg("stride"), arg("padding"),
      arg("output_padding"), arg("dilation"), arg("groups"), py::kw_only(), arg("stream") = 0,
      "grad_weight [C_in, C_out / groups, kH, kW] (weight gives only its shape).");
  m.def(
      "deconv2d_grad_bias",
      [](py::handle g, py::handle gb, uintptr_t s) {
        Array grad_out = as_array(g, "grad_output"), out = as_output(gb, "grad_bias");
        check_float_or_half(*grad_out);
        check_operand(*out, *grad_out);
        check_ndim(*grad_out, 4, "[N, C_out, OH, OW]");
        check_out_shape(*out, {grad_out->size(1)}, "[C_out]");
        const int64_t n = grad_out->size(0), c = grad_out->size(1), oh = grad_out->size(2), ow = grad_out->size(3);
        const DeconvShape shape = deconv_bias_shape(n, c, oh, ow);
        void* stream = reinterpret_cast<void*>(s);
        (void)stream;
        ReleaseGil nogil;
        CONVLOC_DISPATCH_FLOAT_OR_HALF(*grad_out, [&] {
          using T = scalar_t;
          const T* gp = grad_out->ptr<T>();
          T* o = out->ptr<T>();
          CONVLOC_ON_DEVICE_OR_HALF(
              *grad_out, deconv2d_backward_cpu<T>(shape, gp, nullptr, nullptr, nullptr, nullptr, o),
              deconv2d_backward_cuda<T>, shape, gp, nullptr, nullptr, nullptr, nullptr, o, stream);
        });
      },
      arg("grad_output"), arg("grad_bias"), py::kw_only(), arg("stream") = 0,
      "grad_bias [C_out] = grad_output summed over N, OH, OW.");
}

}  // namespace convloc
