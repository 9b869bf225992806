"""``PermutohedralFilter``: :func:`convloc.ops.permutohedral_filter` as a module."""

from __future__ import annotations

import torch
from torch import Tensor

from convloc import ops
from convloc.ops.lattice import check_normalization


class PermutohedralFilter(torch.nn.Module):
    """Gaussian filtering by learned or fixed features on the permutohedral lattice.

    ``forward(values [B?, N, C], features [B?, N, d]) → [B?, N, C]``, differentiable w.r.t. both
    (see :func:`convloc.ops.permutohedral_filter` for the arguments).
    """

    def __init__(self, normalization: str | None = None, exclude_self: bool = False):
        super().__init__()
        check_normalization(normalization)
        self.normalization, self.exclude_self = normalization, exclude_self

    def forward(self, values: Tensor, features: Tensor) -> Tensor:
        return ops.permutohedral_filter(
            values, features, normalization=self.normalization, exclude_self=self.exclude_self
        )

    def extra_repr(self) -> str:
        return f"normalization={self.normalization!r}, exclude_self={self.exclude_self}"
