"""Semantic segmentation scores of Long, Shelhamer & Darrell (FCN, 2015), section 5.

All scores come from one confusion histogram ``hist[i, j]`` = number of pixels of ground-truth
class ``i`` predicted as class ``j``; pixels whose label is the ignore label (255, VOC's void) or
outside ``[0, num_classes)`` are not counted. With ``n_ij = hist[i, j]`` and ``t_i = sum_j n_ij``:

- pixel accuracy            sum_i n_ii / sum_i t_i
- mean accuracy             (1/n_cl) sum_i n_ii / t_i
- mean IU                   (1/n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)
- frequency-weighted IU     (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)

Classes with an undefined ratio (no ground-truth pixels for the accuracy; an empty union for
the IU) are left out of the means, as in the FCN reference scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_LABEL = 255


def confusion_histogram(
    label: np.ndarray, pred: np.ndarray, num_classes: int, ignore_label: int = IGNORE_LABEL
) -> np.ndarray:
    """Confusion histogram ``[num_classes, num_classes]`` int64: rows truth, columns prediction.

    ``label`` and ``pred`` are integer arrays of the same shape (any number of dimensions, torch
    tensors are accepted). Pixels labelled ``ignore_label`` or outside ``[0, num_classes)`` are
    skipped.
    """
    label = np.asarray(_to_numpy(label)).astype(np.int64, copy=False).ravel()
    pred = np.asarray(_to_numpy(pred)).astype(np.int64, copy=False).ravel()
    if label.shape != pred.shape:
        raise ValueError(f"pred: expected {label.size} elements like label, got {pred.size}")
    if num_classes <= 0:
        raise ValueError(f"num_classes: expected > 0, got {num_classes}")
    keep = (label >= 0) & (label < num_classes) & (label != ignore_label)
    if np.any((pred[keep] < 0) | (pred[keep] >= num_classes)):
        raise ValueError(f"pred: expected classes in [0, {num_classes}), got values outside")
    flat = label[keep] * num_classes + pred[keep]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass
class SegmentationScores:
    pixel_acc: float
    mean_acc: float
    mean_iu: float
    fw_iu: float
    iu: np.ndarray  # per class; NaN where the union is empty

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")}


def scores_from_histogram(hist: np.ndarray) -> SegmentationScores:
    """Pixel accuracy, mean accuracy, mean IU and frequency-weighted IU of a confusion histogram."""
    hist = np.asarray(hist, dtype=np.float64)
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"hist: expected a square matrix, got shape {list(hist.shape)}")
    diag = np.diag(hist)
    gt = hist.sum(axis=1)
    union = gt + hist.sum(axis=0) - diag
    total = gt.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = diag / gt
        iu = diag / union
        pixel_acc = diag.sum() / total if total else float("nan")
    present = gt > 0
    return SegmentationScores(
        pixel_acc=float(pixel_acc),
        mean_acc=_nanmean(acc),
        mean_iu=_nanmean(iu),
        fw_iu=float((gt[present] * iu[present]).sum() / total) if total else float("nan"),
        iu=iu,
    )


def segmentation_scores(
    label: np.ndarray, pred: np.ndarray, num_classes: int, ignore_label: int = IGNORE_LABEL
) -> SegmentationScores:
    """Scores of one prediction (or a stack of them) against its labels."""
    return scores_from_histogram(confusion_histogram(label, pred, num_classes, ignore_label))


class SegmentationMeter:
    """Accumulates the confusion histogram over a dataset, image by image."""

    def __init__(self, num_classes: int, ignore_label: int = IGNORE_LABEL) -> None:
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.hist = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, label, pred) -> None:
        self.hist += confusion_histogram(label, pred, self.num_classes, self.ignore_label)

    def scores(self) -> SegmentationScores:
        return scores_from_histogram(self.hist)


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def _to_numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x
