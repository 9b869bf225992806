"""The raw permutohedral-lattice filter on JAX arrays (a lattice built per call; normalisations are
composed on top in :mod:`convloc.ops.lattice`, so JAX differentiates them), differentiable with
respect to values (the exact adjoint) and features (lattice filterings, see
``convloc._kernels.lattice.gradients``)."""

from __future__ import annotations

from functools import partial

import jax

from convloc._jax import call, result
from convloc._kernels import lattice as kernels


def _filter(values: jax.Array, features: jax.Array, transpose: bool, exclude_self: bool) -> jax.Array:
    # The target takes [B, N, C] and [B, N, d]; an unbatched call is a batch of one.
    batched = features.ndim == 3
    v, f = (values, features) if batched else (values[None], features[None])
    out = call(
        "permutohedral_filter", result(v.shape, v.dtype), f, v, transpose=transpose, exclude_self=exclude_self
    )
    return out if batched else out[0]


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def permutohedral_filter(
    values: jax.Array, features: jax.Array, transpose: bool, exclude_self: bool
) -> jax.Array:
    return _filter(values, features, transpose, exclude_self)


def _fwd(values, features, transpose, exclude_self):
    return permutohedral_filter(values, features, transpose, exclude_self), (values, features)


def _bwd(transpose, exclude_self, saved, grad):
    values, features = saved

    def filt(x, t, exclude):
        return _filter(x, features, t, exclude)

    return kernels.gradients(filt, grad, values, features, transpose, exclude_self)


permutohedral_filter.defvjp(_fwd, _bwd)
