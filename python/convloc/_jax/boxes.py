"""Box ops on JAX arrays. ``box_area`` and ``box_iou`` are differentiable with respect to the boxes
(the derivatives of the same formulas, in jax.numpy); ``nms`` and ``batched_nms`` return indices,
padded with -1 to a fixed size, and their count."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from convloc._jax import as_float_array, call, concrete_count, index_dtype, result


def _area(boxes: jax.Array) -> jax.Array:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """The IoU formula of the kernel, written with jax.numpy for its derivatives."""
    top_left = jnp.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = jnp.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = jnp.maximum(bottom_right - top_left, 0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (_area(boxes1)[:, None] + _area(boxes2)[None, :] - inter)


def _rows(x: jax.Array) -> int:
    # Anything malformed gets 0 rows and is reported by the kernel's checks.
    return x.shape[0] if x.ndim else 0


@jax.custom_vjp
def _box_area(boxes: jax.Array) -> jax.Array:
    return call("box_area", result((_rows(boxes),), boxes.dtype), boxes)


def _box_area_fwd(boxes):
    return _box_area(boxes), boxes


def _box_area_bwd(boxes, grad):
    return jax.vjp(_area, boxes)[1](grad)


_box_area.defvjp(_box_area_fwd, _box_area_bwd)


@jax.custom_vjp
def _box_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    return call("box_iou", result((_rows(boxes1), _rows(boxes2)), boxes1.dtype), boxes1, boxes2)


def _box_iou_fwd(boxes1, boxes2):
    return _box_iou(boxes1, boxes2), (boxes1, boxes2)


def _box_iou_bwd(saved, grad):
    return jax.vjp(_iou, *saved)[1](grad)


_box_iou.defvjp(_box_iou_fwd, _box_iou_bwd)


def box_area(boxes) -> jax.Array:
    return _box_area(as_float_array(boxes, "boxes"))


def box_iou(boxes1, boxes2) -> jax.Array:
    return _box_iou(as_float_array(boxes1, "boxes1"), as_float_array(boxes2, "boxes2"))


def nms(boxes, scores, idxs, iou_threshold: float, max_output_size: int | None, padded: bool):
    """Kept indices, highest score first (with ``idxs``: per category). ``padded``: (indices
    [max_output_size], -1 after the count; count), fixed-size, for ``jax.jit``; otherwise the first
    max_output_size (or all) of them, whose number must be known (outside jit)."""
    boxes = jax.lax.stop_gradient(as_float_array(boxes, "boxes"))
    scores = jax.lax.stop_gradient(as_float_array(scores, "scores"))
    n = _rows(boxes)
    args = (boxes, scores)
    if idxs is not None:
        idxs = jnp.asarray(idxs)
        if not jnp.issubdtype(idxs.dtype, jnp.integer):
            raise TypeError(f"idxs: expected an integer array, got {idxs.dtype}")
        args += (idxs if idxs.dtype in (jnp.int32, jnp.int64) else idxs.astype(jnp.int32),)
    keep, count = call(
        "nms" if idxs is None else "batched_nms",
        (result((n,), np.int64), result((), np.int64)),
        *args,
        iou_threshold=np.float64(iou_threshold),
    )
    dtype = index_dtype()
    keep, count = keep.astype(dtype), count.astype(dtype)
    size = n if max_output_size is None else max_output_size
    if not padded:
        kept = concrete_count(count, "pass max_output_size and padded=True (indices padded with -1, count)")
        return keep[: min(kept, size)]
    keep = jnp.where(jnp.arange(n) < count, keep, -1)
    keep = keep[:size] if size <= n else jnp.pad(keep, (0, size - n), constant_values=-1)
    return keep, jnp.minimum(count, size)
