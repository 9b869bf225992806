"""The dense CRF on JAX arrays. Mean-field here has no gradient (as with torch tensors): under
``jax.grad`` it raises TypeError; ``jax.lax.stop_gradient`` on its inputs says that none is wanted.

The kernels are described as the CPU kernel takes them (Gaussians over the pixel grid, bilateral
kernels over the image) and, on a GPU, as lattice features built with jax.numpy;
``jax.lax.platform_dependent`` picks the description for the platform a call is compiled for.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from convloc._jax import call, index_dtype, result
from convloc._kernels import crf as kernels

FEATURES, GRID, BILATERAL = 0, 1, 2  # the kinds of pairwise terms, as the target numbers them


def dense_crf(
    unary, image, features, kinds, params, compat, compat_sizes, weights, normalizations,
    iterations, exclude_self, spatial, labels, energy,
):  # fmt: skip
    """(Q, labels or None, energy or None); the arguments are those of
    ``convloc._kernels.crf.run_dense_crf``. Labels come in JAX's default integer type, the energy in
    its default float type (float64 with ``jax_enable_x64``)."""
    static = (
        tuple(kinds), tuple(params), tuple(compat), tuple(compat_sizes), tuple(weights),
        tuple(normalizations), int(iterations), bool(exclude_self), tuple(spatial), bool(labels), bool(energy),
    )  # fmt: skip
    q, lab, kl = _dense_crf(jnp.asarray(unary), image, tuple(features), static)
    if labels:
        lab = lab.astype(index_dtype())
    if energy:
        kl = kl.astype(jnp.zeros((), float).dtype)
    return q, (lab if labels else None), (kl if energy else None)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _dense_crf(unary, image, features, static):
    return jax.lax.platform_dependent(
        unary, image, features, cpu=partial(_call, static, False), default=partial(_call, static, True)
    )


def _no_gradient_fwd(unary, image, features, static):
    return _dense_crf(unary, image, features, static), None


def _no_gradient_bwd(static, saved, grads):
    raise TypeError(
        "unary: dense_crf has no gradient; train through mean-field with convloc.nn.CRFasRNN (torch), "
        "or pass jax.lax.stop_gradient(unary)"
    )


_dense_crf.defvjp(_no_gradient_fwd, _no_gradient_bwd)


def _call(static, on_gpu: bool, unary, image, features):
    kinds, params, compat, compat_sizes, weights, norms, iterations, exclude_self, spatial, labels, energy = (
        static
    )
    batch, n_labels, n = unary.shape
    dtype = np.dtype(unary.dtype).type
    channels = 0 if image is None else image.shape[2]
    plan, matrices = kernels.plan_kernels(
        kinds, params, compat, compat_sizes, weights, n_labels, spatial, channels, dtype, on_gpu
    )
    codes, inputs, sigmas, steps, bilateral = [], [], [], [], []
    user = iter(features)
    for how, what in plan:
        if how == "grid":
            codes.append(GRID)
            sigmas += what.sigmas
            steps += what.steps
        elif how == "bilateral" and not on_gpu:
            codes.append(BILATERAL)
            bilateral += [*what[0], *what[1]]
        else:
            codes.append(FEATURES)
            if how == "features":
                inputs.append(next(user))
            elif how == "positions":
                inputs.append(jnp.broadcast_to(jnp.asarray(what), (batch,) + what.shape))
            else:
                inputs.append(_bilateral_features(image, spatial, *what, dtype))
    if BILATERAL in codes:
        inputs.insert(0, image)  # the target's first remaining argument
    results = [result(unary.shape, unary.dtype)]
    if labels:
        results.append(result((batch, n), np.int64))
    if energy:
        results.append(result((batch, iterations + 1), np.float64))
    out = call(
        "dense_crf", tuple(results), unary, jnp.asarray(matrices.astype(dtype)), *inputs,
        kinds=np.asarray(codes, np.int64), grid_sigmas=np.asarray(sigmas, np.float64),
        grid_steps=np.asarray(steps, np.int64), bilateral_params=np.asarray(bilateral, np.float64),
        norms=np.asarray(norms, np.int64), iterations=np.int64(iterations), exclude_self=exclude_self,
        spatial=np.asarray(spatial, np.int64), labels=labels, energy=energy,
    )  # fmt: skip
    return out[0], (out[1] if labels else None), (out[-1] if energy else None)


def _bilateral_features(image, spatial, scale, srgb, dtype) -> jax.Array:
    """[B, N, ndim + C]: positions times scale per axis, the last axis first, then image / srgb (the
    arithmetic of the CPU kernel's, crf/bilateral_features.h)."""
    pos = kernels.positions(spatial, scale, dtype)[:, ::-1]
    colour = jnp.asarray(image).astype(dtype) / jnp.asarray(srgb, dtype)
    return jnp.concatenate([jnp.broadcast_to(pos, (colour.shape[0],) + pos.shape), colour], -1)
