// XLA FFI targets of conv_transpose2d, forward and backward (csrc/core/ffi.h). The bias (forward) and its gradient
// (backward) are optional: a trailing argument / result that the call has or has not.
#include "core/ffi.h"
#include "deconv/deconv_ops.h"

namespace convloc {
namespace {

using namespace ffi;  // arg, ret, Place, Ret, Span, xf
using Ints = xf::Span<const int64_t>;

std::array<int64_t, 2> pair(Ints v, const char* name) {
  if (v.size() != 2) fail_value(name, ": expected a pair (height, width), got ", v.size(), " values");
  return {v[0], v[1]};
}

DeconvParams params(Ints stride, Ints padding, Ints output_padding, Ints dilation, int64_t groups) {
  return {pair(stride, "stride"), pair(padding, "padding"), pair(output_padding, "output_padding"),
          pair(dilation, "dilation"), groups};
}

xf::Error forward_impl(Place p, xf::AnyBuffer input, xf::AnyBuffer weight, xf::RemainingArgs bias, Ints stride,
                       Ints padding, Ints output_padding, Ints dilation, int64_t groups, Ret out) {
  return ffi::guarded([&] {
    const DeconvParams geometry = params(stride, padding, output_padding, dilation, groups);
    std::vector<ffi::Operand> operands{ret(out, 4, "out"), arg(input, 4, "input"), arg(weight, 4, "weight")};
    if (bias.size() > 0) operands.push_back(arg(bias.get<xf::AnyBuffer>(0).value(), 1, "bias"));
    ffi::for_each_item(p, operands, [&](const auto& v) {
      ops::deconv2d_forward(v[1], v[2], v.size() > 3 ? &v[3] : nullptr, v[0], geometry, p.stream);
    });
  });
}

xf::Error backward_impl(Place p, xf::AnyBuffer grad_output, xf::AnyBuffer input, xf::AnyBuffer weight, Ints stride,
                        Ints padding, Ints output_padding, Ints dilation, int64_t groups, Ret grad_input,
                        Ret grad_weight, xf::RemainingRets grad_bias) {
  return ffi::guarded([&] {
    const DeconvParams geometry = params(stride, padding, output_padding, dilation, groups);
    std::vector<ffi::Operand> operands{ret(grad_input, 4, "grad_input"), ret(grad_weight, 4, "grad_weight"),
                                       arg(grad_output, 4, "grad_output"), arg(input, 4, "input"),
                                       arg(weight, 4, "weight")};
    if (grad_bias.size() > 0) operands.push_back(ret(grad_bias.get<xf::AnyBuffer>(0).value(), 1, "grad_bias"));
    ffi::for_each_item(p, operands, [&](const auto& v) {
      ops::deconv2d_backward(v[2], &v[3], v[4], &v[0], &v[1], v.size() > 5 ? &v[5] : nullptr, geometry, p.stream);
    });
  });
}

}  // namespace

CONVLOC_FFI_HANDLER(conv_transpose2d, forward_impl,
                    .Arg<xf::AnyBuffer>()
                        .Arg<xf::AnyBuffer>()
                        .RemainingArgs()
                        .Attr<Ints>("stride")
                        .Attr<Ints>("padding")
                        .Attr<Ints>("output_padding")
                        .Attr<Ints>("dilation")
                        .Attr<int64_t>("groups")
                        .Ret<xf::AnyBuffer>());
CONVLOC_FFI_HANDLER(conv_transpose2d_backward, backward_impl,
                    .Arg<xf::AnyBuffer>()
                        .Arg<xf::AnyBuffer>()
                        .Arg<xf::AnyBuffer>()
                        .Attr<Ints>("stride")
                        .Attr<Ints>("padding")
                        .Attr<Ints>("output_padding")
                        .Attr<Ints>("dilation")
                        .Attr<int64_t>("groups")
                        .Ret<xf::AnyBuffer>()
                        .Ret<xf::AnyBuffer>()
                        .RemainingRets());

std::vector<ffi::Target> deconv_ffi_targets() {
  return {CONVLOC_FFI_TARGET(conv_transpose2d), CONVLOC_FFI_TARGET(conv_transpose2d_backward)};
}

}  // namespace convloc
