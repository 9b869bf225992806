"""The inputs SimpleCRF's functions share, checked and converted, and their label maps."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np

from convloc._kernels import crf as kernels

# SimpleCRF returns int8 label maps.
MAX_LABELS = 128


def unary(P: Any, ndim: int, lo: float, hi: float) -> np.ndarray:
    """The unary [L, *spatial] (float32), -log(clip(P, lo, hi)), of probabilities P [*spatial, L]."""
    p = np.asarray(P)
    axes = ("D, H, W" if ndim == 3 else "H, W") + ", L"
    if p.ndim != ndim + 1:
        raise ValueError(f"P: expected probabilities [{axes}], got shape {p.shape}")
    if not 2 <= p.shape[-1] <= MAX_LABELS:
        raise ValueError(
            f"P: expected 2 to {MAX_LABELS} labels on the last axis (the label maps are int8), got shape {p.shape}"
        )
    u = kernels.unary_from_probabilities(p, -1, None, lo, hi, "P")
    return u.reshape((p.shape[-1],) + p.shape[:-1])


def image(value: Any, spatial: tuple[int, ...], channels: int) -> np.ndarray:
    """The image argument I as a C-contiguous uint8 array [*spatial, channels]."""
    im = np.asarray(value)
    if im.dtype != np.uint8:
        raise TypeError(
            f"I: expected a uint8 image (0..255), got {im.dtype}; scale it to 0..255 and convert with "
            ".astype(np.uint8)"
        )
    want = spatial + (channels,)
    if im.shape != want:
        hint = ""
        if im.shape == (channels,) + spatial:
            hint = " (channels first? move them last)"
        elif im.ndim == len(want) and im.shape[-1] != channels:
            hint = f" ({im.shape[-1]} channels where {channels} were expected)"
        raise ValueError(f"I: expected shape {want} (P's shape, then the channels), got {im.shape}{hint}")
    return np.ascontiguousarray(im)


def number(value: Any, name: str, positive: bool = False) -> float:
    """A finite number (positive where asked: a standard deviation)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name}: expected a positive standard deviation, got {value!r}")
    return float(value)


def count(value: Any, name: str) -> int:
    """A whole number >= 0, given as an int or a float (SimpleCRF's examples pass 5.0)."""
    v = number(value, name)
    if v < 0 or v != int(v):
        raise ValueError(f"{name}: expected a whole number >= 0, got {value!r}")
    return int(v)


def label_map(labels: np.ndarray) -> np.ndarray:
    return labels.astype(np.int8)
