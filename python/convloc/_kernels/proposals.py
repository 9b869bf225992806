"""Region-proposal kernels (CPU): Felzenszwalb–Huttenlocher segmentation and selective search
(the hierarchical grouping in the kernel, the diversification and ranking here)."""

from __future__ import annotations

import numpy as np

import convloc._C as _C
from convloc._kernels import arrays as A
from convloc._kernels.arrays import Array

# Colour spaces as numbered in csrc/proposals/proposals.h.
_SPACES = {"rgb": 0, "hsv": 1, "lab": 2, "rgi": 3, "i": 4, "h": 5}
# Similarity combinations of Uijlings et al. 2013 (colour, texture, size, fill).
_CTSF = (True, True, True, True)
_TSF = (False, True, True, True)
_F = (False, False, False, True)
_S = (False, False, True, False)
# Table 5 of the paper: colour spaces, similarity combinations and k of each mode.
MODES = {
    "single": (("hsv",), (_CTSF,), (100,)),
    "fast": (("hsv", "lab"), (_CTSF, _TSF), (50, 100)),
    "quality": (("hsv", "lab", "rgi", "h", "i"), (_CTSF, _TSF, _F, _S), (50, 100, 150, 300)),
}


def float_image(image: Array, rgb: bool = False) -> np.ndarray:
    """float32 [H, W, C] NumPy copy/view of image in [0, 1] units (uint8 / 255); rgb: grey → 3
    channels, alpha dropped."""
    if A.is_torch(image):
        if A.dtype_name(image) == "bfloat16":  # (NumPy has no bfloat16)
            image = A.astype(image, "float32")
        image = image.detach().cpu().numpy()
    elif A.is_cupy(image):
        image = image.get()
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / np.float32(255)
    elif image.dtype.kind == "f":
        image = image.astype(np.float32, copy=False)
    else:
        raise TypeError(f"image: expected uint8 or float pixels, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"image: expected [H, W] or [H, W, C], got shape {list(image.shape)}")
    if rgb:
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        elif image.shape[2] == 4:
            image = image[:, :, :3]
        elif image.shape[2] != 3:
            raise ValueError(
                f"image: expected 1, 3 or 4 channels (grey, RGB, RGBA), got shape {list(image.shape)}"
            )
    return np.ascontiguousarray(image)


def felzenszwalb(image: np.ndarray, scale: float, sigma: float, min_size: int) -> np.ndarray:
    """int32 [H, W] labels of a float32 [H, W, C] image."""
    labels = np.empty(image.shape[:2], np.int32)
    _C.felzenszwalb(image, labels, scale, sigma, min_size)
    return labels


def hierarchies(
    rgb: np.ndarray, mode: str, min_size: int | None, sigma: float
) -> list[tuple[np.ndarray, int]]:
    """Per strategy of ``mode`` on a float32 [H, W, 3] image: (int32 [2 n - 1, 4] boxes in
    generation order, n initial regions)."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {sorted(MODES)}, got {mode!r}")
    spaces, sims, ks = MODES[mode]
    strategies = [
        (_SPACES[s], float(k), k if min_size is None else min_size, *sim)
        for s in spaces
        for k in ks
        for sim in sims
    ]
    return _C.selective_search(rgb, strategies, sigma)


def selective_search(
    rgb: np.ndarray, mode: str, seed: int | None, min_size: int | None, max_boxes: int | None, sigma: float
) -> np.ndarray:
    """float32 [K, 4] boxes of a float32 [H, W, 3] image in [0, 1], best ranked first."""
    if rgb.size and (rgb.min() < 0 or rgb.max() > 1):  # NaN passes here and is refused in _C
        raise ValueError(
            f"image: float images must be in [0, 1], got values in [{rgb.min()}, {rgb.max()}]; "
            "pass uint8 or divide by 255"
        )
    found = hierarchies(rgb, mode, min_size, sigma)
    rng = np.random.default_rng(seed)
    boxes = np.concatenate([b for b, _ in found])
    # Position 1 is the last region formed; the product with U(0, 1) spreads ranks as in the paper.
    position = np.concatenate([np.arange(len(b), 0, -1) for b, _ in found]).astype(np.float64)
    order = np.argsort(position * rng.random(len(position)), kind="stable")
    boxes = boxes[order]
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)]
    if max_boxes is not None:
        boxes = boxes[:max_boxes]
    return boxes.astype(np.float32)
