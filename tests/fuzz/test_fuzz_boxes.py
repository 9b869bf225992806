import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from convloc import ops
from reference import boxes as ref

from .arrays import check_call, hostile_arrays

BOX_ARGS = ["boxes", "boxes1", "boxes2", "scores", "idxs", "iou_threshold"]


def valid_boxes(b):
    return (
        b.dtype in (np.float32, np.float64)
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
        assert valid_boxes(a) and valid_boxes(b)
        np.testing.assert_allclose(
            iou, ref.box_iou(np.ascontiguousarray(a), np.ascontiguousarray(b)), rtol=1e-5
        )


@given(hostile_arrays(), hostile_arrays(), hostile_arrays(), st.floats(0, 1))
def test_batched_nms_never_crashes(boxes, scores, idxs, thr):
    keep = check_call(ops.batched_nms, BOX_ARGS, boxes, scores, idxs, thr)
    if keep is not None:
        assert valid_boxes(boxes)
        np.testing.assert_array_equal(
            keep, ref.nms(np.ascontiguousarray(boxes), scores, thr, idxs.astype(np.int64))
        )
