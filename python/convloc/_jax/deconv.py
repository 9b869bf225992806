"""conv_transpose2d on JAX arrays, differentiable with respect to input, weight and bias through
convloc's backward kernel (one pass over the output gradient for all three)."""

from __future__ import annotations

from functools import partial

import jax
import numpy as np

from convloc._jax import call, result
from convloc._kernels import deconv as kernels


def _attrs(stride, padding, output_padding, groups, dilation) -> dict:
    pairs = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
    return {k: np.asarray(v, np.int64) for k, v in pairs.items()} | dict(groups=np.int64(groups))


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv_transpose2d(
    input: jax.Array, weight: jax.Array, bias: jax.Array | None, geometry: tuple
) -> jax.Array:
    shape = kernels.output_shape(input.shape, weight.shape, *geometry, input.dtype.itemsize)
    args = (input, weight) if bias is None else (input, weight, bias)
    return call("conv_transpose2d", result(shape, input.dtype), *args, **_attrs(*geometry))


def _fwd(input, weight, bias, geometry):
    return _conv_transpose2d(input, weight, bias, geometry), (input, weight, bias)


def _bwd(geometry, saved, grad):
    input, weight, bias = saved
    results = [result(input.shape, input.dtype), result(weight.shape, weight.dtype)]
    if bias is not None:
        results.append(result(bias.shape, bias.dtype))
    grads = call("conv_transpose2d_backward", tuple(results), grad, input, weight, **_attrs(*geometry))
    return grads[0], grads[1], (grads[2] if bias is not None else None)


_conv_transpose2d.defvjp(_fwd, _bwd)


def conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation) -> jax.Array:
    """input [N, C_in, H, W]; the geometry as int pairs and an int (validated when traced)."""
    geometry = (tuple(stride), tuple(padding), tuple(output_padding), groups, tuple(dilation))
    return _conv_transpose2d(input, weight, bias, geometry)
