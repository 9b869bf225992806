"""Scalar arguments of every op: what is not an integer (or not a real number) is refused with a
TypeError naming the argument, never rounded, truncated or parsed; integers past int64 get a
ValueError naming it, never pybind11's signature dump."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import convloc
import convloc.densecrf as dcrf
from convloc import ops

RNG = np.random.default_rng(0)
FMAP = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
ROIS = np.array([[0, 0, 0, 4, 4]], np.float32)
UNARY = RNG.random((3, 5, 6)).astype(np.float32)
IMAGE = RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)
W = RNG.standard_normal((2, 2, 3, 3)).astype(np.float32)
BOXES = np.array([[0, 0, 2, 2], [1, 1, 3, 3]], np.float32)


def _drop_in(**kw):
    d = dcrf.DenseCRF2D(kw.get("w", 6), kw.get("h", 5), kw.get("nlabels", 3))
    d.setUnaryEnergy(UNARY.reshape(3, -1))
    d.addPairwiseGaussian(3, 3)
    return d.inference(kw.get("niter", 2))


# (argument, a value it takes, a call that passes v for it).
INTEGER_ARGUMENTS = {
    "iterations (dense_crf)": ("iterations", 2, lambda v: ops.dense_crf(UNARY, iterations=v)),
    "ndim": ("ndim", 2, lambda v: ops.dense_crf(UNARY, ndim=v)),
    "iterations (grid_crf)": ("iterations", 2, lambda v: ops.grid_crf(UNARY, IMAGE, iterations=v)),
    "neighbors": ("neighbors", 8, lambda v: ops.grid_crf(UNARY, IMAGE, neighbors=v)),
    "niter": ("niter", 2, lambda v: _drop_in(niter=v)),
    "w": ("w", 6, lambda v: _drop_in(w=v)),
    "nlabels": ("nlabels", 3, lambda v: _drop_in(nlabels=v)),
    "n_labels": ("n_labels", 4, lambda v: ops.unary_from_labels(np.zeros((2, 2), np.int64), v, 0.5)),
    "output_size": ("output_size", 3, lambda v: ops.roi_align(FMAP, ROIS, v)),
    "output_size pair": ("output_size", 3, lambda v: ops.roi_pool(FMAP, ROIS, (2, v))),
    "sampling_ratio": ("sampling_ratio", 2, lambda v: ops.roi_align(FMAP, ROIS, 2, 1.0, v)),
    "stride": ("stride", 2, lambda v: ops.conv_transpose2d(FMAP, W, stride=v)),
    "padding pair": ("padding", 1, lambda v: ops.conv_transpose2d(FMAP, W, padding=(v, 0))),
    "groups": ("groups", 1, lambda v: ops.conv_transpose2d(FMAP, W, groups=v)),
    "factor": ("factor", 2, lambda v: ops.bilinear_kernel(2, v)),
    "offset": ("offset", 1, lambda v: ops.crop_like(FMAP, FMAP[..., :2, :2], v)),
    "min_size": ("min_size", 4, lambda v: ops.felzenszwalb(IMAGE, min_size=v)),
    "max_boxes": ("max_boxes", 4, lambda v: ops.selective_search(IMAGE, max_boxes=v)),
    "seed": ("seed", 4, lambda v: ops.selective_search(IMAGE, seed=v)),
    "image_size": ("image_size", 6, lambda v: ops.sliding_windows((v, 8), [4], 2)),
    "window_sizes": ("window_sizes", 4, lambda v: ops.sliding_windows((8, 8), [v], 2)),
    "strides": ("strides", 2, lambda v: ops.sliding_windows((8, 8), [4], v)),
    "channel_axis": ("channel_axis", -1, lambda v: ops.bilateral_filter(IMAGE, 2.0, 10.0, channel_axis=v)),
    "n": ("n", 0, lambda v: convloc.set_num_threads(v)),
}
NUMBER_ARGUMENTS = {
    "iou_threshold": ("iou_threshold", lambda v: ops.nms(BOXES, np.ones(2, np.float32), v)),
    "spatial_scale": ("spatial_scale", lambda v: ops.roi_align(FMAP, ROIS, 2, v)),
    "w1": ("w1", lambda v: ops.grid_crf(UNARY, IMAGE, w1=v)),
    "beta": ("beta", lambda v: ops.grid_crf(UNARY, IMAGE, beta=v)),
    "scale": ("scale", lambda v: ops.felzenszwalb(IMAGE, scale=v)),
    "sigma_color": ("sigma_color", lambda v: ops.bilateral_filter(IMAGE, 2.0, v)),
    "weight": ("weight", lambda v: ops.dense_crf(UNARY, kernels=[ops.Gaussian(3, v)])),
    "sxy": ("sxy", lambda v: ops.dense_crf(UNARY, kernels=[ops.Gaussian(v)])),
    "gt_prob": ("gt_prob", lambda v: ops.unary_from_labels(np.zeros((2, 2), np.int64), 3, v)),
}

not_integers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([True, False, np.float32(3), np.float64(2.0), "8", "3", b"2", 1j, None, object()]),
)
not_numbers = st.sampled_from([True, "0.5", b"1", 1j, np.complex64(1), object(), {}])
past_int64 = st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**30])


@pytest.mark.parametrize("case", sorted(INTEGER_ARGUMENTS))
@given(not_integers)
def test_non_integers_are_refused_by_name(case, value):
    name, good, call = INTEGER_ARGUMENTS[case]
    assume(not (value is None and name in ("max_boxes", "seed")))  # (None: no limit, a fresh seed)
    call(good)
    with pytest.raises(TypeError, match=rf"^{name}: expected an integer"):
        call(value)


@pytest.mark.parametrize("case", sorted(c for c in INTEGER_ARGUMENTS if c != "n"))
@given(past_int64)
def test_integers_past_int64_are_refused_by_name(case, value):
    name, _, call = INTEGER_ARGUMENTS[case]
    with pytest.raises(ValueError, match=rf"^{name}: expected an integer"):
        call(value)


@pytest.mark.parametrize("case", sorted(NUMBER_ARGUMENTS))
@given(not_numbers)
def test_non_numbers_are_refused_by_name(case, value):
    name, call = NUMBER_ARGUMENTS[case]
    with pytest.raises(TypeError, match=rf"^(kernels\[\d+\]\.)?{name}: expected"):
        call(value)


def test_complex_arrays_are_refused_by_the_drop_ins_and_features():
    d = dcrf.DenseCRF2D(6, 5, 3)
    with pytest.raises(TypeError, match="^u: expected real numbers, got dtype complex64"):
        d.setUnaryEnergy((UNARY.reshape(3, -1) + 1j).astype(np.complex64))
    with pytest.raises(TypeError, match="^features: expected"):
        d.addPairwiseEnergy(np.ones((2, 30), np.complex64), 3)
    with pytest.raises(TypeError, match="^features: expected real features, got dtype complex128"):
        ops.dense_crf(UNARY, kernels=[ops.Features(RNG.random((2, 5, 6)) + 1j)])
    d.setUnaryEnergy(UNARY.reshape(3, -1))
    with pytest.raises(TypeError, match="^Q: expected real numbers"):
        d.klDivergence(np.ones((3, 30), np.complex64))


def test_objects_named_like_a_frameworks_array_are_refused_by_name():
    impostor = type("ndarray", (), {"__module__": "cupy._core.core"})()
    with pytest.raises(TypeError, match="boxes: expected an array, got cupy._core.core.ndarray without"):
        ops.box_area(impostor)
