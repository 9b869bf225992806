"""Sizes derived from arguments (checked arithmetic, refused by name), scratch that must not grow
with roi_align's sample count, byte-swapped arrays, and boxes written by another thread during a
call."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import convloc
from convloc import ops
from reference import roi as ref

from .test_fuzz_runtime import run_python

RNG = np.random.default_rng(0)
X = RNG.standard_normal((1, 2, 4, 4)).astype(np.float32)
W = RNG.standard_normal((2, 3, 3, 3)).astype(np.float32)
FMAP = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)


# ---- conv_transpose2d: output sizes ----


@pytest.mark.parametrize(
    "geometry, name",
    [
        (dict(stride=(2**62, 1)), "stride"),
        (dict(dilation=(2**62, 1)), "dilation"),
        (dict(padding=(2**63 - 1, 0)), "padding"),
        (dict(stride=(2**61, 1), dilation=(2**61, 1)), "stride, dilation, output_padding"),
    ],
)
def test_conv_transpose2d_sizes_beyond_int64_are_refused_by_name(geometry, name):
    with pytest.raises(ValueError, match=f"^{name}: "):
        ops.conv_transpose2d(X, W, **geometry)


def test_conv_transpose2d_outputs_beyond_memory_are_refused_by_name():
    with pytest.raises(ValueError, match=r"^stride, padding, output_padding, dilation: an output of shape"):
        ops.conv_transpose2d(X, W, stride=2**22)


# ---- roi_pool and roi_align: sizes from the boxes and the scalars ----


def rois(*rows) -> np.ndarray:
    return np.array(rows, np.float32)


def test_roi_pool_corners_beyond_its_pixel_range_are_refused():
    with pytest.raises(
        ValueError, match=r"^boxes: row 0 = .* reach 3e\+09, beyond the 536870912 \(2\^29\) pixels"
    ):
        ops.roi_pool(FMAP, rois([0, 0, 0, 3e9, 4]), 2)
    with pytest.raises(ValueError, match=r"^boxes: row 1 = .* reach"):
        ops.roi_pool(FMAP, rois([0, 0, 0, 0.1, 0.1], [1, 0, 0, 4, 4]), 2, spatial_scale=2e8)


@pytest.mark.parametrize("op", [ops.roi_pool, ops.roi_align])
def test_spatial_scales_beyond_float32_are_refused(op):
    with pytest.raises(ValueError, match=r"^spatial_scale: expected a finite number > 0 in float32"):
        op(FMAP, rois([0, 0, 0, 4, 4]), 2, spatial_scale=1e300)
    with pytest.raises(ValueError, match=r"^spatial_scale: .* in float32"):
        op(FMAP, rois([0, 0, 0, 4, 4]), 2, spatial_scale=1e-300)  # 0 in float32
    # float64 holds both; the boxes then land far off the map (roi_pool refuses those)
    out = ops.roi_align(FMAP.astype(np.float64), rois([0, 0, 0, 4, 4]).astype(np.float64), 2, 1e-300, 2)
    assert out.shape == (1, 3, 2, 2) and np.isfinite(out).all()


def test_roi_align_coordinates_overflowing_after_the_scale_are_refused():
    with pytest.raises(ValueError, match=r"^boxes: row 0 = .* overflow float32"):
        ops.roi_align(FMAP, rois([0, 0, 0, 3e30, 4]), 2, spatial_scale=1e10, sampling_ratio=2)


def test_sampling_ratios_at_most_zero_are_adaptive_whatever_their_size():
    want = ops.roi_align(FMAP, rois([0, 0.5, 1, 6, 7.5]), 3, 1.0, -1)
    for ratio in (0, -(2**31), -(2**32) + 1, -(2**63)):
        np.testing.assert_array_equal(ops.roi_align(FMAP, rois([0, 0.5, 1, 6, 7.5]), 3, 1.0, ratio), want)


def test_sample_grids_beyond_the_bound_are_refused():
    with pytest.raises(ValueError, match=r"^sampling_ratio: expected at most 65536 .* got 65537"):
        ops.roi_align(FMAP, rois([0, 0, 0, 4, 4]), 2, 1.0, 65537)
    with pytest.raises(ValueError, match=r"^sampling_ratio: expected at most 16384 .* got 16385"):
        ops.roi_align(FMAP, rois([0, 0, 0, 4, 4]), 64, 1.0, 16385)  # 64 x 16385 samples > 2^20
    with pytest.raises(ValueError, match=r"^boxes: row 0 = .* adaptive sampling grid .* 428572 x 1 "):
        ops.roi_align(FMAP, rois([0, 0, 0, 4, 3e6]), 7, 1.0, 0)  # ceil(3e6 / 7) samples per bin
    torch = pytest.importorskip("torch")
    x, boxes = torch.from_numpy(FMAP).requires_grad_(), torch.from_numpy(rois([0, 0, 0, 4, 3e6]))
    with pytest.raises(ValueError, match="^boxes: row 0 = .* adaptive sampling grid"):
        ops.roi_align(x, boxes, 7, 1.0, 0)


def test_many_samples_per_bin_are_summed_in_pieces_as_in_one():
    # 70 x 70 = 4900 samples per bin: more than one piece of the forward's sample scratch
    x = RNG.standard_normal((1, 2, 9, 9))
    boxes = np.array([[0, 0.3, 0.7, 8.2, 7.9], [0, -3, -2, 11, 12]])
    for aligned in (False, True):
        got = ops.roi_align(x, boxes, 2, 1.0, 70, aligned)
        np.testing.assert_array_equal(got, ref.roi_align(x, boxes, (2, 2), 1.0, 70, aligned))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in kB (Linux)")
def test_roi_align_scratch_does_not_grow_with_the_samples():
    # 3000 x 3000 samples in one bin, by sampling_ratio and by the adaptive grid of a 3000-pixel box:
    # kept as a table, 9e6 samples would take half a GB
    code = """
    import resource
    import numpy as np
    from convloc import ops
    x = np.ones((1, 1, 8, 8), np.float32)
    ops.roi_align(x, np.array([[0, 0, 0, 7, 7]], np.float32), 1, 1.0, 2)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    a = ops.roi_align(x, np.array([[0, 0, 0, 7, 7]], np.float32), 1, 1.0, 3000)
    b = ops.roi_align(x, np.array([[0, 0, 0, 3000, 3000]], np.float32), 1, 1.0, 0)
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(float(a.item()), float(b.item()), grew)
    """
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    a, b, grew_kb = result.stdout.split()
    assert float(a) == 1.0  # every sample inside the map of ones
    assert 0 < float(b) < 1  # most samples of the 3000-pixel box lie outside the 8 x 8 map
    assert int(grew_kb) < 64 * 1024, f"roi_align's peak memory grew by {int(grew_kb) / 1024:.0f} MB"


# ---- byte order ----


def swapped(a: np.ndarray) -> np.ndarray:
    return a.astype(a.dtype.newbyteorder("S"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_byte_swapped_arrays_give_the_native_results(dtype):
    boxes = np.array([[0, 0, 2, 3], [1, 1, 4, 4], [0.5, 0, 2, 3]], dtype)
    scores = np.array([0.9, 0.8, 0.7], dtype)
    idxs = np.array([0, 1, 0], np.int64)
    x, w = FMAP.astype(dtype), RNG.standard_normal((3, 2, 3, 3)).astype(dtype)
    r = rois([0, 0.5, 1, 6, 7.5], [1, 2, 2, 5, 5]).astype(dtype)
    calls = [
        (ops.box_area, (boxes,)),
        (ops.box_iou, (boxes, boxes[::-1].copy())),
        (lambda b, s: ops.nms(b, s, 0.5), (boxes, scores)),
        (lambda b, s, i: ops.batched_nms(b, s, i, 0.5), (boxes, scores, idxs)),
        (lambda x, r: ops.roi_align(x, r, 2, 1.0, 2), (x, r)),
        (lambda x, r: ops.roi_pool(x, r, 2), (x, r)),
        (lambda x, w: ops.conv_transpose2d(x, w, stride=2), (x, w)),
        (
            lambda v, f: ops.permutohedral_filter(v, f),
            (x[0].reshape(3, -1).T.copy(), RNG.random((64, 2)).astype(dtype)),
        ),
    ]
    for fn, args in calls:
        want = fn(*args)
        got = fn(*(swapped(a) for a in args))
        np.testing.assert_array_equal(got, want)
        assert got.dtype.isnative


def test_the_module_refuses_byte_swapped_buffers():
    boxes = np.array([[0, 0, 2, 3]], ">f4")
    with pytest.raises(
        TypeError, match=r"^boxes: expected an array in this machine's byte order, got format '>f'"
    ):
        convloc._C.box_area(boxes, np.empty(1, np.float32))
    with pytest.raises(TypeError, match=r"^out: expected an array in this machine's byte order"):
        convloc._C.box_area(boxes.astype(np.float32), np.empty(1, ">f4"))


# ---- boxes written by another thread during a call ----


def test_boxes_written_during_a_call_never_crash_the_kernels():
    # A thread flips the boxes between valid rows and ones with a batch index and sizes far out of
    # range while calls run: each call uses the boxes as checked (a copy), or refuses them
    code = """
    import threading, time
    import numpy as np
    from convloc import ops
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 24, 24)).astype(np.float32)
    xy = rng.uniform(0, 16, (400, 2))
    good = np.concatenate([rng.integers(0, 2, (400, 1)), xy, xy + 6], 1).astype(np.float32)
    bad = good.copy()
    bad[:, 0] = 3e6
    bad[:, 3:] = 3e8
    boxes = good.copy()
    stop = False
    def writer():
        while not stop:
            boxes[:] = bad
            boxes[:] = good
    t = threading.Thread(target=writer)
    t.start()
    calls = refused = 0
    end = time.monotonic() + 3
    while time.monotonic() < end:
        for call in (
            lambda: ops.roi_align(x, boxes, 7, 1.0, 2),
            lambda: ops.roi_align(x, boxes, 7, 1.0, 0),
            lambda: ops.roi_pool(x, boxes, 7),
        ):
            try:
                out = call()
                assert out.shape == (400, 16, 7, 7)
            except ValueError:
                refused += 1
            calls += 1
    stop = True
    t.join()
    print(calls, refused)
    """
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    calls, refused = map(int, result.stdout.split())
    assert calls > 10 and 0 < refused < calls, (calls, refused)
