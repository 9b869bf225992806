import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convloc import ops

from .arrays import check_call, hostile_arrays, shapes

CRF_ARGS = [
    "unary", "image", "kernels", "compat", "iterations", "normalization", "spacing", "ndim",
    "neighbors", "w1", "w2", "beta", "sxy", "srgb", "weight", "features",
]  # fmt: skip

unaries = hostile_arrays(shape=shapes(None, None, None, max_side=5))
images = st.none() | hostile_arrays(shape=shapes(None, None, None, max_side=5))
compats = st.sampled_from(["potts", "bogus", 1.0, -2.0, float("nan"), [1.0, 2.0], [[0.0, 1.0], [1.0, 0.0]]])


def _is_distribution(q, unary):
    assert q.shape == unary.shape
    assert q.dtype == (unary.dtype if unary.dtype in (np.float32, np.float64) else np.float32)
    assert unary.dtype.kind in "fiu"
    if np.isfinite(unary).all() and q.size:
        assert np.isfinite(q).all()
        np.testing.assert_allclose(q.sum(-3), 1, rtol=1e-3)  # labels: [B?, L, H, W] (ndim 2)


@settings(max_examples=min(settings().max_examples, 100))
@given(
    unaries,
    images,
    compats,
    st.integers(-1, 3),
    st.sampled_from(["symmetric", "before", "after", "none", "nope", 7]),
    st.none() | st.floats(-1, 2) | st.just([1.0, 2.0]),
)
def test_dense_crf_never_crashes_and_returns_distributions(unary, image, compat, iters, norm, spacing):
    q = check_call(
        ops.dense_crf,
        CRF_ARGS,
        unary,
        image=image,
        compat=compat,
        iterations=iters,
        normalization=norm,
        spacing=spacing,
    )
    if q is not None:
        _is_distribution(q, unary)


@settings(max_examples=min(settings().max_examples, 100))
@given(
    unaries,
    hostile_arrays(shape=shapes(None, None, max_side=5)),
    st.sampled_from([4, 8, 6]),
    st.floats(-1, 20),
    st.none() | st.floats(-1, 2) | st.just(float("nan")),
    st.integers(-1, 3),
)
def test_grid_crf_never_crashes_and_returns_distributions(unary, image, nb, w1, beta, iters):
    q = check_call(ops.grid_crf, CRF_ARGS, unary, image, neighbors=nb, w1=w1, beta=beta, iterations=iters)
    if q is not None:
        _is_distribution(q, unary)


# Regressions found by the fuzzer: complex unaries were cast silently (imaginary part dropped),
# grid_crf failed inside a reshape on an empty unary, complex images were cast silently.
def test_complex_and_empty_unaries_are_refused_by_name():
    with pytest.raises(TypeError, match="unary"):
        ops.dense_crf(np.zeros((2, 3, 3), np.complex64))
    with pytest.raises(ValueError, match="unary"):
        ops.grid_crf(np.zeros((0, 0, 0), np.float32), np.zeros((0, 0), np.float32))
    with pytest.raises(TypeError, match="image"):
        ops.grid_crf(np.zeros((2, 3, 3), np.float32), np.zeros((3, 3), np.complex64))
