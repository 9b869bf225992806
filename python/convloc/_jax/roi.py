"""RoI pool / RoI align on JAX arrays, differentiable with respect to the input through convloc's
deterministic backward kernels (the boxes get a zero gradient, as they get none in torchvision)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from convloc._jax import call, result


def _out(input: jax.Array, rois: jax.Array, ph: int, pw: int) -> jax.ShapeDtypeStruct:
    # (K, C) from the shapes; anything malformed gets 0 and is reported by the kernel's checks.
    k = rois.shape[0] if rois.ndim == 2 else 0
    c = input.shape[1] if input.ndim == 4 else 0
    return result((k, c, ph, pw), input.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def roi_pool(input: jax.Array, rois: jax.Array, spatial_scale: float, ph: int, pw: int) -> jax.Array:
    attrs = dict(spatial_scale=np.float64(spatial_scale), pooled_h=np.int64(ph), pooled_w=np.int64(pw))
    return call("roi_pool", _out(input, rois, ph, pw), input, rois, **attrs)


def _roi_pool_fwd(input, rois, spatial_scale, ph, pw):
    return roi_pool(input, rois, spatial_scale, ph, pw), (input, rois)


def _roi_pool_bwd(spatial_scale, ph, pw, saved, grad):
    input, rois = saved
    attrs = dict(spatial_scale=np.float64(spatial_scale), pooled_h=np.int64(ph), pooled_w=np.int64(pw))
    grad_input = call("roi_pool_backward", result(input.shape, input.dtype), grad, rois, input, **attrs)
    return grad_input, jnp.zeros_like(rois)


roi_pool.defvjp(_roi_pool_fwd, _roi_pool_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def roi_align(
    input: jax.Array,
    rois: jax.Array,
    spatial_scale: float,
    ph: int,
    pw: int,
    sampling_ratio: int,
    aligned: bool,
) -> jax.Array:
    return call(
        "roi_align",
        _out(input, rois, ph, pw),
        input,
        rois,
        **_align_attrs(spatial_scale, ph, pw, sampling_ratio, aligned),
    )


def _align_attrs(spatial_scale, ph, pw, sampling_ratio, aligned) -> dict:
    return dict(
        spatial_scale=np.float64(spatial_scale),
        pooled_h=np.int64(ph),
        pooled_w=np.int64(pw),
        sampling_ratio=np.int64(sampling_ratio),
        aligned=bool(aligned),
    )


def _roi_align_fwd(input, rois, *static):
    # The input is kept for its shape (and is alive anyway wherever its own gradient is needed).
    return roi_align(input, rois, *static), (input, rois)


def _roi_align_bwd(spatial_scale, ph, pw, sampling_ratio, aligned, saved, grad):
    input, rois = saved
    attrs = _align_attrs(spatial_scale, ph, pw, sampling_ratio, aligned)
    grad_input = call("roi_align_backward", result(input.shape, input.dtype), grad, rois, **attrs)
    return grad_input, jnp.zeros_like(rois)


roi_align.defvjp(_roi_align_fwd, _roi_align_bwd)
