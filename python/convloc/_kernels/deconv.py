"""Transposed-convolution kernels: forward, backward and the output geometry."""

from __future__ import annotations

from collections.abc import Sequence

import convloc._C as _C
from convloc._kernels import arrays as A
from convloc._kernels.arrays import Array


def output_shape(input_shape, weight_shape, stride, padding, output_padding, groups, dilation) -> list[int]:
    """[N, C_out, OH, OW] of a transposed convolution; ValueError for an invalid geometry."""
    return _C.deconv2d_output_shape(
        [int(s) for s in input_shape], [int(s) for s in weight_shape],
        stride, padding, output_padding, dilation, groups,
    )  # fmt: skip


def conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation) -> Array:
    input, weight = A.prepare(input), A.prepare(weight)
    bias = None if bias is None else A.prepare(bias)
    shape = output_shape(input.shape, weight.shape, stride, padding, output_padding, groups, dilation)
    out = A.empty(input, tuple(shape))
    _C.deconv2d_forward(
        input, weight, bias, out, stride, padding, output_padding, dilation, groups,
        stream=A.stream(input),
    )  # fmt: skip
    return out


def conv_transpose2d_backward(
    grad_out, input, weight, stride, padding, output_padding, groups, dilation, mask: Sequence[bool]
) -> tuple[Array | None, Array | None, Array | None]:
    """(grad_input, grad_weight, grad_bias), each None where mask says it is not needed."""
    grad_out, input, weight = A.prepare(grad_out), A.prepare(input), A.prepare(weight)
    gi = A.empty(input, tuple(input.shape)) if mask[0] else None
    gw = A.empty(weight, tuple(weight.shape)) if mask[1] else None
    gb = A.empty(grad_out, (grad_out.shape[1],)) if mask[2] else None
    if gi is not None or gw is not None or gb is not None:
        _C.deconv2d_backward(
            grad_out, input, weight, gi, gw, gb, stride, padding, output_padding, dilation, groups,
            stream=A.stream(grad_out),
        )  # fmt: skip
    return gi, gw, gb
