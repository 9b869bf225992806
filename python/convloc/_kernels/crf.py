"""CRF kernels: dense-CRF mean-field, the grid CRF, the bilateral features, and the choices
the CPU kernel makes for a Gaussian over the pixel grid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

import convloc._C as _C
from convloc._kernels import arrays as A
from convloc._kernels import lattice
from convloc._kernels.arrays import Array

# The most the pairwise terms may add to a pixel's energy (crf/dense_crf.h): float32 mean-field then
# never overflows to inf - inf.
MAX_PAIRWISE_ENERGY = _C.MAX_PAIRWISE_ENERGY


def grid_kernel(sigma: np.ndarray, spatial: Sequence[int], exact: bool = False) -> _C.GridGaussian | None:
    """How the CPU kernel filters a Gaussian of these per-axis sigmas (pixels) over the grid
    ``spatial``: on a coarser grid (2-D, sigma >= 2: within 7.3 % of the kernel's peak, against
    pydensecrf's 17 %), exactly (sigma <= 6, or ``exact``), or (None) not over the grid but with the
    permutohedral lattice. Sigmas beyond 1000 extents of their axis are taken as that wide (where the
    kernel varies by less than 5e-7 over the grid). The rule is the C++ family's, which the C API
    follows too."""
    return _C.grid_gaussian(sigma.tolist(), list(spatial), bool(exact))


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


# What the peers' probabilities become: the largest distance from one that a distribution's sum may
# have (float16 and bfloat16 softmax outputs stay well within it; logits, scores and transposed
# [H, W, L] arrays do not), and the probability 0 as the float32 energy -log(1.2e-38) = 87.3 where the
# peers' is infinite: such a label still keeps a probability below 1e-38 after any pairwise term
# weighted less than ~87.
PROBABILITY_SUM_TOLERANCE = 0.01
SMALLEST_PROBABILITY = float(np.finfo(np.float32).tiny)


def unary_from_probabilities(
    probs: Any, label_axis: int, scale: float | None, clip: float | None, hi: float, name: str
) -> np.ndarray:
    """``-log(min(max(scale·P + (1 - scale)/L, clip), hi))`` as float32 ``[L, N]``, labels first,
    of probabilities P with the labels on axis 0 or -1 (pydensecrf's unary_from_softmax with
    ``hi = 1``; ``scale`` None is 1, ``clip`` None is 0, whose -log is +inf): checked, mixed, clipped
    and transposed in one pass, then NumPy's log. Each pixel's values must be a distribution:
    finite, >= 0, summing to one within :data:`PROBABILITY_SUM_TOLERANCE`; otherwise ValueError
    naming ``name`` and the first pixel that is not."""
    if scale is not None and not 0 < scale <= 1:
        raise ValueError(f"scale: expected a number in (0, 1] or None, got {scale!r}")
    if clip is not None and not 0 <= clip <= hi:
        raise ValueError(f"clip: expected a number in [0, {hi}] or None, got {clip!r}")
    p = np.asarray(probs)
    if p.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected real probabilities, got dtype {p.dtype}")
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)
    labels_last = label_axis == -1 and p.ndim > 1
    if p.ndim < 1 or p.size == 0:
        raise ValueError(f"{name}: expected at least one label and one pixel, got shape {p.shape}")
    n_labels = p.shape[-1 if labels_last else 0]
    flat = np.ascontiguousarray(p.reshape((-1, n_labels) if labels_last else (n_labels, -1)))
    unary = np.empty((n_labels, flat.size // n_labels), np.float32)
    scale, clip = 1.0 if scale is None else float(scale), 0.0 if clip is None else float(clip)
    bad = _C.clip_probabilities(flat, labels_last, scale, clip, hi, PROBABILITY_SUM_TOLERANCE, unary)
    if bad >= 0:
        values = flat[bad] if labels_last else flat[:, bad]
        where = np.unravel_index(bad, p.shape[:-1] if labels_last else p.shape[1:])
        raise ValueError(
            f"{name}: expected probabilities over axis {label_axis} (the labels): finite, >= 0 and "
            f"summing to 1; got {values.tolist() if n_labels <= 8 else f'values summing to {values.sum():.6g}'} "
            f"at {tuple(int(i) for i in where)}"
        )
    with np.errstate(divide="ignore"):  # (log 0 = -inf: clip None)
        np.log(unary, out=unary)
    return np.negative(unary, out=unary)


def argmax_labels(q: np.ndarray) -> np.ndarray:
    """``np.argmax(q, axis=0)`` (the same indices, NaN counted largest) of a C-contiguous float32 or
    float64 array [L, ...], in one pass instead of NumPy's transposed copy."""
    out = np.empty(q.shape[1:], np.int64)
    _C.argmax_axis0(q.reshape(q.shape[0], -1), out.reshape(-1))
    return out


def bilateral_features(
    image: np.ndarray, spatial: Sequence[int], scale: np.ndarray, srgb: np.ndarray, dtype
) -> np.ndarray:
    """[B, N, ndim + C] features (positions × scale, x first; channels / srgb) of a [B, N, C]
    image (uint8 or the dtype)."""
    batch, n, channels = image.shape
    out = np.empty((batch, n, len(spatial) + channels), dtype)
    _C.bilateral_features(image, list(spatial), scale.tolist(), srgb.tolist(), out)
    return out


# How dense_crf's kernels are described to run_dense_crf (kinds[k]) and what their params hold.
FEATURES = 0  # the next array of `features`: [B, N, d], already divided by the standard deviations
GAUSSIAN = 1  # params: sigma per axis, in pixels
EXACT_GAUSSIAN = 2  # the same, filtered exactly over the grid
BILATERAL = 3  # params: position scale per axis (x first after reversal), then srgb per channel


def positions(spatial: Sequence[int], scale: Sequence[float], dtype) -> np.ndarray:
    """[N, ndim] pixel positions times scale per axis, C order."""
    axes = [np.arange(s, dtype=dtype) * dtype(scale[a]) for a, s in enumerate(spatial)]
    grids = np.meshgrid(*axes, indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1)


def _check_reach(features: np.ndarray, what: str) -> None:
    """ValueError naming ``what`` (the widths the features were divided by) where the features
    [..., d] span more standard deviations than the lattice holds."""
    reach = float(np.abs(features).sum(-1).max(initial=0))
    limit = lattice.max_feature_sum(features.shape[-1])
    if not reach < limit:
        raise ValueError(
            f"{what} too small for this image: its features span {reach:.3g} standard deviations, "
            f"beyond the lattice's {limit:.3g}"
        )


def _on_device(x: np.ndarray, like: Array) -> Array:
    if A.on_cpu(like):
        return x
    if A.is_torch(like):
        import torch

        return torch.as_tensor(x, device=like.device).contiguous()
    import cupy

    with cupy.cuda.Device(like.device.id):
        return cupy.asarray(x)


def _host(x: Array) -> np.ndarray:
    if A.is_torch(x):
        return x.detach().cpu().numpy()
    return x.get() if A.is_cupy(x) else np.asarray(x)


def plan_kernels(
    kinds: Sequence[int],
    params: Sequence[float],
    compat: Sequence[float],
    compat_sizes: Sequence[int],
    weights: Sequence[float],
    n_labels: int,
    spatial: Sequence[int],
    channels: int,
    dtype,
    on_gpu: bool,
) -> tuple[list[tuple[str, Any]], np.ndarray]:
    """How each kernel of :func:`run_dense_crf`'s flat description is filtered, and their
    compatibility matrices [K, L, L] (apply form, float64). Per kernel: ``("features", None)``, the
    next array of ``features``; ``("grid", GridGaussian)``, over the pixel grid (CPU,
    :func:`grid_kernel`); ``("positions", [N, ndim] array)``, a Gaussian's lattice features;
    ``("bilateral", (scale, srgb))``, over the image of ``channels`` channels."""
    ndim = len(spatial)
    terms, matrices, next_param, next_compat = [], [], 0, 0
    for k, kind in enumerate(kinds):
        if kind == FEATURES:
            terms.append(("features", None))
        elif kind in (GAUSSIAN, EXACT_GAUSSIAN):
            sigma = np.array(params[next_param : next_param + ndim], np.float64)
            next_param += ndim
            grid = None if on_gpu else grid_kernel(sigma, spatial, kind == EXACT_GAUSSIAN)
            if grid is None:
                with np.errstate(over="ignore"):  # (widths so small that positions overflow: refused)
                    pos = positions(spatial, 1.0 / sigma, dtype)[:, ::-1]
                _check_reach(pos, f"kernels[{k}]: sxy")
                terms.append(("positions", pos))
            else:
                terms.append(("grid", grid))
        elif kind == BILATERAL:
            scale = np.array(params[next_param : next_param + ndim], np.float64).astype(dtype)
            srgb = np.array(params[next_param + ndim : next_param + ndim + channels], np.float64).astype(
                dtype
            )
            next_param += ndim + channels
            terms.append(("bilateral", (scale, srgb)))
        else:
            raise ValueError(f"kinds[{k}]: expected 0 to 3, got {kind}")
        size = compat_sizes[k]
        values = np.array(compat[next_compat : next_compat + size], np.float64)
        next_compat += size
        shape = () if size == 1 else (n_labels,) if size == n_labels else (n_labels, n_labels)
        matrices.append(compat_matrix(values.reshape(shape), n_labels, weights[k], "compat"))
    return terms, np.stack(matrices)


def run_dense_crf(
    unary: Array,
    image: Array | None,
    features: Sequence[Array],
    kinds: Sequence[int],
    params: Sequence[float],
    compat: Sequence[float],
    compat_sizes: Sequence[int],
    weights: Sequence[float],
    normalizations: Sequence[int],
    iterations: int,
    exclude_self: bool,
    spatial: Sequence[int],
    labels: bool,
    energy: bool,
) -> tuple[Array, Array | None, np.ndarray | None]:
    """(Q, labels or None, energy or None) of mean-field in a dense CRF, from a flat description of
    its kernels (what a ``torch.library`` op can take): unary [B, L, N]; image [B, N, C] (uint8 or
    the unary's dtype) for bilateral kernels; ``kinds[k]`` (:data:`FEATURES`, :data:`GAUSSIAN`,
    :data:`EXACT_GAUSSIAN`, :data:`BILATERAL`) with their ``params`` one after the other; each
    kernel's compatibility as ``compat_sizes[k]`` values of ``compat`` (1: Potts strength, L:
    diagonal, L·L: matrix) times ``weights[k]``.

    On the CPU, Gaussians are filtered over the grid where :func:`grid_kernel` says so and the
    bilateral features are built by the kernel; CUDA arrays get every kernel as lattice features.
    A float16 / bfloat16 unary (image, features) runs in float32, Q returned in its dtype.
    """
    half, (unary, image, *features) = A.float32_for_half(
        ("unary", unary), ("image", image), *((f"features[{i}]", f) for i, f in enumerate(features))
    )
    batch, n_labels, n = unary.shape
    dtype = np.float32 if A.dtype_name(unary) == "float32" else np.float64
    on_gpu = not A.on_cpu(unary)
    channels = 0 if image is None else image.shape[2]
    plan, matrices = plan_kernels(
        kinds, params, compat, compat_sizes, weights, n_labels, spatial, channels, dtype, on_gpu
    )
    feature_arrays = iter(features)
    terms = []
    for k, (how, what) in enumerate(plan):
        if how == "features":
            terms.append(next(feature_arrays))
        elif how == "grid":
            terms.append(what)
        elif how == "positions":
            terms.append(
                _on_device(np.ascontiguousarray(np.broadcast_to(what, (batch,) + what.shape)), unary)
            )
        elif on_gpu:  # bilateral features built on the host, then copied up
            host = np.ascontiguousarray(_host(image))
            if host.dtype.kind == "f" and not np.all(np.isfinite(host)):
                raise ValueError("image: expected finite values, got NaN or inf")
            with np.errstate(over="ignore", divide="ignore"):
                host_features = bilateral_features(host, spatial, *what, dtype)
            _check_reach(host_features, f"kernels[{k}]: sxy or srgb")
            terms.append(_on_device(host_features, unary))
        else:
            terms.append(bilateral(*what))
    with np.errstate(over="ignore"):  # (dense_crf refuses what overflows)
        compat_array = matrices.astype(dtype)
    q, lab, kl = dense_crf(
        unary,
        terms,
        _on_device(compat_array, unary),
        list(normalizations),
        iterations,
        exclude_self,
        spatial,
        labels=labels,
        energy=energy,
        image=None if on_gpu else image,
    )
    return A.restore_half(q, half), lab, kl


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
    reach = n * float(np.abs(_host(compat)).reshape(len(kernels), -1).max(1, initial=0).sum())
    if not reach <= MAX_PAIRWISE_ENERGY:
        raise ValueError(
            f"compat, weight: the pairwise energy could reach {reach:.3g} (pixels x the largest "
            f"|compat x weight| of each kernel, summed), above {MAX_PAIRWISE_ENERGY:g}"
        )
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
    unary: Array, image: Array, neighbors: int, w1: float, w2: float, beta: float | None, iterations: int
) -> Array:
    """Q [B, L, H, W] of mean-field in the grid CRF; ``image`` [B, H, W, C] in the unary's dtype (any
    device: it is moved to the unary's); ``beta`` None: ``1 / (2·mean |x_i - x_j|²)`` over the
    4-neighbour pairs (GrabCut's choice). A float16 / bfloat16 unary (and image) runs in float32."""
    half, (unary, image) = A.float32_for_half(("unary", unary), ("image", image))
    img = np.ascontiguousarray(_host(image))
    if beta is None:
        d2 = [
            ((img[:, 1:] - img[:, :-1]) ** 2).sum(-1).ravel(),
            ((img[:, :, 1:] - img[:, :, :-1]) ** 2).sum(-1).ravel(),
        ]
        mean = float(np.concatenate(d2).mean()) if sum(a.size for a in d2) else 0.0
        beta = min(1.0 / (2.0 * mean), np.finfo(np.float64).max) if mean > 0 else 0.0
    if neighbors not in (4, 8):
        raise ValueError(f"neighbors: expected 4 or 8, got {neighbors}")
    if not math.isfinite(beta):
        raise ValueError(f"beta: expected a finite number >= 0, got {beta!r}")
    reach = neighbors * (abs(w1) + abs(w2))
    if not reach <= MAX_PAIRWISE_ENERGY:
        raise ValueError(
            f"w1, w2: the pairwise energy could reach {reach:.3g} (neighbors x (|w1| + |w2|)), above "
            f"{MAX_PAIRWISE_ENERGY:g}"
        )
    image = A.prepare(image) if A.on_cpu(unary) and A.on_cpu(image) else _on_device(img, unary)
    q = A.empty(unary, tuple(unary.shape))
    _C.grid_crf(unary, image, int(neighbors), w1, w2, beta, int(iterations), q, stream=A.stream(unary))
    return A.restore_half(q, half)
