"""High-dimensional Gaussian filtering on the permutohedral lattice (Adams, Baek & Davis 2010).

``out_i ≈ Σ_j exp(-½‖f_i − f_j‖²) v_j`` for features ``f`` [N, d] (already divided by the kernel's
standard deviations) and values ``v`` [N, C], in O(N (d+1) C) per filtering instead of O(N² C).

Normalisations (``normalization=``), with Krähenbühl's (pydensecrf's) meanings; ``A`` is the lattice
filter and ``n = A·1`` (computed with the non-transposed lattice):

- ``None`` or ``"none"``: ``A v`` (pydensecrf's NO_NORMALIZATION: the raw filter);
- ``"before"``: ``A (v / n)``; ``"after"``: ``(A v) / n``; ``"symmetric"``: ``n^-½ ⊙ A (n^-½ ⊙ v)``.

With ``transpose=True`` each mode gives the exact adjoint of the non-transposed one.
``exclude_self=True`` filters with ``A − diag(A)`` (the ``j ≠ i`` of a mean-field update: each
point's own weight in the lattice, which approximates ``exp(0) = 1``, is removed, so nothing goes
negative), and the normalisers become ``(A − diag(A))·1``.

Accuracy (relative L2 error against exact O(N²) filtering, see tests/test_lattice.py): about 1 % for
a 2-D Gaussian (σ = 3 px) on image grids; for the 5-D bilateral kernel (σ_xy = 80, σ_rgb = 13) on
natural images 0.4–0.8 % ("after"), 2.5–3 % ("symmetric"), 5 % ("before") — identical to
pydensecrf's lattice, whose outputs ours match up to a global factor. The raw filter underestimates
sparse high-dimensional data (about −20 % on that 5-D kernel; pydensecrf: −45 %) because the blur
drops mass into vertices that do not exist; on dense data it is unbiased.
"""

from __future__ import annotations

from typing import Any

from convloc import _C
from convloc import _bridge as B
from convloc._bridge import Array

__all__ = ["PermutohedralLattice", "permutohedral_filter", "bilateral_filter"]

_NORMALIZATIONS = (None, "none", "before", "after", "symmetric")
_EPS = 1e-20  # added to the normalisers, as pydensecrf does
_ISOLATED = 1e-5  # total kernel weight below which a point counts as having no neighbours


def _check_normalization(normalization: str | None) -> None:
    if normalization not in _NORMALIZATIONS:
        raise ValueError(
            "normalization: expected one of None, 'none', 'before', 'after', 'symmetric', "
            f"got {normalization!r}"
        )


def _normalized(filt, values: Array, normalization: str | None, transpose: bool) -> Array:
    """pydensecrf's normalisations around ``filt(v, transpose)`` (the raw filter, A or Aᵀ)."""
    if normalization in (None, "none"):
        return filt(values, transpose)
    ones = B.empty(values, values.shape[:-1] + (1,))
    ones[...] = 1
    raw = filt(ones, False)
    # A point whose kernel weight from the others is below _ISOLATED (only possible with
    # exclude_self) has no neighbours: it sends and receives nothing, instead of dividing
    # rounding noise by a normaliser that rounding may make 0 or negative.
    connected = raw > _ISOLATED
    norm = raw * connected + (~connected) + _EPS
    if normalization == "symmetric":
        s = connected * norm**-0.5
        return s * filt(values * s, transpose)
    if (normalization == "before") != transpose:
        return filt(values * (connected / norm), transpose)
    return filt(values, transpose) * (connected / norm)


class PermutohedralLattice:
    """Lattices built once from features and filtered many times (no hashing per filtering).

    Args:
        features: [N, d] or [B, N, d] float32/float64 CPU array (NumPy or torch), finite, already
        divided
            by the kernel's standard deviations; 1 <= d <= 32. [B, N, d] builds B independent
            lattices in parallel.

    ``filter`` takes values of the same dtype, [N, C] (or [B, N, C]), NumPy or torch, and returns
    the same kind. torch values get gradients through the exact transpose (features are fixed here:
    use :func:`permutohedral_filter` or ``convloc.nn.PermutohedralFilter`` for feature gradients).
    """

    def __init__(self, features: Array):
        features = B.as_array(features, "features")
        self._lattice = _C.PermutohedralLattice(B.prepare(features))
        self._diag: dict[str, Array] = {}

    @property
    def num_vertices(self) -> int | list[int]:
        """Lattice vertices (a list with one count per batch item for batched features)."""
        v = self._lattice.num_vertices
        return v if self._lattice.batched else v[0]

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the lattice(s) now: slice weights and offsets, blur neighbours, and the
        splat tables that the first :meth:`filter` builds."""
        return sum(self._lattice.memory_bytes)

    @property
    def num_points(self) -> int:
        return self._lattice.num_points

    @property
    def dim(self) -> int:
        return self._lattice.dim

    def structure(self, item: int = 0) -> dict[str, Any]:
        """The lattice of batch item ``item`` as NumPy arrays, for filters learned on it.

        Returns a dict: ``offsets`` [N, d+1] int32, the vertices of each point's enclosing simplex;
        ``weights`` [N, d+1], its barycentric weights (they sum to 1); ``neighbours`` [V, d+1, 2]
        int32, each vertex's neighbour one step back (0) and forward (1) along each of the d+1
        lattice directions, V where the lattice has no such vertex; ``amplitude``, the factor that
        makes splat → [1 2 1]/2 blur along every direction → slice approximate the Gaussian sum.
        """
        return self._lattice.structure(int(item))

    def filter(
        self,
        values: Array,
        transpose: bool = False,
        normalization: str | None = None,
        exclude_self: bool = False,
    ) -> Array:
        """Gaussian filtering of values [N, C] / [B, N, C] → same shape (see the module doc)."""
        _check_normalization(normalization)
        values = B.as_array(values, "values")
        if B.is_torch(values) and values.requires_grad:
            from convloc.nn.lattice import lattice_filter_autograd

            raw = lambda v, t: lattice_filter_autograd(self, v, t, exclude_self)  # noqa: E731
        else:
            raw = lambda v, t: self._raw(v, t, exclude_self)  # noqa: E731
        return _normalized(raw, values, normalization, transpose)

    def _raw(self, values: Array, transpose: bool, exclude_self: bool) -> Array:
        values = B.prepare(values)
        out = B.empty(values, tuple(values.shape))
        self._lattice.filter(values, out, transpose=bool(transpose))
        if exclude_self:
            out -= self.diagonal(values) * values
        return out

    def diagonal(self, like: Array) -> Array:
        """Each point's own weight in the raw filter, ``[B?, N, 1]``, in ``like``'s framework
        (computed once per framework): what ``filter`` adds of ``v_i`` to ``out_i``, the lattice's
        approximation of ``exp(0) = 1``; ``exclude_self`` subtracts ``diagonal * values``."""
        key = B.framework(like)
        if key not in self._diag:
            diag = B.empty(like, tuple(like.shape[:-1]))
            self._lattice.diagonal(diag)
            self._diag[key] = diag[..., None]
        return self._diag[key]


def permutohedral_filter(
    values: Array,
    features: Array,
    *,
    normalization: str | None = None,
    exclude_self: bool = False,
    transpose: bool = False,
) -> Array:
    """Gaussian filtering of values by features on a lattice built for this call.

    Args:
        values: [N, C] or [B, N, C] float32/float64. features: [N, d] or [B, N, d], same dtype and
        device, finite, divided by the standard deviations. normalization: None/"none", "before",
        "after" or "symmetric" (pydensecrf's meanings). exclude_self: filter with ``j ≠ i`` only.
        transpose: the exact adjoint.

    Returns:
        Same shape and kind as values. With torch tensors this is the registered op
        ``convloc::permutohedral_filter``: differentiable w.r.t. values (exact transpose) and
        features (the exact Gaussian's feature gradient, evaluated with lattice filterings),
        torch.compile-able. CUDA tensors run the CUDA lattice.
    """
    _check_normalization(normalization)
    values, features = B.as_array(values, "values"), B.as_array(features, "features")
    B.same_framework(("values", values), ("features", features))
    if B.is_torch(values):
        op = B.torch_op("permutohedral_filter")
        raw = lambda v, t: op(v, features, t, exclude_self)  # noqa: E731
        return _normalized(raw, values, normalization, transpose)
    if B.is_cupy(values):
        raw = lambda v, t: _filter(v, features, t, exclude_self)  # noqa: E731
        return _normalized(raw, values, normalization, transpose)
    return PermutohedralLattice(features).filter(values, transpose, normalization, exclude_self)


def bilateral_filter(
    image: Array, sigma_spatial: float, sigma_color: float, *, channel_axis: int = -1
) -> Array:
    """Edge-preserving bilateral filter of an image (Gaussian in (x, y, colour), normalised).

    ``out(p) = Σ_q w(p, q) I(q) / Σ_q w(p, q)`` with ``w = exp(-|p − q|² / 2σ_s² − |I(p) − I(q)|² /
    2σ_c²)``, computed on a lattice of dimension 2 + channels.

    Args:
        image: [H, W] or an image with a channel axis (default last: [H, W, C]; any channel count),
            uint8 or float. Colour distances are measured in the image's own units (0–255 for
            uint8).
        sigma_spatial: spatial standard deviation in pixels (> 0).
        sigma_color: colour standard deviation (> 0).
        channel_axis: where the channels are for 3-D images (e.g. 0 for torch's [C, H, W]).

    Returns:
        The filtered image, same shape, dtype and kind (uint8 is rounded and clipped).
    """
    image = B.as_array(image, "image")
    sigma_spatial = B.as_float(sigma_spatial, "sigma_spatial")
    sigma_color = B.as_float(sigma_color, "sigma_color")
    if not sigma_spatial > 0:
        raise ValueError(f"sigma_spatial: expected a positive number, got {sigma_spatial}")
    if not sigma_color > 0:
        raise ValueError(f"sigma_color: expected a positive number, got {sigma_color}")
    if image.ndim not in (2, 3):
        raise ValueError(f"image: expected shape [H, W] or [H, W, C], got {tuple(image.shape)}")
    xp = _namespace(image)
    dtype = B.dtype_name(image)
    if dtype.startswith("complex") or dtype in ("bool", "object"):
        raise TypeError(f"image: expected a real image, got dtype {dtype}")
    work = "float64" if dtype == "float64" else "float32"
    img = image if image.ndim == 3 else image[..., None]
    if image.ndim == 3:
        if isinstance(channel_axis, bool) or not -3 <= channel_axis < 3:
            raise ValueError(f"channel_axis: expected an axis of a 3-D image (-3..2), got {channel_axis!r}")
        img = xp.moveaxis(img, channel_axis, -1)
    img = B.prepare(img, work)
    h, w, c = img.shape
    if h * w == 0 or c == 0:
        return image.copy() if not B.is_torch(image) else image.clone()
    yy, xx = xp.meshgrid(xp.arange(h), xp.arange(w), indexing="ij")
    pos = xp.stack([xx, yy], -1)
    pos = B.prepare(pos, work)
    features = B.prepare(
        xp.concatenate([pos / sigma_spatial, img / sigma_color], -1).reshape(h * w, c + 2), work
    )
    out = permutohedral_filter(img.reshape(h * w, c), features, normalization="after").reshape(h, w, c)
    if image.ndim == 2:
        out = out[..., 0]
    else:
        out = xp.moveaxis(out, -1, channel_axis)
    if dtype == "uint8":
        out = xp.clip(xp.round(out), 0, 255)
    return B.prepare(out, dtype)


def _namespace(x: Array):
    if B.is_torch(x):
        import torch

        return torch
    if B.is_cupy(x):
        import cupy

        return cupy
    import numpy

    return numpy


# Framework-generic implementations; the torch ops in convloc.nn call these too.


def _filter(values: Array, features: Array, transpose: bool, exclude_self: bool) -> Array:
    """Raw filtering (A or Aᵀ; minus the diagonal with exclude_self) on a lattice built here."""
    values, features = B.prepare(values), B.prepare(features)
    out = B.empty(values, tuple(values.shape))
    _C.permutohedral_filter(
        features,
        values,
        out,
        transpose=bool(transpose),
        exclude_self=bool(exclude_self),
        stream=B.stream(values),
    )
    return out


def _filter_backward(
    grad: Array,
    values: Array,
    features: Array,
    transpose: bool,
    exclude_self: bool,
    need_features: bool,
) -> tuple[Array, Array | None]:
    """Gradients of ``_filter`` w.r.t. values (the exact adjoint) and, if asked, features.

    For the exact Gaussian ``k_ij = exp(-½‖f_i − f_j‖²)``, ``∂k_ij/∂f_i = −k_ij (f_i − f_j)``, so
    with ``g = ∂L/∂out`` and filterings by K (output side) and Kᵀ (input side):

        ∂L/∂f_ia = −f_ia (g_i·(K v)_i + v_i·(Kᵀ g)_i) + Σ_c g_ic (K (f_a v_c))_i + Σ_c v_ic (Kᵀ (f_a
        g_c))_i

    K is replaced by the lattice (A, or Aᵀ when transposed): two filterings of C (d + 1) channels.
    The self term (exp(0) = 1) has no feature gradient, so exclude_self does not change it; the
    values gradient subtracts the same diagonal as the forward pass.
    """
    grad, values, features = B.prepare(grad), B.prepare(values), B.prepare(features)
    xp = _namespace(values)
    # On the CPU one lattice serves every filtering here; the CUDA path builds per call.
    lattice = PermutohedralLattice(features) if _on_cpu(values) else None

    def filt(x, t, exclude):
        return lattice._raw(x, t, exclude) if lattice else _filter(x, features, t, exclude)

    if not need_features:
        return filt(grad, not transpose, exclude_self), None
    c = values.shape[-1]

    def augmented(x):  # [..., N, C] → [..., N, C (d + 1)]: x, then f_a x for each a
        fx = features[..., :, None] * x[..., None, :]
        return B.prepare(xp.concatenate([x, fx.reshape(fx.shape[:-2] + (-1,))], -1))

    fwd = filt(augmented(values), transpose, False)
    adj = filt(augmented(grad), not transpose, False)
    av, afv = fwd[..., :c], fwd[..., c:].reshape(features.shape + (c,))
    ag, afg = adj[..., :c], adj[..., c:].reshape(features.shape + (c,))
    gf = (afv * grad[..., None, :]).sum(-1) + (afg * values[..., None, :]).sum(-1)
    gf -= features * ((grad * av).sum(-1) + (values * ag).sum(-1))[..., None]
    if exclude_self:
        ag = ag - lattice.diagonal(grad) * grad if lattice else filt(grad, not transpose, True)
    return B.prepare(ag), B.prepare(gf)


def _on_cpu(x: Array) -> bool:
    return not B.is_cupy(x) and not (B.is_torch(x) and x.is_cuda)
