"""Region-of-interest pooling: Fast R-CNN's RoI max pooling and Mask R-CNN's RoI align.

Signatures and semantics are torchvision's (``torchvision.ops.roi_pool`` / ``roi_align``) and
the CPU results match torchvision's CPU kernels bit for bit, gradients included:

- ``roi_pool``: corners ``round(coord * spatial_scale)`` (half away from zero), size
  ``max(x2 - x1 + 1, 1)``, bin ``i`` spans ``[floor(i * bin), ceil((i + 1) * bin))`` from the
  corner, clipped to the map; an empty bin gives 0; the first maximum of a bin wins.
- ``roi_align``: bilinear samples on a ``grid_h x grid_w`` grid per bin, averaged; the grid is
  ``sampling_ratio`` per axis, or ``ceil(roi_size / output_size)`` when ``sampling_ratio <= 0``;
  ``aligned=True`` shifts the box by -0.5 pixel; samples outside ``[-1, size]`` count as 0.

Boxes are a ``[K, 5]`` array of ``(batch index, x1, y1, x2, y2)`` or a list of ``[K_i, 4]``
arrays, one per image, in input-image coordinates (``spatial_scale`` maps them onto the
feature map). Invalid boxes (NaN/inf, x2 < x1 or y2 < y1, a batch index that is not an
integer in range) raise ``ValueError``.

Gradients (torch) are deterministic on CPU and CUDA: the backward kernels are gathers /
owner-computes without atomics, summing each input cell's contributions in a fixed order
(roi, bin row, bin column, sample row, sample column, tap), so they do not depend on the thread
count, and the CUDA gradient equals the CPU one bit for bit (and torchvision's CPU gradient).
``roi_pool``'s backward recomputes each bin's argmax from the input that autograd keeps anyway,
rather than storing a [K, C, PH, PW] index array; broadcast output gradients (``out.sum()``) are
read in place.

NumPy and CuPy arrays get the forward results; torch tensors go through the registered
``convloc::roi_pool`` / ``convloc::roi_align`` ops (autograd, ``torch.compile``).
"""

from __future__ import annotations

from collections.abc import Sequence

from convloc import _C
from convloc import _bridge as B
from convloc._bridge import Array

__all__ = ["roi_pool", "roi_align"]


def roi_pool(
    input: Array,
    boxes: Array | Sequence[Array],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> Array:
    """RoI max pooling.

    Args:
        input: [B, C, H, W] float32/float64 feature map.
        boxes: [K, 5] (batch index, x1, y1, x2, y2), or a list of B arrays [K_i, 4]; input's
            dtype and device.
        output_size: PH (square) or (PH, PW).
        spatial_scale: feature-map cells per input pixel (e.g. 1/16).

    Returns:
        [K, C, PH, PW], input's framework, dtype and device.
    """
    input, rois = B.as_array(input, "input"), _as_rois(boxes, input)
    ph, pw = _pair(output_size)
    scale = B.as_float(spatial_scale, "spatial_scale")
    if B.is_torch(input):
        return B.torch_op("roi_pool")(input, rois, scale, ph, pw)
    return _roi_pool(input, rois, scale, ph, pw)


def roi_align(
    input: Array,
    boxes: Array | Sequence[Array],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Array:
    """RoI align: each output cell is the mean of bilinear samples of its bin.

    Args:
        input: [B, C, H, W] float32/float64 feature map.
        boxes: [K, 5] (batch index, x1, y1, x2, y2), or a list of B arrays [K_i, 4].
        output_size: PH (square) or (PH, PW).
        spatial_scale: feature-map cells per input pixel.
        sampling_ratio: samples per bin along each axis; <= 0 means ceil(roi_size / output_size).
        aligned: shift the box by -0.5 so that pixel centres line up (Detectron2's choice).

    Returns:
        [K, C, PH, PW], input's framework, dtype and device.
    """
    input, rois = B.as_array(input, "input"), _as_rois(boxes, input)
    ph, pw = _pair(output_size)
    scale = B.as_float(spatial_scale, "spatial_scale")
    ratio = _int(sampling_ratio, "sampling_ratio")
    if B.is_torch(input):
        return B.torch_op("roi_align")(input, rois, scale, ph, pw, ratio, bool(aligned))
    return _roi_align(input, rois, scale, ph, pw, ratio, bool(aligned))


def _int(x, name: str) -> int:
    if isinstance(x, bool) or not hasattr(x, "__index__"):
        raise TypeError(f"{name}: expected an integer, got {type(x).__name__}")
    return int(x)


def _pair(output_size) -> tuple[int, int]:
    size = (
        tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    )
    if len(size) != 2:
        raise ValueError(f"output_size: expected an int or a pair (h, w), got {output_size!r}")
    h, w = (_int(s, "output_size") for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"output_size: expected positive sizes, got ({h}, {w})")
    return h, w


def _as_rois(boxes, input) -> Array:
    """[K, 5] rois from a [K, 5] array or a list of per-image [K_i, 4] arrays."""
    if not isinstance(boxes, (list, tuple)):
        boxes = B.as_array(boxes, "boxes")
        B.same_framework(("input", input), ("boxes", boxes))
        return boxes
    parts = [B.as_array(b, f"boxes[{i}]") for i, b in enumerate(boxes)]
    for i, b in enumerate(parts):
        B.same_framework(("input", input), (f"boxes[{i}]", b))
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes[{i}]: expected shape [K, 4], got {list(b.shape)}")
    if B.is_torch(input):
        import torch

        if not parts:
            return input.new_empty((0, 5))
        return torch.cat(
            [torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(parts)]
        )
    xp = _namespace(input)
    if not parts:
        return xp.empty((0, 5), dtype=input.dtype)
    return xp.concatenate(
        [xp.concatenate([xp.full_like(b[:, :1], i), b], 1) for i, b in enumerate(parts)]
    )


def _namespace(x):
    if B.is_cupy(x):
        import cupy

        return cupy
    import numpy

    return numpy


def _dims(input: Array, rois: Array) -> tuple[int, int]:
    # (K, C) for the output shape; anything malformed gets 0 and is reported by the kernel's checks.
    k = rois.shape[0] if rois.ndim == 2 else 0
    c = input.shape[1] if input.ndim == 4 else 0
    return k, c


def _compact_grad(grad: Array) -> Array:
    """grad with its broadcast (stride-0) dimensions cut to size 1, contiguous: autograd's
    gradient of ``out.sum()`` is an expanded scalar, and _C broadcasts sizes of 1 itself."""
    strides = grad.stride() if B.is_torch(grad) else grad.strides
    grad = grad[tuple(slice(0, 1) if s == 0 else slice(None) for s in strides)]
    # An empty array keeps odd strides through .contiguous(), which _C would refuse.
    return B.empty(grad, tuple(grad.shape)) if 0 in tuple(grad.shape) else B.prepare(grad)


# Framework-generic implementations; the torch ops in convloc.nn call these too.


def _roi_pool(input: Array, rois: Array, spatial_scale: float, ph: int, pw: int) -> Array:
    input, rois = B.prepare(input), B.prepare(rois)
    k, c = _dims(input, rois)
    out = B.empty(input, (k, c, ph, pw))
    _C.roi_pool_forward(input, rois, spatial_scale, ph, pw, out, stream=B.stream(input))
    return out


def _roi_pool_backward(grad: Array, rois: Array, input: Array, spatial_scale: float) -> Array:
    ph, pw = grad.shape[2:]
    grad, rois, input = _compact_grad(grad), B.prepare(rois), B.prepare(input)
    grad_input = B.empty(input, tuple(input.shape))
    _C.roi_pool_backward(
        grad, rois, input, spatial_scale, ph, pw, grad_input, stream=B.stream(input)
    )
    return grad_input


def _roi_align(
    input: Array,
    rois: Array,
    spatial_scale: float,
    ph: int,
    pw: int,
    sampling_ratio: int,
    aligned: bool,
) -> Array:
    input, rois = B.prepare(input), B.prepare(rois)
    k, c = _dims(input, rois)
    out = B.empty(input, (k, c, ph, pw))
    _C.roi_align_forward(
        input, rois, spatial_scale, ph, pw, sampling_ratio, aligned, out, stream=B.stream(input)
    )
    return out


def _roi_align_backward(
    grad: Array,
    rois: Array,
    input_shape: Sequence[int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Array:
    ph, pw = grad.shape[2:]
    grad, rois = _compact_grad(grad), B.prepare(rois)
    grad_input = B.empty(grad, tuple(input_shape))
    _C.roi_align_backward(
        grad,
        rois,
        spatial_scale,
        ph,
        pw,
        sampling_ratio,
        aligned,
        grad_input,
        stream=B.stream(grad),
    )
    return grad_input
