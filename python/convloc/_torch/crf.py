"""torch.library registrations of the dense CRF and the grid CRF (forward only: mean-field here
has no gradient; :class:`convloc.nn.CRFasRNN` is the differentiable one)."""

from typing import Optional

import torch
from torch import Tensor

from convloc._kernels import crf as kernels
from convloc._torch.autocast import run_in_float32


@torch.library.custom_op("convloc::dense_crf", mutates_args=())
def dense_crf(
    unary: Tensor,
    image: Optional[Tensor],
    features: list[Tensor],
    kinds: list[int],
    params: list[float],
    compat: list[float],
    compat_sizes: list[int],
    weights: list[float],
    normalizations: list[int],
    iterations: int,
    exclude_self: bool,
    spatial: list[int],
    return_labels: bool,
    return_energy: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """(Q [B, L, N], labels [B, N] or empty, energy [B, iterations + 1] or empty); the arguments
    are those of ``convloc._kernels.crf.run_dense_crf``."""
    q, labels, energy = kernels.run_dense_crf(
        unary, image, features, kinds, params, compat, compat_sizes, weights, normalizations,
        iterations, exclude_self, spatial, return_labels, return_energy,
    )  # fmt: skip
    if labels is None:
        labels = unary.new_empty((0,), dtype=torch.int64)
    energy = torch.from_numpy(energy) if energy is not None else unary.new_empty((0,), dtype=torch.float64)
    return q, labels, energy


@dense_crf.register_fake
def _(unary, image, features, kinds, params, compat, compat_sizes, weights, normalizations,
      iterations, exclude_self, spatial, return_labels, return_energy):  # fmt: skip
    batch, _, n = unary.shape
    labels = unary.new_empty((batch, n) if return_labels else (0,), dtype=torch.int64)
    energy_shape = (batch, iterations + 1) if return_energy else (0,)
    energy = torch.empty(energy_shape, dtype=torch.float64, device="cpu")
    return unary.new_empty(unary.shape), labels, energy


@torch.library.custom_op("convloc::grid_crf", mutates_args=())
def grid_crf(
    unary: Tensor,
    image: Tensor,
    neighbors: int,
    w1: float,
    w2: float,
    beta: Optional[float],
    iterations: int,
) -> Tensor:
    return kernels.grid_crf(unary, image, neighbors, w1, w2, beta, iterations)


@grid_crf.register_fake
def _(unary, image, neighbors, w1, w2, beta, iterations):
    return unary.new_empty(unary.shape)


run_in_float32("dense_crf", dense_crf, same_dtype_out=True)
run_in_float32("grid_crf", grid_crf, same_dtype_out=True)
