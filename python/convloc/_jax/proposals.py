"""Region proposals on JAX arrays (CPU targets: the algorithms are sequential graph algorithms, on
every framework). No gradients: the inputs are taken as constants. Selective search's boxes come,
as everywhere, from the paper's ranking with NumPy's random numbers of ``seed`` (drawn when the call
is traced), so that they equal the NumPy path's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from convloc._jax import call, concrete_count, result
from convloc._kernels import proposals as kernels


def felzenszwalb(image, scale: float, sigma: float, min_size: int) -> jax.Array:
    """int32 [H, W] labels."""
    image = kernels.float_image(jax.lax.stop_gradient(jnp.asarray(image)))
    labels, _ = call(
        "felzenszwalb",
        (result(image.shape[:2], np.int32), result((), np.int64)),
        image,
        scale=np.float64(scale),
        sigma=np.float64(sigma),
        min_size=np.int64(min_size),
    )
    return labels


def selective_search(
    image,
    mode: str,
    seed: int | None,
    min_size: int | None,
    max_boxes: int | None,
    sigma: float,
    padded: bool,
):
    """float32 boxes, best ranked first: ``padded``, (boxes [max_boxes, 4], zeros after the count;
    count), fixed-size, for ``jax.jit``; otherwise the first max_boxes (or all), whose number must be
    known (outside jit)."""
    rgb = kernels.float_image(jax.lax.stop_gradient(jnp.asarray(image)), rgb=True)
    chosen = kernels.strategies(mode, min_size)
    randoms = kernels.ranking_randoms(rgb.shape[0], rgb.shape[1], chosen, seed)
    size = len(randoms) if max_boxes is None else max_boxes
    spaces, ks, min_sizes, *similarities = zip(*chosen)
    boxes, count = call(
        "selective_search",
        (result((size, 4), np.float32), result((), np.int64)),
        rgb,
        spaces=np.asarray(spaces, np.int64),
        ks=np.asarray(ks, np.float64),
        min_sizes=np.asarray(min_sizes, np.int64),
        similarities=np.asarray(similarities, np.int64).T.reshape(-1),
        sigma=np.float64(sigma),
        randoms=randoms,
    )
    if not padded:
        return boxes[
            : concrete_count(count, "pass max_boxes and padded=True (boxes padded with zeros, count)")
        ]
    count = count.astype(jnp.int32)
    return jnp.where((jnp.arange(size) < count)[:, None], boxes, 0), count
