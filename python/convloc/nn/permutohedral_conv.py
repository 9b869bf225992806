"""Learned filters on the permutohedral lattice (Kiefel et al. 2015, "Permutohedral lattice CNNs";
Jampani et al. 2016, "Learning sparse high-dimensional filters": the bilateral convolution layer).

The lattice Gaussian filter of :mod:`convloc.ops.lattice` is splat → blur → slice, the blur being
``x ← x + ½ (x[back] + x[forward])`` along each of the d+1 lattice directions in turn.
:class:`PermutohedralConv` keeps the splat and the slice and learns the blur: along each direction
``j`` it computes ``x ← Σ_{s=-r..r} a[j, s] ⊙ x[s steps along j]`` with per-channel taps ``a``
(initialised to the Gaussian's ``[½, 1, ½]``), then mixes channels with a learned 1×1 matrix.

This is the separable variant of the bilateral convolution layer: Jampani et al. learn one weight
per vertex of a whole lattice neighbourhood, ``(2r+1)^(d+1)`` taps per channel pair (729 for the
5-D bilateral kernel at r = 1), while a separable filter costs ``O(V (d+1) (2r+1) C)`` per layer
(V lattice vertices, ``V ≤ (d+1) N``), the cost of the fixed Gaussian it generalises. It can
represent any product of 1-D filters along the lattice directions (in particular wider, narrower,
skewed or sharpened Gaussians), not an arbitrary neighbourhood.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LatticeTables", "PermutohedralConv", "lattice_conv"]

_NORMALIZATIONS = (None, "none", "after")  # "none": None, as in convloc.ops


class LatticeTables:
    """The lattice(s) of features ``[N, d]`` or ``[B, N, d]`` as torch index tensors, built once
    and reused by every :class:`PermutohedralConv` call on the same points (e.g. across the
    mean-field iterations of a CRF).

    The vertices of all batch items are stacked in one table (item ``b``'s after those of the items
    before it) followed by one zero row that absent neighbours point at, so a batch is filtered in
    one pass. The lattice is built on the CPU (``convloc.ops.PermutohedralLattice``) from the
    features detached: nothing here is differentiable w.r.t. the features.
    """

    def __init__(self, features: Tensor) -> None:
        from convloc.ops import PermutohedralLattice

        if not isinstance(features, Tensor):
            raise TypeError(f"features: expected a torch tensor, got {type(features).__name__}")
        if features.dim() not in (2, 3):
            raise ValueError(f"features: expected shape [N, d] or [B, N, d], got {list(features.shape)}")
        if features.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"features: expected float32 or float64, got {features.dtype}")
        self.batched = features.dim() == 3
        self.device, self._features_dtype = features.device, features.dtype
        f = features.detach().cpu()
        self.items = f.shape[0] if self.batched else 1
        self.num_points, self.dim = f.shape[-2], f.shape[-1]
        self._lattice = PermutohedralLattice(f) if self.items else None
        structures = [self._lattice.structure(b) for b in range(self.items)]
        self.amplitude = float(structures[0]["amplitude"]) if structures else 1.0
        offsets, self._weights, neighbours = _stack(structures, self.dim)
        self.num_vertices = len(neighbours) - 1
        self._offsets = offsets.to(self.device)
        self._steps = [neighbours.to(self.device)]
        self._cache: dict = {}

    def offsets(self) -> Tensor:
        """``[B*N, d+1]`` stacked-vertex indices of each point's enclosing simplex."""
        return self._offsets

    def weights(self, dtype: torch.dtype) -> Tensor:
        """``[B*N, d+1]`` barycentric weights, in ``dtype`` on the features' device."""
        key = ("weights", dtype)
        if key not in self._cache:
            self._cache[key] = self._weights.to(self.device, dtype)
        return self._cache[key]

    def neighbours(self, steps: int) -> Tensor:
        """``[V+1, d+1, 2]``: the vertex ``steps`` steps back (0) and forward (1) along each
        direction, found by walking one step at a time (``V``, the zero row, once a step leaves
        the lattice)."""
        while len(self._steps) < steps:
            one, prev = self._steps[0], self._steps[-1]
            j = torch.arange(self.dim + 1, device=self.device)[None, :, None]
            side = torch.arange(2, device=self.device)[None, None, :]
            self._steps.append(one[prev, j, side])
        return self._steps[steps - 1]

    @torch.no_grad()
    def normalizer(self, dtype: torch.dtype) -> Tensor:
        """``[B*N, 1]``: the lattice Gaussian filter of ones (the "after" normaliser; no learned
        parameters, so it stays positive whatever the taps become), from the lattice's own filter."""
        key = ("normalizer", dtype)
        if key not in self._cache:
            shape = (self.items, self.num_points, 1) if self.batched else (self.num_points, 1)
            ones = torch.ones(shape, dtype=self._features_dtype)
            norm = ones.new_zeros(shape) if self._lattice is None else self._lattice.filter(ones)
            self._cache[key] = norm.reshape(-1, 1).to(self.device, dtype)
        return self._cache[key]

    @torch.no_grad()
    def self_weights(self, dtype: torch.dtype) -> Tensor:
        """``[N, 1]`` or ``[B, N, 1]``: each point's own weight in the lattice Gaussian filter, the
        diagonal that ``exclude_self`` removes in :mod:`convloc.ops.lattice` (from that lattice)."""
        key = ("self", dtype)
        if key not in self._cache:
            shape = (self.items, self.num_points, 1) if self.batched else (self.num_points, 1)
            like = torch.empty(shape, dtype=self._features_dtype)
            diag = like.new_zeros(shape) if self._lattice is None else self._lattice.diagonal(like)
            self._cache[key] = diag.to(self.device, dtype)
        return self._cache[key]


def _stack(structures: list[dict], dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Offsets, weights and neighbours (plus the absent row) of several lattices, their vertices
    numbered one after the other."""
    total = sum(len(s["neighbours"]) for s in structures)
    offsets = [torch.zeros((0, dim + 1), dtype=torch.long)]
    weights = [torch.zeros((0, dim + 1), dtype=torch.float64)]
    neighbours, base = [], 0
    for s in structures:
        v = len(s["neighbours"])
        offsets.append(torch.from_numpy(s["offsets"]).long() + base)
        weights.append(torch.from_numpy(s["weights"]).double())
        nb = torch.from_numpy(s["neighbours"]).long()
        neighbours.append(torch.where(nb == v, total, nb + base))
        base += v
    neighbours.append(torch.full((1, dim + 1, 2), total, dtype=torch.long))  # absent → absent
    return torch.cat(offsets), torch.cat(weights), torch.cat(neighbours)


def gaussian_taps(dim: int, radius: int, channels: int, dtype=None, device=None) -> Tensor:
    """``[d+1, 2r+1, C]`` taps of the lattice Gaussian blur: ``[½, 1, ½]`` around the centre."""
    taps = torch.zeros((dim + 1, 2 * radius + 1, channels), dtype=dtype, device=device)
    taps[:, radius] = 1
    taps[:, radius - 1] = taps[:, radius + 1] = 0.5
    return taps


def lattice_conv(
    values: Tensor, lattice: LatticeTables, taps: Tensor, mixing: Tensor | None = None
) -> Tensor:
    """Splat ``values [B*N, C]`` (points of all items stacked) onto ``lattice``, filter along each
    direction ``j`` with ``taps[j]`` (``[2r+1, C]``, centre at ``r``), mix channels with
    ``mixing [C_out, C]`` if given, slice, times the lattice amplitude → ``[B*N, C_out]``.
    Differentiable w.r.t. values, taps and mixing (index_add / gather)."""
    offsets, weights = lattice.offsets(), lattice.weights(values.dtype)
    c, radius = values.shape[1], (taps.shape[1] - 1) // 2
    splat = (weights[:, :, None] * values[:, None, :]).reshape(-1, c)
    grid = values.new_zeros((lattice.num_vertices + 1, c)).index_add(0, offsets.reshape(-1), splat)
    # Row V stays zero: nothing is splatted there and it only reads itself (V's neighbours are V).
    for j in range(lattice.dim + 1):
        out = taps[j, radius] * grid
        for s in range(1, radius + 1):
            nb = lattice.neighbours(s)[:, j]
            out = out + taps[j, radius - s] * grid[nb[:, 0]] + taps[j, radius + s] * grid[nb[:, 1]]
        grid = out
    if mixing is not None:
        grid = grid @ mixing.T
    return lattice.amplitude * (weights[:, :, None] * grid[offsets]).sum(1)


class PermutohedralConv(nn.Module):
    """A learned filter on the permutohedral lattice of the points' features.

    ``forward(values, features=None, lattice=None) -> [..., N, C_out]`` with

    - points: values ``[N, C_in]`` or ``[B, N, C_in]``, features ``[N, d]`` / ``[B, N, d]``;
    - images (channels first): values ``[B, C_in, H, W]``, features ``[B, d, H, W]`` → output
      ``[B, C_out, H, W]``;

    features already divided by the kernel's standard deviations, as for
    :func:`convloc.ops.permutohedral_filter`. Instead of features, ``lattice`` may be a
    :class:`LatticeTables` built from them (``PermutohedralConv.build(features)``), to filter the
    same points many times with one lattice build. The features only place the points on the
    lattice: **they get no gradient** (values, taps, mixing and bias do).

    Args:
        in_channels, out_channels: C_in, C_out.
        feature_dim: d, the dimension of the features (the filter has taps for d+1 directions).
        radius: r, taps per direction reach r lattice steps each way (a step further than an
            absent neighbour reads zero).
        normalization: None, or ``"after"``: divide by the lattice Gaussian filter of ones (fixed,
            not learned: a density normaliser that learning cannot drive to zero).
        bias: add a learned per-output-channel bias (zero-initialised).

    Initialisation: taps ``[½, 1, ½]`` (zero beyond one step), mixing the identity when
    ``C_in == C_out`` (``nn.Linear``'s initialisation otherwise), so that a square layer equals
    ``convloc.ops.PermutohedralLattice(features).filter(values, normalization=normalization)``.
    Parameters: ``taps [d+1, 2r+1, C_in]``, ``mixing [C_out, C_in]``, ``bias [C_out]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        feature_dim: int,
        radius: int = 1,
        normalization: str | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("out_channels", out_channels, 1),
            ("feature_dim", feature_dim, 1),
            ("radius", radius, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"normalization: expected None, 'none' or 'after', got {normalization!r}")
        normalization = None if normalization == "none" else normalization
        self.in_channels, self.out_channels = in_channels, out_channels
        self.feature_dim, self.radius, self.normalization = feature_dim, radius, normalization
        self.taps = nn.Parameter(gaussian_taps(feature_dim, radius, in_channels))
        self.mixing = nn.Parameter(torch.empty(out_channels, in_channels))
        if in_channels == out_channels:
            nn.init.eye_(self.mixing)
        else:
            nn.init.kaiming_uniform_(self.mixing, a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    @staticmethod
    def build(features: Tensor) -> LatticeTables:
        """The lattice of features ``[N, d]``, ``[B, N, d]`` or ``[B, d, H, W]``, for ``lattice=``."""
        if isinstance(features, Tensor) and features.dim() == 4:
            features = features.flatten(2).transpose(1, 2)
        return LatticeTables(features)

    def forward(
        self, values: Tensor, features: Tensor | None = None, lattice: LatticeTables | None = None
    ) -> Tensor:
        if (features is None) == (lattice is None):
            raise ValueError("features: pass exactly one of features and lattice")
        if not isinstance(values, Tensor):
            raise TypeError(f"values: expected a torch tensor, got {type(values).__name__}")
        if values.dtype != self.taps.dtype:
            raise TypeError(f"values: dtype {values.dtype} differs from the layer's {self.taps.dtype}")
        image = values.dim() == 4
        if values.dim() not in (2, 3, 4) or values.shape[-3 if image else -1] != self.in_channels:
            layout = "[N, C_in], [B, N, C_in] or [B, C_in, H, W]"
            raise ValueError(
                f"values: expected {layout} with C_in = {self.in_channels}, got {list(values.shape)}"
            )
        points = values.flatten(2).transpose(1, 2) if image else values
        if lattice is None:
            if image and not (
                isinstance(features, Tensor)
                and features.dim() == 4
                and features.shape[-2:] == values.shape[-2:]
            ):
                got = list(features.shape) if isinstance(features, Tensor) else type(features).__name__
                raise ValueError(
                    f"features: expected [B, d, H, W] matching values {list(values.shape)}, got {got}"
                )
            lattice = self.build(features)
        expected = (points.shape[0], points.shape[1]) if points.dim() == 3 else (points.shape[0],)
        got = (lattice.items, lattice.num_points) if lattice.batched else (lattice.num_points,)
        if got != expected or lattice.dim != self.feature_dim:
            raise ValueError(
                f"features: expected {'B, N' if len(expected) == 2 else 'N'} = {list(expected)} and "
                f"d = {self.feature_dim} like values, got {list(got)} points of dimension {lattice.dim}"
            )
        if lattice.device != values.device:
            raise ValueError(f"features: on {lattice.device}, values on {values.device}")
        flat = points.reshape(-1, self.in_channels)
        out = lattice_conv(flat, lattice, self.taps, self.mixing)
        if self.normalization == "after":
            out = out / lattice.normalizer(out.dtype)
        if self.bias is not None:
            out = out + self.bias
        out = out.reshape(points.shape[:-1] + (self.out_channels,))
        if image:
            out = out.transpose(1, 2).reshape((values.shape[0], self.out_channels) + values.shape[-2:])
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, feature_dim={self.feature_dim}, radius={self.radius}, "
            f"normalization={self.normalization!r}, bias={self.bias is not None}"
        )
