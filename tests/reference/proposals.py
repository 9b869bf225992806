"""Plain Python Felzenszwalb–Huttenlocher segmentation, written from the paper, for the tests.

Float32 arithmetic is done in the same order as the C++ kernel (smoothing taps accumulated one
by one, squared differences summed channel by channel, thresholds w + float32(scale / size)),
so the partitions must agree exactly.
"""

from __future__ import annotations

import math

import numpy as np


def gaussian_taps(sigma: float) -> np.ndarray:
    if sigma <= 0:
        return np.ones(1, np.float32)
    r = math.ceil(4.0 * sigma)
    g = [math.exp(-0.5 * (i / sigma) * (i / sigma)) for i in range(-r, r + 1)]
    total = 0.0
    for v in g:
        total += v
    return np.array([v / total for v in g], dtype=np.float32)


def smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian filter, x then y, edge pixels replicated."""
    taps = gaussian_taps(sigma)
    r = len(taps) // 2
    h, w, _ = image.shape
    pad = np.pad(image, ((0, 0), (r, r), (0, 0)), mode="edge")
    tmp = np.zeros_like(image)
    for i, k in enumerate(taps):
        tmp = tmp + k * pad[:, i : i + w]
    pad = np.pad(tmp, ((r, r), (0, 0), (0, 0)), mode="edge")
    out = np.zeros_like(image)
    for i, k in enumerate(taps):
        out = out + k * pad[i : i + h]
    return out


def felzenszwalb(image: np.ndarray, scale: float, sigma: float, min_size: int) -> np.ndarray:
    """image: float32 [H, W, C]. Returns int32 [H, W] labels (any numbering)."""
    h, w, c = image.shape
    im = smooth(image.astype(np.float32), sigma)
    edges = []  # (weight, order, p, q): order is the tie-break, raster order then direction
    for y in range(h):
        for x in range(w):
            for d, (dx, dy) in enumerate(((1, 0), (0, 1), (1, 1), (1, -1))):
                qx, qy = x + dx, y + dy
                if qx >= w or not 0 <= qy < h:
                    continue
                acc = np.float32(0)
                for k in range(c):
                    diff = im[y, x, k] - im[qy, qx, k]
                    acc = np.float32(acc + diff * diff)
                edges.append((np.sqrt(acc), 4 * (y * w + x) + d, y * w + x, qy * w + qx))
    edges.sort(key=lambda e: (e[0], e[1]))

    parent = list(range(h * w))
    size = [1] * (h * w)
    threshold = [np.float32(scale)] * (h * w)

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    def join(a: int, b: int) -> int:
        parent[b] = a
        size[a] += size[b]
        return a

    for wt, _, p, q in edges:
        a, b = find(p), find(q)
        if a != b and wt <= threshold[a] and wt <= threshold[b]:
            r = join(a, b)
            threshold[r] = np.float32(wt + np.float32(scale / size[r]))
    for _, _, p, q in edges:
        a, b = find(p), find(q)
        if a != b and (size[a] < min_size or size[b] < min_size):
            join(a, b)
    return np.array([find(p) for p in range(h * w)], dtype=np.int32).reshape(h, w)


def rank_proposals(hierarchies: list[np.ndarray], seed: int) -> np.ndarray:
    """Selective search's ranking (Uijlings et al. 2013): in each hierarchy the region formed last has
    position 1, the one before it 2, ...; each position times a U(0, 1) draw ranks every box (smallest
    first, ties in order) and a box equal to a better-ranked one is dropped. float32 [K, 4]."""
    boxes = np.concatenate(hierarchies)
    position = np.concatenate([np.arange(len(b), 0, -1) for b in hierarchies]).astype(np.float64)
    key = position * np.random.default_rng(seed).random(len(position))
    seen, out = set(), []
    for i in sorted(range(len(key)), key=lambda i: key[i]):  # sorted() is stable
        row = tuple(int(v) for v in boxes[i])
        if row not in seen:
            seen.add(row)
            out.append(row)
    return np.array(out, np.float32).reshape(-1, 4)
