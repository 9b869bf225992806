"""Face verification as evaluated on LFW: k-fold accuracy with the threshold picked on the other
folds, the ROC curve, its area and the equal error rate. Scores are similarities: a pair is
declared "same" when its score is >= the threshold (pass minus a distance)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The threshold maximising accuracy on ``(scores, same)`` and that accuracy. Candidates are
    the midpoints between consecutive distinct scores and both ends (ties: the lowest threshold)."""
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if scores.shape != same.shape or scores.ndim != 1:
        raise ValueError(f"same: expected shape {list(scores.shape)} like scores, got {list(same.shape)}")
    if scores.size == 0:
        raise ValueError("scores: expected at least one pair, got none")
    uniq = np.unique(scores)
    cands = np.concatenate([[uniq[0] - 1.0], (uniq[:-1] + uniq[1:]) / 2, [uniq[-1] + 1.0]])
    # Correct decisions at threshold t: positives with score >= t plus negatives with score < t.
    pos = np.sort(scores[same])
    neg = np.sort(scores[~same])
    correct = (pos.size - np.searchsorted(pos, cands, side="left")) + np.searchsorted(neg, cands, side="left")
    best = int(np.argmax(correct))
    return float(cands[best]), float(correct[best] / scores.size)


@dataclass
class KFoldResult:
    mean: float
    std: float  # over the folds (population std, as the LFW protocol tables report)
    accuracies: np.ndarray
    thresholds: np.ndarray


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> KFoldResult:
    """For each fold: threshold chosen on all other folds, accuracy measured on this one."""
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    folds = np.asarray(folds)
    if folds.shape != scores.shape:
        raise ValueError(f"folds: expected shape {list(scores.shape)} like scores, got {list(folds.shape)}")
    ids = np.unique(folds)
    if ids.size < 2:
        raise ValueError(f"folds: expected at least 2 folds, got {ids.size}")
    accs, ths = [], []
    for f in ids:
        test = folds == f
        t, _ = best_threshold(scores[~test], same[~test])
        accs.append(float(np.mean((scores[test] >= t) == same[test])))
        ths.append(t)
    accs_arr = np.array(accs)
    return KFoldResult(float(accs_arr.mean()), float(accs_arr.std()), accs_arr, np.array(ths))


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` sweeping the threshold from above the largest score down, one
    point per distinct score; starts at (0, 0) and ends at (1, 1)."""
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("same: expected both matched and mismatched pairs")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    return fpr, tpr, np.r_[np.inf, s[last]]


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The rate where false accepts equal false rejects (fpr = 1 - tpr), linearly interpolated."""
    fnr = 1 - tpr
    diff = fpr - fnr  # increases from -1 to 1 along the curve
    i = int(np.searchsorted(diff, 0.0))
    if i == 0:
        return float(fpr[0])
    d0, d1 = diff[i - 1], diff[i]
    w = 0.0 if d1 == d0 else -d0 / (d1 - d0)
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def save_roc_png(
    path: str | os.PathLike, fpr: np.ndarray, tpr: np.ndarray, label: str = "", size: int = 400
) -> None:
    """Draws the ROC curve (false positive rate across, true positive rate up) with its diagonal
    and equal-error point into a PNG."""
    from PIL import Image, ImageDraw

    margin = 40
    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    span = size - 2 * margin

    def xy(x, y):
        return margin + x * span, size - margin - y * span

    d.rectangle([xy(0, 1), xy(1, 0)], outline="black")
    for t in np.linspace(0, 1, 6):
        d.text((xy(t, 0)[0] - 8, size - margin + 4), f"{t:.1f}", fill="black")
        d.text((4, xy(0, t)[1] - 6), f"{t:.1f}", fill="black")
    d.line([xy(0, 0), xy(1, 1)], fill=(180, 180, 180))
    d.line([xy(0, 1), xy(1, 0)], fill=(220, 220, 220))
    d.line([xy(float(a), float(b)) for a, b in zip(fpr, tpr)], fill=(200, 30, 30), width=2)
    eer = equal_error_rate(fpr, tpr)
    ex, ey = xy(eer, 1 - eer)
    d.ellipse([ex - 4, ey - 4, ex + 4, ey + 4], outline="blue", width=2)
    title = f"{label}  AUC {auc(fpr, tpr):.3f}  EER {eer:.3f}".strip()
    d.text((margin, 10), title, fill="black")
    d.text((size // 2 - 60, size - 18), "false positive rate", fill="black")
    im.save(path)
