"""torch.library registration of the permutohedral lattice filter, and autograd through a
prebuilt lattice.

``convloc::permutohedral_filter(values, features, transpose, exclude_self)`` is the raw lattice
filter (normalisations are composed on top in :mod:`convloc.ops.lattice`, so they are differentiated
by autograd). Its backward op rebuilds the lattice (a build costs about one filtering) and returns
the values gradient (exact transpose) and the features gradient (lattice filterings of ``f ⊙ v`` and
``f ⊙ g``, see ``convloc._kernels.lattice.filter_backward``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from convloc._kernels import lattice as kernels
from convloc._torch.autocast import run_in_float32


@torch.library.custom_op("convloc::permutohedral_filter", mutates_args=())
def permutohedral_filter(values: Tensor, features: Tensor, transpose: bool, exclude_self: bool) -> Tensor:
    return kernels.filter(values, features, transpose, exclude_self)


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
    gv, gf = kernels.filter_backward(grad, values, features, transpose, exclude_self, need_features)
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
run_in_float32("permutohedral_filter", permutohedral_filter, same_dtype_out=True)


class _LatticeFilter(torch.autograd.Function):
    """Raw filtering on a prebuilt lattice; gradient w.r.t. values only (the lattice is fixed)."""

    @staticmethod
    def forward(ctx, values, lattice, transpose, exclude_self):
        ctx.lattice, ctx.transpose, ctx.exclude_self = lattice, transpose, exclude_self
        return lattice.raw(values, transpose, exclude_self)

    @staticmethod
    def backward(ctx, grad):
        return (
            lattice_filter_autograd(ctx.lattice, grad, not ctx.transpose, ctx.exclude_self),
            None,
            None,
            None,
        )


def lattice_filter_autograd(
    lattice: kernels.Lattice, values: Tensor, transpose: bool, exclude_self: bool
) -> Tensor:
    """``lattice.raw(values, transpose, exclude_self)`` with the gradient w.r.t. values."""
    return _LatticeFilter.apply(values, lattice, transpose, exclude_self)
