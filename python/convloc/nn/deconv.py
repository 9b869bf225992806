"""``ConvTranspose2d`` and FCN's ``BilinearUpsample``, running :func:`convloc.ops.conv_transpose2d`."""

from __future__ import annotations

import torch
from torch import Tensor

from convloc import ops


class ConvTranspose2d(torch.nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` (same constructor, parameters and initialisation) running
    convloc's kernels. ``forward(input, output_size=None)`` as in torch."""

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        return ops.conv_transpose2d(
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
        kernel = ops.bilinear_kernel(self.in_channels, self.stride[0], "float64")
        with torch.no_grad():
            self.weight.copy_(torch.from_numpy(kernel))
