import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convloc import ops

from .arrays import any_float, check_call, counts, hostile_arrays, shapes

CRF_ARGS = [
    "unary", "image", "kernels", "compat", "iterations", "normalization", "spacing", "ndim",
    "neighbors", "w1", "w2", "beta", "sxy", "srgb", "weight", "features",
]  # fmt: skip

unaries = hostile_arrays(shape=shapes(None, None, None, max_side=5))
images = st.none() | hostile_arrays(shape=shapes(None, None, None, max_side=5))
compats = st.sampled_from(["potts", "bogus", 1.0, -2.0, float("nan"), [1.0, 2.0], [[0.0, 1.0], [1.0, 0.0]]])


def _is_distribution(q, unary):
    assert q.shape == unary.shape
    assert q.dtype == (unary.dtype if unary.dtype in (np.float16, np.float32, np.float64) else np.float32)
    assert unary.dtype.kind in "fiu"
    if np.isfinite(unary).all() and q.size:
        assert np.isfinite(q).all()
        np.testing.assert_allclose(q.sum(-3), 1, rtol=1e-3)  # labels: [B?, L, H, W] (ndim 2)


@settings(max_examples=min(settings().max_examples, 100))
@given(
    unaries,
    images,
    compats,
    counts(-1, 3),
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
    counts(-1, 3),
)
def test_grid_crf_never_crashes_and_returns_distributions(unary, image, nb, w1, beta, iters):
    q = check_call(ops.grid_crf, CRF_ARGS, unary, image, neighbors=nb, w1=w1, beta=beta, iterations=iters)
    if q is not None:
        _is_distribution(q, unary)


kernel_params = st.one_of(
    st.builds(ops.Gaussian, any_float(0, 20), any_float(-5, 5), exact=st.booleans()),
    st.builds(ops.Bilateral, any_float(0, 100), any_float(0, 50), any_float(-5, 5)),
)


@settings(max_examples=min(settings().max_examples, 100))
@given(
    st.lists(kernel_params, min_size=1, max_size=2),
    any_float(-3, 3),
    st.none() | any_float(0.1, 3),
    st.sampled_from(["symmetric", "none"]),
    st.booleans(),
)
def test_dense_crf_kernel_parameters_from_the_whole_float_range(kernels, compat, spacing, norm, exclude):
    # Widths from 5e-324 to 1e300 and weights up to float32's overflow: a distribution or a named error,
    # quickly (a width once sized a loop of 6 sxy steps; a weight of 1e38 gave NaN).
    rng = np.random.default_rng(0)
    unary = rng.random((3, 7, 9)).astype(np.float32)
    image = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    q = check_call(
        ops.dense_crf,
        [a for a in CRF_ARGS if a != "features"] + ["compat, weight"],
        unary,
        image=image,
        kernels=kernels,
        compat=compat,
        spacing=spacing,
        normalization=norm,
        exclude_self=exclude,
        iterations=2,
    )
    if q is not None:
        _is_distribution(q, unary)


@given(
    st.sampled_from([4, 8]),
    any_float(-1, 20),
    any_float(-1, 20),
    st.none() | any_float(-1, 2),
    counts(-1, 3),
)
def test_grid_crf_weights_from_the_whole_float_range(nb, w1, w2, beta, iters):
    rng = np.random.default_rng(1)
    unary = rng.random((3, 6, 5)).astype(np.float32)
    image = rng.random((6, 5, 3)).astype(np.float32)
    q = check_call(
        ops.grid_crf, CRF_ARGS, unary, image, neighbors=nb, w1=w1, w2=w2, beta=beta, iterations=iters
    )
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


def test_gaussians_wider_than_the_image_are_filtered_as_1000_extents_wide():
    rng = np.random.default_rng(2)
    unary = rng.random((3, 20, 30)).astype(np.float32)
    widest = ops.dense_crf(unary, kernels=[ops.Gaussian(sxy=(20_000, 30_000))])
    for sxy in (7e8, 1e300, (3e9, 30_001)):
        np.testing.assert_array_equal(ops.dense_crf(unary, kernels=[ops.Gaussian(sxy=sxy)]), widest)
    # the same kernel through the pydensecrf drop-in, whose widths go the same way
    import convloc.densecrf as dcrf

    d = dcrf.DenseCRF2D(30, 20, 3)
    d.setUnaryEnergy(unary.reshape(3, -1))
    d.addPairwiseGaussian(sxy=7e8, compat=3)
    assert np.isfinite(np.asarray(d.inference(2))).all()


def test_weights_that_overflow_float32_are_refused_by_name():
    rng = np.random.default_rng(3)
    unary, image = rng.random((3, 6, 7)).astype(np.float32), rng.random((6, 7, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="^beta: expected a finite number"):
        ops.grid_crf(unary, image, beta=float("inf"))
    for kw in ({"w1": 1e300}, {"w2": 1e38}, {"w1": -1e30}):
        with pytest.raises(ValueError, match="^w1, w2: the pairwise energy could reach"):
            ops.grid_crf(unary, image, **kw)
    with pytest.raises(ValueError, match="^compat, weight: the pairwise energy could reach"):
        ops.dense_crf(unary, compat=1e38)
    with pytest.raises(ValueError, match="^compat, weight: the pairwise energy could reach"):
        ops.dense_crf(unary, kernels=[ops.Gaussian(weight=1e38)])
    # beta huge but finite: exp(-beta d²) is 1 for equal neighbours and 0 otherwise, no NaN
    image[:, 3:] = image[:, :1]
    assert np.isfinite(ops.grid_crf(unary, image, beta=1e300)).all()


def test_widths_so_small_their_square_underflows_give_the_identity_kernel():
    rng = np.random.default_rng(4)
    unary = rng.random((3, 6, 7)).astype(np.float32)
    for exact in (False, True):
        q = ops.dense_crf(unary, kernels=[ops.Gaussian(sxy=1e-300, exact=exact)], normalization="none")
        # each pixel's kernel sum is its own weight, 1: the Potts message lowers every label's energy
        # by the weight times Q, so Q stays finite and a distribution
        assert np.isfinite(q).all()
        np.testing.assert_allclose(q.sum(0), 1, rtol=1e-5)


def test_sizes_derived_from_parameters_are_checked_before_allocation():
    with pytest.raises(ValueError, match="^iterations: the energy of"):
        ops.dense_crf(np.zeros((2, 3, 3), np.float32), iterations=2**62, return_energy=True)
    with pytest.raises(ValueError, match="^n_labels: a unary of"):
        ops.unary_from_labels(np.zeros((3, 3), np.int64), 2**60, 0.5)


def test_errors_name_the_users_arguments_not_internal_features():
    rng = np.random.default_rng(6)
    unary = rng.random((3, 6, 7)).astype(np.float32)
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    for kernel in (ops.Bilateral(srgb=1e-30), ops.Bilateral(sxy=1e-30), ops.Bilateral(sxy=(1e-9, 1))):
        with pytest.raises(ValueError, match=r"^kernels\[1\]: sxy or srgb too small for this image"):
            ops.dense_crf(unary, image=image, kernels=[ops.Gaussian(), kernel])
    with pytest.raises(ValueError, match=r"^image: a bilateral kernel takes at most 30 channels"):
        ops.dense_crf(unary, image=rng.random((6, 7, 40)).astype(np.float32), kernels=[ops.Bilateral()])
    with pytest.raises(ValueError, match=r"^kernels\[0\]\.features: expected 1 to 32 features per point"):
        ops.dense_crf(unary, kernels=[ops.Features(np.ones((40, 6, 7), np.float32))])
    with pytest.raises(TypeError, match="^kernels: expected a list of Gaussian, Bilateral or Features"):
        ops.dense_crf(unary, kernels=ops.Gaussian())
    with pytest.raises(TypeError, match="^compat: expected a real number, got object"):
        ops.dense_crf(unary, compat=object())
