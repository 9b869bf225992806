import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convloc import ops
from reference import roi as ref

from .arrays import check_call, hostile_arrays, shapes

ROI_ARGS = ["input", "boxes", "rois", "output_size", "spatial_scale", "sampling_ratio", "aligned"]
FLOATS = [np.float32, np.float64]

feature_maps = hostile_arrays(shape=shapes(None, None, None, None))
roi_arrays = hostile_arrays(shape=shapes(None, 5))
output_sizes = st.integers(-1, 3) | st.tuples(st.integers(0, 3), st.integers(0, 3)) | st.just(2.5)
scales = st.floats(-1, 2) | st.sampled_from([float("nan"), float("inf"), 0.0])


def _checkable(x, rois, scale):
    """Inputs the reference can judge: float feature map, matching dtype, sane rois."""
    return (
        x.dtype in FLOATS
        and x.ndim == 4
        and rois.dtype == x.dtype
        and rois.ndim == 2
        and rois.shape[1] == 5
        and np.isfinite(x).all()
        and np.isfinite(rois).all()
        and np.isfinite(scale)
        and ((rois[:, 0] >= 0) & (rois[:, 0] < x.shape[0]) & (rois[:, 0] == np.round(rois[:, 0]))).all()
    )


def _check_shape(out, x, rois, size):
    ph, pw = (size, size) if isinstance(size, int) else size
    assert out.shape == (len(rois), x.shape[1], ph, pw)
    assert out.dtype == x.dtype


@given(feature_maps, roi_arrays, output_sizes, scales)
def test_roi_pool_never_crashes_and_is_right_when_it_returns(x, rois, size, scale):
    out = check_call(ops.roi_pool, ROI_ARGS, x, rois, size, scale)
    if out is not None:
        _check_shape(out, x, rois, size)
        if _checkable(x, rois, scale):
            want = ref.roi_pool(x, rois, (out.shape[2], out.shape[3]), scale)
            want = want[0] if isinstance(want, tuple) else want
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@given(feature_maps, roi_arrays, output_sizes, scales, st.integers(-2, 3), st.booleans())
def test_roi_align_never_crashes_and_is_right_when_it_returns(x, rois, size, scale, ratio, aligned):
    out = check_call(ops.roi_align, ROI_ARGS, x, rois, size, scale, ratio, aligned)
    if out is not None:
        _check_shape(out, x, rois, size)
        if _checkable(x, rois, scale) and np.abs(rois).max(initial=0) * abs(scale) < 1e3:
            want = ref.roi_align(x, rois, (out.shape[2], out.shape[3]), scale, ratio, aligned)
            np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


@given(feature_maps, st.lists(hostile_arrays(shape=shapes(None, 4)), max_size=3))
def test_roi_align_with_per_image_box_lists_never_crashes(x, boxes):
    out = check_call(ops.roi_align, ROI_ARGS + [f"boxes[{i}]" for i in range(3)], x, boxes, 2)
    if out is not None:
        assert out.shape == (sum(len(b) for b in boxes), x.shape[1], 2, 2)


def test_huge_declared_sizes_are_refused_before_allocation():
    x = np.zeros((1, 1, 4, 4), np.float32)
    rois = np.zeros((1, 5), np.float32)
    with pytest.raises((ValueError, MemoryError)):
        ops.roi_align(x, rois, (1 << 31, 1 << 31))
