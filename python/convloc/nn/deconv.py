"""torch.library registration of the transposed convolution (forward, fake, autograd through
convloc's backward kernels) and the ``ConvTranspose2d`` / ``BilinearUpsample`` modules."""

from typing import Optional

import torch
from torch import Tensor

from convloc.ops import deconv as deconv_ops


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
    return deconv_ops._conv_transpose2d(
        input, weight, bias, stride, padding, output_padding, groups, dilation
    )


@conv_transpose2d.register_fake
def _(input, weight, bias, stride, padding, output_padding, groups, dilation):
    shape = deconv_ops.output_shape(
        input.shape, weight.shape, stride, padding, output_padding, groups, dilation
    )
    return input.new_empty(shape)


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
    grads = deconv_ops._conv_transpose2d_backward(
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


class ConvTranspose2d(torch.nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` (same constructor, parameters and initialisation) running
    convloc's kernels. ``forward(input, output_size=None)`` as in torch."""

    def forward(self, input: Tensor, output_size: Optional[list[int]] = None) -> Tensor:
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        return deconv_ops.conv_transpose2d(
            input, self.weight, self.bias, self.stride, self.padding, output_padding,
            self.groups, self.dilation,
        )  # fmt: skip


class BilinearUpsample(ConvTranspose2d):
    """FCN's upsampling layer: a per-channel transposed convolution with stride ``factor`` and a
    ``2 * factor - factor % 2`` kernel, initialised to bilinear interpolation and, when
    ``learnable``, trained from there (FCN-32s/16s/8s). No padding and no bias, as in FCN:
    crop the result with :func:`convloc.ops.crop_like`.
    """

    def __init__(self, channels: int, factor: int, learnable: bool = True, device=None, dtype=None):
        size = 2 * factor - factor % 2
        super().__init__(
            channels, channels, size, stride=factor, groups=channels, bias=False,
            device=device, dtype=dtype,
        )  # fmt: skip
        self.weight.requires_grad_(learnable)

    def reset_parameters(self) -> None:
        kernel = deconv_ops.bilinear_kernel(self.in_channels, self.stride[0], "float64")
        with torch.no_grad():
            self.weight.copy_(torch.from_numpy(kernel))
