"""Permutohedral-lattice kernels: lattices built once and filtered many times, filtering on a
lattice built per call, and the gradients of that filtering. float16 / bfloat16 values and
features are filtered in float32 (converted once per call; the lattice's work per value dwarfs the
conversion) and the results come back in their dtype."""

from __future__ import annotations

from typing import Any

import convloc._C as _C
from convloc._kernels import arrays as A
from convloc._kernels.arrays import Array

MAX_DIM: int = _C.LATTICE_MAX_DIM  # features per point


def max_feature_sum(d: int) -> float:
    """The most sum_k |f_k| may be for every point of ``d`` features to fit the lattice."""
    return _C.lattice_max_feature_sum(d)


class Lattice:
    """The lattice(s) of features [N, d] or [B, N, d] (CPU), and the raw filter ``A`` on them."""

    def __init__(self, features: Array):
        _, (features,) = A.float32_for_half(("features", features))
        self._lattice = _C.PermutohedralLattice(A.prepare(features))
        self._diag: dict[str, Array] = {}

    @property
    def num_vertices(self) -> int | list[int]:
        """Lattice vertices (a list with one count per batch item for batched features)."""
        v = self._lattice.num_vertices
        return v if self._lattice.batched else v[0]

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the lattice(s) now: slice weights and offsets, blur neighbours, and the
        splat tables that the first filtering builds."""
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

    def raw(self, values: Array, transpose: bool, exclude_self: bool) -> Array:
        """``A v`` (or ``Aᵀ v``), minus each point's own weight with exclude_self."""
        half, (values,) = A.float32_for_half(("values", values))
        values = A.prepare(values)
        out = A.empty(values, tuple(values.shape))
        self._lattice.filter(values, out, transpose=bool(transpose))
        if exclude_self:
            out -= self.diagonal(values) * values
        return A.restore_half(out, half)

    def diagonal(self, like: Array) -> Array:
        """Each point's own weight in the raw filter, ``[B?, N, 1]``, in ``like``'s framework and
        the lattice's dtype (computed once per framework): what the filter adds of ``v_i`` to
        ``out_i``, the lattice's approximation of ``exp(0) = 1``; ``exclude_self`` subtracts
        ``diagonal * values``."""
        key = A.framework(like)
        if key not in self._diag:
            diag = A.empty(like, tuple(like.shape[:-1]), self._lattice.dtype)
            self._lattice.diagonal(diag)
            self._diag[key] = diag[..., None]
        return self._diag[key]


def filter(values: Array, features: Array, transpose: bool, exclude_self: bool) -> Array:
    """Raw filtering (A or Aᵀ; minus the diagonal with exclude_self) on a lattice built here."""
    half, (values, features) = A.float32_for_half(("values", values), ("features", features))
    values, features = A.prepare(values), A.prepare(features)
    out = A.empty(values, tuple(values.shape))
    _C.permutohedral_filter(
        features,
        values,
        out,
        transpose=bool(transpose),
        exclude_self=bool(exclude_self),
        stream=A.stream(values),
    )
    return A.restore_half(out, half)


def filter_backward(
    grad: Array,
    values: Array,
    features: Array,
    transpose: bool,
    exclude_self: bool,
    need_features: bool,
) -> tuple[Array, Array | None]:
    """Gradients of :func:`filter` w.r.t. values (the exact adjoint) and, if asked, features
    (:func:`gradients`)."""
    half, (grad, values, features) = A.float32_for_half(
        ("grad", grad), ("values", values), ("features", features)
    )
    grad, values, features = A.prepare(grad), A.prepare(values), A.prepare(features)
    # On the CPU one lattice serves every filtering here; the CUDA path builds per call.
    lattice = Lattice(features) if A.on_cpu(values) else None

    def filt(x, t, exclude):
        return lattice.raw(x, t, exclude) if lattice else filter(x, features, t, exclude)

    if not need_features:
        return A.restore_half(filt(grad, not transpose, exclude_self), half), None
    diagonal = lattice.diagonal if lattice else None
    gv, gf = gradients(filt, grad, values, features, transpose, exclude_self, diagonal)
    return A.restore_half(A.prepare(gv), half), A.restore_half(A.prepare(gf), half)


def gradients(
    filt, grad: Array, values: Array, features: Array, transpose: bool, exclude_self: bool, diagonal=None
):
    """(∂L/∂values, ∂L/∂features) of ``out = filt(values, transpose, exclude_self)``, the raw filter on
    the lattice of features, given ``grad = ∂L/∂out``; any framework (``filt(x, transpose,
    exclude_self)`` filters x of that framework). ``diagonal(like)``, where given, is each point's own
    weight ([..., N, 1]): exclude_self then subtracts it instead of filtering once more.

    For the exact Gaussian ``k_ij = exp(-½‖f_i − f_j‖²)``, ``∂k_ij/∂f_i = −k_ij (f_i − f_j)``, so
    with ``g = ∂L/∂out`` and filterings by K (output side) and Kᵀ (input side):

        ∂L/∂f_ia = −f_ia (g_i·(K v)_i + v_i·(Kᵀ g)_i) + Σ_c g_ic (K (f_a v_c))_i + Σ_c v_ic (Kᵀ (f_a
        g_c))_i

    K is replaced by the lattice (A, or Aᵀ when transposed): two filterings of C (d + 1) channels.
    The self term (exp(0) = 1) has no feature gradient, so exclude_self does not change it; the
    values gradient subtracts the same diagonal as the forward pass.
    """
    xp = A.namespace(values)
    c = values.shape[-1]

    def augmented(x):  # [..., N, C] → [..., N, C (d + 1)]: x, then f_a x for each a
        fx = features[..., :, None] * x[..., None, :]
        return xp.concatenate([x, fx.reshape(fx.shape[:-2] + (-1,))], -1)

    fwd = filt(augmented(values), transpose, False)
    adj = filt(augmented(grad), not transpose, False)
    av, afv = fwd[..., :c], fwd[..., c:].reshape(features.shape + (c,))
    ag, afg = adj[..., :c], adj[..., c:].reshape(features.shape + (c,))
    gf = (afv * grad[..., None, :]).sum(-1) + (afg * values[..., None, :]).sum(-1)
    gf = gf - features * ((grad * av).sum(-1) + (values * ag).sum(-1))[..., None]
    if exclude_self:
        ag = ag - diagonal(grad) * grad if diagonal else filt(grad, not transpose, True)
    return ag, gf
