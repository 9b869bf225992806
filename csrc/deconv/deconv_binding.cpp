#include <pybind11/stl.h>

#include <array>
#include <vector>

#include "core/py_array.h"
#include "core/py_gil.h"
#include "deconv/deconv_ops.h"

namespace convloc {
namespace {

using py::arg;
using Pair = std::array<int64_t, 2>;

void* as_stream(uintptr_t s) { return reinterpret_cast<void*>(s); }
const TensorView* optional(const Array& a) { return a.owner.is_none() ? nullptr : &a.view; }

std::vector<int64_t> py_output_shape(const std::vector<int64_t>& in, const std::vector<int64_t>& wt, Pair stride,
                                     Pair padding, Pair output_padding, Pair dilation, int64_t groups) {
  const DeconvShape s = ops::deconv2d_geometry(in, wt, {stride, padding, output_padding, dilation, groups});
  return {s.n, s.c_out, s.oh, s.ow};
}

void py_forward(py::handle input_obj, py::handle weight_obj, py::handle bias_obj, py::handle out_obj, Pair stride,
                Pair padding, Pair output_padding, Pair dilation, int64_t groups, uintptr_t stream) {
  Array input = as_feature_map(input_obj, "input"), weight = as_array(weight_obj, "weight");
  Array bias = as_optional_array(bias_obj, "bias"), out = as_feature_map(out_obj, "out", true);
  ReleaseGil nogil;
  ops::deconv2d_forward(*input, *weight, optional(bias), *out, {stride, padding, output_padding, dilation, groups},
                        as_stream(stream));
}

// Any of input (needed for grad_weight only), grad_input, grad_weight, grad_bias may be None.
// The input's shape comes from input or grad_input.
void py_backward(py::handle grad_out_obj, py::handle input_obj, py::handle weight_obj, py::handle gi_obj,
                 py::handle gw_obj, py::handle gb_obj, Pair stride, Pair padding, Pair output_padding, Pair dilation,
                 int64_t groups, uintptr_t stream) {
  Array grad_out = as_array(grad_out_obj, "grad_output"), weight = as_array(weight_obj, "weight");
  Array input = as_optional_array(input_obj, "input");
  const auto output = [](py::handle obj, const char* name) {
    return obj.is_none() ? as_optional_array(obj, name) : as_output(obj, name);
  };
  Array gi = output(gi_obj, "grad_input"), gw = output(gw_obj, "grad_weight"), gb = output(gb_obj, "grad_bias");
  ReleaseGil nogil;
  ops::deconv2d_backward(*grad_out, optional(input), *weight, optional(gi), optional(gw), optional(gb),
                         {stride, padding, output_padding, dilation, groups}, as_stream(stream));
}

void py_grad_bias(py::handle grad_out_obj, py::handle gb_obj, uintptr_t stream) {
  Array grad_out = as_array(grad_out_obj, "grad_output"), out = as_output(gb_obj, "grad_bias");
  ReleaseGil nogil;
  ops::deconv2d_grad_bias(*grad_out, *out, as_stream(stream));
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
  m.def("deconv2d_grad_bias", &py_grad_bias, arg("grad_output"), arg("grad_bias"), py::kw_only(), arg("stream") = 0,
        "grad_bias [C_out] = grad_output summed over N, OH, OW.");
}

}  // namespace convloc
