"""Exact O(N^2) Gaussian filtering, the quantity the permutohedral lattice approximates."""

from __future__ import annotations

import numpy as np


def gaussian_matrix(features: np.ndarray) -> np.ndarray:
    """K[i, j] = exp(-|f_i - f_j|^2 / 2) for features [N, d]."""
    return _gaussian_rows(np.asarray(features, dtype=np.float64), 0, len(features))


def _gaussian_rows(f: np.ndarray, lo: int, hi: int) -> np.ndarray:
    sq = np.sum(f * f, axis=1)
    dist = np.maximum(sq[lo:hi, None] + sq[None, :] - 2.0 * f[lo:hi] @ f.T, 0.0)
    return np.exp(-0.5 * dist)


def gaussian_filter(values: np.ndarray, features: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j (j != i with exclude_self); values [N, C].

    Row blocks, so that 10^4 points need no N x N matrix in memory."""
    f = np.asarray(features, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    out = np.empty_like(v)
    for lo in range(0, len(f), 1024):
        hi = min(lo + 1024, len(f))
        out[lo:hi] = _gaussian_rows(f, lo, hi) @ v
    return out - v if exclude_self else out


def normalized_filter(
    values: np.ndarray, features: np.ndarray, normalization: str | None, exclude_self: bool = False
) -> np.ndarray:
    """pydensecrf's normalisations of K (zero diagonal with exclude_self) applied to values."""
    v = np.asarray(values, dtype=np.float64)
    if normalization in (None, "none"):
        return gaussian_filter(v, features, exclude_self)
    both = gaussian_filter(np.concatenate([v, np.ones((len(v), 1))], 1), features, exclude_self)
    kv, norm = both[:, :-1], both[:, -1:]
    if normalization == "before":
        return gaussian_filter(v / norm, features, exclude_self)
    if normalization == "after":
        return kv / norm
    if normalization == "symmetric":
        s = 1.0 / np.sqrt(norm)
        return s * gaussian_filter(s * v, features, exclude_self)
    raise ValueError(normalization)


def all_normalizations(values: np.ndarray, features: np.ndarray) -> dict:
    """normalized_filter for None, "before", "after" and "symmetric" in two passes over K."""
    v = np.asarray(values, dtype=np.float64)
    c = v.shape[1]
    both = gaussian_filter(np.concatenate([v, np.ones((len(v), 1))], 1), features)
    kv, norm = both[:, :c], both[:, c:]
    s = 1.0 / np.sqrt(norm)
    second = gaussian_filter(np.concatenate([v / norm, s * v], 1), features)
    return {None: kv, "after": kv / norm, "before": second[:, :c], "symmetric": s * second[:, c:]}


def image_features(image: np.ndarray, sigma_xy: float, sigma_rgb: float | None = None) -> np.ndarray:
    """Dense-CRF features of an image [H, W, C]: (x, y) / sigma_xy and colour / sigma_rgb."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    parts = [xx[..., None] / sigma_xy, yy[..., None] / sigma_xy]
    if sigma_rgb is not None:
        parts.append(image.reshape(h, w, -1).astype(np.float64) / sigma_rgb)
    return np.concatenate(parts, axis=-1).reshape(h * w, -1)
