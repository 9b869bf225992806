"""Box kernels: area, pairwise IoU, (batched) non-maximum suppression. float16 / bfloat16 boxes
are computed in float32: the CPU area and IoU kernels read and write them (an IoU matrix is large
next to the boxes), CUDA kernels and NMS get float32 copies made here (NMS returns indices only)."""

from __future__ import annotations

import convloc._C as _C
from convloc._kernels import arrays as A
from convloc._kernels.arrays import Array


def box_area(boxes: Array) -> Array:
    half, (boxes,) = A.float32_for_half(("boxes", boxes), cpu_has_half=True)
    boxes = A.prepare(boxes)
    out = A.empty(boxes, (boxes.shape[0],) if boxes.ndim else (0,))
    _C.box_area(boxes, out, stream=A.stream(boxes))
    return A.restore_half(out, half)


def box_iou(boxes1: Array, boxes2: Array) -> Array:
    half, (boxes1, boxes2) = A.float32_for_half(("boxes1", boxes1), ("boxes2", boxes2), cpu_has_half=True)
    boxes1, boxes2 = A.prepare(boxes1), A.prepare(boxes2)
    shape = (boxes1.shape[0] if boxes1.ndim else 0, boxes2.shape[0] if boxes2.ndim else 0)
    out = A.empty(boxes1, shape)
    _C.box_iou(boxes1, boxes2, out, stream=A.stream(boxes1))
    return A.restore_half(out, half)


def nms(boxes: Array, scores: Array, idxs: Array | None, iou_threshold: float) -> Array:
    """Kept indices (int64, highest score first); with ``idxs``, per category."""
    _, (boxes, scores) = A.float32_for_half(("boxes", boxes), ("scores", scores))
    boxes, scores = A.prepare(boxes), A.prepare(scores)
    if idxs is not None:
        if not A.dtype_name(idxs).startswith(("int", "uint")):
            raise TypeError(f"idxs: expected an integer array, got {A.dtype_name(idxs)}")
        idxs = A.prepare(idxs, None if A.dtype_name(idxs) in ("int32", "int64") else "int64")
    keep = A.empty(boxes, (boxes.shape[0] if boxes.ndim else 0,), "int64")
    count = _C.nms(boxes, scores, idxs, iou_threshold, keep, stream=A.stream(boxes))
    return keep[:count].copy() if not A.is_torch(keep) else keep[:count].clone()
