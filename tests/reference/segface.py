"""Slow, obvious versions of the segmentation and verification scores, triplet losses,
Gaussian CRF mean-field steps and learned lattice filters."""

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


def lattice_conv(values, structure, taps, mixing):
    """Splat, filter along each lattice direction j with taps[j, t + r] times the vertex t steps
    along j (walked one neighbour at a time), mix channels, slice: vertex by vertex."""
    off, w, nb, amp = (structure[k] for k in ("offsets", "weights", "neighbours", "amplitude"))
    n_vert, (n, c), r = len(nb), values.shape, (taps.shape[1] - 1) // 2
    grid = np.zeros((n_vert, c))
    for i in range(n):
        for k in range(off.shape[1]):
            grid[off[i, k]] += w[i, k] * values[i]

    def walk(x, j, t):
        for _ in range(abs(t)):
            if x == n_vert:
                break
            x = nb[x, j, int(t > 0)]
        return x

    for j in range(off.shape[1]):
        new = np.zeros_like(grid)
        for x in range(n_vert):
            for t in range(-r, r + 1):
                y = walk(x, j, t)
                if y < n_vert:
                    new[x] += taps[j, t + r] * grid[y]
        grid = new
    grid = grid @ mixing.T
    return amp * np.stack([sum(w[i, k] * grid[off[i, k]] for k in range(off.shape[1])) for i in range(n)])
