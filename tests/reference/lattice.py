"""Exact O(N^2) Gaussian filtering, the quantity the permutohedral lattice approximates."""

from __future__ import annotations

import numpy as np


def gaussian_matrix(features: np.ndarray) -> np.ndarray:
    """K[i, j] = exp(-|f_i - f_j|^2 / 2) for features [N, d]."""
    f = np.asarray(features, dtype=np.float64)
    sq = np.sum(f * f, axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0)
    return np.exp(-0.5 * dist)


def gaussian_filter(values: np.ndarray, features: np.ndarray) -> np.ndarray:
    """out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j; values [N, C]."""
    return gaussian_matrix(features) @ np.asarray(values, dtype=np.float64)


def normalized_filter(
    values: np.ndarray, features: np.ndarray, normalization: str | None, exclude_self: bool = False
) -> np.ndarray:
    """pydensecrf's normalisations of K (zero diagonal with exclude_self) applied to values [N, C]."""
    k = gaussian_matrix(features)
    if exclude_self:
        np.fill_diagonal(k, 0.0)
    v = np.asarray(values, dtype=np.float64)
    if normalization in (None, "none"):
        return k @ v
    norm = k.sum(axis=1)
    if normalization == "before":
        return k @ (v / norm[:, None])
    if normalization == "after":
        return (k @ v) / norm[:, None]
    if normalization == "symmetric":
        s = 1.0 / np.sqrt(norm)
        return s[:, None] * (k @ (s[:, None] * v))
    raise ValueError(normalization)


def image_features(
    image: np.ndarray, sigma_xy: float, sigma_rgb: float | None = None
) -> np.ndarray:
    """Dense-CRF features of an image [H, W, C]: (x, y) / sigma_xy and, if given, colour / sigma_rgb."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    parts = [xx[..., None] / sigma_xy, yy[..., None] / sigma_xy]
    if sigma_rgb is not None:
        parts.append(image.reshape(h, w, -1).astype(np.float64) / sigma_rgb)
    return np.concatenate(parts, axis=-1).reshape(h * w, -1)
