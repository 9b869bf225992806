import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convloc import ops

from .arrays import any_float, check_call, hostile_arrays, shapes

LATTICE_ARGS = [
    "values",
    "features",
    "normalization",
    "image",
    "sigma_spatial",
    "sigma_color",
    "channel_axis",
]
# bilateral_filter's own arguments (its lattice features are internal: an error must not name them)
BILATERAL_ARGS = ["image", "sigma_spatial", "sigma_color", "channel_axis"]
NORMALIZATIONS = st.sampled_from([None, "none", "before", "after", "symmetric", "bogus"])


@given(
    hostile_arrays(shape=shapes(None, None)),
    hostile_arrays(shape=shapes(None, None)),
    NORMALIZATIONS,
    st.booleans(),
    st.booleans(),
)
def test_permutohedral_filter_never_crashes_and_is_sane_when_it_returns(v, f, norm, exclude, transpose):
    out = check_call(
        ops.permutohedral_filter,
        LATTICE_ARGS,
        v,
        f,
        normalization=norm,
        exclude_self=exclude,
        transpose=transpose,
    )
    if out is not None:
        assert out.shape == v.shape and out.dtype == v.dtype
        if norm in (None, "none") and not exclude and np.isfinite(v).all() and len(v) == 1:
            # one point: the raw filter is the lattice's own weight of the point times the value; that
            # weight approximates exp(0) = 1 loosely for a lone point (0.8-0.9 for d = 1, widening to
            # 0.43-2.9 for d = 16, depending on where in its simplex the point falls)
            own = ops.PermutohedralLattice(np.asarray(f, out.dtype)).diagonal(out)
            assert 0.4 < own.item() < 3
            tol = {"rtol": 2e-3, "atol": 1e-3} if out.dtype == np.float16 else {"rtol": 1e-4, "atol": 1e-6}
            np.testing.assert_allclose(out, own * v, **tol)


@given(
    hostile_arrays(shape=shapes(None, None) | shapes(None, None, None)),
    any_float(-1, 5),
    any_float(-1, 50),
    st.integers(-4, 3),
)
def test_bilateral_filter_never_crashes_and_is_sane_when_it_returns(image, ss, sc, axis):
    out = check_call(ops.bilateral_filter, BILATERAL_ARGS, image, ss, sc, channel_axis=axis)
    if out is not None:
        assert out.shape == image.shape and out.dtype == image.dtype
        if image.dtype.kind in "fu" and np.isfinite(image).all() and image.size:
            lo, hi = float(image.min()), float(image.max())
            # a normalised average stays within the image's range
            assert np.all(out >= lo - 1e-3 * max(1, abs(lo))) and np.all(out <= hi + 1e-3 * max(1, abs(hi)))


# Regressions found by the fuzzer: numpy's AxisError (naming "source") escaped for a bad
# channel_axis, and complex images were cast silently.
def test_bad_channel_axis_and_complex_images_are_refused_by_name():
    with pytest.raises(ValueError, match="channel_axis"):
        ops.bilateral_filter(np.zeros((3, 3, 3), np.float32), 1.0, 1.0, channel_axis=3)
    with pytest.raises(TypeError, match="image"):
        ops.bilateral_filter(np.zeros((3, 3), np.complex64), 1.0, 1.0)


@given(
    st.sampled_from([np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64]),
    st.integers(0, 2**32 - 1),
    any_float(0.5, 4),
    any_float(1, 100),
)
def test_integer_images_are_rounded_not_truncated(dtype, seed, ss, sc):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    image = rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), (5, 6), dtype=dtype, endpoint=True)
    out = check_call(ops.bilateral_filter, BILATERAL_ARGS, image, ss, sc)
    if out is not None:
        # the float filter in the precision the integer one works in, then rounded
        work = np.float64 if np.dtype(dtype).itemsize >= 4 else np.float32
        want = ops.bilateral_filter(image.astype(work), ss, sc)
        np.testing.assert_array_equal(out, np.clip(np.round(want), info.min, info.max).astype(dtype))


def test_a_constant_integer_image_comes_back_unchanged():
    for dtype, value in ((np.int32, 300), (np.uint8, 201), (np.int64, 2**40), (np.uint16, 65535)):
        image = np.full((4, 5), value, dtype)
        np.testing.assert_array_equal(ops.bilateral_filter(image, 1.0, 1.0), image)


def test_errors_name_the_filters_own_arguments_not_its_lattice_features():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match=r"^image: expected at most 30 channels .* got 40"):
        ops.bilateral_filter(rng.random((5, 5, 40)).astype(np.float32), 1.0, 1.0)
    assert ops.bilateral_filter(rng.random((5, 5, 30)).astype(np.float32), 1.0, 1.0).shape == (5, 5, 30)
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    for ss, sc in ((1.0, 1e-9), (1e-300, 10.0), (5e-324, 5e-324)):
        with pytest.raises(ValueError, match="^sigma_spatial, sigma_color: too small for this image"):
            ops.bilateral_filter(image, ss, sc)
    with pytest.raises(ValueError, match="^image: expected finite values"):
        ops.bilateral_filter(np.full((4, 4), np.nan, np.float32), 1.0, 1.0)
