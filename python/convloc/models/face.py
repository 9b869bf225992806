"""Face verification after Parkhi, Vedaldi & Zisserman (2015): a convnet descriptor phi, first
trained as an identity classifier, then L2-normalised and projected by W' learned with the
triplet loss  sum max{0, alpha - ||x_a - x_n||^2 + ||x_a - x_p||^2},  x = W' phi / ||phi||."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convloc.models.common import Precision, broadcast_buffers, data_parallel, fit_epochs, model_device

MINING = ("all", "hard", "semihard")


class FaceVerifier(nn.Module):
    """Embedding net (phi), identity classifier for pre-training, and the projection W'.

    ``descriptor(x)`` = phi / ||phi||; ``forward(x)`` = W' phi / ||phi|| (``[N, dim]``).
    Images are ``[N, 3, S, S]`` in [-1, 1]; any S >= 8 works (global average pooling).
    """

    def __init__(self, num_identities: int, feature_dim: int = 128, dim: int = 64, width: int = 32) -> None:
        super().__init__()

        def block(i, o):
            return [
                nn.Conv2d(i, o, 3, padding=1, bias=False),
                nn.BatchNorm2d(o),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *block(3, width), *block(width, width), nn.MaxPool2d(2),
            *block(width, 2 * width), *block(2 * width, 2 * width), nn.MaxPool2d(2),
            *block(2 * width, 4 * width), *block(4 * width, 4 * width), nn.MaxPool2d(2),
            nn.Conv2d(4 * width, feature_dim, 3, padding=1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(feature_dim, num_identities))
        self.projection = nn.Linear(feature_dim, dim, bias=False)
        nn.init.orthogonal_(self.projection.weight)

    def descriptor(self, x: Tensor) -> Tensor:
        return F.normalize(self.features(x), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(self.descriptor(x))


def pairwise_sq_distances(x: Tensor) -> Tensor:
    """``[N, N]`` squared Euclidean distances between the rows of ``x`` (0 on the diagonal)."""
    sq = (x * x).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0)
    return d * (1 - torch.eye(len(x), dtype=x.dtype, device=x.device))


def triplet_loss(x: Tensor, labels: Tensor, margin: float = 0.2, mining: str = "semihard") -> Tensor:
    """Triplet loss over the triplets (a, p, n) of a batch, ``mining`` choosing which:

    - ``"all"``: every valid triplet; the mean over those with a positive loss (easy ones would
      only dilute the gradient);
    - ``"hard"``: per anchor, its farthest positive and nearest negative; mean over anchors;
    - ``"semihard"`` (FaceNet): per (a, p), the nearest negative farther than p,
      ``d_ap < d_an < d_ap + alpha``; where none exists, the farthest negative. Mean over (a, p).

    Returns 0 (connected to ``x``) when the batch holds no valid triplet.
    """
    if mining not in MINING:
        raise ValueError(f"mining: expected one of {MINING}, got {mining!r}")
    d = pairwise_sq_distances(x)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    pos = same & ~eye
    neg = ~same
    if mining == "all":
        losses = (margin + d[:, :, None] - d[:, None, :]).clamp_min(0)  # [a, p, n]
        valid = pos[:, :, None] & neg[:, None, :]
        active = valid & (losses > 0)
        return losses[active].mean() if active.any() else x.sum() * 0
    if mining == "hard":
        anchors = pos.any(1) & neg.any(1)
        if not anchors.any():
            return x.sum() * 0
        d_ap = torch.where(pos, d, torch.full_like(d, -float("inf"))).amax(1)
        d_an = torch.where(neg, d, torch.full_like(d, float("inf"))).amin(1)
        return (margin + d_ap - d_an).clamp_min(0)[anchors].mean()
    a_idx, p_idx = torch.nonzero(pos & neg.any(1, keepdim=True), as_tuple=True)
    if a_idx.numel() == 0:
        return x.sum() * 0
    d_ap = d[a_idx, p_idx][:, None]
    d_an = d[a_idx]  # [pairs, N]
    cand = neg[a_idx]
    with torch.no_grad():
        semi = cand & (d_an > d_ap) & (d_an < d_ap + margin)
        inf = torch.full_like(d_an, float("inf"))
        nearest_semi = torch.where(semi, d_an, inf).argmin(1)
        farthest = torch.where(cand, d_an, -inf).argmax(1)
        n_idx = torch.where(semi.any(1), nearest_semi, farthest)
    return (margin + d_ap[:, 0] - d[a_idx, n_idx]).clamp_min(0).mean()


def pretrain_classifier(
    model: FaceVerifier,
    images: Tensor,
    labels: Tensor,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = False,
    resume: dict | None = None,
    on_epoch=None,
    device: str | torch.device | None = None,
    amp: str = "off",
) -> list[float]:
    """Stage 1: trains phi as an N-way identity classifier (softmax), random flips and shifts, on
    ``device`` (None: where the model is) in ``amp`` (:class:`~convloc.models.common.Precision`).
    Data-parallel under torchrun (:func:`~convloc.models.common.fit_epochs`, which also says what
    ``resume`` and ``on_epoch`` are)."""
    device = model_device(model, device)
    images, labels = images.to(device), labels.to(device)
    gen = torch.Generator().manual_seed(seed)
    params = list(model.features.parameters()) + list(model.classifier.parameters())
    opt = torch.optim.Adam(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs))
    net = data_parallel(nn.Sequential(model.features, model.classifier))

    def loss_of(batch: Tensor, part: slice) -> Tensor:
        x = _augment(images[batch], gen)[part]
        return F.cross_entropy(net(x), labels[batch[part]])

    model.train()
    history = fit_epochs(loss_of, opt, len(images), epochs, batch_size, gen, "classify", progress,
                         scheduler=sched, resume=resume, on_epoch=on_epoch,
                         precision=Precision(amp, device))  # fmt: skip
    broadcast_buffers(model)
    model.eval()
    return history


def train_projection(
    model: FaceVerifier,
    images: Tensor,
    labels: Tensor,
    epochs: int,
    mining: str = "semihard",
    margin: float = 0.2,
    identities_per_batch: int = 16,
    images_per_identity: int = 4,
    lr: float = 1e-2,
    seed: int = 0,
    progress: bool = False,
    resume: dict | None = None,
    on_epoch=None,
    device: str | torch.device | None = None,
    amp: str = "off",
) -> list[float]:
    """Stage 2: learns W' with the triplet loss on the frozen descriptors phi/||phi|| (as in the
    paper); batches hold ``identities_per_batch`` x ``images_per_identity`` images. On ``device``
    and in ``amp`` as :func:`pretrain_classifier`. Under torchrun each rank takes its share of
    every batch's identities; ``resume`` and ``on_epoch`` as for
    :func:`~convloc.models.common.fit_epochs`."""
    device = model_device(model, device)
    gen = torch.Generator().manual_seed(seed)
    desc = embed(model, images, projected=False)
    by_id = [torch.nonzero(labels == c).flatten() for c in labels.unique()]
    by_id = [ix for ix in by_id if len(ix) >= 2]
    opt = torch.optim.Adam(model.projection.parameters(), lr=lr)
    net = data_parallel(model.projection)

    def loss_of(batch: Tensor, part: slice) -> Tensor:
        rows = [by_id[c][torch.randperm(len(by_id[c]), generator=gen)[:images_per_identity]] for c in batch]
        rows = torch.cat(rows[part])
        return triplet_loss(net(desc[rows]), labels[rows].to(device), margin, mining)

    # A triplet needs two identities on the rank that forms it.
    return fit_epochs(loss_of, opt, len(by_id), epochs, identities_per_batch, gen, "triplet", progress,
                      drop_last=True, min_per_rank=2, resume=resume, on_epoch=on_epoch,
                      precision=Precision(amp, device))  # fmt: skip


@torch.no_grad()
def embed(model: FaceVerifier, images: Tensor, projected: bool = True, batch_size: int = 256) -> Tensor:
    """The embeddings (``projected``) or descriptors of ``images``, computed on the model's device."""
    model.eval()
    f, device = (model if projected else model.descriptor), model_device(model)
    return torch.cat([f(images[i : i + batch_size].to(device)) for i in range(0, len(images), batch_size)])


def pair_scores(model: FaceVerifier, a: Tensor, b: Tensor, projected: bool = True) -> np.ndarray:
    """Similarity of each pair: minus the squared distance of the embeddings."""
    ea, eb = embed(model, a, projected), embed(model, b, projected)
    return (-((ea - eb) ** 2).sum(1)).cpu().numpy()


def _augment(x: Tensor, gen: torch.Generator) -> Tensor:
    flip = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dy, dx = torch.randint(-2, 3, (2,), generator=gen).tolist()
    return torch.roll(x, (dy, dx), dims=(-2, -1))
