"""The pydensecrf and SimpleCRF drop-ins: against the peers where installed, and always against
convloc's native call and the peers' formulas as documented."""

import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest

import convloc
import convloc.densecrf as dcrf
from convloc import ops
from convloc.benchmarks.bench_crf import VOLUME_PARAM, volume_input
from convloc.densecrf import eigen, utils
from convloc.simplecrf import denseCRF, denseCRF3D

DATA = Path(convloc.__file__).parent / "data"


def photo_input(labels_noise: float = 1.2, seed: int = 0):
    """(I [256, 256, 3] uint8, P [256, 256, 6] float32): the shipped photo and probabilities that
    favour its shipped 6-region labels, with noise in 8x8 blocks."""
    from PIL import Image

    with Image.open(DATA / "crf_demo_astronaut.jpg") as im:
        image = np.asarray(im.convert("RGB"))
    with Image.open(DATA / "crf_demo_labels.png") as im:
        truth = np.asarray(im).astype(np.int64)
    n = int(truth.max()) + 1
    noise = np.random.default_rng(seed).standard_normal((32, 32, n)).repeat(8, 0).repeat(8, 1)
    logits = 1.5 * np.eye(n)[truth] + labels_noise * noise
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return np.ascontiguousarray(image), (p / p.sum(-1, keepdims=True)).astype(np.float32)


def dirichlet(rng, labels, *spatial, dtype=np.float64):
    """Probabilities [labels, *spatial], labels first."""
    return np.moveaxis(rng.dirichlet(np.ones(labels), spatial), -1, 0).astype(dtype)


# ---- pydensecrf.utils ----


def test_utils_has_pydensecrf_utils_signatures():
    pd_utils = pytest.importorskip("pydensecrf.utils")
    for name in utils.__all__:
        theirs = inspect.signature(getattr(pd_utils, name)).parameters
        ours = inspect.signature(getattr(utils, name)).parameters
        assert [(p.name, p.default) for p in ours.values()] == [(p.name, p.default) for p in theirs.values()]


def test_unary_from_softmax_is_pydensecrf_formula(rng):
    # pydensecrf: [L, N] float32 = -log(clip(scale·P + (1 - scale)/L, clip, 1)), the labels' axis first.
    p = dirichlet(rng, 5, 6, 7)
    p[2, 1, 1], p[3, 1, 1] = p[2, 1, 1] + p[3, 1, 1], 0.0  # an exact zero
    for dtype in (np.float32, np.float64):
        pd = p.astype(dtype)
        for scale, clip in ((None, 1e-5), (0.7, 0.01), (None, None), (1.0, 0.0)):
            mixed = pd if scale is None else scale * pd + (1 - scale) / 5
            with np.errstate(divide="ignore"):
                want = (-np.log(mixed if clip is None else np.clip(mixed, clip, 1.0))).reshape(5, -1)
            got = utils.unary_from_softmax(pd, scale, clip)
            assert got.shape == (5, 42) and got.dtype == np.float32
            np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(ops.unary_from_softmax(pd, scale, clip).reshape(5, -1), got)
    assert np.isinf(utils.unary_from_softmax(p, clip=None)[3, 8])
    with pytest.warns(DeprecationWarning):
        np.testing.assert_array_equal(utils.softmax_to_unary(p, 0.8), utils.unary_from_softmax(p, 0.8, None))
    with pytest.warns(DeprecationWarning):
        np.testing.assert_array_equal(utils.softmax_to_unary(p), utils.unary_from_softmax(p, None, None))


def test_unary_from_labels_is_pydensecrf_formula(rng):
    labels = rng.integers(0, 4, (6, 7))
    for zero_unsure, n in ((True, 3), (False, 4)):
        got = utils.unary_from_labels(labels, n, 0.7, zero_unsure)
        cls = labels.ravel() - 1 if zero_unsure else labels.ravel()
        want = np.full((n, 42), -np.log(0.3 / (n - 1)), np.float32)
        for i, c in enumerate(cls):
            if c >= 0:
                want[c, i] = -np.log(0.7)
            else:
                want[:, i] = -np.log(1 / n)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.warns(DeprecationWarning):
        np.testing.assert_array_equal(utils.compute_unary(labels, 3), utils.unary_from_labels(labels, 3, 0.5))


def test_pairwise_features_are_pydensecrf_formula(rng):
    # position / sdim per axis, then channel / schan, in float32 divisions: the same bits.
    feats = utils.create_pairwise_gaussian((2, 3), (6, 7))
    y, x = np.indices((6, 7), dtype=np.float32)
    np.testing.assert_array_equal(feats, np.stack([y / np.float32(2), x / np.float32(3)]).reshape(2, -1))
    img = rng.integers(0, 256, (6, 7, 3)).astype(np.uint8)
    feats = utils.create_pairwise_bilateral((2, 3), (4, 5, 6), img, chdim=2)
    chans = [img[..., c].astype(np.float32) / np.float32(s) for c, s in enumerate((4, 5, 6))]
    np.testing.assert_array_equal(feats[2:], np.stack(chans).reshape(3, -1))
    np.testing.assert_array_equal(feats[:2], utils.create_pairwise_gaussian((2, 3), (6, 7)))
    grey = utils.create_pairwise_bilateral((2, 3, 4), 5, rng.integers(0, 256, (3, 4, 5)), chdim=-1)
    assert grey.shape == (4, 60)
    vol = rng.integers(0, 256, (2, 4, 5, 6)).astype(np.uint8)  # channels first, 3-D
    assert utils.create_pairwise_bilateral((1, 2, 3), 7, vol, chdim=0).shape == (5, 120)


def test_utils_match_pydensecrf(rng):
    pd_utils = pytest.importorskip("pydensecrf.utils")
    p = dirichlet(rng, 4, 6, 7, dtype=np.float32)
    for scale, clip in ((None, 1e-5), (0.7, 0.01), (0.9, None)):
        np.testing.assert_allclose(
            utils.unary_from_softmax(p, scale, clip), pd_utils.unary_from_softmax(p, scale, clip), rtol=1e-6
        )
    labels = rng.integers(0, 4, (6, 7))
    for zero_unsure, n in ((True, 3), (False, 4)):
        np.testing.assert_allclose(
            utils.unary_from_labels(labels, n, 0.7, zero_unsure),
            pd_utils.unary_from_labels(labels, n, 0.7, zero_unsure),
            rtol=1e-6,
        )
    img = rng.integers(0, 256, (6, 7, 3)).astype(np.uint8)
    np.testing.assert_array_equal(
        utils.create_pairwise_gaussian((2, 3), (6, 7)), pd_utils.create_pairwise_gaussian((2, 3), (6, 7))
    )
    for schan in (5, (4, 5, 6)):
        np.testing.assert_array_equal(
            utils.create_pairwise_bilateral((2, 3), schan, img, chdim=2),
            pd_utils.create_pairwise_bilateral((2, 3), schan, img, chdim=2),
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        np.testing.assert_allclose(
            utils.softmax_to_unary(p, 0.8), pd_utils.softmax_to_unary(p, 0.8), rtol=1e-6
        )
        np.testing.assert_allclose(
            utils.compute_unary(labels, 3), pd_utils.compute_unary(labels, 3), rtol=1e-6
        )


# ---- pydensecrf.densecrf and pydensecrf.eigen ----


def _dropin(image, unary, iterations=5, **kw):
    labels, h, w = unary.shape
    d = dcrf.DenseCRF2D(w, h, labels)
    d.setUnaryEnergy(unary.reshape(labels, -1))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=10, **kw)
    return d


def test_dropin_q_is_the_native_q():
    image, p = photo_input()
    unary = ops.unary_from_softmax(np.moveaxis(p, -1, 0))
    q = _dropin(image, unary).inference(5)
    native = ops.dense_crf(unary, image=image, kernels=[ops.Gaussian(3, 3), ops.Bilateral(80, 13, 10)])
    assert isinstance(q, eigen.MatrixXf) and q.dtype == np.float32 and q.shape == (6, 256 * 256)
    np.testing.assert_array_equal(q, native.reshape(6, -1))
    np.testing.assert_array_equal(np.argmax(q, axis=0), native.argmax(0).ravel())


def test_dropin_second_image_and_infinite_energies(rng):
    image, p = photo_input()
    unary = ops.unary_from_softmax(np.moveaxis(p, -1, 0))
    other = np.ascontiguousarray(image[::-1])
    d = _dropin(image, unary)
    d.addPairwiseBilateral(sxy=30, srgb=20, rgbim=other, compat=4)  # another image: lattice features
    feats = utils.create_pairwise_bilateral((30, 30), 20, other, chdim=2)[[1, 0, 2, 3, 4]]  # x first
    native = ops.dense_crf(
        unary,
        image=image,
        kernels=[ops.Gaussian(3, 3), ops.Bilateral(80, 13, 10), ops.Features(feats, weight=4)],
    )
    q = d.inference(5)
    assert (q.argmax(0) == native.argmax(0).ravel()).mean() > 0.999
    # +inf (P = 0) keeps a label away, as pydensecrf's exp(-inf) = 0
    u = unary.reshape(6, -1).copy()
    u[2, ::3] = np.inf
    d.setUnaryEnergy(u)
    q = d.inference(5)
    assert np.all(q[2, ::3] < 1e-30) and not np.any(q.argmax(0)[::3] == 2)


def test_dropin_reads_its_inputs_when_given(rng):
    # pydensecrf copies the unary and the image when they are set: changing them later changes nothing.
    image, p = photo_input()
    image, unary = image.copy(), ops.unary_from_softmax(np.moveaxis(p, -1, 0))
    d = _dropin(image, unary)
    q = np.array(d.inference(3))
    unary[:], image[:] = 1.0, 0
    np.testing.assert_array_equal(d.inference(3), q)


def test_matrixxf_argmax_is_numpys(rng):
    for dtype in (np.float32, np.float64):
        q = rng.integers(0, 4, (7, 5, 300)).astype(dtype)  # ties everywhere
        q[3, 2, 17] = q[5, 2, 17] = np.nan
        q[0, 4, 299] = np.nan
        m = q.view(eigen.MatrixXf)
        for axis in (0, -3, 1, 2, None):
            np.testing.assert_array_equal(np.argmax(m, axis=axis), q.argmax(axis=axis))
        assert type(m.argmax(0)) is np.ndarray
        np.testing.assert_array_equal(np.argmax(m[:, ::2], axis=0), q[:, ::2].argmax(0))
        np.testing.assert_array_equal(m.argmax(0, keepdims=True), q.argmax(0, keepdims=True))
        out = np.empty((5, 300), np.int64)
        m.argmax(0, out=out)
        np.testing.assert_array_equal(out, q.argmax(0))


def test_eigen_conversions(rng):
    assert eigen.vectorXf([1, 2]).dtype == np.float32
    assert eigen.vectorXs(np.array([1, -3], np.int64)).dtype == np.int16
    q = eigen.matrixXf(np.full((3, 10 * 12), 1 / 3))
    assert isinstance(q, eigen.MatrixXf) and q.dtype == np.float32
    d = dcrf.DenseCRF2D(12, 10, 3)
    d.setUnaryEnergy(ops.unary_from_softmax(dirichlet(rng, 3, 10, 12)).reshape(3, -1))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.stepInference(q, eigen.matrixXf(np.zeros_like(q)), eigen.matrixXf(np.zeros_like(q)))
    np.testing.assert_allclose(q.sum(0), 1, rtol=1e-5)
    with pytest.raises(ValueError, match="arr"):
        eigen.vectorXs([70000])
    with pytest.raises(TypeError, match="arr"):
        eigen.vectorXs([1.5])
    with pytest.raises(ValueError, match="arr"):
        eigen.matrixXf([1, 2])


# ---- SimpleCRF ----


def simplecrf_2d_native(image, probs, param):
    w1, alpha, beta, w2, gamma, it = param
    unary = -np.log(np.clip(np.moveaxis(probs, -1, 0), 0.01, 0.99))
    kernels = [ops.Gaussian(gamma, w2), ops.Bilateral(alpha, beta, w1)]
    return ops.dense_crf(unary, image=image, kernels=kernels, iterations=int(it), return_labels=True)[1]


PARAM_2D = (10.0, 80, 13, 3.0, 3, 5.0)  # SimpleCRF's example's values


def test_simplecrf_2d_is_the_native_call():
    image, p = photo_input()
    labels = denseCRF.densecrf(image, p, PARAM_2D)
    assert labels.dtype == np.int8 and labels.shape == (256, 256)
    np.testing.assert_array_equal(labels, simplecrf_2d_native(image, p, PARAM_2D))
    # every layout and float64 probabilities; a strided view of a wider array, as in SimpleCRF's example
    wide = np.concatenate([p, np.zeros_like(p)], axis=-1)[..., :6]
    np.testing.assert_array_equal(denseCRF.densecrf(image, wide.astype(np.float64), list(PARAM_2D)), labels)


def test_simplecrf_3d_is_the_native_call():
    vol, probs = volume_input((24, 20, 16), seed=1)
    labels = denseCRF3D.densecrf3d(vol, probs, VOLUME_PARAM)
    assert labels.dtype == np.int8 and labels.shape == (24, 20, 16)
    unary = -np.log(np.moveaxis(probs, -1, 0))
    kernels = [ops.Gaussian(5, 2), ops.Bilateral(5, 5, 3)]
    native = ops.dense_crf(unary, image=vol, ndim=3, kernels=kernels, iterations=5, return_labels=True)[1]
    np.testing.assert_array_equal(labels, native)


def test_simplecrf_3d_follows_the_voxel_grid():
    # PosZStd, PosCStd, PosRStd along axes 0, 1, 2: swapping axes 0 and 2 with their deviations swaps the labels.
    vol, probs = volume_input((20, 16, 12), seed=2)
    param = dict(VOLUME_PARAM, PosZStd=2, PosRStd=6, BilateralZStd=3.0, BilateralRStd=8.0)
    swapped = dict(param, PosZStd=6, PosRStd=2, BilateralZStd=8.0, BilateralRStd=3.0)
    labels = denseCRF3D.densecrf3d(vol, probs, param)
    t = denseCRF3D.densecrf3d(np.swapaxes(vol, 0, 2), np.swapaxes(probs, 0, 2), swapped)
    assert (np.swapaxes(t, 0, 2) == labels).mean() > 0.99  # (the lattice orders its features differently)


def test_simplecrf_2d_agrees_with_simplecrf():
    peer = pytest.importorskip("denseCRF")
    image, p = photo_input()
    for param in (PARAM_2D, (5.0, 40, 20, 2.0, 2, 10)):
        ours, theirs = denseCRF.densecrf(image, p, param), peer.densecrf(image, p, param)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        assert (ours == theirs).mean() >= 0.99


def test_simplecrf_3d_agrees_with_simplecrf():
    peer = pytest.importorskip("denseCRF3D")
    vol, probs = volume_input((40, 48, 40))  # SimpleCRF places voxels right where D = W
    ours, theirs = denseCRF3D.densecrf3d(vol, probs, VOLUME_PARAM), peer.densecrf3d(vol, probs, VOLUME_PARAM)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert (ours == theirs).mean() >= 0.99


# ---- bad input ----


def test_pydensecrf_bad_input_raises(rng):
    d = dcrf.DenseCRF2D(12, 10, 3)
    image = rng.integers(0, 256, (10, 12, 3)).astype(np.uint8)
    for grey in (image[..., 0], np.ascontiguousarray(image[..., :1])):
        with pytest.raises(ValueError, match="rgbim"):
            d.addPairwiseBilateral(sxy=3, srgb=3, rgbim=grey, compat=3)
    with pytest.raises(ValueError, match="srgb"):
        d.addPairwiseBilateral(sxy=3, srgb=(3, 3), rgbim=image, compat=3)
    u = np.full((3, 120), 1.0, np.float32)
    for bad in (np.nan, -np.inf):
        u[1, 7] = bad
        with pytest.raises(ValueError, match="u:"):
            d.setUnaryEnergy(u)
    u[:, 7] = np.inf
    with pytest.raises(ValueError, match="u:.*every point"):
        d.setUnaryEnergy(u)
    p = dirichlet(rng, 3, 10, 12)
    for bad, _what in (
        (np.where(p == p.max(), np.nan, p), "NaN"),
        (p * 1.5, "not summing to one"),
        (np.log(p), "logits"),
        (np.moveaxis(p, 0, -1), "labels last"),
    ):
        with pytest.raises(ValueError, match="sm: expected probabilities"):
            utils.unary_from_softmax(bad)
        with pytest.raises(ValueError, match="probs: expected probabilities"):
            ops.unary_from_softmax(bad)
    with pytest.raises(ValueError, match="scale"):
        utils.unary_from_softmax(p, scale=1.5)
    with pytest.raises(ValueError, match="sdims"):
        utils.create_pairwise_gaussian((3, 3, 3), (10, 12))  # pydensecrf: IndexError
    with pytest.raises(ValueError, match="schan"):
        utils.create_pairwise_bilateral((3, 3), (4, 5), image, chdim=2)
    with pytest.raises(ValueError, match="labels"):
        utils.unary_from_labels(np.array([[0, 5]]), 3, 0.7)


def test_simplecrf_bad_input_raises(rng):
    image, p = photo_input()
    small_i, small_p = np.ascontiguousarray(image[:40, :60]), np.ascontiguousarray(p[:40, :60])
    cases = [
        ((small_i / 255.0, small_p, PARAM_2D), TypeError, "I: expected a uint8"),
        (
            (np.ascontiguousarray(small_i.transpose(1, 0, 2)), small_p, PARAM_2D),
            ValueError,
            "I: expected shape",
        ),
        (
            (np.ascontiguousarray(np.moveaxis(small_i, -1, 0)), small_p, PARAM_2D),
            ValueError,
            "channels first",
        ),
        ((small_i[..., :1], small_p, PARAM_2D), ValueError, "1 channels"),
        ((small_i, np.moveaxis(small_p, -1, 0), PARAM_2D), ValueError, "P: expected probabilities"),
        ((small_i, np.log(small_p), PARAM_2D), ValueError, "P: expected probabilities"),
        (
            (small_i, np.where(small_p > 0.5, np.nan, small_p), PARAM_2D),
            ValueError,
            "P: expected probabilities",
        ),
        ((small_i, small_p[..., :1], PARAM_2D), ValueError, "P: expected 2 to 128 labels"),
        ((small_i, small_p, PARAM_2D[:5]), ValueError, r"param: expected \(w1"),
        ((small_i, small_p, (10.0, -80, 13, 3.0, 3, 5)), ValueError, r"param\[1\] \(alpha\)"),
        ((small_i, small_p, (10.0, 80, 13, 3.0, 3, 5.5)), ValueError, r"param\[5\] \(iterations\)"),
        ((small_i, small_p, (10.0, 80, 13, np.nan, 3, 5)), ValueError, r"param\[3\] \(w2\)"),
    ]
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            denseCRF.densecrf(*args)
    vol, probs = volume_input((8, 6, 8))
    cases = [
        (
            (vol, probs, {k: v for k, v in VOLUME_PARAM.items() if k != "PosW"}),
            ValueError,
            "param: missing PosW",
        ),
        ((vol, probs, dict(VOLUME_PARAM, ModalityNum=1)), ValueError, "BilateralModsStds"),
        (
            (vol, probs, dict(VOLUME_PARAM, ModalityNum=3, BilateralModsStds=(5, 5, 5))),
            ValueError,
            "I: expected shape",
        ),
        ((vol, probs, dict(VOLUME_PARAM, PosZStd=0)), ValueError, "PosZStd"),
        ((vol, probs, dict(VOLUME_PARAM, MaxIterations=-1)), ValueError, "MaxIterations"),
        ((vol, probs, list(VOLUME_PARAM.values())), TypeError, "param: expected a dict"),
        ((vol.astype(np.float32), probs, VOLUME_PARAM), TypeError, "I: expected a uint8"),
        ((vol[:, :, :7], probs, VOLUME_PARAM), ValueError, "I: expected shape"),
        ((vol, probs[..., 0], VOLUME_PARAM), ValueError, "P: expected probabilities"),
        ((vol, probs * 2, VOLUME_PARAM), ValueError, "P: expected probabilities"),
    ]
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            denseCRF3D.densecrf3d(*args)
