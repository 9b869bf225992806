"""torch.library registrations of RoI pool / RoI align (schema, fake kernel, autograd).

The backward ops run convloc's deterministic backward kernels (no atomics; fixed summation
order on CPU and CUDA, see :mod:`convloc.ops.roi`). Gradients flow to ``input`` only, as in
torchvision; the boxes get none.
"""

from __future__ import annotations

import torch
from torch import Tensor

from convloc._kernels import roi as kernels
from convloc._torch.autocast import run_in_float32


def _out_shape(input: Tensor, rois: Tensor, pooled_h: int, pooled_w: int):
    return (rois.shape[0], input.shape[1], pooled_h, pooled_w)


# ---- roi_pool ----


@torch.library.custom_op("convloc::roi_pool", mutates_args=())
def roi_pool(input: Tensor, rois: Tensor, spatial_scale: float, pooled_h: int, pooled_w: int) -> Tensor:
    return kernels.roi_pool(input, rois, spatial_scale, pooled_h, pooled_w)


@roi_pool.register_fake
def _(input, rois, spatial_scale, pooled_h, pooled_w):
    return input.new_empty(_out_shape(input, rois, pooled_h, pooled_w))


@torch.library.custom_op("convloc::roi_pool_backward", mutates_args=())
def roi_pool_backward(grad: Tensor, rois: Tensor, input: Tensor, spatial_scale: float) -> Tensor:
    """Gradient w.r.t. input; each bin's argmax is recomputed from input, not stored."""
    return kernels.roi_pool_backward(grad, rois, input, spatial_scale)


@roi_pool_backward.register_fake
def _(grad, rois, input, spatial_scale):
    return input.new_empty(input.shape)


def _roi_pool_setup(ctx, inputs, output):
    input, rois, spatial_scale = inputs[:3]
    ctx.save_for_backward(input, rois)
    ctx.spatial_scale = spatial_scale


def _roi_pool_grad(ctx, grad):
    input, rois = ctx.saved_tensors
    grad_input = torch.ops.convloc.roi_pool_backward(grad, rois, input, ctx.spatial_scale)
    return grad_input, None, None, None, None


roi_pool.register_autograd(_roi_pool_grad, setup_context=_roi_pool_setup)


# ---- roi_align ----


@torch.library.custom_op("convloc::roi_align", mutates_args=())
def roi_align(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_h: int,
    pooled_w: int,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    return kernels.roi_align(input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned)


@roi_align.register_fake
def _(input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned):
    return input.new_empty(_out_shape(input, rois, pooled_h, pooled_w))


@torch.library.custom_op("convloc::roi_align_backward", mutates_args=())
def roi_align_backward(
    grad: Tensor,
    rois: Tensor,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    batch: int,
    channels: int,
    height: int,
    width: int,
) -> Tensor:
    shape = (batch, channels, height, width)
    return kernels.roi_align_backward(grad, rois, shape, spatial_scale, sampling_ratio, aligned)


@roi_align_backward.register_fake
def _(grad, rois, spatial_scale, sampling_ratio, aligned, batch, channels, height, width):
    return grad.new_empty((batch, channels, height, width))


def _roi_align_setup(ctx, inputs, output):
    input, rois, spatial_scale, _, _, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.args = (spatial_scale, sampling_ratio, aligned, *input.shape)


def _roi_align_grad(ctx, grad):
    (rois,) = ctx.saved_tensors
    grad_input = torch.ops.convloc.roi_align_backward(grad, rois, *ctx.args)
    return grad_input, None, None, None, None, None, None


roi_align.register_autograd(_roi_align_grad, setup_context=_roi_align_setup)


run_in_float32("roi_pool", roi_pool, same_dtype_out=True)
run_in_float32("roi_align", roi_align, same_dtype_out=True)
