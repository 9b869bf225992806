"""Boxes in (x1, y1, x2, y2) form: area, IoU, non-maximum suppression.

Semantics follow ``torchvision.ops``: widths are ``x2 - x1`` (no +1), a box is suppressed
when its IoU with a kept box is strictly greater than the threshold, kept indices come in
descending score order with ties kept in index order. Every function takes NumPy, PyTorch, CuPy,
JAX or any other DLPack producer's arrays and returns the same kind; torch calls go through
registered ``torch.library`` ops, so they work under ``torch.compile``, and JAX arrays through XLA
FFI targets, so they work under ``jax.jit`` and ``jax.vmap`` (nms there in its padded form:
``max_output_size`` and ``padded=True``, as TensorFlow's ``non_max_suppression_padded``).

Invalid boxes (NaN, inf, x2 < x1 or y2 < y1) and NaN scores raise ``ValueError``: a NaN
score has no place in a ranking, and torchvision's result for it depends on its sort.
"""

from __future__ import annotations

from convloc._kernels import arrays as A
from convloc._kernels import boxes as kernels
from convloc._kernels.args import integer, number
from convloc._kernels.arrays import Array
from convloc.ops._tracing import fx_leaf

__all__ = ["box_area", "box_iou", "nms", "batched_nms"]


@fx_leaf
@A.accepts_any_framework
def box_area(boxes: Array) -> Array:
    """Areas of boxes [N, 4] → [N], in the boxes' dtype (integer boxes: int32 or int64, as
    torchvision)."""
    boxes = A.as_array(boxes, "boxes")
    if _is_integer(boxes):
        area = box_area(A.prepare(boxes, "float64"))  # exact below 2**26 per coordinate
        return A.prepare(area, "int64" if A.dtype_name(boxes) in ("int64", "uint32", "uint64") else "int32")
    if A.is_jax(boxes):
        from convloc._jax import boxes as jax_ops

        return jax_ops.box_area(boxes)
    if A.is_torch(boxes):
        from convloc._torch import boxes as torch_ops

        return torch_ops.box_area(boxes)
    return kernels.box_area(boxes)


@fx_leaf
@A.accepts_any_framework
def box_iou(boxes1: Array, boxes2: Array) -> Array:
    """Pairwise IoU of boxes1 [N, 4] and boxes2 [M, 4] → [N, M] (NaN where both boxes are empty);
    float32 for integer boxes, as torchvision."""
    boxes1, boxes2 = A.as_array(boxes1, "boxes1"), A.as_array(boxes2, "boxes2")
    A.same_framework(("boxes1", boxes1), ("boxes2", boxes2))
    if _is_integer(boxes1) and _is_integer(boxes2):
        iou = box_iou(A.prepare(boxes1, "float64"), A.prepare(boxes2, "float64"))
        return A.prepare(iou, "float32")
    if A.is_jax(boxes1, boxes2):
        from convloc._jax import boxes as jax_ops

        return jax_ops.box_iou(boxes1, boxes2)
    if A.is_torch(boxes1):
        from convloc._torch import boxes as torch_ops

        return torch_ops.box_iou(boxes1, boxes2)
    return kernels.box_iou(boxes1, boxes2)


@fx_leaf
@A.accepts_any_framework
def nms(
    boxes: Array,
    scores: Array,
    iou_threshold: float,
    max_output_size: int | None = None,
    padded: bool = False,
):
    """Greedy non-maximum suppression.

    Args:
        boxes: [N, 4] float32/float64, or float16/bfloat16 (run in float32) (x1, y1, x2, y2).
        scores: [N], same dtype; NaN is refused.
        iou_threshold: in [0, 1]; a box is dropped when IoU > threshold with a kept box.
        max_output_size: keep at most this many (the best).
        padded: return ``(indices, count)``: the kept indices padded with -1 to ``max_output_size``
            and their number, fixed-size arrays (what ``jax.jit`` and ``vmap`` need).

    Returns:
        int64 [K] indices of the kept boxes, highest score first (JAX: its default integer type);
        or, padded, ``(indices [max_output_size], count)``.
    """
    boxes, scores = A.as_array(boxes, "boxes"), A.as_array(scores, "scores")
    limit = _limit(max_output_size, padded)
    threshold = number(iou_threshold, "iou_threshold")
    if A.is_jax(boxes, scores):
        from convloc._jax import boxes as jax_ops

        return jax_ops.nms(boxes, scores, None, threshold, limit, padded)
    A.same_framework(("boxes", boxes), ("scores", scores))
    if A.is_torch(boxes):
        from convloc._torch import boxes as torch_ops

        return _limited(torch_ops.nms(boxes, scores, threshold), limit, padded)
    return _limited(kernels.nms(boxes, scores, None, threshold), limit, padded)


@fx_leaf
@A.accepts_any_framework
def batched_nms(
    boxes: Array,
    scores: Array,
    idxs: Array,
    iou_threshold: float,
    max_output_size: int | None = None,
    padded: bool = False,
):
    """NMS done independently per category: boxes with different ``idxs`` never suppress each other.

    Args:
        boxes: [N, 4]; scores: [N]; idxs: [N] integer category of each box.
        max_output_size, padded: as for :func:`nms`.

    Returns:
        int64 [K] indices of the kept boxes, highest score first (across categories); or, padded,
        ``(indices [max_output_size], count)``.
    """
    boxes, scores, idxs = (
        A.as_array(a, n) for a, n in ((boxes, "boxes"), (scores, "scores"), (idxs, "idxs"))
    )
    limit = _limit(max_output_size, padded)
    threshold = number(iou_threshold, "iou_threshold")
    if A.is_jax(boxes, scores, idxs):
        from convloc._jax import boxes as jax_ops

        return jax_ops.nms(boxes, scores, idxs, threshold, limit, padded)
    A.same_framework(("boxes", boxes), ("scores", scores), ("idxs", idxs))
    if A.is_torch(boxes):
        from convloc._torch import boxes as torch_ops

        return _limited(torch_ops.batched_nms(boxes, scores, idxs, threshold), limit, padded)
    return _limited(kernels.nms(boxes, scores, idxs, threshold), limit, padded)


def _limit(max_output_size, padded: bool) -> int | None:
    if max_output_size is None:
        if padded:
            raise ValueError("max_output_size: padded=True needs the size to pad to")
        return None
    return integer(max_output_size, "max_output_size", 0)


def _limited(keep: Array, limit: int | None, padded: bool):
    """keep's first ``limit``; padded: (those padded with -1 to ``limit``, their count)."""
    if limit is None:
        return keep
    keep = keep[:limit]
    if not padded:
        return keep
    out = A.empty(keep, (limit,))
    out[...] = -1
    out[: keep.shape[0]] = keep
    count = A.empty(keep, ())
    count[...] = keep.shape[0]
    return out, count


def _is_integer(boxes: Array) -> bool:
    return A.dtype_name(boxes).startswith(("int", "uint"))
