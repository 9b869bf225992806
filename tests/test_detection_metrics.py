"""VOC AP on hand-made cases whose values are worked out in the comments."""

import numpy as np
import pytest

from convloc.metrics.detection import average_precision, eval_class, evaluate


def _gt(boxes, labels, difficult=None):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return {"boxes": boxes, "labels": np.asarray(labels), "difficult": difficult}


def _det(boxes, scores, labels):
    return {"boxes": np.asarray(boxes, np.float64).reshape(-1, 4), "scores": np.asarray(scores),
            "labels": np.asarray(labels)}  # fmt: skip


def test_duplicate_difficult_and_miss():
    # image 0: A; image 1: B and a difficult D. npos = 2.
    gts = [
        _gt([[0, 0, 10, 10]], [0]),
        _gt([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 0], np.array([False, True])),
    ]
    dets = [
        _det([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [0, 0]),  # TP on A, then a duplicate: FP
        # on D (difficult): ignored; nowhere: FP; on B with IoU 90/100: TP
        _det([[50, 50, 60, 60], [30, 30, 40, 40], [0, 0, 10, 9]], [0.7, 0.6, 0.5], [0, 0, 0]),
    ]
    r07 = evaluate(dets, gts, 1, use_07_metric=True)
    # Kept sequence TP FP FP TP: recall .5 .5 .5 1, precision 1 .5 1/3 .5
    np.testing.assert_allclose(r07["recall"][0], [0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(r07["precision"][0], [1, 0.5, 1 / 3, 0.5])
    # 11-point: t = 0..0.5 → best precision 1 (6 points); t = 0.6..1 → 0.5 (5 points)
    assert r07["ap"][0] == pytest.approx((6 * 1 + 5 * 0.5) / 11)
    assert r07["npos"][0] == 2
    # area: 0.5 recall at precision 1, then 0.5 more at envelope precision 0.5
    assert evaluate(dets, gts, 1, use_07_metric=False)["ap"][0] == pytest.approx(0.75)


def test_iou_must_exceed_half():
    gt = [_gt([[0, 0, 10, 10]], [0])]
    # IoU exactly 50/100 = 0.5 is not a match
    assert evaluate([_det([[0, 0, 10, 5]], [1.0], [0])], gt, 1)["ap"][0] == 0
    assert evaluate([_det([[0, 0, 10, 6]], [1.0], [0])], gt, 1)["ap"][0] == pytest.approx(1)


def test_pixel_inclusive_matches_devkit():
    # Devkit boxes (1-based, inclusive): GT (1,1,10,10) has 10x10 pixels, det (1,1,10,5) 10x5:
    # IoU 0.5
    gt = [_gt([[1, 1, 10, 10]], [0])]
    assert evaluate([_det([[1, 1, 10, 5]], [1.0], [0])], gt, 1, pixel_inclusive=True)["ap"][0] == 0
    assert evaluate([_det([[1, 1, 10, 6]], [1.0], [0])], gt, 1, pixel_inclusive=True)["ap"][
        0
    ] == pytest.approx(1)
    # Small boxes show the +1: inclusive (1,1,2,3) vs (1,1,2,2) has IoU 4/6 with +1, 1/2 without
    gt = [_gt([[1, 1, 2, 3]], [0])]
    det = [_det([[1, 1, 2, 2]], [1.0], [0])]
    assert evaluate(det, gt, 1, pixel_inclusive=True)["ap"][0] == pytest.approx(1)
    assert evaluate(det, gt, 1, pixel_inclusive=False)["ap"][0] == 0  # 1/2 is not > 0.5


def test_best_overlap_decides_and_difficult_swallows():
    # The detection overlaps a difficult GT more than a normal one: ignored, as in the devkit,
    # so the normal GT stays unmatched: recall 0, AP 0, and no false positive either.
    gts = [_gt([[0, 0, 10, 10], [0, 0, 10, 12]], [0, 0], np.array([False, True]))]
    r = evaluate([_det([[0, 0, 10, 12]], [1.0], [0])], gts, 1)
    assert r["ap"][0] == 0 and len(r["precision"][0]) == 0


def test_mean_over_classes_with_positives_and_fp_on_empty_image():
    gts = [_gt([[0, 0, 10, 10]], [0]), _gt(np.zeros((0, 4)), [])]
    dets = [
        _det([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.9], [0, 1]),  # class 1 has no GT: NaN
        _det([[0, 0, 5, 5]], [0.95], [0]),  # FP on an image without objects, ranked first
    ]
    r = evaluate(dets, gts, 3)
    # class 0: FP then TP → precision .5 at recall 1: 11-point AP 0.5
    assert r["ap"][0] == pytest.approx(0.5)
    assert np.isnan(r["ap"][1]) and np.isnan(r["ap"][2])
    assert r["map"] == pytest.approx(0.5)  # over classes with positives only
    assert evaluate(dets, gts, 3, use_07_metric=False)["map"] == pytest.approx(0.5)


def test_ties_keep_input_order():
    gt = [_gt([[0, 0, 10, 10]], [0])]
    first_tp = _det([[0, 0, 10, 10], [20, 20, 30, 30]], [0.5, 0.5], [0, 0])
    first_fp = _det([[20, 20, 30, 30], [0, 0, 10, 10]], [0.5, 0.5], [0, 0])
    assert evaluate([first_tp], gt, 1)["ap"][0] == pytest.approx(1)
    assert evaluate([first_fp], gt, 1)["ap"][0] == pytest.approx(0.5)


def test_average_precision_curves():
    # Perfect ranking: AP 1 both ways; precision zig-zag uses the envelope for the area.
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0]), True) == pytest.approx(1)
    rec, prec = np.array([0.25, 0.25, 0.5, 0.75]), np.array([1.0, 0.5, 2 / 3, 0.75])
    # area: 0.25·1 + 0.25·0.75 + 0.25·0.75 (envelope) = 0.625
    assert average_precision(rec, prec, False) == pytest.approx(0.625)
    # 11-point: t=0..0.2 → 1 (3), t=0.3..0.7 → 0.75 (5), t=0.8..1 → 0 (3)
    assert average_precision(rec, prec, True) == pytest.approx((3 + 5 * 0.75) / 11)


def test_eval_class_counts_and_bad_input():
    rec, prec, npos = eval_class(
        np.array([0]), np.array([[0, 0, 1, 1]]), np.array([1.0]),
        [np.zeros((0, 4))], [np.zeros(0, bool)],
    )  # fmt: skip
    assert npos == 0 and np.isnan(rec).all() and prec.tolist() == [0.0]
    with pytest.raises(ValueError, match="detections"):
        evaluate([], [_gt([[0, 0, 1, 1]], [0])], 1)
