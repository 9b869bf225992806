"""torch.library registration of the permutohedral lattice filter and its module.

``convloc::permutohedral_filter(values, features, transpose, exclude_self)`` is the raw lattice filter
(normalisations are composed on top in :mod:`convloc.ops.lattice`, so they are differentiated by
autograd). Its backward op rebuilds the lattice (a build costs about one filtering) and returns the
values gradient (exact transpose) and the features gradient (lattice filterings of ``f ⊙ v`` and
``f ⊙ g``, see ``convloc.ops.lattice._filter_backward``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from convloc.ops import lattice as lattice_ops


@torch.library.custom_op("convloc::permutohedral_filter", mutates_args=())
def permutohedral_filter(
    values: Tensor, features: Tensor, transpose: bool, exclude_self: bool
) -> Tensor:
    return lattice_ops._filter(values, features, transpose, exclude_self)


@permutohedral_filter.register_fake
def _(values, features, transpose, exclude_self):
    return values.new_empty(values.shape)


@torch.library.custom_op("convloc::permutohedral_filter_backward", mutates_args=())
def permutohedral_filter_backward(
    grad: Tensor,
    values: Tensor,
    features: Tensor,
    transpose: bool,
    exclude_self: bool,
    need_features: bool,
) -> tuple[Tensor, Tensor]:
    gv, gf = lattice_ops._filter_backward(
        grad, values, features, transpose, exclude_self, need_features
    )
    return gv, (gf if gf is not None else features.new_zeros(features.shape))


@permutohedral_filter_backward.register_fake
def _(grad, values, features, transpose, exclude_self, need_features):
    return values.new_empty(values.shape), features.new_empty(features.shape)


def _setup_context(ctx, inputs, output):
    values, features, transpose, exclude_self = inputs
    ctx.save_for_backward(values, features)
    ctx.transpose, ctx.exclude_self = transpose, exclude_self


def _backward(ctx, grad):
    values, features = ctx.saved_tensors
    need_values, need_features = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (need_values or need_features):
        return None, None, None, None
    gv, gf = torch.ops.convloc.permutohedral_filter_backward(
        grad.contiguous(), values, features, ctx.transpose, ctx.exclude_self, need_features
    )
    return (gv if need_values else None), (gf if need_features else None), None, None


permutohedral_filter.register_autograd(_backward, setup_context=_setup_context)


class _LatticeFilter(torch.autograd.Function):
    """Raw filtering on a prebuilt lattice; gradient w.r.t. values only (the lattice is fixed)."""

    @staticmethod
    def forward(ctx, values, lattice, transpose, exclude_self):
        ctx.lattice, ctx.transpose, ctx.exclude_self = lattice, transpose, exclude_self
        return lattice._raw(values, transpose, exclude_self)

    @staticmethod
    def backward(ctx, grad):
        return (
            lattice_filter_autograd(ctx.lattice, grad, not ctx.transpose, ctx.exclude_self),
            None,
            None,
            None,
        )


def lattice_filter_autograd(lattice, values: Tensor, transpose: bool, exclude_self: bool) -> Tensor:
    return _LatticeFilter.apply(values, lattice, transpose, exclude_self)


class PermutohedralFilter(torch.nn.Module):
    """Gaussian filtering by learned or fixed features on the permutohedral lattice.

    ``forward(values [B?, N, C], features [B?, N, d]) → [B?, N, C]``, differentiable w.r.t. both
    (see :func:`convloc.ops.permutohedral_filter` for the arguments).
    """

    def __init__(self, normalization: str | None = None, exclude_self: bool = False):
        super().__init__()
        lattice_ops._check_normalization(normalization)
        self.normalization, self.exclude_self = normalization, exclude_self

    def forward(self, values: Tensor, features: Tensor) -> Tensor:
        return lattice_ops.permutohedral_filter(
            values, features, normalization=self.normalization, exclude_self=self.exclude_self
        )

    def extra_repr(self) -> str:
        return f"normalization={self.normalization!r}, exclude_self={self.exclude_self}"
