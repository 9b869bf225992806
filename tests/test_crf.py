import numpy as np
import pytest

import convloc
import convloc.densecrf as dcrf
from convloc import ops
from convloc._kernels import crf as K
from reference import crf as ref


def smooth_unary(rng, labels, h, w, sigma=3.0, strength=3.0):
    """Spatially smooth random unaries (-log of a softmax), the kind a segmentation net gives."""
    from scipy.ndimage import gaussian_filter

    z = gaussian_filter(rng.standard_normal((labels, h, w)), sigma=(0, sigma, sigma), mode="reflect")
    logits = strength * z / z.std()
    p = np.exp(logits - logits.max(0))
    p /= p.sum(0)
    return (-np.log(np.clip(p, 1e-3, 1.0))).astype(np.float32)


def blocky_image(rng, h, w):
    """A piecewise-constant RGB image with noise (edges for the bilateral kernel)."""
    base = rng.integers(0, 256, (4, 4, 3))
    img = np.kron(base, np.ones((h // 4 + 1, w // 4 + 1, 1)))[:h, :w]
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


def reference_kernels(h, w, image, labels, gauss=(3.0, 3.0), bil=(8.0, 13.0, 10.0), mode="symmetric"):
    pos = K.positions((h, w), np.array([1.0, 1.0]), np.float64)
    return [
        (pos / gauss[0], K.compat_matrix("potts", labels, gauss[1], "c"), mode),
        (
            np.concatenate([pos / bil[0], image.reshape(-1, 3) / bil[1]], 1),
            K.compat_matrix("potts", labels, bil[2], "c"),
            mode,
        ),
    ]


def test_agrees_with_exact_mean_field(rng):
    # Label agreement over several small images (pydensecrf scores about the same here: both are
    # lattice approximations of the same exact updates).
    labels = 5
    kernels = [ops.Gaussian(3, 3), ops.Bilateral(8, 13, 10)]
    agree = {1: [], 10: []}
    for h, w in ((48, 48), (48, 48), (40, 31), (17, 9)):
        u, img = smooth_unary(rng, labels, h, w), blocky_image(rng, h, w)
        ks = reference_kernels(h, w, img, labels)
        for it in agree:
            lab = ops.dense_crf(u, image=img, kernels=kernels, iterations=it, return_labels=True)[1]
            q_ref, _ = ref.dense_crf(u.reshape(labels, -1), ks, it)
            agree[it].append(lab.ravel() == q_ref.argmax(0))
    # pydensecrf itself scores 0.988-0.995 after 1 iteration on these inputs.
    assert np.concatenate(agree[1]).mean() >= 0.985
    assert np.concatenate(agree[10]).mean() >= 0.97


def test_agrees_with_exact_mean_field_on_benchmark_crops():
    # Agreement with exact mean-field of at least 99 % after 1 iteration, 97 % after 10, on 48x48 crops made with the
    # benchmark's recipe: astronaut, 21 labels of smoothed noise, its kernels and weights.
    pytest.importorskip("skimage")
    from scipy.ndimage import gaussian_filter
    from skimage.data import astronaut

    image = astronaut()[100:244, 150:294]
    z = np.random.default_rng(0).standard_normal((21, 144, 144))
    z = gaussian_filter(z, (0, 16, 16), mode="reflect")
    logits = 3 * z / z.std()
    p = np.exp(logits - logits.max(0))
    p /= p.sum(0)
    unary = (-np.log(np.clip(p, 0.01, 0.99))).astype(np.float32)
    kernels = [ops.Gaussian(3, 3), ops.Bilateral(80, 13, 10)]
    agree = {1: [], 10: []}
    for y, x in ((0, 0), (0, 96), (96, 0), (48, 48)):
        img = np.ascontiguousarray(image[y : y + 48, x : x + 48])
        u = np.ascontiguousarray(unary[:, y : y + 48, x : x + 48])
        ks = reference_kernels(48, 48, img, 21, bil=(80, 13, 10))
        for it in agree:
            lab = ops.dense_crf(u, image=img, kernels=kernels, iterations=it, return_labels=True)[1]
            exact = ref.dense_crf(u.reshape(21, -1), ks, it)[0].argmax(0)
            agree[it].append(lab.ravel() == exact)
    assert np.concatenate(agree[1]).mean() >= 0.99
    assert np.concatenate(agree[10]).mean() >= 0.97


@pytest.mark.parametrize("mode", ["symmetric", "before", "after", "none"])
@pytest.mark.parametrize("compat", ["potts", "diag", "matrix"])
def test_modes_and_compat_close_to_exact(rng, mode, compat):
    h, w, labels = 16, 20, 4
    u = smooth_unary(rng, labels, h, w, sigma=2)
    c = {
        "potts": 2.0,
        "diag": -rng.random(labels) * 2,
        "matrix": rng.standard_normal((labels, labels)),
    }[compat]
    pos = K.positions((h, w), np.array([1.0, 1.0]), np.float64)
    q = ops.dense_crf(
        u.astype(np.float64),
        kernels=[ops.Gaussian(2.0, 1.5)],
        compat=c,
        normalization=mode,
        iterations=3,
    )
    q_ref, _ = ref.dense_crf(
        u.reshape(labels, -1), [(pos / 2.0, K.compat_matrix(c, labels, 1.5, "c"), mode)], 3
    )
    assert np.abs(q.reshape(labels, -1) - q_ref).mean() < 0.01
    assert (q.reshape(labels, -1).argmax(0) == q_ref.argmax(0)).mean() > 0.97


def _gaussian_sums(q, sigma):
    """Exact sum_j exp(-|p_i - p_j|² / (2 sigma²)) q[:, j] over the pixels of [L, H, W], by brute
    force, over the j within ceil(3 sigma) of i along each axis (the exact filter's truncation)."""
    h, w = q.shape[1:]
    pos = K.positions((h, w), np.array([1.0, 1.0]), np.float64)
    d = pos[:, None, :] - pos[None, :, :]
    k = np.exp(-(d**2).sum(-1) / (2 * sigma**2)) * (np.abs(d).max(-1) <= np.ceil(3 * sigma))
    return (q.reshape(len(q), -1) @ k).reshape(q.shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, sigma", [((20, 23), 3.0), ((9, 31), 2.5), ((33, 1), 4.0), ((26, 27), 5.2)])
def test_coarse_gaussian_filter_close_to_exact(rng, dtype, shape, sigma):
    # One update with a Potts kernel and no normalisation: log Q1 + U = w·(K Q0) - log Z per pixel, so
    # the kernel sums come back out as differences between labels; compare them with exact sums.
    # float32 takes the fused update, float64 the coarse filter on its own.
    labels, weight = 4, 0.1
    u = rng.random((labels,) + shape) * 3
    q0 = np.exp(-u) / np.exp(-u).sum(0)
    q1 = ops.dense_crf(
        u.astype(dtype), kernels=[ops.Gaussian(sigma, weight)], normalization="none", iterations=1
    )
    got = np.log(q1.astype(np.float64)) + u
    want = weight * _gaussian_sums(q0, sigma)
    got, want = got - got[0], want - want[0]
    peak = weight  # each pixel's own weight in the exact kernel
    # The B-spline approximation stays within 7.3 % of the kernel's peak per pair of pixels; over
    # these sums (of 30-150 pixels' weights) the error is a fraction of one pixel's weight.
    assert np.abs(got - want).max() < 0.5 * peak  # 0.06-0.31 seen
    assert np.abs(got - want).mean() < 0.1 * peak  # 0.007-0.055 seen
    exact = ops.dense_crf(
        u.astype(dtype), kernels=[ops.Gaussian(sigma, weight, exact=True)], normalization="none", iterations=1
    )
    np.testing.assert_allclose(
        np.log(exact.astype(np.float64)) + u - (np.log(exact[0]) + u[0]), want, atol=1e-4
    )


def test_exclude_self_and_energy_close_to_exact(rng):
    h, w, labels = 20, 18, 3
    u, img = smooth_unary(rng, labels, h, w), blocky_image(rng, h, w)
    kernels = [ops.Gaussian(3, 3), ops.Bilateral(8, 13, 10)]
    for exclude in (False, True):
        q, e = ops.dense_crf(
            u.astype(np.float64),
            image=img,
            kernels=kernels,
            iterations=4,
            exclude_self=exclude,
            return_energy=True,
        )
        ks = reference_kernels(h, w, img.astype(np.float64), labels)
        q_ref, e_ref = ref.dense_crf(u.reshape(labels, -1), ks, 4, exclude_self=exclude)
        assert (q.reshape(labels, -1).argmax(0) == q_ref.argmax(0)).mean() > 0.97
        np.testing.assert_allclose(e, e_ref, rtol=0.05)


def test_energy_decreases_for_potts_symmetric(rng):
    u, img = smooth_unary(rng, 6, 40, 50), blocky_image(rng, 40, 50)
    for dtype in (np.float32, np.float64):
        _, e = ops.dense_crf(u.astype(dtype), image=img, iterations=10, return_energy=True)
        assert e.shape == (11,)
        assert np.all(np.diff(e) <= 1e-6 * np.abs(e[:-1])), e


def test_shapes_batch_and_labels(rng):
    u = np.stack([smooth_unary(rng, 3, 12, 15) for _ in range(3)])
    img = np.stack([blocky_image(rng, 12, 15) for _ in range(3)])
    q, lab = ops.dense_crf(u, image=img, iterations=3, return_labels=True)
    assert q.shape == u.shape and q.dtype == np.float32 and lab.shape == (3, 12, 15) and lab.dtype == np.int64
    np.testing.assert_allclose(q.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(lab, q.argmax(1))
    for b in range(3):  # batched = one image at a time
        q1 = ops.dense_crf(u[b], image=img[b], iterations=3)
        np.testing.assert_allclose(q1, q[b], rtol=1e-5, atol=1e-6)
    q0 = ops.dense_crf(u, image=img, iterations=0)
    np.testing.assert_allclose(q0, ref.softmax(-u.astype(np.float64), axis=1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("labels", [2, 5, 12, 21, 30, 40])  # 40: past the fused update's 32
@pytest.mark.parametrize("iterations", [0, 2])
def test_labels_are_the_first_argmax_of_q(rng, labels, iterations):
    u, img = smooth_unary(rng, labels, 96, 128), blocky_image(rng, 96, 128)
    u[labels - 1] = u[0]  # exact ties between the first and the last label
    u[labels // 2, :40] = u[0, :40]  # and with one in the middle, in part of the image
    u[min(8, labels - 1), 60:] = u[0, 60:]  # and with label 8 (the same lane of the next 8 labels)
    q, lab = ops.dense_crf(u, image=img, iterations=iterations, return_labels=True)
    np.testing.assert_array_equal(lab, q.argmax(0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "batch, spatial, channels, image_dtype",
    [
        (1, (37, 53), 3, np.uint8),
        (2, (5, 7, 9), 1, np.uint8),
        (3, (16, 11), 2, "same"),
        (1, (1, 1), 4, np.uint8),
    ],
)
def test_bilateral_features_match_numpy(rng, dtype, batch, spatial, channels, image_dtype):
    # The lattice's rounding depends on the features' last bits: the C++ helper must compute them as
    # NumPy does (arange(size) * scale, image / srgb, in the features' dtype).
    from convloc import _C

    idt = dtype if image_dtype == "same" else image_dtype
    n = int(np.prod(spatial))
    image = (
        rng.integers(0, 256, (batch, n, channels))
        if idt == np.uint8
        else rng.random((batch, n, channels)) * 255
    )
    image = image.astype(idt)
    scale = (rng.random(len(spatial)) * 0.5 + 0.01).astype(dtype)
    srgb = (rng.random(channels) * 20 + 1).astype(dtype)
    out = np.empty((batch, n, len(spatial) + channels), dtype)
    _C.bilateral_features(image, list(spatial), scale.tolist(), srgb.tolist(), out)
    expected = np.empty_like(out)
    grid = expected.reshape(batch, *spatial, -1)
    for a in range(len(spatial)):  # column ndim - 1 - a: axis a
        shape = [1] * (len(spatial) + 1)
        shape[a + 1] = spatial[a]
        grid[..., len(spatial) - 1 - a] = (np.arange(spatial[a], dtype=dtype) * scale[a]).reshape(shape)
    for c in range(channels):
        np.divide(image[..., c], srgb[c], out=expected[..., len(spatial) + c])
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="srgb: expected"):
        _C.bilateral_features(image, list(spatial), scale.tolist(), srgb.tolist()[1:], out)
    with pytest.raises(ValueError, match="image: expected"):
        _C.bilateral_features(image, [n + 1], scale.tolist()[:1], srgb.tolist(), out)


def test_volume_with_spacing_and_user_features(rng):
    u = smooth_unary(rng, 3, 8, 10).reshape(3, 2, 4, 10)  # [L, D, H, W]
    kw = dict(ndim=3, iterations=2)
    q = ops.dense_crf(u, kernels=[ops.Gaussian(2.0, 3.0)], spacing=(2.0, 1.0, 1.0), **kw)
    np.testing.assert_allclose(
        q, ops.dense_crf(u, kernels=[ops.Gaussian((1.0, 2.0, 2.0), 3.0)], **kw), rtol=1e-6
    )
    # the same kernel through the lattice (user features) and through the exact reference
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in (2, 4, 10)], indexing="ij")).astype(np.float32)
    feats = grid * np.array([2.0, 1.0, 1.0], np.float32)[:, None, None, None] / 2.0
    q_lattice = ops.dense_crf(u, kernels=[ops.Features(feats, 3.0)], **kw)
    compat = K.compat_matrix("potts", 3, 3.0, "c")
    q_ref, _ = ref.dense_crf(u.reshape(3, -1), [(feats.reshape(3, -1).T, compat, "symmetric")], 2)
    np.testing.assert_allclose(q.reshape(3, -1), q_ref, atol=2e-3)
    assert np.abs(q_lattice.reshape(3, -1) - q_ref).mean() < 0.01
    # a single-channel (grayscale) image for the bilateral kernel
    img = rng.integers(0, 255, (2, 4, 10)).astype(np.uint8)
    assert ops.dense_crf(u, image=img, **kw).shape == u.shape


@pytest.mark.parametrize(
    "labels, shape, kernels",
    [
        (5, (64, 80), None),
        (21, (64, 80), None),
        (30, (64, 80), None),
        # two coarse Gaussians with other steps (5 and 2: even, zero last weights) on an odd-sized
        # image, whose pixel bands and blocks start inside image rows (at 61x83 the lattice's band
        # sums did not fit and the general update ran: 91x123 takes the fused one)
        (21, (91, 123), [ops.Gaussian(5.5, 3), ops.Gaussian(2.2, 1), ops.Bilateral(20, 13, 10)]),
        # the bilateral kernel alone (the fused update's other fixed shape)
        (12, (64, 80), [ops.Bilateral(80, 13, 10)]),
    ],
)
def test_thread_count_independent(rng, threads, labels, shape, kernels):
    # float32 without the energy takes the fused update (lattice sliced and splatted per pixel band);
    # with the energy, or in float64, the general one. Both must not depend on the thread count.
    u, img = smooth_unary(rng, labels, *shape), blocky_image(rng, *shape)
    kw = {} if kernels is None else {"kernels": kernels}
    results = {}
    for n in (1, 2):
        convloc.set_num_threads(n)
        results[n] = (
            ops.dense_crf(u, image=img, iterations=5, **kw),
            ops.dense_crf(u, image=img, iterations=5, return_energy=True, **kw),
            ops.dense_crf(u.astype(np.float64), image=img, iterations=5, **kw),
        )
    for a, b in zip(results[1], results[2]):
        for x, y in zip(*(((a,), (b,)) if isinstance(a, np.ndarray) else (a, b))):
            np.testing.assert_array_equal(x, y)
    fused, general, double = results[1]
    np.testing.assert_allclose(fused, general[0], atol=2e-5)
    np.testing.assert_allclose(fused, double, atol=2e-5)


@pytest.mark.parametrize("labels", [5, 12, 21, 30])  # rows of 1 to 4 groups of 8 labels
@pytest.mark.parametrize(
    "kernels",
    [
        [ops.Gaussian(3, 3), ops.Bilateral(20, 13, 10)],  # the fused update's fixed shape
        [ops.Gaussian(3, 3), ops.Bilateral(20, 13, 10), ops.Gaussian(2.2, 1)],  # any other mix
    ],
)
def test_same_bits_at_both_vector_widths(rng, labels, kernels):
    # Where the CPU has AVX-512 the fused update runs on 64-byte vectors, elsewhere on 32-byte ones;
    # its folds go over groups of 8 labels in the same order, so both compute the same bits.
    from convloc import _C

    # (flat unaries: every label's share of a row's sums matters to the last bit; 96x128: large
    # enough for the fused update, whose per-band vertex sums must fit in N rows)
    u, img = smooth_unary(rng, labels, 96, 128, strength=0.5), blocky_image(rng, 96, 128)
    default = ops.dense_crf(u, image=img, kernels=kernels, iterations=4, return_labels=True)
    _C._narrow_vectors(True)
    try:
        assert not _C._wide_vectors()
        narrow = ops.dense_crf(u, image=img, kernels=kernels, iterations=4, return_labels=True)
    finally:
        _C._narrow_vectors(False)
    for a, b in zip(default, narrow):
        np.testing.assert_array_equal(a, b)


def lattice_positions(batch, h, w, sxy, dtype):
    """[B, 2, H, W] pixel positions (x, then y, as the Gaussian kernel orders them) over sxy: a
    Gaussian kernel that runs on the lattice on the CPU too (the CPU filters Gaussians on grids)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.broadcast_to(np.stack([xx, yy]) / sxy, (batch, 2, h, w)).astype(dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch, labels, h, w", [(1, 2, 1, 1), (2, 5, 17, 9), (1, 21, 64, 48), (3, 64, 8, 8)])
def test_cuda_matches_cpu(rng, dtype, batch, labels, h, w):
    torch = pytest.importorskip("torch")
    u = np.stack([smooth_unary(rng, labels, h, w) for _ in range(batch)]).astype(dtype)
    img = np.stack([blocky_image(rng, h, w) for _ in range(batch)])
    feats = rng.normal(size=(batch, 3, h, w)).astype(dtype)
    kernels = [
        ops.Features(lattice_positions(batch, h, w, 3.0, dtype), 3),
        ops.Bilateral(20, 13, 10),
        ops.Features(feats, 2, compat=0.5, normalization="after"),
    ]
    kw = dict(image=img, kernels=kernels, iterations=3, return_labels=True)
    q_cpu, lab_cpu = ops.dense_crf(torch.from_numpy(u), **kw)
    q_gpu, lab_gpu = ops.dense_crf(torch.from_numpy(u).cuda(), **kw)
    assert q_gpu.is_cuda and q_gpu.dtype == q_cpu.dtype and lab_gpu.shape == (batch, h, w)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(q_gpu.cpu(), q_cpu, **tol)
    assert (lab_gpu.cpu() == lab_cpu).double().mean() >= (0.999 if dtype == np.float32 else 1.0)
    q0, lab0 = ops.dense_crf(torch.from_numpy(u).cuda(), **dict(kw, iterations=0))
    torch.testing.assert_close(q0.cpu(), torch.softmax(-torch.from_numpy(u), 1), **tol)
    assert torch.equal(lab0.cpu(), torch.from_numpy(u).argmin(1))
    # A Gaussian kernel on the GPU is the lattice over the same positions.
    gauss = ops.dense_crf(torch.from_numpy(u).cuda(), kernels=[ops.Gaussian(3.0, 3)], iterations=3)
    lattice = ops.dense_crf(torch.from_numpy(u), kernels=kernels[:1], iterations=3)
    torch.testing.assert_close(gauss.cpu(), lattice, **tol)


@pytest.mark.cuda
def test_cuda_grid_crf_matches_cpu(rng):
    torch = pytest.importorskip("torch")
    u = torch.from_numpy(np.stack([smooth_unary(rng, 4, 23, 31) for _ in range(2)]).astype(np.float64))
    img = np.stack([blocky_image(rng, 23, 31) for _ in range(2)])
    for neighbors in (4, 8):
        cpu = ops.grid_crf(u, img, neighbors=neighbors, iterations=4)
        gpu = ops.grid_crf(u.cuda(), img, neighbors=neighbors, iterations=4)
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-10, atol=1e-12)


@pytest.mark.cuda
def test_cuda_bad_inputs_raise(rng):
    torch = pytest.importorskip("torch")
    u = torch.from_numpy(smooth_unary(rng, 65, 6, 6)).cuda()
    with pytest.raises(ValueError, match="unary"):
        ops.dense_crf(u, kernels=[ops.Gaussian(8)])
    bad = rng.normal(size=(2, 6, 6))  # [d, H, W]
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="features.*finite"):
        ops.dense_crf(u[:3].double(), kernels=[ops.Features(bad)])
    with pytest.raises(TypeError, match="return_energy"):
        ops.dense_crf(u[:3], kernels=[ops.Gaussian(8)], return_energy=True)
    with pytest.raises(TypeError, match="exact"):
        ops.dense_crf(u[:3], kernels=[ops.Gaussian(3, exact=True)])


@pytest.mark.cuda
def test_cuda_crf_as_rnn_matches_cpu(rng):
    # The CRF-RNN layer's forward and backward on the GPU: its filterings run the CUDA lattice.
    torch = pytest.importorskip("torch")
    from convloc.nn.crfrnn import CRFasRNN

    unary = torch.from_numpy(rng.normal(size=(2, 3, 12, 10)))
    image = torch.from_numpy(rng.uniform(0, 255, size=(2, 3, 12, 10)))
    crf = CRFasRNN(3, iterations=3, learn_widths=True).double()
    grads = []
    for device in ("cpu", "cuda"):
        crf.to(device).zero_grad()
        u = unary.detach().to(device).requires_grad_()
        out = crf(u, image.to(device))
        out.square().sum().backward()
        # clones: moving the module moves the parameters' gradients in place
        grads.append(
            (out.detach().cpu(), u.grad.cpu(), [p.grad.detach().cpu().clone() for p in crf.parameters()])
        )
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-7, atol=1e-8)
    for g_gpu, g_cpu in zip(grads[1][2], grads[0][2]):
        torch.testing.assert_close(g_gpu, g_cpu, rtol=1e-6, atol=1e-8)


def test_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    u, img = smooth_unary(rng, 3, 10, 12), blocky_image(rng, 10, 12)
    q = ops.dense_crf(torch.from_numpy(u), image=img, iterations=2)
    assert isinstance(q, torch.Tensor)
    np.testing.assert_allclose(q.numpy(), ops.dense_crf(u, image=img, iterations=2), rtol=1e-6)


def test_bad_inputs(rng):
    u, img = smooth_unary(rng, 3, 10, 12), blocky_image(rng, 10, 12)
    with pytest.raises(ValueError, match="image"):
        ops.dense_crf(u, image=img.transpose(1, 0, 2), iterations=1)
    with pytest.raises(ValueError, match="image"):
        ops.dense_crf(u, image=img[:9], iterations=1)
    bad = u.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="unary"):
        ops.dense_crf(bad, image=img)
    with pytest.raises(ValueError, match="sxy"):
        ops.dense_crf(u, kernels=[ops.Gaussian(-1.0, 3.0)])
    with pytest.raises(ValueError, match="srgb"):
        ops.dense_crf(u, image=img, kernels=[ops.Bilateral(80, 0.0, 3.0)])
    with pytest.raises(ValueError, match="unary"):
        ops.dense_crf(u[:1])
    with pytest.raises(ValueError, match="unary"):
        ops.dense_crf(np.zeros((3, 0, 5), np.float32))
    with pytest.raises(ValueError, match="compat"):
        ops.dense_crf(u, compat=np.ones(4))
    with pytest.raises(ValueError, match="iterations"):
        ops.dense_crf(u, iterations=-1)
    with pytest.raises(ValueError, match="features"):
        ops.dense_crf(u, kernels=[ops.Features(np.zeros((2, 7), np.float32))])
    with pytest.raises(ValueError, match="image"):
        ops.dense_crf(u, kernels=[ops.Bilateral()])


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "shape, where, dtype, iterations, kw",
    [
        ((96, 128), (1, 40, 64), np.float32, 5, {}),  # the fused update (which checks block by block)
        ((91, 123), (20, 90, 122), np.float32, 0, {}),  # the fused update's first update, the last pixel
        # the last pixel of 91x123 in the general update: the transposition's scalar tail
        ((91, 123), (20, 90, 122), np.float32, 1, {"return_energy": True}),
        ((96, 128), (0, 0, 0), np.float64, 2, {}),  # the general update
        ((96, 128), (3, 50, 7), np.float32, 2, {"return_energy": True}),  # the general update, float32
    ],
)
def test_non_finite_unary_raises(rng, bad_value, shape, where, dtype, iterations, kw):
    # The kernel checks the unary as it transposes it (no separate pass): every path must refuse it.
    u, img = smooth_unary(rng, 21, *shape).astype(dtype), blocky_image(rng, *shape)
    u[where] = bad_value
    with pytest.raises(ValueError, match="unary: expected finite"):
        ops.dense_crf(u, image=img, iterations=iterations, **kw)
    batch = np.stack([np.where(np.isfinite(u), u, 0), u])  # the second image of a batch
    with pytest.raises(ValueError, match="unary: expected finite"):
        ops.dense_crf(batch, image=np.stack([img, img]), iterations=iterations, **kw)


def test_unary_helpers_match_pydensecrf(rng):
    utils = pytest.importorskip("pydensecrf.utils")
    p = rng.dirichlet(np.ones(4), (6, 7)).transpose(2, 0, 1)
    np.testing.assert_allclose(
        ops.unary_from_softmax(p).reshape(4, -1), utils.unary_from_softmax(p), rtol=1e-6
    )
    np.testing.assert_allclose(
        ops.unary_from_softmax(p, scale=0.7, clip=0.01).reshape(4, -1),
        utils.unary_from_softmax(p, scale=0.7, clip=0.01),
        rtol=1e-6,
    )
    lab = rng.integers(0, 4, (6, 7))
    for zero_unsure in (True, False):
        n = 3 if zero_unsure else 4
        np.testing.assert_allclose(
            ops.unary_from_labels(lab, n, 0.7, zero_unsure).reshape(n, -1),
            utils.unary_from_labels(lab, n, 0.7, zero_unsure),
            rtol=1e-6,
        )
    img = rng.integers(0, 255, (6, 7, 3)).astype(np.uint8)
    np.testing.assert_allclose(
        ops.create_pairwise_gaussian((2, 3), (6, 7)),
        utils.create_pairwise_gaussian((2, 3), (6, 7)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        ops.create_pairwise_bilateral((2, 3), (4, 5, 6), img, chdim=2),
        utils.create_pairwise_bilateral((2, 3), (4, 5, 6), img, chdim=2),
        rtol=1e-6,
    )


def _both(mod, u, img):
    labels, h, w = u.shape
    d = mod.DenseCRF2D(w, h, labels)
    d.setUnaryEnergy(np.ascontiguousarray(u.reshape(labels, -1)))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=20, srgb=13, rgbim=img, compat=10)
    return d


def test_densecrf_is_a_drop_in_for_pydensecrf(rng):
    pd = pytest.importorskip("pydensecrf.densecrf")
    u, img = smooth_unary(rng, 5, 60, 70), blocky_image(rng, 60, 70)
    ours, theirs = _both(dcrf, u, img), _both(pd, u, img)
    q, q_pd = ours.inference(5), np.array(theirs.inference(5))
    assert q.shape == q_pd.shape == (5, 60 * 70)
    assert (q.argmax(0) == q_pd.argmax(0)).mean() > 0.97
    assert np.abs(q - q_pd).mean() < 0.02
    # step by step, and pydensecrf's KL value
    Q, t1, t2 = ours.startInference()
    Qp, p1, p2 = theirs.startInference()
    for _ in range(2):
        ours.stepInference(Q, t1, t2)
        theirs.stepInference(Qp, p1, p2)
    np.testing.assert_allclose(Q, ours.inference(2), rtol=1e-4, atol=1e-6)
    assert (Q.argmax(0) == np.array(Qp).argmax(0)).mean() > 0.97
    kl, kl_pd = ours.klDivergence(Q), theirs.klDivergence(Qp)
    assert abs(kl - kl_pd) < 0.02 * abs(kl_pd)


def test_densecrf_clear_errors(rng):
    u, img = smooth_unary(rng, 3, 10, 12), blocky_image(rng, 10, 12)
    d = dcrf.DenseCRF2D(12, 10, 3)
    with pytest.raises(ValueError, match="setUnaryEnergy"):
        d.inference(1)
    with pytest.raises(ValueError, match="u"):
        d.setUnaryEnergy(u.reshape(3, -1).T)
    bad = u.reshape(3, -1).copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="u"):
        d.setUnaryEnergy(bad)
    with pytest.raises(ValueError, match="swapped"):
        d.addPairwiseBilateral(sxy=3, srgb=3, rgbim=np.ascontiguousarray(img.transpose(1, 0, 2)), compat=3)
    with pytest.raises(TypeError, match="uint8"):
        d.addPairwiseBilateral(sxy=3, srgb=3, rgbim=img / 255.0, compat=3)
    with pytest.raises(ValueError, match="contiguous"):
        d.addPairwiseBilateral(sxy=3, srgb=3, rgbim=np.asfortranarray(img), compat=3)
    with pytest.raises(ValueError, match="features"):
        d.addPairwiseEnergy(np.zeros((2, 7), np.float32), compat=3)
    with pytest.raises(ValueError, match="sxy"):
        d.addPairwiseGaussian(sxy=-3, compat=3)


@pytest.mark.parametrize("neighbors", [4, 8])
def test_grid_crf_matches_reference(rng, neighbors):
    u, img = smooth_unary(rng, 4, 9, 11), blocky_image(rng, 9, 11)
    for dtype in (np.float32, np.float64):
        q = ops.grid_crf(u.astype(dtype), img, neighbors=neighbors, w1=2.0, w2=0.5, beta=1e-3, iterations=4)
        q_ref = ref.grid_crf(u, img, 2.0, 0.5, 1e-3, neighbors, 4)
        np.testing.assert_allclose(q, q_ref, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-6)
    qb = ops.grid_crf(np.stack([u, u]), np.stack([img, img]), neighbors=neighbors)
    np.testing.assert_allclose(qb[1], ops.grid_crf(u, img, neighbors=neighbors), rtol=1e-6)
    with pytest.raises(ValueError, match="neighbors"):
        ops.grid_crf(u, img, neighbors=6)
    with pytest.raises(ValueError, match="image"):
        ops.grid_crf(u, img[:, :5])


def test_cli_crf_device_cuda_runs_or_refuses_clearly(tmp_path, rng):
    # With a GPU: the same labels as on the CPU up to the smoothness Gaussian's filter (lattice on
    # the GPU, grid on the CPU). Without one: a one-line refusal, not a traceback.
    from PIL import Image

    from convloc.cli import main

    img = blocky_image(rng, 40, 56)
    Image.fromarray(img).save(tmp_path / "a.png")
    p = np.exp(-smooth_unary(rng, 4, 40, 56))
    np.save(tmp_path / "a.npy", p / p.sum(0))
    run = ["crf", str(tmp_path / "a.png"), str(tmp_path / "a.npy"), "-o"]
    if not convloc.cuda_available():
        with pytest.raises(SystemExit, match="--device cuda needs a CUDA build of convloc, torch and a GPU"):
            main(run + [str(tmp_path / "gpu.png"), "--device", "cuda"])
        return
    assert main(run + [str(tmp_path / "gpu.png"), "--device", "cuda"]) == 0
    assert main(run + [str(tmp_path / "cpu.png")]) == 0
    gpu, cpu = (np.asarray(Image.open(tmp_path / f"{d}.png")) for d in ("gpu", "cpu"))
    assert (gpu == cpu).mean() >= 0.98


def test_cli_crf_and_demo(tmp_path, rng):
    from PIL import Image

    from convloc.cli import main

    img = blocky_image(rng, 24, 32)
    Image.fromarray(img).save(tmp_path / "a.png")
    p = np.exp(-smooth_unary(rng, 3, 24, 32))
    np.save(tmp_path / "a.npy", p / p.sum(0))
    assert (
        main(
            [
                "crf",
                str(tmp_path / "a.png"),
                str(tmp_path / "a.npy"),
                "-o",
                str(tmp_path / "out.png"),
            ]
        )
        == 0
    )
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (24, 32) and out.max() < 3
    assert Image.open(tmp_path / "out_overlay.png").size == (32, 24)
    # a directory of images with label PNGs
    (tmp_path / "imgs").mkdir()
    (tmp_path / "labs").mkdir()
    for k in range(2):
        Image.fromarray(img).save(tmp_path / "imgs" / f"i{k}.png")
        Image.fromarray(rng.integers(0, 3, (24, 32)).astype(np.uint8)).save(tmp_path / "labs" / f"i{k}.png")
    args = [
        "crf",
        str(tmp_path / "imgs"),
        str(tmp_path / "labs"),
        "-o",
        str(tmp_path / "res"),
        "--gt-prob",
        "0.6",
    ]
    assert main(args) == 0
    assert sorted(f.name for f in (tmp_path / "res").iterdir()) == [
        "i0.png",
        "i0_overlay.png",
        "i1.png",
        "i1_overlay.png",
    ]
    # a probability map of the wrong size is refused with a message, not a traceback
    np.save(tmp_path / "bad.npy", p[:, :10])
    assert (
        main(
            [
                "crf",
                str(tmp_path / "a.png"),
                str(tmp_path / "bad.npy"),
                "-o",
                str(tmp_path / "b.png"),
            ]
        )
        == 2
    )
    assert main(["demo", "-o", str(tmp_path / "demo.png")]) == 0
    assert Image.open(tmp_path / "demo.png").size == (3 * 256, 256)
    with pytest.raises(SystemExit, match="expected a .png path"):
        main(["demo", "-o", str(tmp_path / "demo")])
