"""CRF kernels: dense-CRF mean-field, the grid CRF, the bilateral features, and the choices
the CPU kernel makes for a Gaussian over the pixel grid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import convloc._C as _C
from convloc._kernels import arrays as A
from convloc._kernels.arrays import Array

# Gaussian kernels up to this sigma (pixels) are filtered exactly and separably over the grid (no
# lattice to build; 2 x (2·ceil(3σ) + 1) multiply-adds per value); wider ones use the lattice.
GRID_MAX_SIGMA = 6.0
# 2-D Gaussian kernels with sigma >= 2 · COARSE_SIGMA_PER_STEP are filtered on a grid `step` =
# floor(sigma / COARSE_SIGMA_PER_STEP) times coarser (B-spline splat and slice around an exact blur):
# within 7.3 % of the kernel's peak at this ratio (1.3 % at 1.5), against 17 % for pydensecrf's
# lattice; ``Gaussian(exact=True)`` keeps the exact filter.
COARSE_SIGMA_PER_STEP = 1.0


def grid_kernel(sigma: np.ndarray, exact: bool = False) -> _C.GridGaussian | None:
    """How the CPU kernel filters a Gaussian of these per-axis sigmas (pixels) over the grid: on a
    coarser grid, exactly, or (None) not over the grid but with the permutohedral lattice."""
    steps = np.floor(sigma / COARSE_SIGMA_PER_STEP).astype(int)
    if len(sigma) == 2 and not exact and steps.min() >= 2:
        return _C.GridGaussian(sigma.tolist(), steps.tolist())
    if exact or sigma.max() <= GRID_MAX_SIGMA:
        return _C.GridGaussian(sigma.tolist(), [1] * len(sigma))
    return None


def bilateral(pos_scale: np.ndarray, srgb: np.ndarray) -> _C.Bilateral:
    """The bilateral kernel over the image that :func:`dense_crf` is given, its features built by the
    kernel (CPU): positions × pos_scale per axis, x first, then the image's channels / srgb."""
    return _C.Bilateral(pos_scale.tolist(), srgb.tolist())


def compat_matrix(compat: Any, labels: int, weight: float, name: str) -> np.ndarray:
    """pydensecrf's compatibility in its apply form (message = C @ filtered Q), times the weight:
    ``"potts"`` or a number c is Potts (``-w c I``), ``[L]`` diagonal, ``[L, L]`` symmetrised."""
    if isinstance(compat, str):
        if compat != "potts":
            raise ValueError(f"{name}: expected 'potts', a number, [L] or [L, L], got {compat!r}")
        compat = 1.0
    c = np.asarray(compat, dtype=np.float64)
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{name}: expected finite values")
    if c.ndim == 0:
        return -weight * float(c) * np.eye(labels)
    if c.shape == (labels,):
        return weight * np.diag(c)
    if c.shape == (labels, labels):
        return weight * 0.5 * (c + c.T)
    raise ValueError(f"{name}: expected a number, [{labels}] or [{labels}, {labels}], got shape {c.shape}")


def bilateral_features(
    image: np.ndarray, spatial: Sequence[int], scale: np.ndarray, srgb: np.ndarray, dtype
) -> np.ndarray:
    """[B, N, ndim + C] features (positions × scale, x first; channels / srgb) of a [B, N, C]
    image (uint8 or the dtype)."""
    batch, n, channels = image.shape
    out = np.empty((batch, n, len(spatial) + channels), dtype)
    _C.bilateral_features(image, list(spatial), scale.tolist(), srgb.tolist(), out)
    return out


def dense_crf(
    unary: Array,
    kernels: list,
    compat: Array,
    normalizations: list[int],
    iterations: int,
    exclude_self: bool,
    spatial: Sequence[int],
    *,
    labels: bool = False,
    energy: bool = False,
    init: Array | None = None,
    image: np.ndarray | None = None,
) -> tuple[Array, Array | None, np.ndarray | None]:
    """(Q, labels or None, energy or None) of mean-field in a dense CRF.

    ``unary`` [B, L, N]; ``kernels`` one entry per pairwise term: lattice features [B, N, d] on the
    unary's device, a grid Gaussian (:func:`grid_kernel`, CPU) or a bilateral kernel over ``image``
    [B, N, C] (:func:`bilateral`, CPU); ``compat`` [K, L, L] (apply form); ``init`` [B, L, N]
    replaces ``softmax(-unary)`` as Q_0.
    """
    batch, n_labels, n = unary.shape
    q = A.empty(unary, (batch, n_labels, n))
    lab = A.empty(unary, (batch, n), "int64") if labels else None
    kl = np.empty((batch, iterations + 1), np.float64) if energy else None
    _C.dense_crf(
        unary,
        kernels,
        compat,
        normalizations,
        int(iterations),
        bool(exclude_self),
        q,
        lab,
        kl,
        init,
        spatial=list(spatial),
        image=image,
        stream=A.stream(unary),
    )
    return q, lab, kl


def grid_crf(
    unary: Array, image: Array, neighbors: int, w1: float, w2: float, beta: float, iterations: int
) -> Array:
    """Q [B, L, H, W] of mean-field in the grid CRF; ``image`` [B, H, W, C] on the unary's device."""
    q = A.empty(unary, tuple(unary.shape))
    _C.grid_crf(unary, image, int(neighbors), w1, w2, beta, int(iterations), q, stream=A.stream(unary))
    return q
