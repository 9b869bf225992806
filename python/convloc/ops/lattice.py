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

import numpy as np

from convloc._kernels import arrays as A
from convloc._kernels import lattice as kernels
from convloc._kernels.args import integer, number
from convloc._kernels.arrays import Array
from convloc.ops._tracing import fx_leaf

__all__ = ["PermutohedralLattice", "permutohedral_filter", "bilateral_filter"]

NORMALIZATIONS = (None, "none", "before", "after", "symmetric")
_EPS = 1e-20  # added to the normalisers, as pydensecrf does
_ISOLATED = 1e-5  # total kernel weight below which a point counts as having no neighbours


def check_normalization(normalization: str | None) -> None:
    """ValueError unless normalization is one of :data:`NORMALIZATIONS`."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            "normalization: expected one of None, 'none', 'before', 'after', 'symmetric', "
            f"got {normalization!r}"
        )


def _normalized(filt, values: Array, normalization: str | None, transpose: bool) -> Array:
    """pydensecrf's normalisations around ``filt(v, transpose)`` (the raw filter, A or Aᵀ)."""
    if normalization in (None, "none"):
        return filt(values, transpose)
    if values.ndim < 2:  # (the filter's own check comes after the slice below)
        raise ValueError(f"values: expected shape [N, C] or [B, N, C], got {list(values.shape)}")
    raw = filt(A.namespace(values).ones_like(values[..., :1]), False)
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


class PermutohedralLattice(kernels.Lattice):
    """Lattices built once from features and filtered many times (no hashing per filtering).

    Args:
        features: [N, d] or [B, N, d] float32/float64 CPU array (NumPy or torch; float16 and
            bfloat16 ones are built in float32), finite, already divided by the kernel's standard
            deviations; 1 <= d <= 32. [B, N, d] builds B independent lattices in parallel.

    ``filter`` takes values of the same dtype (float16/bfloat16 ones filtered in float32), [N, C]
    (or [B, N, C]), NumPy or torch, and returns the same kind. torch values get gradients through the exact transpose (features are fixed here:
    use :func:`permutohedral_filter` or ``convloc.nn.PermutohedralFilter`` for feature gradients).
    JAX arrays use :func:`permutohedral_filter`, which builds its lattice inside the compiled call.
    """

    def __init__(self, features: Array):
        features = A.as_array(features, "features")
        _no_jax(features, "features")
        super().__init__(features)

    @A.accepts_any_framework
    def filter(
        self,
        values: Array,
        transpose: bool = False,
        normalization: str | None = None,
        exclude_self: bool = False,
    ) -> Array:
        """Gaussian filtering of values [N, C] / [B, N, C] → same shape (see the module doc)."""
        check_normalization(normalization)
        values = A.as_array(values, "values")
        _no_jax(values, "values")
        # Half values: the normalisations too in float32, rounded once at the end.
        half, (values,) = A.float32_for_half(("values", values))
        if A.is_torch(values) and values.requires_grad:
            from convloc._torch.lattice import lattice_filter_autograd

            raw = lambda v, t: lattice_filter_autograd(self, v, t, exclude_self)  # noqa: E731
        else:
            raw = lambda v, t: self.raw(v, t, exclude_self)  # noqa: E731
        return A.restore_half(_normalized(raw, values, normalization, transpose), half)


@fx_leaf
@A.accepts_any_framework
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
        values: [N, C] or [B, N, C] float32/float64, or float16/bfloat16 (filtered in float32,
        returned in their dtype). features: [N, d] or [B, N, d], same dtype and device, finite,
        divided by the standard deviations. normalization: None/"none", "before",
        "after" or "symmetric" (pydensecrf's meanings). exclude_self: filter with ``j ≠ i`` only.
        transpose: the exact adjoint.

    Returns:
        Same shape and kind as values. With torch tensors this is the registered op
        ``convloc::permutohedral_filter``: differentiable w.r.t. values (exact transpose) and
        features (the exact Gaussian's feature gradient, evaluated with lattice filterings),
        torch.compile-able; with JAX arrays an XLA FFI target with the same gradients (``jax.jit``,
        ``jax.grad``, ``vmap``). CUDA arrays run the CUDA lattice.
    """
    check_normalization(normalization)
    values, features = A.as_array(values, "values"), A.as_array(features, "features")
    A.same_framework(("values", values), ("features", features))
    # Half values: the normalisations too in float32, rounded once at the end.
    half, (values, features) = A.float32_for_half(("values", values), ("features", features))
    if A.is_jax(values, features):
        import jax.numpy as jnp

        from convloc._jax.lattice import permutohedral_filter as jax_op

        values, features = jnp.asarray(values), jnp.asarray(features)
        raw = lambda v, t: jax_op(v, features, t, exclude_self)  # noqa: E731
        return A.restore_half(_normalized(raw, values, normalization, transpose), half)
    if A.is_torch(values):
        from convloc._torch.lattice import permutohedral_filter as op

        raw = lambda v, t: op(v, features, t, exclude_self)  # noqa: E731
    elif A.is_cupy(values):
        raw = lambda v, t: kernels.filter(v, features, t, exclude_self)  # noqa: E731
    else:
        lattice = PermutohedralLattice(features)
        raw = lambda v, t: lattice.raw(v, t, exclude_self)  # noqa: E731
    return A.restore_half(_normalized(raw, values, normalization, transpose), half)


@fx_leaf
@A.accepts_any_framework
def bilateral_filter(
    image: Array, sigma_spatial: float, sigma_color: float, *, channel_axis: int = -1
) -> Array:
    """Edge-preserving bilateral filter of an image (Gaussian in (x, y, colour), normalised).

    ``out(p) = Σ_q w(p, q) I(q) / Σ_q w(p, q)`` with ``w = exp(-|p − q|² / 2σ_s² − |I(p) − I(q)|² /
    2σ_c²)``, computed on a lattice of dimension 2 + channels.

    Args:
        image: [H, W] or an image with a channel axis (default last: [H, W, C], up to 30
            channels: the lattice has 32 dimensions, two for the position), uint8 or float.
            Colour distances are measured in the image's own units (0–255 for uint8).
        sigma_spatial: spatial standard deviation in pixels (> 0).
        sigma_color: colour standard deviation (> 0). The image's extent in standard deviations
            (its size / sigma_spatial plus its value range / sigma_color) must stay below about 10^7.
        channel_axis: where the channels are for 3-D images (e.g. 0 for torch's [C, H, W]).

    Returns:
        The filtered image, same shape, dtype and kind (integer images are rounded and clipped to
        their dtype's range).
    """
    image = A.as_array(image, "image")
    sigma_spatial = number(sigma_spatial, "sigma_spatial")
    sigma_color = number(sigma_color, "sigma_color")
    if not sigma_spatial > 0:
        raise ValueError(f"sigma_spatial: expected a positive number, got {sigma_spatial}")
    if not sigma_color > 0:
        raise ValueError(f"sigma_color: expected a positive number, got {sigma_color}")
    if image.ndim not in (2, 3):
        raise ValueError(f"image: expected shape [H, W] or [H, W, C], got {tuple(image.shape)}")
    xp = A.namespace(image)
    dtype = A.dtype_name(image)
    if dtype.startswith("complex") or dtype in ("bool", "object"):
        raise TypeError(f"image: expected a real image, got dtype {dtype}")
    # float32 holds 8- and 16-bit integers exactly, float64 the 32-bit ones
    work = "float64" if dtype in ("float64", "int32", "uint32", "int64", "uint64") else "float32"
    img = image if image.ndim == 3 else image[..., None]
    if image.ndim == 3:
        img = xp.moveaxis(img, integer(channel_axis, "channel_axis", -3, 2), -1)
    img = A.prepare(img, work)
    h, w, c = img.shape
    if c + 2 > kernels.MAX_DIM:
        raise ValueError(
            f"image: expected at most {kernels.MAX_DIM - 2} channels (the lattice's {kernels.MAX_DIM} "
            f"dimensions less 2 for the position), got {c}"
        )
    if h * w == 0 or c == 0:
        return image.copy() if not A.is_torch(image) else image.clone()
    traced = A.is_traced(img)  # (then the lattice's own checks below are the kernel's)
    if not traced and not bool(xp.isfinite(img).all()):
        raise ValueError("image: expected finite values, got NaN or inf")
    yy, xx = xp.meshgrid(xp.arange(h), xp.arange(w), indexing="ij")
    pos = xp.stack([xx, yy], -1)
    pos = A.prepare(pos, work)
    # Colours from each channel's minimum: the kernel is the same, and the lattice (whose coordinates
    # are bounded) then takes any image whose value range, not magnitude, fits.
    colours = (img - xp.amin(img.reshape(h * w, c), 0)) / sigma_color
    with np.errstate(over="ignore", divide="ignore"):  # (tiny sigmas: refused below)
        features = A.prepare(xp.concatenate([pos / sigma_spatial, colours], -1).reshape(h * w, c + 2), work)
    reach = 0.0 if traced else float(xp.abs(features).sum(-1).max())
    limit = kernels.max_feature_sum(c + 2)
    if not reach < limit:
        raise ValueError(
            f"sigma_spatial, sigma_color: too small for this image: it spans {reach:.3g} standard "
            f"deviations (its size / sigma_spatial plus its value range / sigma_color), beyond the lattice's "
            f"{limit:.3g}"
        )
    out = permutohedral_filter(img.reshape(h * w, c), features, normalization="after").reshape(h, w, c)
    if image.ndim == 2:
        out = out[..., 0]
    else:
        out = xp.moveaxis(out, -1, channel_axis)
    if dtype.startswith(("int", "uint")):  # rounded, and clipped below the largest value that casts
        limits = np.iinfo(dtype)
        top = np.asarray(limits.max, work)
        if int(top) > limits.max:  # (int32's and int64's largest round up in float)
            top = np.nextafter(top, np.asarray(0, work))
        out = xp.clip(xp.round(out), float(limits.min), float(top))
    return A.prepare(out, dtype)


def _no_jax(x: Array, name: str) -> None:
    if A.is_jax(x):
        raise TypeError(
            f"{name}: PermutohedralLattice holds a lattice for NumPy and torch arrays; with JAX use "
            "ops.permutohedral_filter, which builds its lattice inside the compiled call"
        )
