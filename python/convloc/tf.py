"""convloc's ops inside ``tf.function``.

Eager TensorFlow needs nothing from this module: :mod:`convloc.ops` takes ``tf.Tensor`` arguments
(read through DLPack, contiguous ones without a copy) and returns ``tf.Tensor``. Inside a
``tf.function`` (or Keras' compiled ``fit`` / ``predict``) a tensor is symbolic and has no memory
to hand over; the functions here then add one ``tf.numpy_function`` op to the graph, which calls
the same :mod:`convloc.ops` function on the tensors' NumPy views when the graph runs. Called
eagerly they are :mod:`convloc.ops` itself.

What the graph route costs:

- a host callback: the graph runs the Python function under the GIL, on the CPU (tensors on a GPU
  are copied to the host and back), with TensorFlow's overhead for such an op on every call
  (measured in ``docs/frameworks.md``); the inputs are read in place, the results may be copied;
- no gradient (``tf.numpy_function`` has none);
- not compilable with XLA (``jit_compile=True``), and a SavedModel holding these ops does not run
  in a process that has not defined them (the Python function is not serialised);
- shapes that depend on the data (the indices NMS keeps) are unknown to the graph (``[None]``).

TensorFlow is not imported by ``import convloc``; importing this module imports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from convloc import ops
from convloc._kernels import deconv as deconv_kernels

__all__ = [
    "box_area",
    "box_iou",
    "nms",
    "batched_nms",
    "roi_pool",
    "roi_align",
    "conv_transpose2d",
    "permutohedral_filter",
    "bilateral_filter",
    "dense_crf",
    "grid_crf",
]


def _graph_op(
    name: str, fn: Callable[..., Any], inputs: Sequence[Any], dtypes: Sequence[Any], shapes: Sequence[Any]
) -> Any:
    """fn(*NumPy views of inputs) as one ``tf.numpy_function`` op; outputs of the given dtypes,
    their static shapes set (None where unknown). One output is returned as a tensor, several
    as a tuple."""
    out = tf.numpy_function(fn, list(inputs), list(dtypes), stateful=False, name=f"convloc_{name}")
    for tensor, shape in zip(out, shapes):
        tensor.set_shape(shape)
    return out[0] if len(out) == 1 else tuple(out)


def _result_dtype(fn: Callable[..., Any], *boxes: tf.Tensor) -> tf.DType:
    """The dtype of fn's result for boxes of these dtypes (integer boxes give integer areas, float IoU),
    from a call on no boxes."""
    return tf.as_dtype(fn(*(np.empty((0, 4), b.dtype.as_numpy_dtype) for b in boxes)).dtype)


def _dims(x: Any) -> list:
    return tf.convert_to_tensor(x).shape.as_list()


def box_area(boxes: Any) -> tf.Tensor:
    """:func:`convloc.ops.box_area` in a graph."""
    if tf.executing_eagerly():
        return ops.box_area(boxes)
    boxes = tf.convert_to_tensor(boxes)
    dtype = _result_dtype(ops.box_area, boxes)
    return _graph_op("box_area", ops.box_area, [boxes], [dtype], [_dims(boxes)[:1]])


def box_iou(boxes1: Any, boxes2: Any) -> tf.Tensor:
    """:func:`convloc.ops.box_iou` in a graph."""
    if tf.executing_eagerly():
        return ops.box_iou(boxes1, boxes2)
    boxes1, boxes2 = tf.convert_to_tensor(boxes1), tf.convert_to_tensor(boxes2)
    shape = [_dims(boxes1)[0], _dims(boxes2)[0]]
    dtype = _result_dtype(ops.box_iou, boxes1, boxes2)
    return _graph_op("box_iou", ops.box_iou, [boxes1, boxes2], [dtype], [shape])


def nms(boxes: Any, scores: Any, iou_threshold: float) -> tf.Tensor:
    """:func:`convloc.ops.nms` in a graph: int64 [None] kept indices."""
    if tf.executing_eagerly():
        return ops.nms(boxes, scores, iou_threshold)

    def run(b, s):
        return ops.nms(b, s, iou_threshold)

    return _graph_op("nms", run, [boxes, scores], [tf.int64], [[None]])


def batched_nms(boxes: Any, scores: Any, idxs: Any, iou_threshold: float) -> tf.Tensor:
    """:func:`convloc.ops.batched_nms` in a graph: int64 [None] kept indices."""
    if tf.executing_eagerly():
        return ops.batched_nms(boxes, scores, idxs, iou_threshold)

    def run(b, s, i):
        return ops.batched_nms(b, s, i, iou_threshold)

    return _graph_op("batched_nms", run, [boxes, scores, idxs], [tf.int64], [[None]])


def _rois(boxes: Any) -> tf.Tensor:
    """[K, 5] rois from a [K, 5] tensor or a list of per-image [K_i, 4] tensors, with TF's ops."""
    if not isinstance(boxes, (list, tuple)):
        return tf.convert_to_tensor(boxes)
    parts = [tf.convert_to_tensor(b) for b in boxes]
    return tf.concat(
        [tf.concat([tf.fill([tf.shape(b)[0], 1], tf.cast(i, b.dtype)), b], 1) for i, b in enumerate(parts)], 0
    )


def _pooled(input: tf.Tensor, rois: tf.Tensor, output_size: Any) -> list:
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    return [_dims(rois)[0], _dims(input)[1], ph, pw]


def roi_pool(
    input: Any, boxes: Any, output_size: int | tuple[int, int], spatial_scale: float = 1.0
) -> tf.Tensor:
    """:func:`convloc.ops.roi_pool` in a graph (boxes: [K, 5] or a list of [K_i, 4])."""
    if tf.executing_eagerly():
        return ops.roi_pool(input, boxes, output_size, spatial_scale)
    input, rois = tf.convert_to_tensor(input), _rois(boxes)

    def run(x, r):
        return ops.roi_pool(x, r, output_size, spatial_scale)

    return _graph_op("roi_pool", run, [input, rois], [input.dtype], [_pooled(input, rois, output_size)])


def roi_align(
    input: Any,
    boxes: Any,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> tf.Tensor:
    """:func:`convloc.ops.roi_align` in a graph (boxes: [K, 5] or a list of [K_i, 4])."""
    if tf.executing_eagerly():
        return ops.roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    input, rois = tf.convert_to_tensor(input), _rois(boxes)

    def run(x, r):
        return ops.roi_align(x, r, output_size, spatial_scale, sampling_ratio, aligned)

    return _graph_op("roi_align", run, [input, rois], [input.dtype], [_pooled(input, rois, output_size)])


def conv_transpose2d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
) -> tf.Tensor:
    """:func:`convloc.ops.conv_transpose2d` in a graph."""
    geometry = (stride, padding, output_padding, groups, dilation)
    if tf.executing_eagerly():
        return ops.conv_transpose2d(input, weight, bias, *geometry)
    input, weight = tf.convert_to_tensor(input), tf.convert_to_tensor(weight)
    arrays = [input, weight] + ([] if bias is None else [tf.convert_to_tensor(bias)])

    def run(x, w, b=None):
        return ops.conv_transpose2d(x, w, b, *geometry)

    in_shape, w_shape = _dims(input), _dims(weight)
    shape = [None] * len(in_shape)
    if None not in in_shape + w_shape:
        pairs = [
            [v, v] if isinstance(v, int) else list(v) for v in (stride, padding, output_padding, dilation)
        ]
        batched = [1] * (4 - len(in_shape)) + in_shape
        shape = deconv_kernels.output_shape(batched, w_shape, *pairs[:3], groups, pairs[3])[
            4 - len(in_shape) :
        ]
    return _graph_op("conv_transpose2d", run, arrays, [input.dtype], [shape])


def permutohedral_filter(values: Any, features: Any, **kwargs: Any) -> tf.Tensor:
    """:func:`convloc.ops.permutohedral_filter` in a graph (keyword arguments as there)."""
    if tf.executing_eagerly():
        return ops.permutohedral_filter(values, features, **kwargs)
    values, features = tf.convert_to_tensor(values), tf.convert_to_tensor(features)

    def run(v, f):
        return ops.permutohedral_filter(v, f, **kwargs)

    return _graph_op("permutohedral_filter", run, [values, features], [values.dtype], [_dims(values)])


def bilateral_filter(image: Any, sigma_spatial: float, sigma_color: float, **kwargs: Any) -> tf.Tensor:
    """:func:`convloc.ops.bilateral_filter` in a graph."""
    if tf.executing_eagerly():
        return ops.bilateral_filter(image, sigma_spatial, sigma_color, **kwargs)
    image = tf.convert_to_tensor(image)

    def run(x):
        return ops.bilateral_filter(x, sigma_spatial, sigma_color, **kwargs)

    return _graph_op("bilateral_filter", run, [image], [image.dtype], [_dims(image)])


def dense_crf(unary: Any, *, image: Any = None, kernels: Sequence[Any] | None = None, **kwargs: Any) -> Any:
    """:func:`convloc.ops.dense_crf` in a graph (keyword arguments as there; the features of
    :class:`convloc.ops.Features` kernels may be tensors)."""
    if tf.executing_eagerly():
        return ops.dense_crf(unary, image=image, kernels=kernels, **kwargs)
    unary = tf.convert_to_tensor(unary)
    arrays = [unary] + ([] if image is None else [tf.convert_to_tensor(image)])
    arrays += [tf.convert_to_tensor(k.features) for k in kernels or () if isinstance(k, ops.Features)]

    def run(u, *rest):
        img = rest[0] if image is not None else None
        feats = iter(rest[1:] if image is not None else rest)
        given = kernels and [
            dataclasses.replace(k, features=next(feats)) if isinstance(k, ops.Features) else k
            for k in kernels
        ]
        return ops.dense_crf(u, image=img, kernels=given, **kwargs)

    shape = _dims(unary)
    batch = shape[: len(shape) - kwargs.get("ndim", 2) - 1]  # [] or [B]
    dtypes, shapes = [unary.dtype], [shape]
    if kwargs.get("return_labels"):
        dtypes.append(tf.int64)
        shapes.append(batch + shape[len(batch) + 1 :])
    if kwargs.get("return_energy"):
        dtypes.append(tf.float64)
        shapes.append(batch + [kwargs.get("iterations", 5) + 1])
    return _graph_op("dense_crf", run, arrays, dtypes, shapes)


def grid_crf(unary: Any, image: Any, **kwargs: Any) -> tf.Tensor:
    """:func:`convloc.ops.grid_crf` in a graph (keyword arguments as there)."""
    if tf.executing_eagerly():
        return ops.grid_crf(unary, image, **kwargs)
    unary, image = tf.convert_to_tensor(unary), tf.convert_to_tensor(image)

    def run(u, x):
        return ops.grid_crf(u, x, **kwargs)

    return _graph_op("grid_crf", run, [unary, image], [unary.dtype], [_dims(unary)])
