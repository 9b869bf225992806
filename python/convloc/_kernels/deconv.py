"""Transposed-convolution kernels: forward, backward and the output geometry.

The CPU kernels take float16 / bfloat16 (computed in float32) and a channels-last input, and write
a channels-last output; CUDA ones get float32 copies of half arrays and C-contiguous arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import convloc._C as _C
from convloc._kernels import arrays as A
from convloc._kernels.args import check_fits
from convloc._kernels.arrays import Array


def output_shape(
    input_shape, weight_shape, stride, padding, output_padding, groups, dilation, itemsize: int | None = None
) -> list[int]:
    """[N, C_out, OH, OW] of a transposed convolution; ValueError for an invalid geometry (sizes
    beyond int64 included) or, given the output's ``itemsize``, for an output larger than this
    machine's memory."""
    shape = _C.deconv2d_output_shape(
        [int(s) for s in input_shape], [int(s) for s in weight_shape],
        stride, padding, output_padding, dilation, groups,
    )  # fmt: skip
    if itemsize is not None:
        check_fits(
            math.prod(shape) * itemsize,
            "stride, padding, output_padding, dilation",
            f"an output of shape {shape}",
        )
    return shape


def output_channels_last(input: Array, weight: Array) -> bool:
    """Whether the output is laid out channels-last: as torch's conv_transpose2d, when the input or
    the weight is."""
    return A.suggests_channels_last(input) or A.suggests_channels_last(weight)


def conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation) -> Array:
    channels_last = output_channels_last(input, weight)
    half, (input, weight, bias) = A.float32_for_half(
        ("input", input), ("weight", weight), ("bias", bias), cpu_has_half=True
    )
    input, weight = A.prepare_feature_map(input), A.prepare(weight)
    bias = None if bias is None else A.prepare(bias)
    shape = output_shape(
        input.shape, weight.shape, stride, padding, output_padding, groups, dilation, input.dtype.itemsize
    )
    # The CPU kernel writes channels-last itself; CUDA results are rearranged after.
    out = A.empty(input, tuple(shape), channels_last=channels_last and A.on_cpu(input))
    _C.deconv2d_forward(
        input, weight, bias, out, stride, padding, output_padding, dilation, groups,
        stream=A.stream(input),
    )  # fmt: skip
    if channels_last and not A.on_cpu(out):
        out = A.to_channels_last(out)
    return A.restore_half(out, half)


def conv_transpose2d_backward(
    grad_out, input, weight, stride, padding, output_padding, groups, dilation, mask: Sequence[bool]
) -> tuple[Array | None, Array | None, Array | None]:
    """(grad_input, grad_weight, grad_bias), each None where mask says it is not needed."""
    half, (grad_out, input, weight) = A.float32_for_half(
        ("grad_output", grad_out), ("input", input), ("weight", weight), cpu_has_half=True
    )
    grad_out, input, weight = A.prepare(grad_out), A.prepare(input), A.prepare(weight)
    gi = A.empty(input, tuple(input.shape)) if mask[0] else None
    gw = A.empty(weight, tuple(weight.shape)) if mask[1] else None
    gb = A.empty(grad_out, (grad_out.shape[1],)) if mask[2] else None
    if gi is not None or gw is not None or gb is not None:
        _C.deconv2d_backward(
            grad_out, input, weight, gi, gw, gb, stride, padding, output_padding, dilation, groups,
            stream=A.stream(grad_out),
        )  # fmt: skip
    return A.restore_half(gi, half), A.restore_half(gw, half), A.restore_half(gb, half)
