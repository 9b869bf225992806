import functools

import numpy as np
import pytest

import convloc
from convloc import _C
from reference import roi as ref

try:
    import torch
except ImportError:  # the NumPy tests still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")


def random_rois(rng, k, batch, height, width, scale, dtype):
    """Boxes in image coordinates, some reaching past the map, some degenerate (x1 == x2)."""
    size_x, size_y = width / scale, height / scale
    x1 = rng.uniform(-0.2 * size_x, size_x, k)
    y1 = rng.uniform(-0.2 * size_y, size_y, k)
    x2 = x1 + rng.uniform(0, 0.8 * size_x, k) * (rng.random(k) > 0.1)
    y2 = y1 + rng.uniform(0, 0.8 * size_y, k)
    idx = rng.integers(0, batch, k)
    return np.stack([idx, x1, y1, x2, y2], 1).astype(dtype)


def with_argmax(x, rois, scale, ph, pw):
    out = np.empty((len(rois), x.shape[1], ph, pw), x.dtype)
    argmax = np.empty(out.shape, np.int32)
    _C.roi_pool_forward(x, rois, scale, ph, pw, out, argmax)
    return out, argmax


SHAPES = [(1, 1, 1, 1, 3), (2, 3, 7, 9, 11), (1, 20, 12, 5, 6), (3, 17, 9, 13, 0)]  # B, C, H, W, K


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("output_size", [1, (3, 4), (7, 7)])
def test_roi_pool_matches_reference(rng, dtype, shape, output_size, vector_width):
    b, c, h, w, k = shape
    x = rng.standard_normal((b, c, h, w)).astype(dtype)
    rois = random_rois(rng, k, b, h, w, 0.25, dtype)
    size = (output_size, output_size) if isinstance(output_size, int) else output_size
    out, argmax = with_argmax(x, rois, 0.25, *size)
    want, want_argmax = ref.roi_pool(x, rois, size, 0.25)
    assert out.dtype == dtype and isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(argmax, want_argmax)
    np.testing.assert_array_equal(convloc.ops.roi_pool(x, rois, output_size, 0.25), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sampling_ratio,aligned", [(-1, False), (0, True), (2, True), (3, False)])
def test_roi_align_matches_reference(rng, dtype, shape, sampling_ratio, aligned, vector_width):
    b, c, h, w, k = shape
    x = rng.standard_normal((b, c, h, w)).astype(dtype)
    rois = random_rois(rng, k, b, h, w, 0.5, dtype)
    out = convloc.ops.roi_align(x, rois, (3, 2), 0.5, sampling_ratio, aligned)
    np.testing.assert_array_equal(out, ref.roi_align(x, rois, (3, 2), 0.5, sampling_ratio, aligned))


def test_roi_pool_ties_and_extremes(rng):
    # Ties: the first maximum (row-major in the bin) wins. Values below -FLT_MAX (float64) never
    # beat the initial maximum, as in torchvision: output -FLT_MAX, argmax -1.
    x = np.zeros((1, 2, 4, 4))
    x[0, 1] = -1e300
    rois = np.array([[0, 0, 0, 3, 3]], np.float64)
    out, argmax = with_argmax(x, rois, 1.0, 2, 2)
    want, want_argmax = ref.roi_pool(x, rois, (2, 2), 1.0)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(argmax, want_argmax)
    assert argmax[0, 0].tolist() == [[0, 2], [8, 10]] and (argmax[0, 1] == -1).all()


def _torch_grads(op, x, rois, grad, **kw):
    xt = torch.from_numpy(x).requires_grad_()
    out = op(xt, torch.from_numpy(rois), **kw)
    out.backward(torch.from_numpy(grad))
    return out.detach().numpy(), xt.grad.numpy()


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roi_pool_backward_matches_reference(rng, dtype, vector_width):
    x = rng.standard_normal((2, 5, 9, 8)).astype(dtype)
    rois = random_rois(rng, 12, 2, 9, 8, 0.5, dtype)
    grad = rng.standard_normal((12, 5, 3, 3)).astype(dtype)
    _, gi = _torch_grads(convloc.ops.roi_pool, x, rois, grad, output_size=3, spatial_scale=0.5)
    _, argmax = ref.roi_pool(x, rois, (3, 3), 0.5)
    np.testing.assert_array_equal(gi, ref.roi_pool_backward(grad, rois, argmax, x.shape))


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sampling_ratio,aligned", [(-1, False), (2, True), (3, False)])
def test_roi_align_backward_matches_reference(rng, dtype, sampling_ratio, aligned, vector_width):
    x = rng.standard_normal((2, 5, 9, 8)).astype(dtype)
    rois = random_rois(rng, 12, 2, 9, 8, 0.5, dtype)
    grad = rng.standard_normal((12, 5, 2, 3)).astype(dtype)
    kw = dict(output_size=(2, 3), spatial_scale=0.5, sampling_ratio=sampling_ratio, aligned=aligned)
    _, gi = _torch_grads(convloc.ops.roi_align, x, rois, grad, **kw)
    want = ref.roi_align_backward(grad, rois, x.shape, 0.5, sampling_ratio, aligned)
    np.testing.assert_array_equal(gi, want)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sampling_ratio,aligned", [(-1, False), (0, True), (2, True), (1, False)])
def test_matches_torchvision(rng, dtype, sampling_ratio, aligned):
    tv = pytest.importorskip("torchvision.ops")
    x = rng.standard_normal((2, 16, 19, 25)).astype(dtype)
    rois = random_rois(rng, 60, 2, 19, 25, 1 / 16, dtype)
    grad = rng.standard_normal((60, 16, 7, 5)).astype(dtype)
    kw = dict(output_size=(7, 5), spatial_scale=1 / 16)
    for ours, theirs, extra in (
        (convloc.ops.roi_pool, tv.roi_pool, {}),
        (convloc.ops.roi_align, tv.roi_align, dict(sampling_ratio=sampling_ratio, aligned=aligned)),
    ):
        out, gi = _torch_grads(ours, x, rois, grad, **kw, **extra)
        want, want_gi = _torch_grads(theirs, x, rois, grad, **kw, **extra)
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(gi, want_gi)


@needs_torch
@pytest.mark.parametrize("op", ["roi_pool", "roi_align"])
def test_broadcast_gradients(rng, op):
    # Autograd's gradient of out.sum() is an expanded scalar; _C reads it without a copy.
    f = getattr(convloc.ops, op)
    rois = torch.from_numpy(random_rois(rng, 9, 2, 6, 7, 0.5, np.float64))
    x = torch.from_numpy(rng.standard_normal((2, 3, 6, 7))).requires_grad_()
    out = f(x, rois, (2, 3), 0.5)
    row = torch.randn(1, 3, 1, 3, dtype=torch.float64)
    grads = [
        torch.autograd.grad(y, x, g, retain_graph=True)[0]
        for y, g in (
            (out.sum(), None),
            (out, torch.ones_like(out)),
            (out, row.expand_as(out)),
            (out, row.expand_as(out).contiguous()),
        )
    ]
    expanded, full, partial, partial_full = grads
    assert torch.equal(expanded, full) and torch.equal(partial, partial_full)


@needs_torch
def test_list_of_boxes_equals_rois(rng):
    x = torch.from_numpy(rng.standard_normal((3, 4, 10, 10)))
    per_image = [torch.from_numpy(random_rois(rng, n, 1, 10, 10, 1.0, np.float64)[:, 1:]) for n in (2, 0, 3)]
    rois = torch.cat(
        [torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype), b], 1) for i, b in enumerate(per_image)]
    )
    for op in (convloc.ops.roi_pool, convloc.ops.roi_align):
        assert torch.equal(op(x, per_image, 2), op(x, rois, 2))
    xn = x.numpy()
    boxes_np = [b.numpy() for b in per_image]
    np.testing.assert_array_equal(
        convloc.ops.roi_align(xn, boxes_np, 2), convloc.ops.roi_align(xn, rois.numpy(), 2)
    )


@needs_torch
@pytest.mark.parametrize("op", ["roi_pool", "roi_align"])
def test_empty_box_sets(op):
    f = getattr(convloc.ops, op)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    for boxes in (
        torch.zeros((0, 5), dtype=torch.float64),
        [],
        [torch.zeros((0, 4), dtype=torch.float64)] * 2,
    ):
        out = f(x, boxes, (2, 3))
        assert out.shape == (0, 3, 2, 3)
        out.sum().backward()
        assert torch.equal(x.grad, torch.zeros_like(x))
    assert f(np.zeros((1, 3, 5, 5), np.float32), np.zeros((0, 5), np.float32), 2).shape == (
        0,
        3,
        2,
        2,
    )


@needs_torch
def test_gradcheck(rng):
    x = torch.from_numpy(rng.standard_normal((2, 3, 6, 7))).requires_grad_()
    rois = torch.from_numpy(random_rois(rng, 5, 2, 6, 7, 0.5, np.float64))
    assert torch.autograd.gradcheck(lambda t: convloc.ops.roi_pool(t, rois, (2, 3), 0.5), (x,))
    for ratio, aligned in ((-1, False), (2, True)):
        align = functools.partial(
            convloc.ops.roi_align,
            boxes=rois,
            output_size=(2, 3),
            spatial_scale=0.5,
            sampling_ratio=ratio,
            aligned=aligned,
        )
        assert torch.autograd.gradcheck(align, (x,))


@needs_torch
def test_opcheck(rng):
    import convloc.nn  # noqa: F401 - registers the ops

    x = torch.from_numpy(rng.standard_normal((2, 3, 6, 7))).requires_grad_()
    rois = torch.from_numpy(random_rois(rng, 5, 2, 6, 7, 0.5, np.float64))
    ops = torch.ops.convloc
    torch.library.opcheck(ops.roi_pool, (x, rois, 0.5, 2, 3))
    torch.library.opcheck(ops.roi_align, (x, rois, 0.5, 2, 3, 2, True))
    grad = torch.randn(5, 3, 2, 3, dtype=torch.float64)
    torch.library.opcheck(ops.roi_pool_backward, (grad, rois, x.detach(), 0.5))
    torch.library.opcheck(ops.roi_align_backward, (grad, rois, 0.5, -1, False, 2, 3, 6, 7))


@needs_torch
@pytest.mark.parametrize("op", ["roi_pool", "roi_align"])
def test_thread_count_independence(rng, threads, op):
    f = getattr(convloc.ops, op)
    x0 = rng.standard_normal((2, 80, 11, 13)).astype(np.float32)
    rois = torch.from_numpy(random_rois(rng, 300, 2, 11, 13, 0.5, np.float32))
    grad = torch.from_numpy(rng.standard_normal((300, 80, 7, 7)).astype(np.float32))
    results = []
    for n in (1, 2):
        convloc.set_num_threads(n)
        x = torch.from_numpy(x0).requires_grad_()
        out = f(x, rois, 7, 0.5)
        out.backward(grad)
        results.append((out.detach(), x.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@needs_torch
def test_modules_match_functions(rng):
    x = torch.from_numpy(rng.standard_normal((1, 4, 8, 8)))
    rois = torch.from_numpy(random_rois(rng, 6, 1, 8, 8, 1.0, np.float64))
    pool, align = convloc.nn.RoIPool(3, 1.0), convloc.nn.RoIAlign((3, 2), 1.0, 2, aligned=True)
    assert torch.equal(pool(x, rois), convloc.ops.roi_pool(x, rois, 3, 1.0))
    assert torch.equal(align(x, rois), convloc.ops.roi_align(x, rois, (3, 2), 1.0, 2, True))
    assert "aligned=True" in repr(align) and "output_size=3" in repr(pool)


GOOD_ROI = [0, 1, 1, 4, 4]


@pytest.mark.parametrize(
    "row,match",
    [
        ([1, 1, 1, 4, 4], "batch index must be an integer in \\[0, 1\\)"),
        ([-1, 1, 1, 4, 4], "batch index"),
        ([0.5, 1, 1, 4, 4], "batch index"),
        ([0, np.nan, 1, 4, 4], "NaN or infinite"),
        ([0, 1, np.inf, 4, 4], "NaN or infinite"),
        ([0, 5, 1, 4, 4], "x2 >= x1"),
        ([0, 1, 5, 4, 4], "y2 >= y1"),
    ],
)
@pytest.mark.parametrize("op", ["roi_pool", "roi_align"])
def test_bad_boxes(op, row, match):
    x = np.zeros((1, 2, 5, 5), np.float32)
    rois = np.array([GOOD_ROI, row], np.float32)
    with pytest.raises(ValueError, match="boxes: row 1 .*" + match):
        getattr(convloc.ops, op)(x, rois, 2)


@pytest.mark.parametrize("op", ["roi_pool", "roi_align"])
def test_bad_arguments(op):
    f = getattr(convloc.ops, op)
    x = np.zeros((1, 2, 5, 5), np.float32)
    rois = np.array([GOOD_ROI], np.float32)
    with pytest.raises(ValueError, match="output_size"):
        f(x, rois, 0)
    with pytest.raises(ValueError, match="output_size"):
        f(x, rois, (2, 3, 4))
    with pytest.raises(TypeError, match="output_size"):
        f(x, rois, 2.5)
    for scale in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="spatial_scale"):
            f(x, rois, 2, scale)
    with pytest.raises(ValueError, match="input: expected a 4-D array"):
        f(x[0], rois, 2)
    with pytest.raises(ValueError, match="input: expected a feature map with H, W >= 1"):
        f(np.zeros((1, 2, 0, 5), np.float32), rois, 2)
    with pytest.raises(ValueError, match="boxes: expected shape \\[K, 5\\]"):
        f(x, rois[:, 1:], 2)
    with pytest.raises(ValueError, match="boxes\\[0\\]: expected shape \\[K, 4\\]"):
        f(x, [rois], 2)
    with pytest.raises(TypeError, match="boxes: expected the dtype of input"):
        f(x, rois.astype(np.float64), 2)
    with pytest.raises(TypeError, match="input: expected float32, float64, float16 or bfloat16, got int32"):
        f(x.astype(np.int32), rois, 2)
    if torch is not None:
        with pytest.raises(TypeError, match="boxes: expected a torch array"):
            f(torch.from_numpy(x), rois, 2)


def test_bad_backward_arguments():
    grad = np.zeros((1, 2, 2, 2), np.float32)
    rois = np.array([GOOD_ROI], np.float32)
    x = np.zeros((1, 2, 5, 5), np.float32)
    with pytest.raises(
        ValueError,
        match=r"grad: expected a shape broadcastable to \[K, C, PH, PW\] = \[1, 3, 2, 2\]",
    ):
        x3 = np.zeros((1, 3, 5, 5), np.float32)
        _C.roi_pool_backward(grad, rois, x3, 1.0, 2, 2, x3.copy())
    with pytest.raises(ValueError, match=r"input: expected shape \[B, C, H, W\] \(grad_input's\)"):
        _C.roi_pool_backward(grad, rois, x[:, :, :4].copy(), 1.0, 2, 2, np.zeros_like(x))
    with pytest.raises(TypeError, match="input: expected the dtype of grad_input"):
        _C.roi_pool_backward(grad, rois, x.astype(np.float64), 1.0, 2, 2, np.zeros_like(x))
    with pytest.raises(ValueError, match="grad: expected a shape broadcastable"):
        _C.roi_align_backward(grad, np.zeros((0, 5), np.float32), 1.0, 3, 2, 2, True, np.zeros_like(x))
    with pytest.raises(TypeError, match="grad: expected the dtype of grad_input"):
        _C.roi_align_backward(grad.astype(np.float64), rois, 1.0, 2, 2, 2, True, np.zeros_like(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES + [(2, 3, 13, 17, 60), (1, 2, 40, 3, 25)])
@pytest.mark.parametrize("scale", [0.5, 0.0625])
@pytest.mark.parametrize("op", ["pool", (-1, False), (0, True), (2, True), (3, False)], ids=str)
def test_cuda_backward_gather_on_cpu_matches_cpu_backward(rng, dtype, shape, scale, op):
    # The CUDA backward visits only the bins and samples near each cell: run on the CPU (a test hook),
    # it must give the CPU backward's bits, also with a broadcast gradient (stride 0).
    b, c, h, w, k = shape
    x = (np.round(rng.standard_normal((b, c, h, w)) * 2) / 2).astype(dtype)  # many ties for the max
    rois = random_rois(rng, k, b, h, w, scale, dtype)
    for grad in (rng.standard_normal((k, c, 3, 4)).astype(dtype), np.ones((1, 1, 1, 1), dtype)):
        want, got = np.empty_like(x), np.full_like(x, np.nan)
        if op == "pool":
            _C.roi_pool_backward(grad, rois, x, scale, 3, 4, want)
            _C._roi_backward_gather(grad, rois, x, scale, 3, 4, 0, False, got)
        else:
            _C.roi_align_backward(grad, rois, scale, 3, 4, *op, want)
            _C._roi_backward_gather(grad, rois, None, scale, 3, 4, *op, got)
        np.testing.assert_array_equal(got, want)


@needs_torch
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES + [(2, 8, 13, 17, 40), (1, 64, 38, 50, 300)])
def test_cuda_matches_cpu(rng, dtype, shape):
    # Bit for bit, forward and backward: the CUDA kernels add in the CPU kernels' order. The input
    # is a channels-last view, so the CUDA path also makes it contiguous.
    b, c, h, w, k = shape
    x = torch.from_numpy(rng.standard_normal((b, h, w, c)).astype(dtype)).permute(0, 3, 1, 2)
    rois = torch.from_numpy(random_rois(rng, k, b, h, w, 0.5, dtype))
    grad = torch.from_numpy(rng.standard_normal((k, c, 3, 4)).astype(dtype))
    for op, kw in (
        (convloc.ops.roi_pool, {}),
        (convloc.ops.roi_align, dict(sampling_ratio=2, aligned=True)),
        (convloc.ops.roi_align, dict(sampling_ratio=-1, aligned=False)),
    ):
        results = []
        for device in ("cpu", "cuda"):
            xd = x.detach().to(device).requires_grad_()
            out = op(xd, rois.to(device), (3, 4), 0.5, **kw)
            assert out.device.type == device and out.shape == (k, c, 3, 4)
            out.backward(grad.to(device))
            results.append((out.detach().cpu(), xd.grad.cpu()))
        assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@needs_torch
@pytest.mark.cuda
def test_cuda_bad_boxes_and_devices_raise(rng):
    x = torch.zeros((2, 3, 8, 8), device="cuda")
    good = torch.tensor([[1.0, 0, 0, 4, 4]], device="cuda")
    for row in ([2.0, 0, 0, 4, 4], [0.5, 0, 0, 4, 4], [0.0, 0, 0, float("nan"), 4], [0.0, 4, 0, 2, 4]):
        with pytest.raises(ValueError, match="boxes"):
            convloc.ops.roi_align(x, torch.tensor([row], device="cuda"), 2)
    with pytest.raises((ValueError, TypeError), match="boxes"):
        convloc.ops.roi_pool(x, good.cpu(), 2)
    out = convloc.ops.roi_pool(x, [good[:, 1:], good[:, 1:]], 2)  # a list of per-image boxes
    assert out.is_cuda and out.shape == (2, 3, 2, 2)


@pytest.mark.cuda
def test_cupy_roi_align(rng):
    cupy = pytest.importorskip("cupy")
    x = rng.standard_normal((2, 5, 11, 9)).astype(np.float32)
    rois = random_rois(rng, 17, 2, 11, 9, 1.0, np.float32)
    out = convloc.ops.roi_align(cupy.asarray(x), cupy.asarray(rois), 3, 1.0, 2, True)
    assert isinstance(out, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(out), convloc.ops.roi_align(x, rois, 3, 1.0, 2, True))
