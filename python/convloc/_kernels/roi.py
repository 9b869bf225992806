"""RoI pool / RoI align kernels, forward and (deterministic) backward.

The CPU kernels take float16 / bfloat16 (computed in float32) and read a channels-last input as it
is; CUDA ones get float32 copies of half arrays and a C-contiguous input.
"""

from __future__ import annotations

from collections.abc import Sequence

import convloc._C as _C
from convloc._kernels import arrays as A
from convloc._kernels.arrays import Array


def _dims(input: Array, rois: Array) -> tuple[int, int]:
    # (K, C) for the output shape; anything malformed gets 0 and is reported by the kernel's checks.
    k = rois.shape[0] if rois.ndim == 2 else 0
    c = input.shape[1] if input.ndim == 4 else 0
    return k, c


def _compact_grad(grad: Array) -> Array:
    """grad with its broadcast (stride-0) dimensions cut to size 1, contiguous: autograd's
    gradient of ``out.sum()`` is an expanded scalar, and _C broadcasts sizes of 1 itself."""
    strides = grad.stride() if A.is_torch(grad) else grad.strides
    grad = grad[tuple(slice(0, 1) if s == 0 else slice(None) for s in strides)]
    # An empty array keeps odd strides through .contiguous(), which _C would refuse.
    return A.empty(grad, tuple(grad.shape)) if 0 in tuple(grad.shape) else A.prepare(grad)


def roi_pool(input: Array, rois: Array, spatial_scale: float, ph: int, pw: int) -> Array:
    half, (input, rois) = A.float32_for_half(("input", input), ("boxes", rois), cpu_has_half=True)
    input, rois = A.prepare_feature_map(input), A.prepare(rois)
    k, c = _dims(input, rois)
    out = A.empty(input, (k, c, ph, pw))
    _C.roi_pool_forward(input, rois, spatial_scale, ph, pw, out, stream=A.stream(input))
    return A.restore_half(out, half)


def roi_pool_backward(grad: Array, rois: Array, input: Array, spatial_scale: float) -> Array:
    """Gradient w.r.t. input; each bin's argmax is recomputed from input, not stored."""
    ph, pw = grad.shape[2:]
    half, (grad, rois, input) = A.float32_for_half(
        ("grad", grad), ("boxes", rois), ("input", input), cpu_has_half=True
    )
    grad, rois, input = _compact_grad(grad), A.prepare(rois), A.prepare_feature_map(input)
    grad_input = A.empty(input, tuple(input.shape))
    _C.roi_pool_backward(grad, rois, input, spatial_scale, ph, pw, grad_input, stream=A.stream(input))
    return A.restore_half(grad_input, half)


def roi_align(
    input: Array,
    rois: Array,
    spatial_scale: float,
    ph: int,
    pw: int,
    sampling_ratio: int,
    aligned: bool,
) -> Array:
    half, (input, rois) = A.float32_for_half(("input", input), ("boxes", rois), cpu_has_half=True)
    input, rois = A.prepare_feature_map(input), A.prepare(rois)
    k, c = _dims(input, rois)
    out = A.empty(input, (k, c, ph, pw))
    _C.roi_align_forward(
        input, rois, spatial_scale, ph, pw, sampling_ratio, aligned, out, stream=A.stream(input)
    )
    return A.restore_half(out, half)


def roi_align_backward(
    grad: Array,
    rois: Array,
    input_shape: Sequence[int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Array:
    ph, pw = grad.shape[2:]
    half, (grad, rois) = A.float32_for_half(("grad", grad), ("boxes", rois), cpu_has_half=True)
    grad, rois = _compact_grad(grad), A.prepare(rois)
    grad_input = A.empty(grad, tuple(input_shape))
    _C.roi_align_backward(
        grad, rois, spatial_scale, ph, pw, sampling_ratio, aligned, grad_input, stream=A.stream(grad)
    )
    return A.restore_half(grad_input, half)
