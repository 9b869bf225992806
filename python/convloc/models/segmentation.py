"""Training and evaluation loops shared by the segmentation models (FCN, FCN + CRF-as-RNN)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from convloc.metrics.segmentation import IGNORE_LABEL, SegmentationMeter, SegmentationScores
from convloc.models.common import Precision, broadcast_buffers, data_parallel, fit_epochs, model_device


def fit(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    epochs: int,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 5e-4,
    seed: int = 0,
    progress: bool = False,
    params=None,
    resume: dict | None = None,
    on_epoch=None,
    device: str | torch.device | None = None,
    amp: str = "off",
) -> list[float]:
    """Trains ``model`` (images ``[N, 3, H, W]`` -> scores ``[N, L, H, W]``) with pixelwise
    cross-entropy ignoring label 255, Adam, random horizontal flips, on ``device`` (the model is
    moved there; None: where it is) in ``amp`` (:class:`~convloc.models.common.Precision`).
    Returns each epoch's mean loss. Under torchrun every rank trains on its share of each batch
    (:func:`~convloc.models.common.fit_epochs`, which also says what ``resume`` and ``on_epoch``
    are) and all end with rank 0's model."""
    device = model_device(model, device)
    images, labels = images.to(device), labels.to(device)  # small sets: on the device once
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(
        params if params is not None else [p for p in model.parameters() if p.requires_grad],
        lr=lr,
        weight_decay=weight_decay,
    )
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_LABEL)
    net = data_parallel(model)

    def loss_of(batch: Tensor, part: slice) -> Tensor:
        flip = (torch.rand(len(batch), generator=gen) < 0.5)[part].to(device)
        x, y = images[batch[part]], labels[batch[part]]
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = torch.where(flip[:, None, None], y.flip(-1), y)
        return loss_fn(net(x), y)

    model.train()
    history = fit_epochs(loss_of, opt, len(images), epochs, batch_size, gen, "train", progress,
                         resume=resume, on_epoch=on_epoch, precision=Precision(amp, device))  # fmt: skip
    broadcast_buffers(model)
    model.eval()
    return history


@torch.no_grad()
def predict_scores(model: nn.Module, images: Tensor, batch_size: int = 16) -> Tensor:
    """Scores ``[N, L, H, W]`` of ``model`` in eval mode, computed on its device, on the CPU."""
    model.eval()
    device = model_device(model)
    return torch.cat(
        [model(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
    )


def evaluate(
    scores: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    num_classes: int,
    refine: Callable[[int, np.ndarray], np.ndarray] | None = None,
) -> SegmentationScores:
    """Mean IU etc. of the arg-max of ``scores`` ``[N, L, H, W]``; ``refine(i, scores_i)`` may
    replace each image's scores first (dense-CRF post-processing)."""
    meter = SegmentationMeter(num_classes)
    scores = scores.numpy() if isinstance(scores, Tensor) else scores
    labels = labels.numpy() if isinstance(labels, Tensor) else labels
    for i in range(len(scores)):
        s = scores[i] if refine is None else refine(i, scores[i])
        meter.update(labels[i], s.argmax(0))
    return meter.scores()


def dense_crf_refiner(images: np.ndarray, kernels, iterations: int = 5):
    """``refine(i, scores [L, H, W]) -> Q [L, H, W]`` for :func:`evaluate`: convloc's dense CRF
    (``convloc.ops.dense_crf``) over image ``images[i]`` (``[H, W, 3]`` uint8) with the scores'
    negative log-softmax as unary."""
    from convloc.ops import dense_crf

    def refine(i: int, scores: np.ndarray) -> np.ndarray:
        unary = -torch.log_softmax(torch.from_numpy(scores), 0).numpy()
        return dense_crf(np.ascontiguousarray(unary), image=images[i], kernels=kernels, iterations=iterations)

    return refine


def tune_dense_crf(scores: Tensor, labels: Tensor, images: np.ndarray, num_classes: int, grid=None):
    """Picks the dense CRF's bilateral kernel (sxy, srgb, weight) by mean IU on the given
    (training) images; returns ``(kernels, mean IU)``."""
    from convloc.ops import Bilateral, Gaussian

    grid = grid or [
        (s, c, w) for s in (5.0, 10.0, 20.0) for c in (10.0, 20.0, 40.0) for w in (3.0, 5.0, 10.0)
    ]
    best = (None, -1.0)
    for sxy, srgb, weight in grid:
        kernels = [Gaussian(1.0, 3.0), Bilateral(sxy, srgb, weight)]
        miu = evaluate(scores, labels, num_classes, dense_crf_refiner(images, kernels)).mean_iu
        if miu > best[1]:
            best = (kernels, miu)
    return best
