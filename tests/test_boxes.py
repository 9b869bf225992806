import numpy as np
import pytest

import convloc
from convloc import ops
from reference import boxes as ref


def random_boxes(rng, n, dtype=np.float32, size=100.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(0, size / 2, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(dtype)


SIZES = [0, 1, 2, 7, 64, 301]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
def test_area_and_iou_match_reference(rng, n, dtype):
    a, b = random_boxes(rng, n, dtype), random_boxes(rng, 13, dtype)
    area = ops.box_area(a)
    assert area.dtype == dtype and area.shape == (n,)
    np.testing.assert_array_equal(area, ref.box_area(a))
    iou = ops.box_iou(a, b)
    assert iou.dtype == dtype and iou.shape == (n, 13)
    np.testing.assert_allclose(iou, ref.box_iou(a, b), rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_iou_of_empty_boxes_is_nan_like_torchvision():
    z = np.array([[1, 1, 1, 1]], np.float32)
    assert np.isnan(ops.box_iou(z, z)[0, 0])
    assert ops.box_iou(z, np.array([[0, 0, 2, 2]], np.float32))[0, 0] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.7, 1.0])
def test_nms_matches_reference(rng, n, dtype, thr):
    boxes = random_boxes(rng, n, dtype)
    scores = rng.random(n).astype(dtype)
    keep = ops.nms(boxes, scores, thr)
    assert keep.dtype == np.int64
    np.testing.assert_array_equal(keep, ref.nms(boxes, scores, thr))


def test_nms_ties_identical_and_degenerate_boxes(rng):
    same = np.tile(np.array([[10, 10, 20, 20]], np.float32), (5, 1))
    np.testing.assert_array_equal(ops.nms(same, np.ones(5, np.float32), 0.5), [0])
    # Zero-area boxes have IoU NaN with each other: nothing is suppressed, ties keep index order.
    flat = np.array([[5, 5, 5, 9], [5, 5, 5, 9], [1, 1, 1, 1]], np.float32)
    np.testing.assert_array_equal(ops.nms(flat, np.array([1, 1, 2], np.float32), 0.1), [2, 0, 1])
    # Quantised scores force many ties.
    boxes = random_boxes(rng, 200)
    scores = rng.integers(0, 4, 200).astype(np.float32)
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.4), ref.nms(boxes, scores, 0.4))


@pytest.mark.parametrize("n", [0, 1, 50, 257])
def test_batched_nms_matches_per_class_reference(rng, n):
    boxes = random_boxes(rng, n)
    scores = rng.random(n).astype(np.float32)
    idxs = rng.integers(0, 4, n)
    keep = ops.batched_nms(boxes, scores, idxs, 0.5)
    np.testing.assert_array_equal(keep, ref.nms(boxes, scores, 0.5, idxs))


@pytest.mark.parametrize("idx_dtype", [np.int32, np.uint8])
def test_batched_nms_takes_any_integer_categories(rng, idx_dtype):
    boxes, scores, idxs = random_boxes(rng, 80), rng.random(80).astype(np.float32), rng.integers(0, 3, 80)
    want = ops.batched_nms(boxes, scores, idxs, 0.5)
    np.testing.assert_array_equal(ops.batched_nms(boxes, scores, idxs.astype(idx_dtype), 0.5), want)


@pytest.mark.parametrize("size", [0, 3, 40, 90])
def test_nms_padded_form(rng, size):
    boxes, scores, idxs = random_boxes(rng, 60), rng.random(60).astype(np.float32), rng.integers(0, 3, 60)
    for keep, (padded, count) in [
        (ops.nms(boxes, scores, 0.4), ops.nms(boxes, scores, 0.4, size, padded=True)),
        (ops.batched_nms(boxes, scores, idxs, 0.4), ops.batched_nms(boxes, scores, idxs, 0.4, size, True)),
    ]:
        assert padded.shape == (size,) and padded.dtype == np.int64 and count == min(size, len(keep))
        np.testing.assert_array_equal(padded[:count], keep[:size])
        assert (padded[count:] == -1).all()
        np.testing.assert_array_equal(ops.nms(boxes, scores, 0.4, size), ops.nms(boxes, scores, 0.4)[:size])


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(padded=True), ValueError),
        (dict(max_output_size=-1), ValueError),
        (dict(max_output_size=2.0), TypeError),
    ],
)
def test_nms_bad_output_size(rng, kwargs, error):
    with pytest.raises(error, match="max_output_size"):
        ops.nms(random_boxes(rng, 5), rng.random(5).astype(np.float32), 0.5, **kwargs)


def test_nms_threshold_boundary_compares_in_double():
    # IoU of these boxes is exactly 0.5 in float32 arithmetic: not suppressed at 0.5 (strict >).
    b = np.array([[0, 0, 2, 1], [1, 0, 3, 1]], np.float32)  # inter 1, union 3 -> 1/3
    s = np.array([1, 0.5], np.float32)
    iou = float(ops.box_iou(b[:1], b[1:])[0, 0])
    assert len(ops.nms(b, s, iou)) == 2
    assert len(ops.nms(b, s, np.nextafter(iou, 0, dtype=np.float64))) == 1


def test_thread_count_does_not_change_results(rng, threads):
    boxes = random_boxes(rng, 3000, size=300)
    scores = rng.random(3000).astype(np.float32)
    results = []
    for t in (1, 2):
        convloc.set_num_threads(t)
        results.append((ops.nms(boxes, scores, 0.5), ops.box_iou(boxes, boxes[:100])))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_strided_and_list_inputs(rng):
    big = random_boxes(rng, 40)
    view = big[::2]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(ops.box_area(view), ref.box_area(np.ascontiguousarray(view)))
    np.testing.assert_array_equal(ops.box_area([[0.0, 0.0, 2.0, 3.0]]), [6.0])


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda b, s: ops.nms(b[:, :3], s, 0.5), "boxes"),
        (lambda b, s: ops.nms(b, s[:-1], 0.5), "scores"),
        (lambda b, s: ops.nms(b, s, 1.5), "iou_threshold"),
        (lambda b, s: ops.nms(b, s, float("nan")), "iou_threshold"),
        (lambda b, s: ops.nms(b, np.where(s > 0, np.nan, s).astype(np.float32), 0.5), "scores"),
        (lambda b, s: ops.nms(np.where(b > 0, np.inf, b).astype(np.float32), s, 0.5), "boxes"),
        (lambda b, s: ops.nms(b[:, [2, 1, 0, 3]], s, 0.5), "boxes"),
        (lambda b, s: ops.box_iou(b, b[:, :2]), "boxes2"),
        (lambda b, s: ops.batched_nms(b, s, np.zeros(3, np.int64), 0.5), "idxs"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(rng, call, arg):
    boxes, scores = random_boxes(rng, 6) + 1, rng.random(6).astype(np.float32) + 0.1
    with pytest.raises(ValueError, match=arg):
        call(boxes, scores)


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda b, s: ops.nms(b.astype(np.int64), s, 0.5), "boxes"),
        (lambda b, s: ops.nms(b, s.astype(np.float64), 0.5), "scores"),
        (lambda b, s: ops.nms(b.astype(np.float16), s, 0.5), "boxes"),
        (lambda b, s: ops.nms(b, s, "high"), "iou_threshold"),
        (lambda b, s: ops.batched_nms(b, s, np.zeros(6, np.float32), 0.5), "idxs"),
        (lambda b, s: ops.box_area(object()), "boxes"),
    ],
)
def test_bad_types_raise_type_error_naming_argument(rng, call, arg):
    boxes, scores = random_boxes(rng, 6), rng.random(6).astype(np.float32)
    with pytest.raises(TypeError, match=arg):
        call(boxes, scores)


# --- torch ---------------------------------------------------------------------------------


def test_torch_in_torch_out_and_numpy_in_numpy_out(rng):
    torch = pytest.importorskip("torch")
    boxes = random_boxes(rng, 50)
    scores = rng.random(50).astype(np.float32)
    keep_np = ops.nms(boxes, scores, 0.5)
    keep_t = ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5)
    assert isinstance(keep_np, np.ndarray) and isinstance(keep_t, torch.Tensor)
    assert keep_t.dtype == torch.int64
    np.testing.assert_array_equal(keep_t.numpy(), keep_np)
    area_t = ops.box_area(torch.from_numpy(boxes).double())
    assert area_t.dtype == torch.float64
    with pytest.raises(TypeError, match="scores"):
        ops.nms(torch.from_numpy(boxes), scores, 0.5)
    padded, count = ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5, 60, padded=True)
    assert isinstance(padded, torch.Tensor) and isinstance(count, torch.Tensor) and int(count) == len(keep_np)
    np.testing.assert_array_equal(padded.numpy(), ops.nms(boxes, scores, 0.5, 60, padded=True)[0])


def test_bridge_passes_arrays_without_copies():
    torch = pytest.importorskip("torch")
    from convloc import _C

    # box_area writes into `out` in place: if the bridge copied, the caller would not see it.
    for lib in ("numpy", "torch"):
        boxes = np.array([[0, 0, 2, 3], [1, 1, 2, 2]], np.float32)
        out = np.zeros(2, np.float32)
        if lib == "torch":
            boxes, out = torch.from_numpy(boxes), torch.zeros(2)
        ptr = out.ctypes.data if lib == "numpy" else out.data_ptr()
        _C.box_area(boxes, out)
        assert (out.ctypes.data if lib == "numpy" else out.data_ptr()) == ptr
        np.testing.assert_array_equal(np.asarray(out), [6, 1])


def test_requires_grad_inputs_are_accepted(rng):
    torch = pytest.importorskip("torch")
    boxes = torch.from_numpy(random_boxes(rng, 20)).requires_grad_()
    iou = ops.box_iou(boxes, boxes)
    assert iou.shape == (20, 20)


def test_torch_library_opcheck(rng):
    torch = pytest.importorskip("torch")
    boxes = torch.from_numpy(random_boxes(rng, 30))
    scores = torch.from_numpy(rng.random(30).astype(np.float32))
    idxs = torch.from_numpy(rng.integers(0, 3, 30))
    import convloc.nn  # noqa: F401

    for op, args in (
        (torch.ops.convloc.box_area, (boxes,)),
        (torch.ops.convloc.box_iou, (boxes, boxes[:7])),
        (torch.ops.convloc.nms, (boxes, scores, 0.5)),
        (torch.ops.convloc.batched_nms, (boxes, scores, idxs, 0.5)),
    ):
        torch.library.opcheck(op, args)


def test_torch_compile_traces_nms(rng):
    torch = pytest.importorskip("torch")
    boxes = torch.from_numpy(random_boxes(rng, 40))
    scores = torch.from_numpy(rng.random(40).astype(np.float32))

    def f(b, s):
        keep = ops.nms(b, s, 0.5)
        return b[keep] * 2

    compiled = torch.compile(f, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(boxes, scores), f(boxes, scores))


@pytest.mark.parametrize("n", [0, 1, 100, 2000])
@pytest.mark.parametrize("thr", [0.3, 0.7])
def test_matches_torchvision(rng, n, thr):
    pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision.ops")
    import torch

    boxes = torch.from_numpy(random_boxes(rng, n, size=400))
    scores = torch.from_numpy(rng.random(n).astype(np.float32))
    idxs = torch.from_numpy(rng.integers(0, 5, n))
    torch.testing.assert_close(
        ops.box_iou(boxes, boxes), tv.box_iou(boxes, boxes), equal_nan=True, rtol=0, atol=0
    )
    assert torch.equal(ops.nms(boxes, scores, thr), tv.nms(boxes, scores, thr))
    assert torch.equal(ops.batched_nms(boxes, scores, idxs, thr), tv.batched_nms(boxes, scores, idxs, thr))


@pytest.mark.cuda
def test_cuda_matches_cpu(rng):
    import torch

    boxes = torch.from_numpy(random_boxes(rng, 500, size=300))
    scores = torch.from_numpy(rng.random(500).astype(np.float32))
    idxs = torch.from_numpy(rng.integers(0, 3, 500))
    c = [t.cuda() for t in (boxes, scores, idxs)]
    assert torch.equal(ops.nms(c[0], c[1], 0.5).cpu(), ops.nms(boxes, scores, 0.5))
    assert torch.equal(ops.batched_nms(*c, 0.5).cpu(), ops.batched_nms(boxes, scores, idxs, 0.5))
    torch.testing.assert_close(ops.box_iou(c[0], c[0]).cpu(), ops.box_iou(boxes, boxes))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES + [5000])
def test_cuda_matches_cpu_on_strided_boxes(rng, n, dtype):
    # Every size (5000 boxes: 79 words of suppression mask per box), boxes read from a strided view.
    import torch

    boxes = torch.from_numpy(random_boxes(rng, n, dtype, size=300))
    scores = torch.from_numpy(rng.random(n).astype(dtype))
    idxs = torch.from_numpy(rng.integers(0, 3, n))
    wide = torch.zeros(n, 8, dtype=boxes.dtype, device="cuda")
    wide[:, ::2] = boxes.cuda()
    b, s, i = wide[:, ::2], scores.cuda(), idxs.cuda()
    for thr in (0.3, 0.7):
        assert torch.equal(ops.nms(b, s, thr).cpu(), ops.nms(boxes, scores, thr))
        assert torch.equal(ops.batched_nms(b, s, i, thr).cpu(), ops.batched_nms(boxes, scores, idxs, thr))
    torch.testing.assert_close(ops.box_iou(b, b[:13]).cpu(), ops.box_iou(boxes, boxes[:13]), equal_nan=True)
    torch.testing.assert_close(ops.box_area(b).cpu(), ops.box_area(boxes), rtol=0, atol=0)


@pytest.mark.cuda
def test_cuda_bad_inputs_raise_naming_the_argument(rng):
    import torch

    boxes = torch.from_numpy(random_boxes(rng, 6) + 1).cuda()
    scores = torch.from_numpy(rng.random(6).astype(np.float32)).cuda()
    nan_boxes = boxes.clone()
    nan_boxes[3, 2] = float("nan")
    with pytest.raises(ValueError, match="boxes"):
        ops.nms(nan_boxes, scores, 0.5)
    with pytest.raises(ValueError, match="boxes"):
        ops.nms(boxes[:, [2, 1, 0, 3]], scores, 0.5)
    with pytest.raises((ValueError, TypeError), match="scores"):
        ops.nms(boxes, scores.cpu(), 0.5)
    with pytest.raises((ValueError, TypeError), match="boxes2"):
        ops.box_iou(boxes, boxes.cpu())


@pytest.mark.cuda
def test_cupy_arrays_in_cupy_arrays_out(rng):
    cupy = pytest.importorskip("cupy")
    boxes, scores = random_boxes(rng, 200, size=300), rng.random(200).astype(np.float32)
    keep = ops.nms(cupy.asarray(boxes), cupy.asarray(scores), 0.5)
    assert isinstance(keep, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(keep), ops.nms(boxes, scores, 0.5))
    iou = ops.box_iou(cupy.asarray(boxes), cupy.asarray(boxes[:7]))
    assert isinstance(iou, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(iou), ops.box_iou(boxes, boxes[:7]), rtol=1e-6)


@pytest.mark.cuda
def test_cuda_runs_on_the_current_stream(rng):
    # Inputs written on a side stream are read after that write: the kernels run on the caller's stream.
    import torch

    boxes = torch.from_numpy(random_boxes(rng, 3000, size=300))
    scores = torch.from_numpy(rng.random(3000).astype(np.float32))
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        b = torch.empty_like(boxes, device="cuda").copy_(boxes, non_blocking=True)
        s = torch.empty_like(scores, device="cuda").copy_(scores, non_blocking=True)
        keep = ops.nms(b * 1.0, s, 0.5)
        iou = ops.box_iou(b * 1.0, b)
    side.synchronize()
    assert torch.equal(keep.cpu(), ops.nms(boxes, scores, 0.5))
    torch.testing.assert_close(iou.cpu(), ops.box_iou(boxes, boxes), equal_nan=True)


def test_info_reports_build_and_devices():
    info = convloc.info()
    assert info["version"] == convloc.__version__
    assert isinstance(info["compiled_with_cuda"], bool)
    assert info["cuda_device_count"] >= 0
    assert info["num_threads"] == convloc.get_num_threads() >= 1
    if not info["compiled_with_cuda"]:
        assert info["cuda_device_count"] == 0
    # no device (or no CUDA build): torch's CUDA tensors cannot run here
    if info["cuda_device_count"] == 0:
        assert convloc.cuda_available() is False
