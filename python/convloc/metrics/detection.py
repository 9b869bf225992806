"""PASCAL VOC detection average precision, as the VOC devkit (``VOCevaldet.m``) and
py-faster-rcnn's ``voc_eval`` define it.

Per class: detections from all images sorted by descending score (a stable sort, as MATLAB's
``sort``; ties keep input order), each matched to the ground truth of its image with which it has
the highest IoU; it is a true positive when that IoU is **> 0.5** and that ground truth is not yet
matched, a false positive otherwise; when the best ground truth is ``difficult`` the detection is
ignored (neither TP nor FP), and difficult objects do not count in the number of positives.

Boxes: by default continuous coordinates with widths ``x2 - x1`` — the form
:class:`convloc.data.VOCDetection` returns, whose IoU equals the devkit's ``+1``-width IoU on the
original 1-based inclusive integer boxes. Pass ``pixel_inclusive=True`` to feed devkit-style
inclusive boxes directly (widths ``x2 - x1 + 1``).

AP: ``use_07_metric=True`` is the VOC2007 11-point interpolated AP (mean over recall thresholds
0, 0.1, ..., 1 of the best precision at recall ≥ t); ``False`` is the area under the
monotone precision envelope (VOC2010+). A class without non-difficult ground truth has AP NaN and
is left out of the mAP.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["average_precision", "eval_class", "evaluate", "format_table"]


def average_precision(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """AP from a precision/recall curve (recall ascending, as :func:`eval_class` returns)."""
    recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.linspace(0, 1, 11):
            p = precision[recall >= t]
            ap += (p.max() if p.size else 0.0) / 11
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _iou(box: np.ndarray, gt: np.ndarray, plus: float) -> np.ndarray:
    iw = np.minimum(gt[:, 2], box[2]) - np.maximum(gt[:, 0], box[0]) + plus
    ih = np.minimum(gt[:, 3], box[3]) - np.maximum(gt[:, 1], box[1]) + plus
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    area = (box[2] - box[0] + plus) * (box[3] - box[1] + plus)
    union = area + (gt[:, 2] - gt[:, 0] + plus) * (gt[:, 3] - gt[:, 1] + plus) - inter
    return inter / union


def eval_class(
    det_images: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    gt_boxes: Sequence[np.ndarray],
    gt_difficult: Sequence[np.ndarray],
    iou_threshold: float = 0.5,
    pixel_inclusive: bool = False,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Matches one class's detections to its ground truth.

    Args:
        det_images: int [D] image index of each detection; det_boxes [D, 4]; det_scores [D].
        gt_boxes: per image, [G_i, 4] ground truth of this class.
        gt_difficult: per image, bool [G_i].

    Returns:
        (recall [D'], precision [D'], npos) where D' counts the detections not ignored as
        matches of difficult objects, in descending score order.
    """
    plus = 1.0 if pixel_inclusive else 0.0
    npos = int(sum(int(np.sum(~np.asarray(d, bool))) for d in gt_difficult))
    order = np.argsort(-np.asarray(det_scores, np.float64), kind="stable")
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)[order]
    det_images = np.asarray(det_images, np.int64)[order]
    matched = [np.zeros(len(g), bool) for g in gt_boxes]
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, (image, box) in enumerate(zip(det_images, det_boxes)):
        gt = np.asarray(gt_boxes[image], np.float64).reshape(-1, 4)
        if len(gt) == 0:
            fp[d] = 1
            continue
        overlaps = _iou(box, gt, plus)
        j = int(np.argmax(overlaps))
        if overlaps[j] > iou_threshold:
            if gt_difficult[image][j]:
                continue
            if not matched[image][j]:
                tp[d], matched[image][j] = 1, True
            else:
                fp[d] = 1
        else:
            fp[d] = 1
    counted = (tp + fp) > 0
    tp, fp = np.cumsum(tp[counted]), np.cumsum(fp[counted])
    recall = tp / npos if npos else np.full(len(tp), np.nan)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return recall, precision, npos


def evaluate(
    detections: Sequence[dict],
    ground_truth: Sequence[dict],
    num_classes: int,
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
    pixel_inclusive: bool = False,
) -> dict:
    """VOC AP of every class and their mean.

    Args:
        detections: per image, dict(boxes [K, 4], scores [K], labels int [K]).
        ground_truth: per image, dict(boxes [G, 4], labels int [G], difficult bool [G]
            (absent: none difficult)).
        num_classes: labels lie in ``[0, num_classes)``.

    Returns:
        dict(ap float64 [C] (NaN for classes without positives), map float, npos int [C],
        recall / precision: per class arrays as :func:`eval_class` returns).
    """
    if len(detections) != len(ground_truth):
        raise ValueError(
            f"detections: expected one entry per image ({len(ground_truth)}), got {len(detections)}"
        )
    ap, npos, recalls, precisions = np.full(num_classes, np.nan), np.zeros(num_classes, int), [], []
    for c in range(num_classes):
        images, boxes, scores, gts, diffs = [], [], [], [], []
        for i, (det, gt) in enumerate(zip(detections, ground_truth)):
            sel = np.asarray(det["labels"]) == c
            boxes.append(np.asarray(det["boxes"], np.float64).reshape(-1, 4)[sel])
            scores.append(np.asarray(det["scores"], np.float64)[sel])
            images.append(np.full(int(sel.sum()), i))
            g = np.asarray(gt["labels"]) == c
            gts.append(np.asarray(gt["boxes"], np.float64).reshape(-1, 4)[g])
            d = gt.get("difficult")
            diffs.append(np.zeros(int(g.sum()), bool) if d is None else np.asarray(d, bool)[g])
        rec, prec, npos[c] = eval_class(
            np.concatenate(images), np.concatenate(boxes), np.concatenate(scores), gts, diffs,
            iou_threshold, pixel_inclusive,
        )  # fmt: skip
        recalls.append(rec)
        precisions.append(prec)
        if npos[c]:
            ap[c] = average_precision(rec, prec, use_07_metric)
    valid = npos > 0
    mean = float(np.mean(ap[valid])) if valid.any() else float("nan")
    return {"ap": ap, "map": mean, "npos": npos, "recall": recalls, "precision": precisions}


def format_table(classes: Sequence[str], results: dict[str, dict]) -> str:
    """A per-class AP table, one column per ``results`` entry (name → :func:`evaluate` output)."""
    names = list(results)
    width = max([len(c) for c in classes] + [5])
    lines = [f"{'class':<{width}}  " + "  ".join(f"{n:>9}" for n in names)]
    for c, cls in enumerate(classes):
        lines.append(f"{cls:<{width}}  " + "  ".join(f"{results[n]['ap'][c]:9.4f}" for n in names))
    lines.append(f"{'mAP':<{width}}  " + "  ".join(f"{results[n]['map']:9.4f}" for n in names))
    return "\n".join(lines)
