import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convloc import ops
from reference import boxes as ref

from .arrays import check_call, hostile_arrays

BOX_ARGS = ["boxes", "boxes1", "boxes2", "scores", "idxs", "iou_threshold"]


def valid_boxes(b, dtypes=(np.float32, np.float64)):
    return (
        b.dtype in dtypes
        and b.ndim == 2
        and b.shape[1] == 4
        and np.isfinite(b).all()
        and (b[:, 2] >= b[:, 0]).all()
        and (b[:, 3] >= b[:, 1]).all()
    )


@given(hostile_arrays(), hostile_arrays(), st.floats(-0.5, 1.5) | st.just(float("nan")))
def test_nms_never_crashes_and_is_right_when_it_returns(boxes, scores, thr):
    keep = check_call(ops.nms, BOX_ARGS, boxes, scores, thr)
    if keep is not None:
        assert valid_boxes(boxes) and 0 <= thr <= 1
        np.testing.assert_array_equal(keep, ref.nms(np.ascontiguousarray(boxes), scores, thr))


@given(hostile_arrays(), hostile_arrays())
def test_box_iou_never_crashes_and_is_right_when_it_returns(a, b):
    iou = check_call(ops.box_iou, BOX_ARGS, a, b)
    if iou is not None:
        # float16 is computed in float32 and rounded once, integer boxes in float64 (float32 out)
        ints = (np.int64, np.int32, np.uint8)
        dtypes = (np.float32, np.float64, np.float16) + (ints if a.dtype in ints and b.dtype in ints else ())
        assert valid_boxes(a, dtypes) and valid_boxes(b, dtypes)
        tol = {"rtol": 1e-3, "atol": 1e-3} if iou.dtype == np.float16 else {"rtol": 1e-5}
        wide = (
            None if a.dtype in (np.float32, np.float64) else np.float64
        )  # (a float16 reference rounds more)
        want = ref.box_iou(np.ascontiguousarray(a, wide), np.ascontiguousarray(b, wide))
        np.testing.assert_allclose(iou, want, **tol)


@given(hostile_arrays(), hostile_arrays(), hostile_arrays(), st.floats(0, 1))
def test_batched_nms_never_crashes(boxes, scores, idxs, thr):
    keep = check_call(ops.batched_nms, BOX_ARGS, boxes, scores, idxs, thr)
    if keep is not None:
        assert valid_boxes(boxes)
        np.testing.assert_array_equal(
            keep, ref.nms(np.ascontiguousarray(boxes), scores, thr, idxs.astype(np.int64))
        )


def test_scalars_are_reported_as_scalars_not_as_one_element_arrays():
    # (a 0-d array once became [1] on its way to the kernels: a box count of one, silently)
    with pytest.raises(ValueError, match=r"^scores: expected shape \[N\], got \[\]"):
        ops.nms(np.zeros((1, 4), np.float32), np.float32(0.5), 0.5)
    with pytest.raises(ValueError, match=r"^boxes: expected shape \[N, 4\], got \[\]"):
        ops.box_area(np.float32(3))
