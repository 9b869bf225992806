"""Conditional random fields for segmentation: the fully connected (dense) CRF and the grid CRF.

The dense CRF of Krähenbühl & Koltun (2011): energy ``sum_i U_i(y_i) + sum_{i<j} μ(y_i, y_j)
sum_m w_m k_m(f_i, f_j)`` with Gaussian kernels ``k_m = exp(-|f_i - f_j|² / 2)`` over scaled
features (positions / sxy, colours / srgb), minimised approximately by parallel mean-field updates
whose kernel sums are computed with the permutohedral lattice (or, for the spatial smoothness
kernel, over the pixel grid: on a coarser grid, or exactly; see :class:`Gaussian`). The
conventions are pydensecrf's:

* ``unary`` is the negative log-probability, labels first: ``[L, H, W]`` (or ``[B, L, H, W]``,
  or ``[L, D, H, W]`` volumes with ``ndim=3``).
* ``compat``: a scalar ``c`` is Potts (the same labels attract with strength ``c·w_m``); a vector
  ``[L]`` or a matrix ``[L, L]`` is an energy added for the label pair, exactly as pydensecrf's
  ``DiagonalCompatibility`` / ``MatrixCompatibility`` (the matrix is symmetrised, as there).
* ``normalization``: ``"symmetric"`` (default), ``"before"``, ``"after"`` as in pydensecrf, or
  ``"none"`` (the plain Gaussian sums; pydensecrf's NO_NORMALIZATION returns its lattice's raw
  output, which differs by a constant factor); the kernel sum includes the pixel itself unless
  ``exclude_self=True``.

The grid CRF is the lecture's baseline: 4- or 8-neighbour Potts with weight
``w1·exp(-beta·|x_i - x_j|²) + w2``, by the same mean-field updates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from convloc._kernels import arrays as A
from convloc._kernels import crf as crf_kernels
from convloc._kernels.args import check_fits, integer, number
from convloc._kernels.arrays import Array
from convloc.ops._tracing import fx_leaf

__all__ = [
    "Gaussian",
    "Bilateral",
    "Features",
    "dense_crf",
    "grid_crf",
    "unary_from_softmax",
    "unary_from_labels",
    "create_pairwise_gaussian",
    "create_pairwise_bilateral",
]

Compat = Union[str, float, Sequence[float], np.ndarray, None]
NORMALIZATIONS = {"none": 0, "before": 1, "after": 2, "symmetric": 3}


@dataclass(frozen=True)
class Gaussian:
    """Smoothness kernel over positions: ``exp(-sum_a (p_a - q_a)² / (2 sxy_a²))``.

    ``sxy`` is in the units of ``spacing`` (pixels by default): a number or one per spatial axis.
    ``compat`` / ``normalization`` override :func:`dense_crf`'s for this kernel.

    On the CPU, 2-D kernels with ``sxy >= 2`` pixels are filtered on a grid ``floor(sxy)`` times
    coarser (quadratic B-spline splat and slice around an exact blur: within 7.3 % of the kernel's
    peak, where pydensecrf's lattice is within 17 %), others exactly over the pixel grid up to
    ``sxy = 6`` and beyond that with the permutohedral lattice. ``exact=True`` filters exactly over
    the grid at any ``sxy`` (CPU only; the work grows with ``sxy`` up to the image's size). A
    kernel wider than 1000 times the image along an axis is filtered as that wide: over the image
    it is then a constant to within 5e-7.
    """

    sxy: float | Sequence[float] = 3.0
    weight: float = 3.0
    compat: Compat = None
    normalization: str | None = None
    exact: bool = False

    def _describe(self, problem: _Problem, index: int) -> tuple[int, list[float], Array | None]:
        if self.exact and problem.on_gpu:
            raise TypeError(f"kernels[{index}].exact: exact grid filtering runs on the CPU only")
        sigma = [s / d for s, d in zip(_positive(self.sxy, problem.ndim, "sxy"), problem.spacing)]
        if not all(math.isfinite(x) and x > 0 for x in sigma):
            raise ValueError(
                f"kernels[{index}].sxy, spacing: expected widths in pixels (sxy / spacing) that are positive "
                f"and finite, got {sigma}"
            )
        return (crf_kernels.EXACT_GAUSSIAN if self.exact else crf_kernels.GAUSSIAN), sigma, None


@dataclass(frozen=True)
class Bilateral:
    """Appearance kernel over positions and image values (any number of channels).

    ``srgb`` is a number or one per image channel.
    """

    sxy: float | Sequence[float] = 80.0
    srgb: float | Sequence[float] = 13.0
    weight: float = 10.0
    compat: Compat = None
    normalization: str | None = None

    def _describe(self, problem: _Problem, index: int) -> tuple[int, list[float], Array | None]:
        channels = problem.image_channels().shape[2]
        scale = [d / s for d, s in zip(problem.spacing, _positive(self.sxy, problem.ndim, "sxy"))]
        return crf_kernels.BILATERAL, scale + _positive(self.srgb, channels, "srgb"), None


@dataclass(frozen=True)
class Features:
    """A kernel over user features, already divided by their standard deviations.

    ``features``: ``[d, *spatial]`` or ``[d, N]`` (pydensecrf's layout, e.g. from
    :func:`create_pairwise_bilateral`), or batched ``[B, d, ...]``.
    """

    features: Any
    weight: float = 1.0
    compat: Compat = None
    normalization: str | None = None

    def _describe(self, problem: _Problem, index: int) -> tuple[int, list[float], Array | None]:
        return crf_kernels.FEATURES, [], _user_features(self.features, problem)


def _numbers(value: Any, name: str) -> list[float]:
    """A number or a flat sequence of numbers as a list of floats (plain Python, so that torch.compile
    traces it)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    items = value if isinstance(value, (list, tuple)) else [value]
    return [number(v, name) for v in items]


def _positive(value: Any, count: int, name: str) -> list[float]:
    """`count` positive finite floats from a number or a sequence."""
    v = _numbers(value, name)
    if len(v) not in (1, count):
        raise ValueError(f"{name}: expected a number or {count} numbers, got {value!r}")
    if not all(math.isfinite(x) and x > 0 for x in v):
        raise ValueError(f"{name}: expected positive finite numbers, got {value!r}")
    return v * count if len(v) == 1 else v


def _compat_values(compat: Compat, labels: int) -> list[float]:
    """A compatibility as its 1 (Potts), L (diagonal) or L·L (matrix) values."""
    if isinstance(compat, str):
        if compat != "potts":
            raise ValueError(f"compat: expected 'potts', a number, [L] or [L, L], got {compat!r}")
        return [1.0]
    if isinstance(compat, np.ndarray):
        compat = compat.tolist()
    rows = compat if isinstance(compat, (list, tuple)) else [compat]
    if len(rows) == labels and all(isinstance(r, (list, tuple)) for r in rows):
        if any(len(r) != labels for r in rows):
            raise ValueError(f"compat: expected a number, [{labels}] or [{labels}, {labels}]")
        rows = [v for r in rows for v in r]
    elif isinstance(compat, (list, tuple)) and len(rows) != labels:
        raise ValueError(
            f"compat: expected a number, [{labels}] or [{labels}, {labels}], got {len(rows)} values"
        )
    values = _numbers(rows, "compat")
    if not all(math.isfinite(v) for v in values):
        raise ValueError("compat: expected finite values")
    return values


def _norm_code(mode: str | int, name: str) -> int:
    if isinstance(mode, (int, np.integer)) and not isinstance(mode, bool) and 0 <= int(mode) <= 3:
        return int(mode)
    if mode in NORMALIZATIONS:
        return NORMALIZATIONS[mode]
    raise ValueError(f"{name}: expected one of {sorted(NORMALIZATIONS)}, got {mode!r}")


def _real_unary(unary: Any) -> tuple[Array, str | None]:
    """(The unary to run on, the half dtype Q goes back to or None): float32/float64 as given; other
    real dtypes as float32 (pydensecrf's energies; float16 and bfloat16 return Q in their dtype);
    complex and bool refused, as a silent cast would drop the imaginary part or mean nothing."""
    unary = A.as_array(unary, "unary")
    kind = A.dtype_name(unary)
    if kind.startswith("complex") or kind == "bool":
        raise TypeError(f"unary: expected real negative log-probabilities, got dtype {kind}")
    half = kind if kind in A.HALF else None
    return A.prepare(unary, None if kind in ("float32", "float64") else "float32"), half


def _split_batch(unary: Array, ndim: int) -> tuple[bool, int, int, tuple[int, ...]]:
    if unary.ndim == ndim + 1:
        batched, b, labels = False, 1, unary.shape[0]
    elif unary.ndim == ndim + 2:
        batched, b, labels = True, unary.shape[0], unary.shape[1]
    else:
        raise ValueError(
            f"unary: expected [L, *spatial] or [B, L, *spatial] with {ndim} spatial axes, "
            f"got shape {tuple(unary.shape)}"
        )
    if labels < 2:
        raise ValueError(f"unary: expected at least 2 labels, got {labels}")
    spatial = tuple(int(s) for s in unary.shape[-ndim:])
    if b == 0 or 0 in spatial:
        raise ValueError(f"unary: expected at least one pixel, got shape {tuple(unary.shape)}")
    return batched, b, labels, spatial


def _swapped(shape: tuple[int, ...], lead: tuple[int, ...]) -> bool:
    """True when shape starts with lead whose last two axes are exchanged."""
    want = lead[:-2] + (lead[-1], lead[-2])
    return len(lead) >= 2 and want != lead and shape[: len(lead)] == want


def _image_channels(image: Any, unary: Array, batch: int, batched: bool, spatial: tuple[int, ...]) -> Array:
    """The image as a contiguous [B, N, C] array in the unary's framework (on the CPU where the
    unary is on a GPU: bilateral features are built there), uint8 kept, other dtypes as the
    unary's; checked against the unary's shape. Its values are checked by the kernel."""
    img = A.as_array(image, "image")
    if A.is_torch(unary) and not A.is_torch(img):
        import torch

        img = torch.from_numpy(np.ascontiguousarray(img))
    lead = ((batch,) if batched else ()) + spatial
    shape = tuple(img.shape)
    if shape == lead:
        img, shape = img[..., None], shape + (1,)
    if shape[:-1] != lead:
        raise ValueError(
            f"image: expected shape {lead} or {lead + ('C',)} (matching the unary), got {shape}"
            + (" (height and width swapped?)" if _swapped(shape, lead) else "")
        )
    kind = A.dtype_name(img)
    if kind.startswith("complex") or kind == "bool" or kind == "object":
        raise TypeError(f"image: expected a numeric array, got {kind}")
    return A.prepare(img.reshape(batch, -1, shape[-1]), None if kind == "uint8" else A.dtype_name(unary))


def _user_features(feats: Any, problem: _Problem) -> Array:
    """User features [d, N] / [d, *spatial] (or batched) as [B, N, d] in the unary's framework,
    dtype and device."""
    f = A.as_array(feats, "features")
    kind = A.dtype_name(f)
    if kind.startswith("complex") or kind in ("bool", "object"):
        raise TypeError(f"features: expected real features, got dtype {kind}")
    if A.is_torch(problem.unary) and not A.is_torch(f):
        import torch

        f = torch.from_numpy(np.ascontiguousarray(f))
    batch, spatial, n = problem.batch, problem.spatial, math.prod(problem.spatial)
    shape = tuple(f.shape)
    if problem.batched and len(shape) >= 2 and shape[0] == batch and len(shape) in (3, 2 + len(spatial)):
        f = f.reshape(batch, shape[1], -1)
    elif len(shape) in (2, 1 + len(spatial)):
        f = f.reshape(1, shape[0], -1)
    else:
        raise ValueError(f"features: expected [d, N] or [d, *spatial] (or batched), got shape {shape}")
    if f.shape[2] != n:
        raise ValueError(f"features: expected {n} points (the unary's pixels), got {f.shape[2]}")
    f = A.namespace(f).broadcast_to(f.swapaxes(1, 2), (batch, n, f.shape[1]))
    return _on_unary_device(A.prepare(f, A.dtype_name(problem.unary)), problem.unary)


def _on_unary_device(x: Array, unary: Array) -> Array:
    if A.is_torch(unary):
        return x.to(unary.device)
    if A.is_cupy(unary) and not A.is_cupy(x):
        import cupy

        with cupy.cuda.Device(unary.device.id):
            return cupy.asarray(x)
    return x


@dataclass
class _Problem:
    """What the kernels of one :func:`dense_crf` call are described for."""

    unary: Array
    batch: int
    batched: bool
    spatial: tuple[int, ...]
    spacing: list[float]  # physical size of a pixel per axis
    on_gpu: bool
    image: Any
    channels: Array | None = None  # the image as the kernels read it, once one asked for it

    @property
    def ndim(self) -> int:
        return len(self.spatial)

    def image_channels(self) -> Array:
        """The image as [B, N, C] (uint8 kept), checked once and shared by the kernels."""
        if self.image is None:
            raise ValueError("image: a Bilateral kernel needs the image")
        if self.channels is None:
            self.channels = _image_channels(self.image, self.unary, self.batch, self.batched, self.spatial)
        return self.channels


@fx_leaf
@A.accepts_any_framework
def dense_crf(
    unary: Array,
    *,
    image: Any = None,
    kernels: Sequence[Gaussian | Bilateral | Features] | None = None,
    compat: Compat = "potts",
    iterations: int = 5,
    normalization: str = "symmetric",
    spacing: float | Sequence[float] | None = None,
    ndim: int = 2,
    exclude_self: bool = False,
    return_labels: bool = False,
    return_energy: bool = False,
):
    """Mean-field inference in a fully connected CRF with Gaussian edge potentials.

    Args:
        unary: negative log-probabilities ``[L, *spatial]`` or ``[B, L, *spatial]`` (float32 or
            float64; float16 and bfloat16 run in float32, Q returned in their dtype; NumPy, torch,
            CuPy, JAX or any other DLPack producer's). ``ndim`` spatial axes (2 for images, 3 for
            volumes/video). CUDA arrays run on the GPU: every kernel on the lattice, up to 64
            labels, no energy. JAX arrays run through an XLA FFI target (``jax.jit``, ``vmap``; no
            gradient).
        image: ``[*spatial]`` or ``[*spatial, C]`` (batched: ``[B, ...]``), any channel count;
            needed by :class:`Bilateral` kernels. uint8 RGB images as in pydensecrf.
        kernels: the pairwise terms; default ``Gaussian(3, 3)`` plus, when an image is given,
            ``Bilateral(80, 13, 10)`` (the values most pydensecrf users run).
        compat: label compatibility for every kernel: ``"potts"`` (= 1.0), a number (Potts
            strength), ``[L]`` (diagonal) or ``[L, L]`` (pydensecrf's meanings; see the module doc).
        iterations: mean-field updates (0 returns ``softmax(-unary)``).
        normalization: kernel normalisation, pydensecrf's modes.
        spacing: physical size of a pixel along each spatial axis (``sxy`` is in these units).
        exclude_self: leave ``j = i`` out of the kernel sums, as in the paper's formula.
        return_labels: also return the MAP labels ``argmax_l Q`` (int64, the unary's shape
            without L).
        return_energy: also return, per image, the KL divergence (up to log Z) of Q_0 .. Q_T:
            ``sum Q log Q + sum U Q + 1/2 sum Q·message(Q)``, float64 ``[T + 1]`` (``[B, T + 1]``).

    Returns:
        Q, the marginals, with the unary's shape, dtype and framework; then the labels and the
        energy when asked for (a tuple).
    """
    if A.is_torch(unary) and unary.requires_grad:
        import torch

        if torch.is_grad_enabled():
            raise TypeError(
                "unary: dense_crf has no gradient; train through mean-field with convloc.nn.CRFasRNN, "
                "or pass unary.detach()"
            )
    unary, half = _real_unary(unary)
    ndim = integer(ndim, "ndim", 1)
    batched, batch, labels, spatial = _split_batch(unary, ndim)
    iterations = integer(iterations, "iterations", 0)
    if return_energy:
        check_fits(8 * batch * (iterations + 1), "iterations", f"the energy of {iterations + 1} iterations")
    on_gpu = not A.on_cpu(unary)
    if on_gpu and return_energy:
        raise TypeError("return_energy: not available for CUDA arrays")
    step = _positive(1.0 if spacing is None else spacing, ndim, "spacing")
    if kernels is None:
        kernels = [Gaussian()] + ([Bilateral()] if image is not None else [])
    if not isinstance(kernels, (list, tuple)):
        raise TypeError(
            f"kernels: expected a list of Gaussian, Bilateral or Features, got {type(kernels).__name__}"
        )
    if len(kernels) == 0:
        raise ValueError("kernels: expected at least one pairwise kernel")
    norm_default = _norm_code(normalization, "normalization")

    problem = _Problem(unary, batch, batched, spatial, step, on_gpu, image)
    kinds, params, features, compat_values, compat_sizes, weights, norms = [], [], [], [], [], [], []
    for k, kern in enumerate(kernels):
        if not isinstance(kern, (Gaussian, Bilateral, Features)):
            raise TypeError(
                f"kernels[{k}]: expected Gaussian, Bilateral or Features, got {type(kern).__name__}"
            )
        kind, kern_params, kern_features = kern._describe(problem, k)
        kinds.append(kind)
        params += kern_params
        if kern_features is not None:
            features.append(kern_features)
        values = _compat_values(compat if kern.compat is None else kern.compat, labels)
        compat_values += values
        compat_sizes.append(len(values))
        weights.append(number(kern.weight, f"kernels[{k}].weight"))
        norms.append(
            norm_default if kern.normalization is None else _norm_code(kern.normalization, "normalization")
        )
    args = (
        unary.reshape(batch, labels, math.prod(spatial)),
        problem.channels,
        features,
        kinds,
        params,
        compat_values,
        compat_sizes,
        weights,
        norms,
        iterations,
        bool(exclude_self),
        list(spatial),
        bool(return_labels),
        bool(return_energy),
    )
    if A.is_torch(unary):
        from convloc._torch import crf as torch_ops

        q, lab, energy = torch_ops.dense_crf(*args)
    elif A.is_jax(unary):
        from convloc._jax import crf as jax_ops

        q, lab, energy = jax_ops.dense_crf(*args)
    else:
        q, lab, energy = crf_kernels.run_dense_crf(*args)
    out = [A.restore_half(q.reshape(tuple(unary.shape)), half)]
    if return_labels:
        out.append(lab.reshape(((batch,) if batched else ()) + spatial))
    if return_energy:
        out.append(energy if batched else energy[0])
    return out[0] if len(out) == 1 else tuple(out)


@fx_leaf
@A.accepts_any_framework(jax=True)  # (no XLA target: concrete JAX arrays go through DLPack)
def grid_crf(
    unary: Array,
    image: Any,
    *,
    neighbors: int = 4,
    w1: float = 10.0,
    w2: float = 1.0,
    beta: float | None = None,
    iterations: int = 5,
) -> Array:
    """Mean-field in the lecture's grid CRF (the baseline the dense CRF is compared with).

    Pairwise Potts ``[y_i != y_j]·(w1·exp(-beta·|x_i - x_j|²) + w2)`` between 4- or 8-neighbours.

    Args:
        unary: ``[L, H, W]`` or ``[B, L, H, W]`` negative log-probabilities.
        image: ``[H, W]`` or ``[H, W, C]`` (batched: ``[B, ...]``).
        beta: default ``1 / (2·mean |x_i - x_j|²)`` over 4-neighbour pairs (GrabCut's choice).

    Returns:
        Q with the unary's shape.
    """
    unary, half = _real_unary(unary)
    batched, batch, labels, spatial = _split_batch(unary, 2)
    img = _image_channels(image, unary, batch, batched, spatial)
    img = A.prepare(img.reshape(batch, *spatial, -1), A.dtype_name(unary))
    args = (
        unary.reshape(batch, labels, *spatial),
        img,
        integer(neighbors, "neighbors"),
        number(w1, "w1"),
        number(w2, "w2"),
        None if beta is None else number(beta, "beta"),
        integer(iterations, "iterations", 0),
    )
    if A.is_torch(unary):
        from convloc._torch import crf as torch_ops

        q = torch_ops.grid_crf(*args)
    else:
        q = crf_kernels.grid_crf(*args)
    return A.restore_half(q.reshape(tuple(unary.shape)), half)


def unary_from_softmax(probs: Any, scale: float | None = None, clip: float | None = 1e-5) -> np.ndarray:
    """``-log(clip(P, clip, 1))`` as float32, keeping P's shape ([L, ...], labels first).

    ``scale`` in (0, 1] mixes P with the uniform distribution first (pydensecrf's "certainty");
    ``clip=None`` leaves zeros infinite. P must hold a distribution per pixel (finite, >= 0, summing
    to one over axis 0 within 0.01): NaN, logits or a [H, W, L] array raise ValueError.
    Unlike pydensecrf the result is not flattened; :func:`dense_crf` takes it as it is.
    """
    p = np.asarray(probs)
    return crf_kernels.unary_from_probabilities(p, 0, scale, clip, 1.0, "probs").reshape(p.shape)


def unary_from_labels(labels: Any, n_labels: int, gt_prob: float, zero_unsure: bool = True) -> np.ndarray:
    """Unary ``[n_labels, *labels.shape]`` from a label map trusted with probability ``gt_prob``.

    As in pydensecrf: with ``zero_unsure`` the value 0 means "unknown" (uniform) and 1..n_labels
    are the classes; otherwise 0..n_labels-1 are the classes.
    """
    if not 0 < number(gt_prob, "gt_prob") < 1:
        raise ValueError(f"gt_prob: expected a number in (0, 1), got {gt_prob}")
    n_labels = integer(n_labels, "n_labels", 2)
    lab = np.asarray(labels)
    if not np.issubdtype(lab.dtype, np.integer):
        raise TypeError(f"labels: expected an integer array, got {lab.dtype}")
    check_fits(4 * n_labels * lab.size, "n_labels", f"a unary of {n_labels} labels x {lab.size} pixels")
    flat = lab.reshape(-1).astype(np.int64)
    cls = flat - 1 if zero_unsure else flat
    lo = -1 if zero_unsure else 0
    if flat.size and (cls.min() < lo or cls.max() >= n_labels):
        raise ValueError(
            f"labels: expected values in [0, {n_labels if zero_unsure else n_labels - 1}], "
            f"got [{flat.min()}, {flat.max()}]"
        )
    u = np.full((n_labels, flat.size), -math.log((1.0 - gt_prob) / (n_labels - 1)), np.float32)
    known = cls >= 0
    u[cls[known], np.nonzero(known)[0]] = -math.log(gt_prob)
    if zero_unsure:
        u[:, ~known] = -math.log(1.0 / n_labels)
    return u.reshape((n_labels,) + lab.shape)


def create_pairwise_gaussian(sdims: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """Position features [len(shape), N] (float32): the index along each axis / its sdim, as
    pydensecrf computes them (float32 divisions)."""
    s = _positive(sdims, len(shape), "sdims")
    mesh = np.indices(tuple(shape), dtype=np.float32)
    return (mesh / np.array(s, np.float32).reshape((-1,) + (1,) * len(shape))).reshape(len(shape), -1)


def create_pairwise_bilateral(
    sdims: Sequence[float], schan: float | Sequence[float], img: Any, chdim: int = -1
):
    """Position and channel features [len(sdims) + C, N] (float32), as pydensecrf.

    ``chdim``: the image's channel axis, or -1 for a single-channel image.
    """
    im = np.asarray(img)
    chan = im[None] if chdim == -1 else np.moveaxis(im, chdim, 0)
    spatial = chan.shape[1:]
    pos = create_pairwise_gaussian(sdims, spatial)
    c = (
        chan.reshape(chan.shape[0], -1).astype(np.float32)
        / np.asarray(_positive(schan, chan.shape[0], "schan"), np.float32)[:, None]
    )
    return np.ascontiguousarray(np.concatenate([pos, c], axis=0))
