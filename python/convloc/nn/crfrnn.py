"""CRF-as-RNN (Zheng et al. 2015): mean-field inference of a fully connected CRF with Gaussian
edge potentials (Kraehenbuehl & Koltun 2011), unrolled as recurrent steps and trained end to end.

One step, with Q = softmax(logits) of shape [L, N] over the N pixels:
    m_k      = sum_{j != i} k_k(f_i, f_j) Q_j       Gaussian filtering (k: spatial, bilateral)
    pairwise = mu @ (w_spatial * m_spatial + w_bilateral * m_bilateral)
    logits   = unary - pairwise
with per-label kernel weights w, a label compatibility mu (initialised to Potts, 1 - identity)
and features f = position / theta_gamma (spatial) and (position / theta_alpha, rgb / theta_beta)
(bilateral). The filter is convloc's permutohedral lattice (O(N), approximate) or exact
Gaussian filtering (O(N^2), for tiny images and gradient checks); both are differentiable w.r.t.
the values and the features, so the unary, the image and every parameter get gradients.

``filter="learned"`` (the "learned CRF" of Kiefel et al. 2015 / Jampani et al. 2016) replaces
both Gaussians by :class:`convloc.nn.PermutohedralConv` layers on the same lattices, initialised
to them: ``m_k = conv_k(Q) - D_k Q``, with ``D_k`` the Gaussian's own (self) weight: ``j != i``
holds at initialisation; once the filters learn, ``conv_k`` carries a learned self-weight that
``D_k`` (fixed) no longer cancels exactly. The lattices are built
once per forward and reused by every iteration; the image then only places the pixels on them
(no gradient to the image or the kernel widths).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from convloc.nn.permutohedral_conv import LatticeTables, PermutohedralConv

GAUSSIAN_FILTERS = ("lattice", "exact")
FILTERS = GAUSSIAN_FILTERS + ("learned",)


def gaussian_filter_exact(values: Tensor, features: Tensor) -> Tensor:
    """``out[i] = sum_{j != i} exp(-|f_i - f_j|^2 / 2) values[j]`` for values ``[N, C]``,
    features ``[N, D]``."""
    sq = (features * features).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * features @ features.T).clamp_min(0)
    return torch.exp(-0.5 * d2) @ values - values


def gaussian_filter_lattice(values: Tensor, features: Tensor) -> Tensor:
    """The same filtering through convloc's permutohedral lattice (approximate, O(N))."""
    from convloc.ops import permutohedral_filter

    return permutohedral_filter(values, features, exclude_self=True)


def pixel_features(image: Tensor, spatial_width: Tensor, colour_width: Tensor | None) -> Tensor:
    """``[H*W, 2]`` positions / width, or ``[H*W, 5]`` with the colours of ``image [3, H, W]``
    / colour width."""
    h, w = image.shape[-2:]
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=image.dtype, device=image.device),
        torch.arange(w, dtype=image.dtype, device=image.device),
        indexing="ij",
    )
    pos = torch.stack([yy.reshape(-1), xx.reshape(-1)], 1) / spatial_width
    if colour_width is None:
        return pos
    return torch.cat([pos, image.reshape(image.shape[0], -1).T / colour_width], 1)


def crf_mean_field(
    unary: Tensor,
    image: Tensor,
    spatial_weight: Tensor,
    bilateral_weight: Tensor,
    compatibility: Tensor,
    log_widths: Tensor,
    iterations: int = 5,
    filter: str = "lattice",
) -> Tensor:
    """Mean-field logits ``[B, L, H, W]`` from unary logits ``[B, L, H, W]`` (higher = likelier)
    and images ``[B, 3, H, W]`` (0..255). ``log_widths`` = log of (theta_alpha, theta_beta,
    theta_gamma): bilateral position and colour widths, spatial width (pixels, colour units)."""
    if filter not in GAUSSIAN_FILTERS:
        raise ValueError(f"filter: expected one of {GAUSSIAN_FILTERS}, got {filter!r}")
    _check_inputs(unary, image)
    gauss = gaussian_filter_exact if filter == "exact" else gaussian_filter_lattice
    b, n_labels, h, w = unary.shape
    theta = torch.exp(log_widths)
    outputs = []
    for k in range(b):
        u = unary[k].reshape(n_labels, -1).T  # [N, L]
        f_bil = pixel_features(image[k], theta[0], theta[1])
        f_sp = pixel_features(image[k], theta[2], None)

        def message(q, f_sp=f_sp, f_bil=f_bil):
            return gauss(q, f_sp) * spatial_weight + gauss(q, f_bil) * bilateral_weight

        logits = _mean_field(u, message, compatibility, iterations)
        outputs.append(logits.T.reshape(n_labels, h, w))
    return torch.stack(outputs)


def crf_mean_field_learned(
    unary: Tensor,
    image: Tensor,
    spatial_weight: Tensor,
    bilateral_weight: Tensor,
    compatibility: Tensor,
    log_widths: Tensor,
    spatial_filter: PermutohedralConv,
    bilateral_filter: PermutohedralConv,
    iterations: int = 5,
) -> Tensor:
    """:func:`crf_mean_field` with learned lattice filters (``PermutohedralConv`` with L channels,
    feature dimensions 2 and 5) in place of the Gaussians, the whole batch at once."""
    _check_inputs(unary, image)
    b, n_labels, h, w = unary.shape
    if b == 0:
        return unary.clone()
    with torch.no_grad():
        theta = torch.exp(log_widths)
        f_bil = torch.stack([pixel_features(image[k], theta[0], theta[1]) for k in range(b)])
        f_sp = pixel_features(image[0], theta[2], None).expand(b, -1, -1)
    lattices = LatticeTables(f_sp), LatticeTables(f_bil)
    self_weights = [lat.self_weights(unary.dtype) for lat in lattices]
    filters = spatial_filter, bilateral_filter
    kernel_weights = spatial_weight, bilateral_weight

    def message(q):
        return sum(
            (filt(q, lattice=lat) - diag * q) * weight
            for filt, lat, diag, weight in zip(filters, lattices, self_weights, kernel_weights)
        )

    u = unary.reshape(b, n_labels, -1).transpose(1, 2)  # [B, N, L]
    logits = _mean_field(u, message, compatibility, iterations)
    return logits.transpose(1, 2).reshape(b, n_labels, h, w)


def _mean_field(u: Tensor, message, compatibility: Tensor, iterations: int) -> Tensor:
    """Mean-field iterations on unary logits ``u [..., N, L]``; ``message(Q)`` is the filtered,
    kernel-weighted Q."""
    logits = u
    for _ in range(iterations):
        q = torch.softmax(logits, dim=-1)
        logits = u - message(q) @ compatibility.T
    return logits


def _check_inputs(unary: Tensor, image: Tensor) -> None:
    if unary.dim() != 4 or image.dim() != 4 or image.shape[0] != unary.shape[0] or image.shape[1] != 3:
        raise ValueError(
            f"image: expected [B, 3, H, W] matching unary [B, L, H, W], got {list(image.shape)} "
            f"and {list(unary.shape)}"
        )
    if image.shape[-2:] != unary.shape[-2:]:
        raise ValueError(f"image: size {list(image.shape[-2:])} differs from unary {list(unary.shape[-2:])}")


class CRFasRNN(nn.Module):
    """``forward(unary [B, L, H, W], image [B, 3, H, W] in 0..255) -> logits [B, L, H, W]``.

    Learnable: per-label spatial and bilateral kernel weights, the L x L compatibility
    (Potts-initialised), and, with ``learn_widths``, the kernel widths. ``filter="exact"`` uses
    O(N^2) exact Gaussian filtering (tiny images, gradient checks); ``filter="learned"`` learns the
    spatial and bilateral filters too (``spatial_filter`` and ``bilateral_filter``,
    :class:`~convloc.nn.PermutohedralConv` with taps of ``filter_radius`` lattice steps, equal to
    the lattice CRF at initialisation; not with ``learn_widths``).
    """

    def __init__(
        self,
        num_labels: int,
        iterations: int = 5,
        spatial_weight: float = 3.0,
        bilateral_weight: float = 5.0,
        theta_alpha: float = 10.0,
        theta_beta: float = 20.0,
        theta_gamma: float = 3.0,
        learn_widths: bool = False,
        filter: str = "lattice",
        filter_radius: int = 1,
    ) -> None:
        super().__init__()
        if filter not in FILTERS:
            raise ValueError(f"filter: expected one of {FILTERS}, got {filter!r}")
        if num_labels < 2:
            raise ValueError(f"num_labels: expected >= 2, got {num_labels}")
        if learn_widths and filter == "learned":
            raise ValueError("learn_widths: learned filters give the kernel widths no gradient")
        self.iterations, self.filter = iterations, filter
        self.spatial_weight = nn.Parameter(torch.full((num_labels,), float(spatial_weight)))
        self.bilateral_weight = nn.Parameter(torch.full((num_labels,), float(bilateral_weight)))
        self.compatibility = nn.Parameter(1 - torch.eye(num_labels))
        widths = torch.tensor([math.log(theta_alpha), math.log(theta_beta), math.log(theta_gamma)])
        self.log_widths = nn.Parameter(widths, requires_grad=learn_widths)
        if filter == "learned":
            self.spatial_filter = PermutohedralConv(num_labels, num_labels, 2, filter_radius)
            self.bilateral_filter = PermutohedralConv(num_labels, num_labels, 5, filter_radius)

    def forward(self, unary: Tensor, image: Tensor) -> Tensor:
        if self.filter == "learned":
            return crf_mean_field_learned(
                unary, image, self.spatial_weight, self.bilateral_weight, self.compatibility,
                self.log_widths, self.spatial_filter, self.bilateral_filter, self.iterations,
            )  # fmt: skip
        return crf_mean_field(
            unary, image, self.spatial_weight, self.bilateral_weight, self.compatibility,
            self.log_widths, self.iterations, self.filter,
        )  # fmt: skip
