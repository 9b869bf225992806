"""Slow, obvious versions of the segmentation and verification scores, triplet losses and
Gaussian CRF mean-field steps."""

from __future__ import annotations

import itertools

import numpy as np


def confusion(label, pred, n, ignore=255):
    hist = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(np.ravel(label), np.ravel(pred)):
        if t != ignore and 0 <= t < n:
            hist[t, p] += 1
    return hist


def scores(hist):
    n = len(hist)
    ius, accs = [], []
    for i in range(n):
        tp = hist[i, i]
        gt = hist[i, :].sum()
        union = gt + hist[:, i].sum() - tp
        if gt:
            accs.append(tp / gt)
        if union:
            ius.append(tp / union)
    total = hist.sum()
    fw = sum(hist[i, :].sum() * hist[i, i] / (hist[i, :].sum() + hist[:, i].sum() - hist[i, i])
             for i in range(n) if hist[i, :].sum()) / total  # fmt: skip
    return {
        "pixel_acc": np.trace(hist) / total,
        "mean_acc": np.mean(accs),
        "mean_iu": np.mean(ius),
        "fw_iu": fw,
    }


def best_accuracy(scores, same):
    """Best accuracy over every threshold that separates the sorted scores."""
    best = 0.0
    for t in np.r_[np.unique(scores), np.inf]:
        best = max(best, np.mean((scores >= t) == same))
    return best


def triplet_all(x, labels, margin):
    """Mean over active triplets of margin - d(a, n) + d(a, p)."""
    losses = []
    for a, p, n in itertools.permutations(range(len(x)), 3):
        if labels[a] == labels[p] and labels[a] != labels[n]:
            val = margin - np.sum((x[a] - x[n]) ** 2) + np.sum((x[a] - x[p]) ** 2)
            if val > 0:
                losses.append(val)
    return np.mean(losses) if losses else 0.0


def triplet_hard(x, labels, margin):
    losses = []
    for a in range(len(x)):
        dp = [np.sum((x[a] - x[p]) ** 2) for p in range(len(x)) if p != a and labels[p] == labels[a]]
        dn = [np.sum((x[a] - x[n]) ** 2) for n in range(len(x)) if labels[n] != labels[a]]
        if dp and dn:
            losses.append(max(0.0, margin + max(dp) - min(dn)))
    return np.mean(losses) if losses else 0.0


def triplet_semihard(x, labels, margin):
    losses = []
    for a, p in itertools.permutations(range(len(x)), 2):
        if labels[a] != labels[p]:
            continue
        dap = np.sum((x[a] - x[p]) ** 2)
        dn = [np.sum((x[a] - x[n]) ** 2) for n in range(len(x)) if labels[n] != labels[a]]
        if not dn:
            continue
        semi = [d for d in dn if dap < d < dap + margin]
        dan = min(semi) if semi else max(dn)
        losses.append(max(0.0, margin + dap - dan))
    return np.mean(losses) if losses else 0.0
