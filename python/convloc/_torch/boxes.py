"""torch.library registrations of the box ops (not differentiable: they return indices or
are used on detached boxes, as in torchvision)."""

from __future__ import annotations

import torch
from torch import Tensor

from convloc._kernels import boxes as kernels


@torch.library.custom_op("convloc::box_area", mutates_args=())
def box_area(boxes: Tensor) -> Tensor:
    return kernels.box_area(boxes)


@box_area.register_fake
def _(boxes):
    return boxes.new_empty((boxes.shape[0],))


@torch.library.custom_op("convloc::box_iou", mutates_args=())
def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return kernels.box_iou(boxes1, boxes2)


@box_iou.register_fake
def _(boxes1, boxes2):
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))


@torch.library.custom_op("convloc::nms", mutates_args=())
def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    return kernels.nms(boxes, scores, None, iou_threshold)


@torch.library.custom_op("convloc::batched_nms", mutates_args=())
def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    return kernels.nms(boxes, scores, idxs, iou_threshold)


def _kept_indices(boxes: Tensor) -> Tensor:
    # The number of kept boxes depends on the data: declare it as such.
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count,), dtype=torch.int64)


nms.register_fake(lambda boxes, scores, iou_threshold: _kept_indices(boxes))
batched_nms.register_fake(lambda boxes, scores, idxs, iou_threshold: _kept_indices(boxes))
