"""Region-of-interest pooling: Fast R-CNN's RoI max pooling and Mask R-CNN's RoI align.

Signatures and semantics are torchvision's (``torchvision.ops.roi_pool`` / ``roi_align``) and
the CPU results match torchvision's CPU kernels bit for bit, gradients included:

- ``roi_pool``: corners ``round(coord * spatial_scale)`` (half away from zero), size
  ``max(x2 - x1 + 1, 1)``, bin ``i`` spans ``[floor(i * bin), ceil((i + 1) * bin))`` from the
  corner, clipped to the map; an empty bin gives 0; the first maximum of a bin wins.
- ``roi_align``: bilinear samples on a ``grid_h x grid_w`` grid per bin, averaged; the grid is
  ``sampling_ratio`` per axis, or ``ceil(roi_size / output_size)`` when ``sampling_ratio <= 0``;
  ``aligned=True`` shifts the box by -0.5 pixel; samples outside ``[-1, size]`` count as 0. A grid
  of more than 65536 samples per bin along an axis, or of more than 2**20 samples along an axis of
  the output (output size x grid), is refused: ``sampling_ratio`` by name, an adaptive grid naming
  the box. The samples are summed in pieces, so memory does not grow with their number.

Boxes are a ``[K, 5]`` array of ``(batch index, x1, y1, x2, y2)`` or a list of ``[K_i, 4]``
arrays, one per image, in input-image coordinates (``spatial_scale`` maps them onto the
feature map). Invalid boxes (NaN/inf, x2 < x1 or y2 < y1, a batch index that is not an
integer in range) raise ``ValueError``, as do boxes whose coordinates times ``spatial_scale``
overflow the kernel's precision (float32 for float32 and half inputs) or, for ``roi_pool``, lie
beyond 2**29 pixels, and a ``spatial_scale`` that is not a positive finite number there. On the
CPU the kernels read a copy of the boxes taken before these checks: another thread writing to
them during a call cannot make the kernel read what was not checked.

Gradients (torch) are deterministic on CPU and CUDA: the backward kernels are gathers /
owner-computes without atomics, summing each input cell's contributions in a fixed order
(roi, bin row, bin column, sample row, sample column, tap), so they do not depend on the thread
count, and the CUDA gradient equals the CPU one bit for bit (and torchvision's CPU gradient).
``roi_pool``'s backward recomputes each bin's argmax from the input that autograd keeps anyway,
rather than storing a [K, C, PH, PW] index array; broadcast output gradients (``out.sum()``) are
read in place.

NumPy, CuPy and other DLPack producers' arrays get the forward results; torch tensors go through the
registered ``convloc::roi_pool`` / ``convloc::roi_align`` ops (autograd, ``torch.compile``), JAX
arrays through XLA FFI targets (``jax.jit``, ``jax.grad`` through the same backward kernels, ``vmap``).
"""

from __future__ import annotations

from collections.abc import Sequence

from convloc._kernels import arrays as A
from convloc._kernels import roi as kernels
from convloc._kernels.args import int_pair, integer, number
from convloc._kernels.arrays import Array
from convloc.ops._tracing import fx_leaf

__all__ = ["roi_pool", "roi_align"]


@fx_leaf
@A.accepts_any_framework
def roi_pool(
    input: Array,
    boxes: Array | Sequence[Array],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> Array:
    """RoI max pooling.

    Args:
        input: [B, C, H, W] float32/float64 feature map, or float16/bfloat16 (computed in
            float32); C-contiguous or channels-last.
        boxes: [K, 5] (batch index, x1, y1, x2, y2), or a list of B arrays [K_i, 4]; input's
            dtype and device.
        output_size: PH (square) or (PH, PW).
        spatial_scale: feature-map cells per input pixel (e.g. 1/16).

    Returns:
        [K, C, PH, PW], input's framework, dtype and device.
    """
    input, rois = A.as_array(input, "input"), _as_rois(boxes, input)
    ph, pw = int_pair(output_size, "output_size", 1, 2**20)
    scale = number(spatial_scale, "spatial_scale")
    if A.is_jax(input, rois):
        from convloc._jax import roi as jax_ops

        return jax_ops.roi_pool(input, rois, scale, ph, pw)
    if A.is_torch(input):
        from convloc._torch import roi as torch_ops

        return torch_ops.roi_pool(input, rois, scale, ph, pw)
    return kernels.roi_pool(input, rois, scale, ph, pw)


@fx_leaf
@A.accepts_any_framework
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
        input: [B, C, H, W] float32/float64 feature map, or float16/bfloat16 (computed in
            float32); C-contiguous or channels-last.
        boxes: [K, 5] (batch index, x1, y1, x2, y2), or a list of B arrays [K_i, 4].
        output_size: PH (square) or (PH, PW).
        spatial_scale: feature-map cells per input pixel.
        sampling_ratio: samples per bin along each axis; <= 0 means ceil(roi_size / output_size).
        aligned: shift the box by -0.5 so that pixel centres line up (Detectron2's choice).

    Returns:
        [K, C, PH, PW], input's framework, dtype and device.
    """
    input, rois = A.as_array(input, "input"), _as_rois(boxes, input)
    ph, pw = int_pair(output_size, "output_size", 1, 2**20)
    scale = number(spatial_scale, "spatial_scale")
    ratio = integer(sampling_ratio, "sampling_ratio")
    if A.is_jax(input, rois):
        from convloc._jax import roi as jax_ops

        return jax_ops.roi_align(input, rois, scale, ph, pw, ratio, bool(aligned))
    if A.is_torch(input):
        from convloc._torch import roi as torch_ops

        return torch_ops.roi_align(input, rois, scale, ph, pw, ratio, bool(aligned))
    return kernels.roi_align(input, rois, scale, ph, pw, ratio, bool(aligned))


def _as_rois(boxes, input) -> Array:
    """[K, 5] rois from a [K, 5] array or a list of per-image [K_i, 4] arrays."""
    if not isinstance(boxes, (list, tuple)):
        boxes = A.as_array(boxes, "boxes")
        A.same_framework(("input", input), ("boxes", boxes))
        return boxes
    parts = [A.as_array(b, f"boxes[{i}]") for i, b in enumerate(boxes)]
    for i, b in enumerate(parts):
        A.same_framework(("input", input), (f"boxes[{i}]", b))
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes[{i}]: expected shape [K, 4], got {list(b.shape)}")
    if A.is_torch(input):
        import torch

        if not parts:
            return input.new_empty((0, 5))
        return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(parts)])
    xp = A.namespace(input)
    if not parts:
        return xp.empty((0, 5), dtype=input.dtype)
    return xp.concatenate([xp.concatenate([xp.full_like(b[:, :1], i), b], 1) for i, b in enumerate(parts)])
