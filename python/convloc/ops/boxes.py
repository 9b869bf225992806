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

from convloc._kernels import arrays as A
from convloc._kernels import boxes as kernels
from convloc._kernels.args import number
from convloc._kernels.arrays import Array
from convloc.ops._tracing import fx_leaf

__all__ = ["box_area", "box_iou", "nms", "batched_nms"]


@fx_leaf
def box_area(boxes: Array) -> Array:
    """Areas of boxes [N, 4] → [N], in the boxes' dtype (integer boxes: int32 or int64, as
    torchvision)."""
    boxes = A.as_array(boxes, "boxes")
    if _is_integer(boxes):
        area = box_area(A.prepare(boxes, "float64"))  # exact below 2**26 per coordinate
        return A.prepare(area, "int64" if A.dtype_name(boxes) in ("int64", "uint32", "uint64") else "int32")
    if A.is_torch(boxes):
        from convloc._torch import boxes as torch_ops

        return torch_ops.box_area(boxes)
    return kernels.box_area(boxes)


@fx_leaf
def box_iou(boxes1: Array, boxes2: Array) -> Array:
    """Pairwise IoU of boxes1 [N, 4] and boxes2 [M, 4] → [N, M] (NaN where both boxes are empty);
    float32 for integer boxes, as torchvision."""
    boxes1, boxes2 = A.as_array(boxes1, "boxes1"), A.as_array(boxes2, "boxes2")
    A.same_framework(("boxes1", boxes1), ("boxes2", boxes2))
    if _is_integer(boxes1) and _is_integer(boxes2):
        iou = box_iou(A.prepare(boxes1, "float64"), A.prepare(boxes2, "float64"))
        return A.prepare(iou, "float32")
    if A.is_torch(boxes1):
        from convloc._torch import boxes as torch_ops

        return torch_ops.box_iou(boxes1, boxes2)
    return kernels.box_iou(boxes1, boxes2)


@fx_leaf
def nms(boxes: Array, scores: Array, iou_threshold: float) -> Array:
    """Greedy non-maximum suppression.

    Args:
        boxes: [N, 4] float32/float64, or float16/bfloat16 (run in float32) (x1, y1, x2, y2).
        scores: [N], same dtype; NaN is refused.
        iou_threshold: in [0, 1]; a box is dropped when IoU > threshold with a kept box.

    Returns:
        int64 [K] indices of the kept boxes, highest score first.
    """
    boxes, scores = A.as_array(boxes, "boxes"), A.as_array(scores, "scores")
    A.same_framework(("boxes", boxes), ("scores", scores))
    iou_threshold = number(iou_threshold, "iou_threshold")
    if A.is_torch(boxes):
        from convloc._torch import boxes as torch_ops

        return torch_ops.nms(boxes, scores, iou_threshold)
    return kernels.nms(boxes, scores, None, iou_threshold)


@fx_leaf
def batched_nms(boxes: Array, scores: Array, idxs: Array, iou_threshold: float) -> Array:
    """NMS done independently per category: boxes with different ``idxs`` never suppress each other.

    Args:
        boxes: [N, 4]; scores: [N]; idxs: [N] integer category of each box.

    Returns:
        int64 [K] indices of the kept boxes, highest score first (across categories).
    """
    boxes, scores, idxs = (
        A.as_array(a, n) for a, n in ((boxes, "boxes"), (scores, "scores"), (idxs, "idxs"))
    )
    A.same_framework(("boxes", boxes), ("scores", scores), ("idxs", idxs))
    iou_threshold = number(iou_threshold, "iou_threshold")
    if A.is_torch(boxes):
        from convloc._torch import boxes as torch_ops

        return torch_ops.batched_nms(boxes, scores, idxs, iou_threshold)
    return kernels.nms(boxes, scores, idxs, iou_threshold)


def _is_integer(boxes: Array) -> bool:
    return A.dtype_name(boxes).startswith(("int", "uint"))
