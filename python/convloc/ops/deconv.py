"""Transposed convolution ("deconvolution") and the FCN upsampling helpers.

``conv_transpose2d`` has exactly the semantics, argument order and weight layout of
``torch.nn.functional.conv_transpose2d``: input [N, C_in, H, W] (or unbatched [C_in, H, W]),
weight [C_in, C_out / groups, kH, kW], output [N, C_out, OH, OW] with
``OH = (H - 1) * stride - 2 * padding + dilation * (kH - 1) + output_padding + 1``.
Torch tensors go through the registered ``convloc::conv_transpose2d`` op (differentiable), JAX
arrays through XLA FFI targets (``jax.jit``, ``jax.grad``, ``vmap``).

``bilinear_kernel`` and ``crop_like`` are the two other pieces of FCN's upsampling: the
deconvolution weights FCN initialises with, and its Crop layer that aligns the upsampled
score map with the input image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np

from convloc._kernels import arrays as A
from convloc._kernels import deconv as kernels
from convloc._kernels.args import check_fits, int_pair, integer
from convloc._kernels.arrays import Array
from convloc.ops._tracing import fx_leaf

__all__ = ["conv_transpose2d", "bilinear_kernel", "crop_like"]

IntPair = Union[int, Sequence[int]]


@fx_leaf
@A.accepts_any_framework
def conv_transpose2d(
    input: Array,
    weight: Array,
    bias: Array | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    groups: int = 1,
    dilation: IntPair = 1,
) -> Array:
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    Args:
        input: [N, C_in, H, W] or [C_in, H, W], float32 or float64, or float16/bfloat16
            (computed in float32); C-contiguous or channels-last (the output follows torch's
            layout rule).
        weight: [C_in, C_out / groups, kH, kW], same dtype.
        bias: [C_out] or None.
        stride, padding, output_padding, dilation: an int or a pair (height, width).
            output_padding must be smaller than stride or dilation in each dimension.
        groups: C_in must be divisible by it; C_out = groups * weight.shape[1].

    Returns:
        [N, C_out, OH, OW] (or [C_out, OH, OW] for an unbatched input).
    """
    input, weight = A.as_array(input, "input"), A.as_array(weight, "weight")
    bias = None if bias is None else A.as_array(bias, "bias")
    A.same_framework(("input", input), ("weight", weight), ("bias", bias))
    geometry = _geometry(stride, padding, output_padding, groups, dilation)
    unbatched = input.ndim == 3
    if unbatched:
        input = input[None]
    if A.is_jax(input, weight, bias):
        from convloc._jax import deconv as jax_ops

        out = jax_ops.conv_transpose2d(input, weight, bias, *geometry)
    elif A.is_torch(input):
        from convloc._torch import deconv as torch_ops

        out = torch_ops.conv_transpose2d(input, weight, bias, *geometry)
    else:
        out = kernels.conv_transpose2d(input, weight, bias, *geometry)
    return out[0] if unbatched else out


def bilinear_kernel(channels: int, factor: int, dtype: str = "float32") -> np.ndarray:
    """FCN's bilinear upsampling weights for a per-channel (grouped) transposed convolution.

    The kernel is ``size = 2 * factor - factor % 2`` wide; tap t weighs ``1 - |t - c| / factor``
    in each direction, with c the kernel's centre. With stride ``factor`` (and
    ``groups = channels``) it interpolates bilinearly between input pixels.

    Returns:
        [channels, 1, size, size] NumPy array.
    """
    channels, factor = integer(channels, "channels", 1), integer(factor, "factor", 1)
    size = 2 * factor - factor % 2
    check_fits(
        channels * size * size * np.dtype(dtype).itemsize,
        "channels, factor",
        f"a [{channels}, 1, {size}, {size}] kernel",
    )
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - np.abs(np.arange(size) - centre) / factor
    kernel = np.outer(taps, taps).astype(dtype)
    return np.broadcast_to(kernel, (channels, 1, size, size)).copy()  # writable, one per channel


def crop_like(x: Array, reference: Array, offset: IntPair = 0) -> Array:
    """FCN's Crop layer: ``x[..., oy:oy + H, ox:ox + W]``, (H, W) = the reference's last two sizes.

    Args:
        x: [..., H_x, W_x] (any framework; the result is a view of it).
        reference: an array whose last two sizes give the crop (its values are not read).
        offset: int or (oy, ox), e.g. 19 after FCN-32s' 64 x 64 stride-32 upsampling.
    """
    oy, ox = int_pair(offset, "offset", 0)
    x, reference = A.as_array(x, "x"), A.as_array(reference, "reference")
    if x.ndim < 2 or reference.ndim < 2:
        raise ValueError("x, reference: expected at least 2 dimensions (..., H, W)")
    h, w = reference.shape[-2:]
    if oy + h > x.shape[-2] or ox + w > x.shape[-1]:
        raise ValueError(
            f"offset: a {h} x {w} crop at {(oy, ox)} does not fit in x of spatial size {tuple(x.shape[-2:])}"
        )
    return x[..., oy : oy + h, ox : ox + w]


def _geometry(stride, padding, output_padding, groups, dilation):
    """(stride, padding, output_padding, groups, dilation) as int pairs and an int."""
    return (
        list(int_pair(stride, "stride")),
        list(int_pair(padding, "padding")),
        list(int_pair(output_padding, "output_padding")),
        integer(groups, "groups"),
        list(int_pair(dilation, "dilation")),
    )
