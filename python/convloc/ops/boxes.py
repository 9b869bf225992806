"""Boxes in (x1, y1, x2, y2) form: area, IoU, non-maximum suppression.

Semantics follow ``torchvision.ops``: widths are ``x2 - x1`` (no +1), a box is suppressed
when its IoU with a kept box is strictly greater than the threshold, kept indices come in
descending score order with ties kept in index order. Every function takes NumPy, PyTorch
or CuPy arrays and returns the same kind; torch calls go through registered ``torch.library``
ops, so they work under ``torch.compile``.

Invalid boxes (NaN, inf, x2 < x1 or y2 < y1) and NaN scores raise ``ValueError``: a NaN
score has no place in a ranking, and torchvision's result for it depends on its sort.
"""

from __future__ import annotations

from convloc import _C
from convloc import _bridge as B
from convloc._bridge import Array

__all__ = ["box_area", "box_iou", "nms", "batched_nms"]


def box_area(boxes: Array) -> Array:
    """Areas of boxes [N, 4] → [N]."""
    boxes = B.as_array(boxes, "boxes")
    if B.is_torch(boxes):
        return B.torch_op("box_area")(boxes)
    return _box_area(boxes)


def box_iou(boxes1: Array, boxes2: Array) -> Array:
    """Pairwise IoU of boxes1 [N, 4] and boxes2 [M, 4] → [N, M] (NaN where both boxes are empty)."""
    boxes1, boxes2 = B.as_array(boxes1, "boxes1"), B.as_array(boxes2, "boxes2")
    B.same_framework(("boxes1", boxes1), ("boxes2", boxes2))
    if B.is_torch(boxes1):
        return B.torch_op("box_iou")(boxes1, boxes2)
    return _box_iou(boxes1, boxes2)


def nms(boxes: Array, scores: Array, iou_threshold: float) -> Array:
    """Greedy non-maximum suppression.

    Args:
        boxes: [N, 4] float32/float64 (x1, y1, x2, y2).
        scores: [N], same dtype; NaN is refused.
        iou_threshold: in [0, 1]; a box is dropped when IoU > threshold with a kept box.

    Returns:
        int64 [K] indices of the kept boxes, highest score first.
    """
    boxes, scores = B.as_array(boxes, "boxes"), B.as_array(scores, "scores")
    B.same_framework(("boxes", boxes), ("scores", scores))
    if B.is_torch(boxes):
        return B.torch_op("nms")(boxes, scores, B.as_float(iou_threshold, "iou_threshold"))
    return _nms(boxes, scores, None, iou_threshold)


def batched_nms(boxes: Array, scores: Array, idxs: Array, iou_threshold: float) -> Array:
    """NMS done independently per category: boxes with different ``idxs`` never suppress each other.

    Args:
        boxes: [N, 4]; scores: [N]; idxs: [N] integer category of each box.

    Returns:
        int64 [K] indices of the kept boxes, highest score first (across categories).
    """
    boxes, scores, idxs = (
        B.as_array(a, n) for a, n in ((boxes, "boxes"), (scores, "scores"), (idxs, "idxs"))
    )
    B.same_framework(("boxes", boxes), ("scores", scores), ("idxs", idxs))
    if B.is_torch(boxes):
        return B.torch_op("batched_nms")(boxes, scores, idxs, B.as_float(iou_threshold, "iou_threshold"))
    return _nms(boxes, scores, idxs, iou_threshold)


# Framework-generic implementations; the torch ops in convloc.nn call these too.


def _box_area(boxes: Array) -> Array:
    boxes = B.prepare(boxes)
    out = B.empty(boxes, (boxes.shape[0],) if boxes.ndim else (0,))
    _C.box_area(boxes, out, stream=B.stream(boxes))
    return out


def _box_iou(boxes1: Array, boxes2: Array) -> Array:
    boxes1, boxes2 = B.prepare(boxes1), B.prepare(boxes2)
    shape = (boxes1.shape[0] if boxes1.ndim else 0, boxes2.shape[0] if boxes2.ndim else 0)
    out = B.empty(boxes1, shape)
    _C.box_iou(boxes1, boxes2, out, stream=B.stream(boxes1))
    return out


def _nms(boxes: Array, scores: Array, idxs: Array | None, iou_threshold: float) -> Array:
    boxes, scores = B.prepare(boxes), B.prepare(scores)
    if idxs is not None:
        if not B.dtype_name(idxs).startswith(("int", "uint")):
            raise TypeError(f"idxs: expected an integer array, got {B.dtype_name(idxs)}")
        idxs = B.prepare(idxs, "int64")
    keep = B.empty(boxes, (boxes.shape[0] if boxes.ndim else 0,), "int64")
    count = _C.nms(
        boxes, scores, idxs, B.as_float(iou_threshold, "iou_threshold"), keep, stream=B.stream(boxes)
    )
    return keep[:count].copy() if not B.is_torch(keep) else keep[:count].clone()
