import numpy as np
import pytest

import convloc
from convloc import _C
from convloc.ops import bilinear_kernel, conv_transpose2d, crop_like
from reference import deconv as ref

# Torch is the reference of most tests here (and convloc.nn needs it); a Python without it skips them.
torch = pytest.importorskip("torch")
F = torch.nn.functional
cnn = pytest.importorskip("convloc.nn")

# (N, C_in, C_out, groups, H, W, kernel, stride, padding, output_padding, dilation)
GRID = [
    (1, 3, 2, 1, 5, 4, 3, 1, 0, 0, 1),
    (3, 4, 6, 2, 5, 7, (3, 2), (2, 1), (1, 0), (1, 0), (1, 2)),
    (2, 6, 3, 3, 4, 3, 4, (3, 2), (2, 1), (2, 0), 1),
    (1, 8, 4, 1, 9, 8, 3, (1, 3), (2, 0), (0, 2), (2, 1)),
    (2, 5, 5, 5, 6, 5, 4, 2, 1, 1, 1),  # depthwise
    (3, 3, 3, 3, 4, 5, (5, 3), (3, 2), (2, 1), (1, 0), (2, 2)),  # depthwise, dilated
    (1, 2, 2, 2, 3, 3, 8, 4, 0, 0, 1),  # depthwise, FCN-like (kernel 2f, stride f)
    (2, 4, 8, 4, 3, 4, 2, 2, 0, 1, 1),  # 1 input, 2 outputs per group
    (0, 4, 6, 2, 5, 5, 3, 2, 1, 0, 1),  # empty batch
    (1, 16, 40, 1, 7, 9, 4, 2, 1, 0, 1),  # several GEMM panels with ragged edges
    (1, 2, 2, 2, 3, 4, (7, 9), (4, 5), (2, 1), (1, 3), 1),  # depthwise, stride 4 and 5, padded
    (2, 3, 3, 3, 3, 3, 16, 8, 3, 5, 1),  # depthwise, FCN-8s-like with partial edge blocks
]
IDS = [f"case{i}" for i in range(len(GRID))]


def make(case, dtype, rng, bias=True):
    n, ci, co, g, h, w, k, s, p, op, d = case
    k = (k, k) if np.isscalar(k) else k
    x = rng.standard_normal((n, ci, h, w)).astype(dtype)
    wt = rng.standard_normal((ci, co // g, *k)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype) if bias else None
    return x, wt, b, dict(stride=s, padding=p, output_padding=op, groups=g, dilation=d)


def tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)


def t(a, grad=False):
    return None if a is None else torch.from_numpy(a).requires_grad_(grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", GRID, ids=IDS)
def test_forward_matches_reference_and_torch(case, dtype, rng, vector_width):
    x, w, b, kw = make(case, dtype, rng)
    out = conv_transpose2d(x, w, b, **kw)
    assert isinstance(out, np.ndarray) and out.dtype == dtype
    np.testing.assert_allclose(out, ref.conv_transpose2d(x, w, b, **kw), **tol(dtype))
    expected = F.conv_transpose2d(t(x), t(w), t(b), **kw)
    got = conv_transpose2d(t(x), t(w), t(b), **kw)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, **tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", GRID, ids=IDS)
def test_backward_matches_torch(case, dtype, rng, vector_width):
    x, w, b, kw = make(case, dtype, rng)
    ours = [t(x, True), t(w, True), t(b, True)]
    theirs = [t(x, True), t(w, True), t(b, True)]
    y = conv_transpose2d(*ours, **kw)
    grad = torch.from_numpy(rng.standard_normal(tuple(y.shape)).astype(dtype))
    y.backward(grad)
    F.conv_transpose2d(*theirs, **kw).backward(grad)
    for a, e in zip(ours, theirs):
        torch.testing.assert_close(a.grad, e.grad, **tol(dtype))


def test_backward_kernels_callable_from_C(rng):
    x, w, b, kw = make(GRID[1], np.float64, rng)
    geo = (kw["stride"], kw["padding"], kw["output_padding"], kw["dilation"], kw["groups"])
    pairs = [list(v) if not np.isscalar(v) else [v, v] for v in geo[:4]]
    y = conv_transpose2d(x, w, b, **kw)
    g = rng.standard_normal(y.shape)
    xt, wt, bt = t(x, True), t(w, True), t(b, True)
    F.conv_transpose2d(xt, wt, bt, **kw).backward(torch.from_numpy(g))
    gi, gw, gb = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    _C.deconv2d_grad_input(g, w, gi, *pairs, geo[4])
    _C.deconv2d_grad_weight(g, x, w, gw, *pairs, geo[4])
    _C.deconv2d_grad_bias(g, gb)
    np.testing.assert_allclose(gi, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-10, atol=1e-10)


GRADCHECK = [
    (2, 4, 6, 2, 3, 4, (3, 2), (2, 1), (1, 0), (1, 0), (1, 2)),
    (1, 3, 3, 3, 3, 3, (3, 2), 2, (1, 0), (1, 0), (2, 1)),
    (1, 2, 4, 2, 2, 3, 2, 2, 0, 1, 1),
]


@pytest.mark.parametrize("case", GRADCHECK, ids=["dense", "depthwise", "grouped"])
def test_gradcheck(case, rng):
    x, w, b, kw = make(case, np.float64, rng)
    args = (t(x, True), t(w, True), t(b, True))
    assert torch.autograd.gradcheck(lambda *a: conv_transpose2d(*a, **kw), args)


@pytest.mark.parametrize("case", [GRADCHECK[0], GRID[6]], ids=["dense", "depthwise"])
@pytest.mark.parametrize("bias", [True, False])
def test_opcheck(case, bias, rng):
    x, w, b, kw = make(case, np.float32, rng, bias=bias)
    pair = lambda v: [v, v] if np.isscalar(v) else list(v)  # noqa: E731
    geo = [pair(kw["stride"]), pair(kw["padding"]), pair(kw["output_padding"]), kw["groups"]]
    args = (t(x, True), t(w, True), t(b, True) if bias else None, *geo, pair(kw["dilation"]))
    torch.library.opcheck(torch.ops.convloc.conv_transpose2d.default, args)


@pytest.mark.parametrize("mask", [[True, True, True], [False, True, False]])
def test_opcheck_backward_op(mask, rng):
    x, w, b, kw = make(GRADCHECK[0], np.float32, rng)
    y = conv_transpose2d(x, w, b, **kw)
    g = rng.standard_normal(y.shape).astype(np.float32)
    geo = [[2, 1], [1, 0], [1, 0], 2, [1, 2]]
    args = (t(g), t(x), t(w), *geo, mask)
    torch.library.opcheck(torch.ops.convloc.conv_transpose2d_backward.default, args)


def test_unbatched_input(rng):
    x, w, b, kw = make(GRID[1], np.float64, rng)
    out = conv_transpose2d(t(x[0]), t(w), t(b), **kw)
    torch.testing.assert_close(out, F.conv_transpose2d(t(x[0]), t(w), t(b), **kw))
    np.testing.assert_allclose(conv_transpose2d(x[0], w, b, **kw), out.numpy(), rtol=1e-12)


def test_empty_batch_gradients(rng):
    x, w, b, kw = make(GRID[8], np.float64, rng)
    args = (t(x, True), t(w, True), t(b, True))
    y = conv_transpose2d(*args, **kw)
    assert tuple(y.shape) == (0, 6, 9, 9)
    y.sum().backward()
    assert args[0].grad.shape == args[0].shape
    assert not args[1].grad.any() and not args[2].grad.any()


@pytest.mark.parametrize("case", [GRID[2], GRID[4]], ids=["dense", "depthwise"])
def test_nan_propagated_like_torch(case, rng):
    x, w, b, kw = make(case, np.float32, rng)
    x[0, 1, 2, 1] = np.nan
    out = conv_transpose2d(x, w, b, **kw)
    expected = F.conv_transpose2d(t(x), t(w), t(b), **kw).numpy()
    assert np.isnan(expected).any()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))


@pytest.mark.parametrize("case", [GRID[9], GRID[5]], ids=["dense", "depthwise"])
def test_thread_count_independent(case, rng, threads):
    x, w, b, kw = make(case, np.float32, rng)
    g = rng.standard_normal(conv_transpose2d(x, w, b, **kw).shape).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        convloc.set_num_threads(n)
        xt, wt, bt = t(x, True), t(w, True), t(b, True)
        y = conv_transpose2d(xt, wt, bt, **kw)
        y.backward(torch.from_numpy(g))
        results.append([y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()])
    for other in results[1:]:
        for a, e in zip(other, results[0]):
            np.testing.assert_array_equal(a, e)


def test_large_dense_matches_torch(rng):
    # Big enough for several GEMM blocks in every dimension and a split K: the input-gradient
    # product's k = C_out kH kW = 2240 is deeper than one block (2048).
    x, w, b, kw = make((2, 300, 140, 1, 6, 7, 4, 2, 1, 0, 1), np.float32, rng)
    xt, wt, bt = t(x, True), t(w, True), t(b, True)
    rt, rw, rb = t(x, True), t(w, True), t(b, True)
    y = conv_transpose2d(xt, wt, bt, **kw)
    e = F.conv_transpose2d(rt, rw, rb, **kw)
    torch.testing.assert_close(y, e, rtol=1e-4, atol=1e-4)
    g = torch.from_numpy(rng.standard_normal(tuple(y.shape)).astype(np.float32))
    y.backward(g)
    e.backward(g)
    for a, r in ((xt, rt), (wt, rw), (bt, rb)):
        torch.testing.assert_close(a.grad, r.grad, rtol=1e-4, atol=1e-3)


# ---- FCN helpers ----


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 8])
def test_bilinear_kernel_values(factor):
    k = bilinear_kernel(3, factor, "float64")
    size = 2 * factor - factor % 2
    assert k.shape == (3, 1, size, size) and k.dtype == np.float64
    centre = (size - 1) / 2
    taps = 1 - np.abs(np.arange(size) - centre) / factor
    np.testing.assert_allclose(k[2, 0], np.outer(taps, taps))
    # The taps of each output phase sum to one: a constant image stays constant.
    for phase in range(factor):
        np.testing.assert_allclose(k[0, 0, phase::factor, phase::factor].sum(), 1.0)


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_bilinear_upsampling_reproduces_a_ramp(factor):
    h, w = 5, 6
    ramp = lambda i, j: 0.5 * i - 1.25 * j + 3.0  # noqa: E731
    x = ramp(*np.meshgrid(np.arange(h), np.arange(w), indexing="ij"))[None, None]
    up = conv_transpose2d(x, bilinear_kernel(1, factor, "float64"), stride=factor)
    size = 2 * factor - factor % 2
    centre = (size - 1) / 2
    # Output o sits at input coordinate (o - centre) / factor; inside the input's extent the
    # bilinear kernel interpolates the ramp exactly.
    oy = np.arange(up.shape[2])
    ox = np.arange(up.shape[3])
    iy, ix = (oy - centre) / factor, (ox - centre) / factor
    ry, rx = (iy >= 0) & (iy <= h - 1), (ix >= 0) & (ix <= w - 1)
    assert ry.sum() >= (h - 1) * factor and rx.sum() >= (w - 1) * factor
    expected = ramp(*np.meshgrid(iy[ry], ix[rx], indexing="ij"))
    np.testing.assert_allclose(up[0, 0][np.ix_(ry, rx)], expected, atol=1e-12)


def test_bilinear_upsample_module(rng):
    m = cnn.BilinearUpsample(4, 4)
    assert m.weight.shape == (4, 1, 8, 8) and m.weight.requires_grad and m.bias is None
    np.testing.assert_allclose(m.weight.detach().numpy(), bilinear_kernel(4, 4))
    x = torch.from_numpy(rng.standard_normal((2, 4, 5, 5)).astype(np.float32))
    expected = F.conv_transpose2d(x, m.weight, stride=4, groups=4)
    torch.testing.assert_close(m(x), expected)
    m(x).sum().backward()
    assert m.weight.grad is not None
    frozen = cnn.BilinearUpsample(4, 3, learnable=False)
    assert not frozen.weight.requires_grad and frozen.weight.shape == (4, 1, 5, 5)


def test_conv_transpose2d_module_matches_torch(rng):
    torch.manual_seed(0)
    ours = cnn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, groups=2, dilation=(1, 2))
    theirs = torch.nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, groups=2, dilation=(1, 2))
    theirs.load_state_dict(ours.state_dict())
    x = torch.from_numpy(rng.standard_normal((2, 4, 5, 6)).astype(np.float32))
    torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours(x, output_size=[10, 12]), theirs(x, output_size=[10, 12]))
    assert ours(x, output_size=[10, 12]).shape[-2:] == (10, 12)


def test_crop_like(rng):
    x = rng.standard_normal((2, 3, 10, 12))
    ref_img = np.zeros((1, 3, 4, 5))
    np.testing.assert_array_equal(crop_like(x, ref_img, 3), x[..., 3:7, 3:8])
    np.testing.assert_array_equal(crop_like(x, ref_img, (6, 7)), x[..., 6:10, 7:12])
    xt = torch.from_numpy(x).requires_grad_()
    crop_like(xt, ref_img, (1, 2)).sum().backward()
    assert xt.grad.sum().item() == 2 * 3 * 4 * 5
    with pytest.raises(ValueError, match="offset"):
        crop_like(x, ref_img, (7, 0))
    with pytest.raises(ValueError, match="offset"):
        crop_like(x, ref_img, -1)


def test_fcn32_upsample_and_crop_aligns_with_the_image(rng):
    # FCN-32s: a 500 x 500 image gives a 22 x 22 score map (pad 100, stride 32); the 64 x 64
    # stride-32 upsampling and a crop at offset 19 bring it back to 500 x 500.
    scores = torch.from_numpy(rng.standard_normal((1, 21, 22, 22)).astype(np.float32))
    up = cnn.BilinearUpsample(21, 32, learnable=False)(scores)
    assert tuple(up.shape) == (1, 21, 736, 736)
    out = crop_like(up, np.zeros((1, 3, 500, 500)), 19)
    assert tuple(out.shape) == (1, 21, 500, 500)


# ---- bad inputs ----


def test_bad_inputs(rng):
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="weight"):  # channel mismatch
        conv_transpose2d(x, w[:3])
    with pytest.raises(ValueError, match="groups"):  # C_in not divisible by groups
        conv_transpose2d(x, w, groups=3)
    with pytest.raises(ValueError, match="output_padding"):  # >= stride and >= dilation
        conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="output_padding"):
        conv_transpose2d(x, w, stride=(2, 1), output_padding=(1, 1))
    with pytest.raises(ValueError, match="padding"):
        conv_transpose2d(x, w, padding=-1)
    with pytest.raises(ValueError, match="stride"):
        conv_transpose2d(x, w, stride=0)
    with pytest.raises(ValueError, match="dilation"):
        conv_transpose2d(x, w, dilation=(1, -2))
    with pytest.raises(ValueError, match="padding"):  # empty output
        conv_transpose2d(x, w, padding=4)
    with pytest.raises(ValueError, match="groups"):
        conv_transpose2d(x, w, groups=0)
    with pytest.raises(ValueError, match="bias"):
        conv_transpose2d(x, w, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="input"):
        conv_transpose2d(x[0, 0], w)
    with pytest.raises(TypeError, match="weight"):
        conv_transpose2d(x, w.astype(np.float64))
    with pytest.raises(TypeError, match="input"):
        conv_transpose2d(x.astype(np.int32), w.astype(np.int32))
    with pytest.raises(ValueError, match="stride"):
        conv_transpose2d(x, w, stride=(1, 2, 3))
    with pytest.raises(TypeError, match="^stride: expected an integer or a pair of integers, got float 1.5"):
        conv_transpose2d(x, w, stride=1.5)
    with pytest.raises(ValueError, match="factor"):
        bilinear_kernel(3, 0)


def test_output_padding_below_dilation_is_allowed(rng):
    # torch's rule: output_padding must be below stride OR dilation.
    x, w, b, kw = make((1, 2, 3, 1, 4, 4, 3, 1, 0, 2, 3), np.float64, rng)
    expected = F.conv_transpose2d(t(x), t(w), t(b), **kw).numpy()
    np.testing.assert_allclose(conv_transpose2d(x, w, b, **kw), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", GRID, ids=IDS)
def test_cuda_matches_cpu(case, dtype, rng):
    # Forward and all three gradients; the GPU input is a channels-last view.
    x, w, b, kw = make(case, dtype, rng)
    cpu = [t(x, True), t(w, True), t(b, True)]
    x_cl = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 3, 1))).cuda().permute(0, 3, 1, 2)
    gpu = [x_cl.requires_grad_()] + [a.detach().cuda().requires_grad_() for a in cpu[1:]]
    y_cpu, y_gpu = conv_transpose2d(*cpu, **kw), conv_transpose2d(*gpu, **kw)
    assert y_gpu.is_cuda and y_gpu.dtype == y_cpu.dtype
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, **tol(dtype))
    g = torch.from_numpy(rng.standard_normal(tuple(y_cpu.shape)).astype(dtype))
    y_cpu.backward(g)
    y_gpu.backward(g.cuda())
    for a, e in zip(gpu, cpu):
        torch.testing.assert_close(
            a.grad.cpu(), e.grad, **(tol(dtype) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-3))
        )


@pytest.mark.cuda
def test_cuda_matches_torch_on_fcn_upsampling(rng):
    # FCN-8s's last layer (21 classes, 8x, depthwise bilinear) at a realistic size, against cuDNN.
    x = torch.from_numpy(rng.standard_normal((2, 21, 64, 48)).astype(np.float32)).cuda()
    w = torch.from_numpy(np.broadcast_to(bilinear_kernel(1, 8), (21, 1, 16, 16)).copy()).cuda()
    ours = conv_transpose2d(x, w, None, stride=8, padding=4, groups=21)
    torch.testing.assert_close(ours, F.conv_transpose2d(x, w, None, 8, 4, groups=21), rtol=1e-5, atol=1e-5)
