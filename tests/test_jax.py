"""convloc.ops on JAX arrays: XLA FFI targets under jax.jit, jax.grad and jax.vmap.

For every op: jit equals eager equals the NumPy path (the same kernel, so bit for bit where no XLA
arithmetic is composed around it); gradients against torch's (the same backward kernels) and against
numerical ones (jax.test_util.check_grads, float64); vmap against a loop; bad input raises naming
the argument, eagerly and under jit.
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import convloc
from convloc import ops

if not convloc.info()["xla_ffi"]:
    pytest.skip(
        "this build of convloc has no XLA FFI handlers (jaxlib was not importable when it was built)",
        allow_module_level=True,
    )

DTYPES = [np.float32, np.float64]


def precision(dtype):
    """JAX's 64-bit mode for float64 inputs (without it JAX would make them float32)."""
    return jax.enable_x64(np.dtype(dtype) == np.float64)


def close(dtype):
    """Tolerances for results with XLA arithmetic composed around a kernel (fused differently
    under jit than op by op, and than NumPy)."""
    return dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)


def same(*arrays):
    """All equal, bit for bit, to the first (a NumPy result)."""
    for a in arrays[1:]:
        assert isinstance(a, jax.Array)
        assert a.dtype == arrays[0].dtype and a.shape == arrays[0].shape
        np.testing.assert_array_equal(np.asarray(a), arrays[0])


def random_boxes(rng, n, dtype=np.float32, size=100.0):
    xy = rng.uniform(0, size, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(0, size / 2, (n, 2))], 1).astype(dtype)


def random_rois(rng, k, batch, height, width, scale, dtype):
    size = np.array([width, height]) / scale
    x1y1 = rng.uniform(-0.2, 1, (k, 2)) * size
    x2y2 = x1y1 + rng.uniform(0, 0.8, (k, 2)) * size
    return np.concatenate([rng.integers(0, batch, (k, 1)), x1y1, x2y2], 1).astype(dtype)


# ------------------------------------------------------------------------------------- boxes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 64, 301])
def test_boxes_jit_eager_numpy(rng, n, dtype):
    boxes, other = random_boxes(rng, n, dtype), random_boxes(rng, 13, dtype)
    scores, idxs = rng.random(n).astype(dtype), rng.integers(0, 3, n)
    with precision(dtype):
        same(ops.box_area(boxes), ops.box_area(jnp.asarray(boxes)), jax.jit(ops.box_area)(boxes))
        same(
            ops.box_iou(boxes, other),
            ops.box_iou(jnp.asarray(boxes), other),
            jax.jit(ops.box_iou)(boxes, other),
        )
        index = jnp.zeros((), int).dtype
        for thr in (0.3, 0.7):
            keep = ops.nms(boxes, scores, thr)
            same(keep.astype(index), ops.nms(jnp.asarray(boxes), jnp.asarray(scores), thr))
            for size in (0, 5, n + 3):
                want = [x.astype(index) for x in ops.nms(boxes, scores, thr, size, padded=True)]
                got = jax.jit(lambda b, s, size=size, thr=thr: ops.nms(b, s, thr, size, padded=True))(
                    boxes, scores
                )
                same(want[0], got[0])
                same(want[1], got[1])
            want = [x.astype(index) for x in ops.batched_nms(boxes, scores, idxs, thr, 50, padded=True)]
            got = jax.jit(lambda b, s, i, thr=thr: ops.batched_nms(b, s, i, thr, 50, padded=True))(
                boxes, scores, idxs
            )
            same(want[0], got[0])
            same(want[1], got[1])


def test_integer_boxes(rng):
    boxes = rng.integers(0, 50, (9, 4)).cumsum(1)
    same(ops.box_area(boxes).astype(np.int32), ops.box_area(jnp.asarray(boxes)))
    same(ops.box_iou(boxes, boxes), ops.box_iou(jnp.asarray(boxes), jnp.asarray(boxes)))


def test_box_gradients(rng):
    with jax.enable_x64(True):
        a, b = random_boxes(rng, 5, np.float64) + 1, random_boxes(rng, 4, np.float64) + 1
        check_grads(ops.box_area, (a,), order=1, modes=["rev"])
        check_grads(ops.box_iou, (a, b), order=1, modes=["rev"])


def test_nms_vmap_and_the_fixed_size_it_needs(rng):
    boxes, scores = (
        np.stack([random_boxes(rng, 40) for _ in range(3)]),
        rng.random((3, 40)).astype(np.float32),
    )
    keep, count = jax.vmap(lambda b, s: ops.nms(b, s, 0.5, 30, padded=True))(boxes, scores)
    for i in range(3):
        want, n = ops.nms(boxes[i], scores[i], 0.5, 30, padded=True)
        np.testing.assert_array_equal(keep[i], want)
        assert count[i] == n
    with pytest.raises(TypeError, match="max_output_size and padded=True"):
        jax.jit(lambda b, s: ops.nms(b, s, 0.5))(boxes[0], scores[0])
    with pytest.raises(TypeError, match="max_output_size and padded=True"):
        jax.vmap(lambda b, s: ops.nms(b, s, 0.5, 30))(boxes, scores)


# --------------------------------------------------------------------------------------- roi


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 3), (2, 3, 7, 9, 11), (3, 5, 9, 13, 0)])  # B, C, H, W, K
def test_roi_jit_eager_numpy(rng, shape, dtype):
    b, c, h, w, k = shape
    x = rng.standard_normal((b, c, h, w)).astype(dtype)
    rois = random_rois(rng, k, b, h, w, 0.5, dtype)
    with precision(dtype):
        for fn in (
            lambda x, r: ops.roi_pool(x, r, (3, 2), 0.5),
            lambda x, r: ops.roi_align(x, r, 3, 0.5, sampling_ratio=2),
            lambda x, r: ops.roi_align(x, r, (2, 5), 0.5, sampling_ratio=-1, aligned=True),
        ):
            same(fn(x, rois), fn(jnp.asarray(x), jnp.asarray(rois)), jax.jit(fn)(x, rois))


def test_roi_boxes_as_a_list(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    parts = [random_boxes(rng, 3, size=8), random_boxes(rng, 2, size=8)]
    want = ops.roi_align(x, parts, 2)
    same(want, jax.jit(lambda x, p: ops.roi_align(x, p, 2))(x, [jnp.asarray(p) for p in parts]))


@pytest.mark.parametrize("op", ["roi_pool", "roi_align"])
def test_roi_gradient_equals_torch(rng, op):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 4, 9, 11))
    rois, grad = random_rois(rng, 7, 2, 9, 11, 1.0, np.float64), rng.standard_normal((7, 4, 3, 3))
    fn = getattr(ops, op)
    kw = dict(sampling_ratio=2) if op == "roi_align" else {}
    xt = torch.from_numpy(x).requires_grad_()
    (fn(xt, torch.from_numpy(rois), 3, **kw) * torch.from_numpy(grad)).sum().backward()
    with jax.enable_x64(True):
        got = jax.grad(lambda x: (fn(x, rois, 3, **kw) * grad).sum())(jnp.asarray(x))
        np.testing.assert_array_equal(np.asarray(got), xt.grad.numpy())
        # the boxes get no gradient, as in torchvision
        assert not jax.grad(lambda r: fn(x, r, 3, **kw).sum())(jnp.asarray(rois)).any()


def test_roi_check_grads(rng):
    with jax.enable_x64(True):
        x = rng.standard_normal((2, 2, 6, 7))
        rois = random_rois(rng, 4, 2, 6, 7, 1.0, np.float64)
        check_grads(lambda x: ops.roi_align(x, rois, 2, sampling_ratio=2), (x,), order=1, modes=["rev"])
        check_grads(lambda x: ops.roi_pool(x, rois, 2), (x,), order=1, modes=["rev"])


def test_roi_vmap(rng):
    x = rng.standard_normal((4, 2, 3, 8, 9)).astype(np.float32)
    rois = np.stack([random_rois(rng, 5, 2, 8, 9, 1.0, np.float32) for _ in range(4)])
    align = jax.vmap(lambda r: ops.roi_align(x[0], r, 2))(rois)  # the input shared, not copied
    pool = jax.vmap(lambda x, r: ops.roi_pool(x, r, 2))(x, rois)
    grads = jax.vmap(jax.grad(lambda x, r: ops.roi_align(x, r, 2).sum()))(x, rois)
    for i in range(4):
        np.testing.assert_array_equal(align[i], ops.roi_align(x[0], rois[i], 2))
        np.testing.assert_array_equal(pool[i], ops.roi_pool(x[i], rois[i], 2))
        np.testing.assert_array_equal(
            grads[i], jax.grad(lambda x, i=i: ops.roi_align(x, rois[i], 2).sum())(x[i])
        )


# ------------------------------------------------------------------------------------ deconv

GEOMETRIES = [
    dict(stride=2, padding=1),
    dict(stride=(2, 3), padding=(0, 1), output_padding=(1, 0), dilation=(1, 2)),
    dict(stride=3, groups=2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("bias", [True, False])
def test_deconv_jit_eager_numpy(rng, dtype, geometry, bias):
    x = rng.standard_normal((2, 4, 5, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(3 * geometry.get("groups", 1)).astype(dtype) if bias else None
    with precision(dtype):
        fn = lambda x, w, b: ops.conv_transpose2d(x, w, b, **geometry)  # noqa: E731
        same(fn(x, w, b), fn(jnp.asarray(x), jnp.asarray(w), b), jax.jit(fn)(x, w, b))
        same(fn(x[0], w, b), jax.jit(fn)(x[0], w, b))  # unbatched


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_deconv_gradients(rng, geometry):
    torch = pytest.importorskip("torch")
    x, w = rng.standard_normal((2, 4, 4, 5)), rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(3 * geometry.get("groups", 1))
    out = ops.conv_transpose2d(x, w, b, **geometry)
    grad = rng.standard_normal(out.shape)
    tensors = [torch.from_numpy(a).requires_grad_() for a in (x, w, b)]
    (ops.conv_transpose2d(*tensors, **geometry) * torch.from_numpy(grad)).sum().backward()
    with jax.enable_x64(True):
        got = jax.grad(lambda *a: (ops.conv_transpose2d(*a, **geometry) * grad).sum(), argnums=(0, 1, 2))(
            x, w, b
        )
        for g, t in zip(got, tensors):
            np.testing.assert_array_equal(np.asarray(g), t.grad.numpy())
        small = (x[:1, :, :3, :2], w[:, :, :2, :2], b)
        check_grads(lambda *a: ops.conv_transpose2d(*a, **geometry), small, order=1, modes=["rev"])
        check_grads(lambda *a: ops.conv_transpose2d(*a, **geometry), small[:2], order=1, modes=["rev"])


def test_deconv_vmap(rng):
    x, w = (
        rng.standard_normal((3, 2, 4, 5, 5)).astype(np.float32),
        rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
    )
    got = jax.vmap(lambda x: ops.conv_transpose2d(x, w, stride=2))(x)
    for i in range(3):
        np.testing.assert_array_equal(got[i], ops.conv_transpose2d(x[i], w, stride=2))


# ----------------------------------------------------------------------------------- lattice


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (40, 2, 3), (2, 57, 5, 1)])  # [B,] N, d, C
@pytest.mark.parametrize("normalization", [None, "after", "symmetric"])
def test_lattice_jit_eager_numpy(rng, dtype, shape, normalization):
    *lead, d, c = shape
    f, v = rng.standard_normal((*lead, d)).astype(dtype), rng.random((*lead, c)).astype(dtype)
    with precision(dtype):
        for kw in (dict(), dict(transpose=True, exclude_self=True)):
            fn = lambda v, f, kw=kw: ops.permutohedral_filter(v, f, normalization=normalization, **kw)  # noqa: E731
            want = fn(v, f)
            if normalization is None:  # the kernel's output as it is
                same(want, fn(jnp.asarray(v), jnp.asarray(f)), jax.jit(fn)(v, f))
            else:
                for got in (fn(jnp.asarray(v), jnp.asarray(f)), jax.jit(fn)(v, f)):
                    np.testing.assert_allclose(np.asarray(got), want, **close(dtype))


def test_bilateral_filter(rng):
    image = (rng.random((9, 11, 3)) * 255).astype(np.uint8)
    same(ops.bilateral_filter(image, 3, 20), jax.jit(lambda i: ops.bilateral_filter(i, 3, 20))(image))


@pytest.mark.parametrize("normalization", [None, "symmetric"])
def test_lattice_gradients(rng, normalization):
    torch = pytest.importorskip("torch")
    f, v = rng.normal(size=(30, 2)) * 1.5, rng.random((30, 3))
    grad = rng.standard_normal((30, 3))
    kw = dict(normalization=normalization, exclude_self=True)
    tensors = [torch.from_numpy(a).requires_grad_() for a in (v, f)]
    (ops.permutohedral_filter(*tensors, **kw) * torch.from_numpy(grad)).sum().backward()
    with jax.enable_x64(True):
        got = jax.grad(lambda v, f: (ops.permutohedral_filter(v, f, **kw) * grad).sum(), argnums=(0, 1))(v, f)
        for g, t in zip(got, tensors):
            np.testing.assert_allclose(np.asarray(g), t.grad.numpy(), rtol=1e-10, atol=1e-12)
        # values: the exact adjoint of the (piecewise-linear) filter
        for transpose in (False, True):
            check_grads(
                lambda v, t=transpose: ops.permutohedral_filter(v, f, transpose=t, **kw),
                (v,),
                order=1,
                modes=["rev"],
            )


def test_lattice_vmap(rng):
    f, v = rng.standard_normal((3, 40, 2)).astype(np.float32), rng.random((3, 40, 2)).astype(np.float32)
    got = jax.vmap(lambda v: ops.permutohedral_filter(v, f[0]))(v)
    for i in range(3):
        np.testing.assert_array_equal(got[i], ops.permutohedral_filter(v[i], f[0]))


def test_prebuilt_lattice_refers_jax_users_to_permutohedral_filter(rng):
    with pytest.raises(TypeError, match="permutohedral_filter"):
        convloc.PermutohedralLattice(jnp.zeros((4, 2)))


# ---------------------------------------------------------------------------------- dense CRF


def crf_problem(rng, batch=(), labels=3, h=13, w=17, dtype=np.float32):
    probs = rng.dirichlet(np.ones(labels), (*batch, h, w))
    unary = -np.log(np.moveaxis(probs, -1, len(batch))).astype(dtype)
    return unary, (rng.random((*batch, h, w, 3)) * 255).astype(np.uint8)


KERNEL_SETS = [
    None,  # Gaussian(3, 3) + Bilateral(80, 13, 10): the grid and the image
    [ops.Gaussian(8, exact=True), ops.Gaussian(2.5, compat=[1.0, 2.0, 0.5])],
    [ops.Gaussian(13), ops.Bilateral(5, (10, 20, 30), normalization="after")],  # the lattice
    "features",
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernels", KERNEL_SETS)
def test_dense_crf_jit_eager_numpy(rng, dtype, kernels):
    unary, image = crf_problem(rng, dtype=dtype)
    if kernels == "features":
        kernels = [ops.Features(ops.create_pairwise_bilateral((5, 5), (20, 20, 20), image, chdim=2), 4.0)]
    kw = dict(image=image, kernels=kernels, iterations=4, return_labels=True, return_energy=True)
    with precision(dtype):
        q, labels, energy = ops.dense_crf(unary, **kw)
        index, real = jnp.zeros((), int).dtype, jnp.zeros((), float).dtype
        for got in (
            ops.dense_crf(jnp.asarray(unary), **kw),
            jax.jit(lambda u: ops.dense_crf(u, **kw))(unary),
        ):
            same(q, got[0])
            same(labels.astype(index), got[1])
            np.testing.assert_array_equal(np.asarray(got[2]), energy.astype(real))


def test_dense_crf_batched_and_vmapped(rng):
    unary, image = crf_problem(rng, batch=(3,))
    want = ops.dense_crf(unary, image=image, exclude_self=True)
    same(want, jax.jit(lambda u: ops.dense_crf(u, image=image, exclude_self=True))(unary))
    got = jax.vmap(lambda u, i: ops.dense_crf(u, image=i, exclude_self=True))(unary, image)
    np.testing.assert_array_equal(np.asarray(got), want)


def test_dense_crf_has_no_gradient(rng):
    unary, image = crf_problem(rng)
    with pytest.raises(TypeError, match="no gradient"):
        jax.grad(lambda u: ops.dense_crf(u, image=image).sum())(jnp.asarray(unary))
    stopped = jax.grad(lambda u: ops.dense_crf(jax.lax.stop_gradient(u), image=image).sum() + u.sum())(unary)
    np.testing.assert_array_equal(np.asarray(stopped), np.ones_like(unary))


# ---------------------------------------------------------------------------------- proposals


def blocks(rng, h=40, w=52):
    image = np.full((h, w, 3), 110, np.uint8)
    for _ in range(5):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        image[y : y + rng.integers(5, 20), x : x + rng.integers(5, 20)] = rng.integers(0, 256, 3)
    return image + rng.integers(0, 12, image.shape).astype(np.uint8)


def test_felzenszwalb_jit_eager_numpy(rng):
    image = blocks(rng)
    for args in (
        (image, 1.0, 0.8, 20),
        (image[..., 0], 0.5, 0.0, 0),
        (image.astype(np.float32) / 255, 2.0, 1.5, 5),
    ):
        same(
            ops.felzenszwalb(*args),
            ops.felzenszwalb(jnp.asarray(args[0]), *args[1:]),
            jax.jit(ops.felzenszwalb, static_argnums=(1, 2, 3))(*args),
        )


@pytest.mark.parametrize("mode, min_size", [("single", None), ("fast", 10)])
def test_selective_search_jit_eager_numpy(rng, mode, min_size):
    image = blocks(rng)
    want = ops.selective_search(image, mode, seed=4, min_size=min_size)
    assert len(want) > 5
    same(want, ops.selective_search(jnp.asarray(image), mode, seed=4, min_size=min_size))
    for size in (5, len(want) + 7):
        run = jax.jit(
            lambda i, s=size: ops.selective_search(
                i, mode, seed=4, min_size=min_size, max_boxes=s, padded=True
            )
        )
        boxes, count = run(image)
        padded, n = ops.selective_search(image, mode, seed=4, min_size=min_size, max_boxes=size, padded=True)
        same(padded, boxes)
        assert int(count) == n
    with pytest.raises(TypeError, match="max_boxes and padded=True"):
        jax.jit(lambda i: ops.selective_search(i, mode))(image)


# -------------------------------------------------------------------------------- the targets


def test_compiled_calls_are_ffi_targets_not_host_callbacks(rng):
    x, rois = (
        rng.standard_normal((1, 2, 8, 8)).astype(np.float32),
        random_rois(rng, 3, 1, 8, 8, 1.0, np.float32),
    )
    text = jax.jit(jax.grad(lambda x: ops.roi_align(x, rois, 2).sum())).lower(x).as_text()
    assert "custom_call @convloc_roi_align_backward" in text
    assert "callback" not in text


@pytest.mark.parametrize("under_jit", [False, True])
def test_bad_input_raises_naming_the_argument(rng, under_jit):
    # Found when the call runs: ValueError right away, JaxRuntimeError from a compiled call; found
    # when it is traced (shapes that decide the output's): ValueError.
    def run(fn, *args):
        return (jax.jit(fn) if under_jit else fn)(*(jnp.asarray(a) for a in args))

    error = (ValueError, jax.errors.JaxRuntimeError) if under_jit else ValueError
    boxes, scores = random_boxes(rng, 6), rng.random(6).astype(np.float32)
    bad = boxes.copy()
    bad[2, 2] = -1
    with pytest.raises(error, match=r"boxes: expected finite boxes \(x1, y1, x2, y2\) with x2 >= x1"):
        run(lambda b: ops.nms(b, scores, 0.5, 6, padded=True), bad)
    with pytest.raises(error, match=r"boxes: expected shape \[N, 4\], got \[6, 3\]"):
        run(lambda b: ops.box_area(b), boxes[:, :3])
    x = np.zeros((2, 1, 4, 4), np.float32)
    rois = np.array([[2, 0, 0, 1, 1]], np.float32)
    with pytest.raises(
        error, match=r"boxes: row 0 = \(2, 0, 0, 1, 1\): the batch index must be an integer in \[0, 2\)"
    ):
        run(lambda x: ops.roi_align(x, rois, 2), x)
    with pytest.raises(ValueError, match="output_padding: must be smaller than stride or dilation"):
        run(lambda x: ops.conv_transpose2d(x, np.zeros((1, 1, 2, 2), np.float32), output_padding=1), x)
    with pytest.raises(error, match="unary: expected at least 2 labels"):
        run(lambda u: ops.dense_crf(u), np.zeros((1, 4, 4), np.float32))


def test_missing_handlers_say_how_to_get_them():
    code = "import convloc._kernels.runtime as r; r.xla_ffi_version = lambda: ''; import convloc._jax"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "ImportError" in result.stderr and "pip install --no-build-isolation" in result.stderr
