"""Region-proposal kernels (CPU): Felzenszwalb–Huttenlocher segmentation and the hierarchical
grouping of selective search."""

from __future__ import annotations

import numpy as np

import convloc._C as _C


def felzenszwalb(image: np.ndarray, scale: float, sigma: float, min_size: int) -> np.ndarray:
    """int32 [H, W] labels of a float32 [H, W, C] image."""
    labels = np.empty(image.shape[:2], np.int32)
    _C.felzenszwalb(image, labels, scale, sigma, min_size)
    return labels


def hierarchies(image: np.ndarray, strategies: list[tuple], sigma: float) -> list[tuple[np.ndarray, int]]:
    """Per strategy ``(colour space, k, min_size, colour, texture, size, fill)`` of a float32
    [H, W, 3] image: (int32 [2 n - 1, 4] boxes in generation order, n initial regions)."""
    return _C.selective_search(image, strategies, sigma)
