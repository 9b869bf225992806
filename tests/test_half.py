"""float16 and bfloat16 arrays: stored in their dtype, computed in float32. Each op's half result is
its float32 result on the same values, rounded once (so, exactly, the float32 path on the upcast
arrays, then cast), and close to float32 on the original arrays at half precision; torchvision's
half kernels, where installed, agree at its tolerances. Also channels-last inputs (read without a
copy where the kernel can) and the layout of conv_transpose2d's output."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convloc import _C, ops

HALVES = [torch.float16, torch.bfloat16]
# Largest error of one rounding to the dtype, relative (half an ulp), with room for results that
# sum many rounded inputs.
RTOL = {torch.float16: 4e-3, torch.bfloat16: 3e-2}


def rounded(x, dtype):
    """x rounded to dtype and back: the values a half array holds."""
    return x.to(dtype).float()


def feature_map_and_rois(rng, k=40, batch=2, channels=19, height=13, width=17, scale=0.5):
    x = torch.from_numpy(rng.standard_normal((batch, channels, height, width)).astype(np.float32))
    size = np.array([width, height]) / scale
    xy = rng.uniform(-0.1, 0.9, (k, 2)) * size
    wh = rng.uniform(0, 0.6, (k, 2)) * size
    idx = rng.integers(0, batch, (k, 1))
    rois = torch.from_numpy(np.concatenate([idx, xy, xy + wh], 1).astype(np.float32))
    return x, rois


def assert_half_close(got, want32, dtype):
    """got (dtype) against a float32 result: within the rounding of the inputs and of the output."""
    assert got.dtype == dtype
    got, want32 = got.detach().float(), want32.detach()
    scale = float(want32.abs().max().clamp(min=1))
    torch.testing.assert_close(got, want32, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


ROI_OPS = {
    "roi_pool": lambda x, rois: ops.roi_pool(x, rois, (3, 4), 0.5),
    "roi_align": lambda x, rois: ops.roi_align(x, rois, (3, 4), 0.5, 2, True),
    "roi_align_adaptive": lambda x, rois: ops.roi_align(x, rois, 5, 0.5, -1, False),
}


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("name", sorted(ROI_OPS))
def test_roi_forward_and_backward(rng, dtype, name):
    op = ROI_OPS[name]
    x, rois = feature_map_and_rois(rng)
    xh, rh = x.to(dtype).requires_grad_(), rois.to(dtype)
    out = op(xh, rh)
    grad = torch.from_numpy(rng.standard_normal(tuple(out.shape)).astype(np.float32))
    out.backward(grad.to(dtype))
    # Exactly the float32 kernels on the same values, rounded once.
    x32 = rounded(x, dtype).requires_grad_()
    out32 = op(x32, rounded(rois, dtype))
    out32.backward(rounded(grad, dtype))
    assert torch.equal(out, out32.to(dtype))
    assert torch.equal(xh.grad, x32.grad.to(dtype))
    # Close to float32 on the unrounded values (boxes rounded as the half ones: a box moved by
    # a rounding samples elsewhere).
    x_full = x.clone().requires_grad_()
    out_full = op(x_full, rounded(rois, dtype))
    out_full.backward(grad)
    assert_half_close(out, out_full, dtype)
    if name != "roi_pool":  # (rounding may move a bin's maximum, and its gradient, to another cell)
        assert_half_close(xh.grad, x_full.grad, dtype)


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("name", sorted(ROI_OPS))
def test_roi_matches_torchvision_half(rng, dtype, name):
    tv = pytest.importorskip("torchvision.ops")
    x, rois = feature_map_and_rois(rng)
    xh, rh = x.to(dtype), rois.to(dtype)
    peer = {
        "roi_pool": lambda: tv.roi_pool(xh, rh, (3, 4), 0.5),
        "roi_align": lambda: tv.roi_align(xh, rh, (3, 4), 0.5, 2, True),
        "roi_align_adaptive": lambda: tv.roi_align(xh, rh, 5, 0.5, -1, False),
    }[name]
    try:
        want = peer()
    except RuntimeError as e:  # torchvision's CPU kernels may lack the dtype
        pytest.skip(f"torchvision: {e}")
    # torchvision rounds to the half type after each operation, convloc once: both are close to the
    # exact result (float32 on the half values), convloc closer.
    exact = ROI_OPS[name](xh.float(), rh.float())
    got = ROI_OPS[name](xh, rh)
    assert (got.float() - exact).abs().max() <= (want.float() - exact).abs().max()
    scale = float(exact.abs().max())
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=1e-2 * scale)


def test_numpy_float16_roi_align(rng):
    x, rois = feature_map_and_rois(rng)
    xn, rn = x.numpy().astype(np.float16), rois.numpy().astype(np.float16)
    out = ops.roi_align(xn, rn, 3, 0.5, 2)
    assert isinstance(out, np.ndarray) and out.dtype == np.float16
    want = ops.roi_align(torch.from_numpy(xn), torch.from_numpy(rn), 3, 0.5, 2)
    np.testing.assert_array_equal(out, want.numpy())


DECONV_CASES = {  # input shape, weight shape, stride, padding, groups
    "dense": ((2, 8, 6, 7), (8, 5, 4, 4), 2, 1, 1),
    "grouped": ((2, 8, 6, 7), (8, 3, 3, 3), 2, 0, 2),
    "depthwise": ((2, 4, 6, 7), (4, 1, 8, 8), 4, 2, 4),
}


def deconv_args(rng, case):
    xs, ws, stride, padding, groups = DECONV_CASES[case]
    x, w, b = (
        torch.from_numpy(rng.standard_normal(s).astype(np.float32)) for s in (xs, ws, (ws[1] * groups,))
    )
    return x, w, b, dict(stride=stride, padding=padding, groups=groups)


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("case", sorted(DECONV_CASES))
def test_conv_transpose2d_forward_and_backward(rng, dtype, case):
    x, w, b, geo = deconv_args(rng, case)
    leaves = [a.to(dtype).requires_grad_() for a in (x, w, b)]
    out = ops.conv_transpose2d(*leaves, **geo)
    grad = torch.from_numpy(rng.standard_normal(tuple(out.shape)).astype(np.float32))
    out.backward(grad.to(dtype))
    leaves32 = [rounded(a, dtype).requires_grad_() for a in (x, w, b)]
    out32 = ops.conv_transpose2d(*leaves32, **geo)
    out32.backward(rounded(grad, dtype))
    assert torch.equal(out, out32.to(dtype))
    for a, a32 in zip(leaves, leaves32):
        assert torch.equal(a.grad, a32.grad.to(dtype))
    full = [a.clone().requires_grad_() for a in (x, w, b)]
    out_full = ops.conv_transpose2d(*full, **geo)
    out_full.backward(grad)
    assert_half_close(out, out_full, dtype)
    for a, a_full in zip(leaves, full):
        assert_half_close(a.grad, a_full.grad, dtype)
    # torch's own half conv_transpose2d
    assert_half_close(out, F.conv_transpose2d(*(a.detach() for a in leaves), **geo).float(), dtype)


def random_boxes(rng, n, size=100.0):
    xy = rng.uniform(0, size, (n, 2))
    return torch.from_numpy(np.concatenate([xy, xy + rng.uniform(0, size / 2, (n, 2))], 1).astype(np.float32))


@pytest.mark.parametrize("dtype", HALVES)
def test_box_ops(rng, dtype):
    b1, b2 = random_boxes(rng, 60).to(dtype), random_boxes(rng, 45).to(dtype)
    scores = torch.from_numpy(rng.random(60).astype(np.float32)).to(dtype)
    idxs = torch.from_numpy(rng.integers(0, 3, 60))
    assert torch.equal(ops.box_area(b1), ops.box_area(b1.float()).to(dtype))
    assert torch.equal(ops.box_iou(b1, b2), ops.box_iou(b1.float(), b2.float()).to(dtype))
    assert torch.equal(ops.nms(b1, scores, 0.5), ops.nms(b1.float(), scores.float(), 0.5))
    assert torch.equal(
        ops.batched_nms(b1, scores, idxs, 0.5), ops.batched_nms(b1.float(), scores.float(), idxs, 0.5)
    )
    # torch's own half arithmetic: (x2 - x1) * (y2 - y1) and the IoU formula, rounded per operation
    area = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    assert_half_close(ops.box_area(b1), area.float(), dtype)
    tv = pytest.importorskip("torchvision.ops")
    assert_half_close(ops.box_iou(b1, b2), tv.box_iou(b1, b2).float(), dtype)
    try:
        want = tv.nms(b1, scores, 0.5)
    except RuntimeError as e:
        pytest.skip(f"torchvision: {e}")
    # The kept sets may differ only where an IoU lies within half-precision rounding of the threshold.
    iou = ops.box_iou(b1.float(), b1.float())
    assert set(ops.nms(b1, scores, 0.5).tolist()) ^ set(want.tolist()) <= {
        i for i in range(60) if ((iou[i] - 0.5).abs() < RTOL[dtype]).any()
    }


@pytest.mark.parametrize("dtype", HALVES)
def test_permutohedral_filter(rng, dtype):
    v = torch.from_numpy(rng.standard_normal((2, 300, 3)).astype(np.float32)).to(dtype).requires_grad_()
    f = torch.from_numpy(rng.standard_normal((2, 300, 4)).astype(np.float32)).to(dtype).requires_grad_()
    out = ops.permutohedral_filter(v, f, normalization="symmetric")
    grad = torch.from_numpy(rng.standard_normal((2, 300, 3)).astype(np.float32)).to(dtype)
    out.backward(grad)
    v32, f32 = (a.detach().float().requires_grad_() for a in (v, f))
    out32 = ops.permutohedral_filter(v32, f32, normalization="symmetric")
    out32.backward(grad.float())
    assert torch.equal(out, out32.to(dtype))
    assert torch.equal(v.grad, v32.grad.to(dtype)) and torch.equal(f.grad, f32.grad.to(dtype))
    lattice = ops.PermutohedralLattice(f.detach())
    assert torch.equal(
        lattice.filter(v.detach(), normalization="after"),
        lattice.filter(v32.detach(), normalization="after").to(dtype),
    )


@pytest.mark.parametrize("dtype", HALVES)
def test_crfs(rng, dtype):
    unary = torch.from_numpy(rng.random((3, 12, 10), dtype=np.float32) * 3).to(dtype)
    image = torch.from_numpy(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
    q = ops.dense_crf(unary, image=image, iterations=3)
    assert q.dtype == dtype
    assert torch.equal(q, ops.dense_crf(unary.float(), image=image, iterations=3).to(dtype))
    grid = ops.grid_crf(unary, image.to(dtype), iterations=2)
    assert torch.equal(grid, ops.grid_crf(unary.float(), image.to(dtype).float(), iterations=2).to(dtype))
    un = unary.float().numpy().astype(np.float16)
    assert ops.dense_crf(un, image=image.numpy(), iterations=2).dtype == np.float16


@pytest.mark.parametrize("dtype", HALVES)
def test_opcheck(rng, dtype):
    x, rois = feature_map_and_rois(rng, k=5, channels=3, height=6, width=7)
    x, rois = x.to(dtype).requires_grad_(), rois.to(dtype)
    c = torch.ops.convloc
    torch.library.opcheck(c.roi_pool, (x, rois, 0.5, 2, 3))
    torch.library.opcheck(c.roi_align, (x, rois, 0.5, 2, 3, 2, True))
    grad = torch.randn(5, 3, 2, 3).to(dtype)
    torch.library.opcheck(c.roi_pool_backward, (grad, rois, x.detach(), 0.5))
    torch.library.opcheck(c.roi_align_backward, (grad, rois, 0.5, -1, False, 2, 3, 6, 7))
    xd, w, b, _ = deconv_args(rng, "grouped")
    leaves = [a.to(dtype).requires_grad_() for a in (xd, w, b)]
    torch.library.opcheck(c.conv_transpose2d, (*leaves, [2, 2], [0, 0], [1, 1], 2, [1, 1]))
    boxes = random_boxes(rng, 8).to(dtype)
    torch.library.opcheck(c.box_area, (boxes.requires_grad_(),))
    torch.library.opcheck(c.box_iou, (boxes, boxes[:5]))
    scores = torch.rand(8).to(dtype)
    torch.library.opcheck(c.nms, (boxes.detach(), scores, 0.5), test_utils=("test_schema", "test_faketensor"))
    idxs = torch.tensor([0, 1] * 4)
    torch.library.opcheck(
        c.batched_nms, (boxes.detach(), scores, idxs, 0.5), test_utils=("test_schema", "test_faketensor")
    )
    v, f = torch.randn(2, 20, 3).to(dtype).requires_grad_(), torch.randn(2, 20, 2).to(dtype)
    torch.library.opcheck(c.permutohedral_filter, (v, f, False, False))
    u = torch.rand(1, 3, 48).to(dtype)
    crf_args = (u, None, [torch.randn(1, 48, 2).to(dtype)], [0, 1], [2.0, 2.0], [1.0, 1.0], [1, 1], [1.0, 3.0], [3, 2],
                2, False, [6, 8], True, False)  # fmt: skip
    torch.library.opcheck(c.dense_crf, crf_args)
    torch.library.opcheck(
        c.grid_crf, (u.reshape(1, 3, 6, 8), torch.rand(1, 6, 8, 3).to(dtype), 4, 10.0, 1.0, None, 2)
    )
    gd = torch.randn(2, 6, 13, 15).to(dtype)
    for mask in ([True, True, True], [True, False, False], [False, True, True]):
        torch.library.opcheck(
            c.conv_transpose2d_backward,
            (gd, *(a.detach() for a in leaves[:2]), [2, 2], [0, 0], [0, 0], 2, [1, 1], mask),
        )
    gv = torch.randn(2, 20, 3).to(dtype)
    for need_features in (False, True):
        torch.library.opcheck(
            c.permutohedral_filter_backward, (gv, v.detach(), f, False, True, need_features)
        )
    image = torch.rand(6, 8, 3).to(dtype)
    torch.library.opcheck(c.felzenszwalb, (image, 1.0, 0.8, 5))
    ss_args = (image, "single", 0, None, 20, 0.8)
    torch.library.opcheck(c.selective_search, ss_args, test_utils=("test_schema",))


@pytest.mark.parametrize("dtype", HALVES)
def test_conversions_round_to_nearest_even(dtype):
    """Every value of the dtype, alone and times weights whose float32 products need rounding back
    (ties, subnormal results, overflow): the kernels' conversions against torch's."""
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype).reshape(1, 1, 256, 256)
    ulp = 2.0**-10 if dtype == torch.float16 else 2.0**-7
    for w in (1.0, 1 + ulp, 0.75, 2.0**-10, 3.0):
        weight = torch.full((1, 1, 1, 1), w, dtype=dtype)
        got = ops.conv_transpose2d(x, weight).float()
        want = (x.float() * w).to(dtype).float()
        nan = want.isnan()
        assert torch.equal(got.isnan(), nan)
        assert torch.equal(got[~nan], want[~nan])


def test_mixed_dtypes_name_the_argument(rng):
    x, rois = feature_map_and_rois(rng)
    with pytest.raises(TypeError, match="boxes: expected the dtype of input \\(float16\\), got float32"):
        ops.roi_align(x.half(), rois, 3)
    with pytest.raises(TypeError, match="boxes: expected the dtype of input \\(float32\\), got bfloat16"):
        ops.roi_pool(x, rois.bfloat16(), 3)
    xd, w, b, geo = deconv_args(rng, "dense")
    with pytest.raises(TypeError, match="weight: expected the dtype of input \\(float16\\), got float32"):
        ops.conv_transpose2d(xd.half(), w, **geo)
    with pytest.raises(TypeError, match="bias: expected the dtype of input \\(bfloat16\\), got float16"):
        ops.conv_transpose2d(xd.bfloat16(), w.bfloat16(), b.half(), **geo)
    boxes = random_boxes(rng, 5)
    with pytest.raises(TypeError, match="scores: expected the dtype of boxes \\(float16\\), got float32"):
        ops.nms(boxes.half(), torch.rand(5), 0.5)
    with pytest.raises(TypeError, match="boxes2: expected the dtype of boxes1 \\(float16\\), got bfloat16"):
        ops.box_iou(boxes.half(), boxes.bfloat16())


# ---- channels-last inputs ----


def kernel_inputs(monkeypatch, name):
    """Records the data pointer of the input each call of _C.<name> receives."""
    seen, kernel = [], getattr(_C, name)

    def spy(input, *args, **kwargs):
        seen.append(input.data_ptr() if isinstance(input, torch.Tensor) else input.ctypes.data)
        return kernel(input, *args, **kwargs)

    monkeypatch.setattr(_C, name, spy)
    return seen


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_roi_align_reads_channels_last_without_a_copy(rng, monkeypatch, dtype):
    x, rois = feature_map_and_rois(rng)
    x, rois = x.to(dtype), rois.to(dtype)
    want = ops.roi_align(x, rois, 3, 0.5, 2)
    xc = x.contiguous(memory_format=torch.channels_last)
    seen = kernel_inputs(monkeypatch, "roi_align_forward")
    out = ops.roi_align(xc, rois, 3, 0.5, 2)
    assert seen == [xc.data_ptr()]
    assert out.is_contiguous() and torch.equal(out, want)
    assert torch.equal(ops.roi_pool(xc, rois, 3, 0.5), ops.roi_pool(x, rois, 3, 0.5))
    nhwc = np.ascontiguousarray(x.float().numpy().transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    out = ops.roi_align(nhwc, rois.float().numpy(), 3, 0.5, 2)
    assert seen[-1] == nhwc.ctypes.data
    np.testing.assert_array_equal(out, ops.roi_align(x.float(), rois.float(), 3, 0.5, 2).numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("case", sorted(DECONV_CASES))
@pytest.mark.parametrize("layout", ["input", "weight", "both"])
def test_conv_transpose2d_channels_last(rng, monkeypatch, dtype, case, layout):
    x, w, b, geo = deconv_args(rng, case)
    x, w, b = x.to(dtype), w.to(dtype), b.to(dtype)
    want = ops.conv_transpose2d(x, w, b, **geo)
    if layout in ("input", "both"):
        x = x.contiguous(memory_format=torch.channels_last)
    if layout in ("weight", "both"):
        w = w.contiguous(memory_format=torch.channels_last)
    seen = kernel_inputs(monkeypatch, "deconv2d_forward")
    out = ops.conv_transpose2d(x, w, b, **geo)
    assert out.stride() == F.conv_transpose2d(x, w, b, **geo).stride()
    assert torch.equal(out, want)
    if layout != "weight":
        assert seen == [x.data_ptr()]
    # the fake kernel gives the same layout
    fake = torch._subclasses.FakeTensorMode()
    with fake:
        fx, fw, fb = (fake.from_tensor(a) for a in (x, w, b))
        assert ops.conv_transpose2d(fx, fw, fb, **geo).stride() == out.stride()


def test_conv_transpose2d_numpy_channels_last(rng):
    x, w, b, geo = deconv_args(rng, "dense")
    nhwc = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    out = ops.conv_transpose2d(nhwc, w.numpy(), b.numpy(), **geo)
    assert out.transpose(0, 2, 3, 1).flags.c_contiguous
    np.testing.assert_array_equal(out, ops.conv_transpose2d(x, w, b, **geo).numpy())


# ---- CUDA: half arrays run the float32 kernels on float32 copies ----


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", HALVES)
def test_cuda_roi_half_equals_cpu(rng, dtype):
    x, rois = feature_map_and_rois(rng)
    for name, op in ROI_OPS.items():
        xh = x.to(dtype).requires_grad_()
        out = op(xh, rois.to(dtype))
        grad = torch.randn(out.shape).to(dtype)
        out.backward(grad)
        xc = x.to(dtype).cuda().requires_grad_()
        out_cuda = op(xc, rois.to(dtype).cuda())
        out_cuda.backward(grad.cuda())
        assert out_cuda.dtype == dtype and out_cuda.is_cuda, name
        assert torch.equal(out_cuda.cpu(), out), name  # the CUDA kernels equal the CPU ones bit for bit
        assert torch.equal(xc.grad.cpu(), xh.grad), name


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", HALVES)
def test_cuda_half_ops(rng, dtype):
    xd, w, b, geo = deconv_args(rng, "dense")
    args = [a.to(dtype) for a in (xd, w, b)]
    out = ops.conv_transpose2d(*(a.cuda() for a in args), **geo)
    assert out.dtype == dtype
    assert_half_close(out.cpu(), ops.conv_transpose2d(*(a.float() for a in args), **geo), dtype)
    xc = args[0].cuda().contiguous(memory_format=torch.channels_last)
    out_cl = ops.conv_transpose2d(xc, args[1].cuda(), args[2].cuda(), **geo)
    assert out_cl.stride() == F.conv_transpose2d(xc, args[1].cuda(), args[2].cuda(), **geo).stride()
    assert torch.equal(out_cl, out)
    boxes, scores = random_boxes(rng, 50).to(dtype), torch.rand(50).to(dtype)
    assert torch.equal(ops.nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), ops.nms(boxes, scores, 0.5))
    iou = ops.box_iou(boxes.cuda(), boxes.cuda())
    assert iou.dtype == dtype
    assert_half_close(iou.cpu(), ops.box_iou(boxes.float(), boxes.float()), dtype)
    v, f = torch.randn(200, 3).to(dtype), torch.randn(200, 2).to(dtype)
    filtered = ops.permutohedral_filter(v.cuda(), f.cuda(), normalization="after")
    assert filtered.dtype == dtype
    unary = torch.rand(3, 16, 16).to(dtype)
    assert ops.dense_crf(unary.cuda(), iterations=2).dtype == dtype


@pytest.mark.cuda
def test_cuda_kernels_refuse_half_arrays_directly():
    x = torch.zeros((1, 2, 4, 4), dtype=torch.float16, device="cuda")
    rois = torch.tensor([[0, 0, 0, 2, 2]], dtype=torch.float16, device="cuda")
    out = torch.empty((1, 2, 2, 2), dtype=torch.float16, device="cuda")
    with pytest.raises(TypeError, match="CUDA arrays"):
        _C.roi_align_forward(x, rois, 1.0, 2, 2, 2, False, out)
