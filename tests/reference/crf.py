"""Slow, exact references for the dense and grid CRFs (O(N²) memory: small images only).

Conventions follow pydensecrf: compat matrices are in its "apply" form (the message added to the
negative logits is ``C @ (K̃ Q)``; Potts with weight w is ``C = -w I``), the kernel matrix includes
the pixel itself unless ``exclude_self``, and normalisation is pydensecrf's (norm = row sums of K;
"none" is the plain sum).
"""

from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray, axis: int = 0) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def gaussian_matrix(features: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """K[i, j] = exp(-|f_i - f_j|² / 2) for features [N, d] (float64)."""
    f = np.asarray(features, np.float64)
    n2 = (f * f).sum(1)
    sq = np.maximum(n2[:, None] + n2[None, :] - 2.0 * (f @ f.T), 0.0)
    k = np.exp(-0.5 * sq)
    if exclude_self:
        np.fill_diagonal(k, 0.0)
    return k


def normalized_matrix(k: np.ndarray, mode: str) -> np.ndarray:
    """The linear map pydensecrf's filter applies (out = M @ in, pixels along axis 0)."""
    norm = k.sum(1)
    if mode == "none":
        return k
    if mode == "symmetric":
        s = 1.0 / np.sqrt(norm + 1e-20)
        return s[:, None] * k * s[None, :]
    if mode == "before":
        return k * (1.0 / (norm + 1e-20))[None, :]
    if mode == "after":
        return (1.0 / (norm + 1e-20))[:, None] * k
    raise ValueError(mode)


def dense_crf(
    unary: np.ndarray,
    kernels: list[tuple[np.ndarray, np.ndarray, str]],
    iterations: int,
    exclude_self: bool = False,
) -> tuple[np.ndarray, list[float]]:
    """Exact parallel mean-field.

    Args:
        unary: [L, N] negative log-probabilities.
        kernels: (features [N, d], compat [L, L] in the apply convention, normalisation mode).
    Returns:
        Q [L, N] after ``iterations`` updates, and the KL divergence (up to log Z) of every iterate
        Q_0 .. Q_T: sum Q log Q + sum U Q + 1/2 sum Q * message(Q).
    """
    u = np.asarray(unary, np.float64)
    maps = [
        (normalized_matrix(gaussian_matrix(f, exclude_self), m), np.asarray(c, np.float64))
        for f, c, m in kernels
    ]

    def message(q):
        return sum(c @ (q @ m.T) for m, c in maps)

    def kl(q, msg):
        return float((q * np.log(np.maximum(q, 1e-20))).sum() + (u * q).sum() + 0.5 * (q * msg).sum())

    q = softmax(-u)
    kls = []
    for _ in range(iterations):
        msg = message(q)
        kls.append(kl(q, msg))
        q = softmax(-u - msg)
    kls.append(kl(q, message(q)))
    return q, kls


def grid_crf(
    unary: np.ndarray,
    image: np.ndarray,
    w1: float,
    w2: float,
    beta: float,
    neighbors: int,
    iterations: int,
) -> np.ndarray:
    """Mean-field for the grid Potts CRF: unary [L, H, W], image [H, W, C]; returns Q [L, H, W].

    Edge weight w1·exp(-beta·|x_i - x_j|²) + w2 between 4- or 8-neighbours; the Potts penalty
    [l_i != l_j] makes the update Q_i ∝ exp(-U_i + sum_j w_ij Q_j) (a per-pixel constant dropped).
    """
    u = np.asarray(unary, np.float64)
    img = np.asarray(image, np.float64).reshape(u.shape[1], u.shape[2], -1)
    h, w = u.shape[1:]
    offsets = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    if neighbors == 8:
        offsets += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    q = softmax(-u)
    for _ in range(iterations):
        acc = np.zeros_like(u)
        for dy, dx in offsets:
            for y in range(h):
                for x in range(w):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w:
                        d2 = ((img[y, x] - img[yy, xx]) ** 2).sum()
                        acc[:, y, x] += (w1 * np.exp(-beta * d2) + w2) * q[:, yy, xx]
        q = softmax(-u + acc)
    return q
