"""torch.library registration of the transposed convolution (forward, fake, autograd through
convloc's backward kernels) and the ``ConvTranspose2d`` / ``BilinearUpsample`` modules."""

from typing import Optional

import torch
from torch import Tensor

from convloc._kernels import deconv as kernels
from convloc._torch.autocast import run_in_float32


@torch.library.custom_op("convloc::conv_transpose2d", mutates_args=())
def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    groups: int,
    dilation: list[int],
) -> Tensor:
    return kernels.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)


@conv_transpose2d.register_fake
def _(input, weight, bias, stride, padding, output_padding, groups, dilation):
    shape = kernels.output_shape(input.shape, weight.shape, stride, padding, output_padding, groups, dilation)
    layout = torch.channels_last if kernels.output_channels_last(input, weight) else torch.contiguous_format
    return torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=layout)


@torch.library.custom_op("convloc::conv_transpose2d_backward", mutates_args=())
def conv_transpose2d_backward(
    grad_output: Tensor,
    input: Tensor,
    weight: Tensor,
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    groups: int,
    dilation: list[int],
    output_mask: list[bool],
) -> tuple[Tensor, Tensor, Tensor]:
    """(grad_input, grad_weight, grad_bias); a gradient left out by output_mask is empty."""
    grads = kernels.conv_transpose2d_backward(
        grad_output, input, weight, stride, padding, output_padding, groups, dilation, output_mask
    )
    return tuple(g if g is not None else grad_output.new_empty((0,)) for g in grads)


@conv_transpose2d_backward.register_fake
def _(grad_output, input, weight, stride, padding, output_padding, groups, dilation, output_mask):
    shapes = (input.shape, weight.shape, (grad_output.shape[1],))
    return tuple(grad_output.new_empty(s if m else (0,)) for s, m in zip(shapes, output_mask))


def _setup_context(ctx, inputs, output):
    input, weight, bias, stride, padding, output_padding, groups, dilation = inputs
    ctx.save_for_backward(input, weight)
    ctx.geometry = (stride, padding, output_padding, groups, dilation)
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    input, weight = ctx.saved_tensors
    need = ctx.needs_input_grad
    mask = [need[0], need[1], ctx.has_bias and need[2]]
    grads = torch.ops.convloc.conv_transpose2d_backward(grad, input, weight, *ctx.geometry, mask)
    return (*(g if m else None for g, m in zip(grads, mask)), None, None, None, None, None)


conv_transpose2d.register_autograd(_backward, setup_context=_setup_context)
run_in_float32("conv_transpose2d", conv_transpose2d, same_dtype_out=True)
