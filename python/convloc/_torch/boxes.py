"""torch.library registrations of the box ops. ``box_area`` and ``box_iou`` are differentiable
with respect to the boxes (their gradients are the derivatives of the same formulas, in torch);
``nms`` and ``batched_nms`` return indices."""

from __future__ import annotations

import torch
from torch import Tensor

from convloc._kernels import boxes as kernels
from convloc._torch.autocast import run_in_float32


@torch.library.custom_op("convloc::box_area", mutates_args=())
def box_area(boxes: Tensor) -> Tensor:
    return kernels.box_area(boxes)


@box_area.register_fake
def _(boxes):
    return boxes.new_empty((boxes.shape[0],))


def _area(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """The IoU formula of the kernel, written with torch ops for its derivatives."""
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (_area(boxes1)[:, None] + _area(boxes2)[None, :] - inter)


def _box_area_backward(ctx, grad):
    (boxes,) = ctx.saved_tensors
    with torch.enable_grad():
        b = boxes.detach().requires_grad_()
        (g,) = torch.autograd.grad(_area(b), b, grad)
    return g


def _box_iou_backward(ctx, grad):
    boxes1, boxes2 = ctx.saved_tensors
    with torch.enable_grad():
        b1, b2 = boxes1.detach().requires_grad_(), boxes2.detach().requires_grad_()
        g1, g2 = torch.autograd.grad(_iou(b1, b2), (b1, b2), grad)
    return g1, g2


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


box_area.register_autograd(_box_area_backward, setup_context=_save_inputs)


@torch.library.custom_op("convloc::box_iou", mutates_args=())
def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return kernels.box_iou(boxes1, boxes2)


@box_iou.register_fake
def _(boxes1, boxes2):
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))


box_iou.register_autograd(_box_iou_backward, setup_context=_save_inputs)


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

run_in_float32("box_area", box_area, same_dtype_out=False)
run_in_float32("box_iou", box_iou, same_dtype_out=False)
run_in_float32("nms", nms, same_dtype_out=False)
run_in_float32("batched_nms", batched_nms, same_dtype_out=False)
