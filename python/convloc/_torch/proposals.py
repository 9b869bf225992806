"""torch.library registrations of Felzenszwalb segmentation and selective search (CPU kernels;
results on the CPU)."""

from typing import Optional

import torch
from torch import Tensor

from convloc._kernels import proposals as kernels


@torch.library.custom_op("convloc::felzenszwalb", mutates_args=())
def felzenszwalb(image: Tensor, scale: float, sigma: float, min_size: int) -> Tensor:
    return torch.from_numpy(kernels.felzenszwalb(kernels.float_image(image), scale, sigma, min_size))


@felzenszwalb.register_fake
def _(image, scale, sigma, min_size):
    return torch.empty(tuple(image.shape[:2]), dtype=torch.int32, device="cpu")


@torch.library.custom_op("convloc::selective_search", mutates_args=())
def selective_search(
    image: Tensor,
    mode: str,
    seed: Optional[int],
    min_size: Optional[int],
    max_boxes: Optional[int],
    sigma: float,
) -> Tensor:
    rgb = kernels.float_image(image, rgb=True)
    return torch.from_numpy(kernels.selective_search(rgb, mode, seed, min_size, max_boxes, sigma))


@selective_search.register_fake
def _(image, mode, seed, min_size, max_boxes, sigma):
    count = torch.library.get_ctx().new_dynamic_size()  # the number of boxes depends on the image
    return torch.empty((count, 4), dtype=torch.float32, device="cpu")
