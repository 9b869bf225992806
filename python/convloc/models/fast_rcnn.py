"""Fast R-CNN (Girshick, ICCV 2015): one convolutional pass per image, RoI max pooling to 7×7,
fc6/fc7, then a softmax over K+1 classes and a per-class box regressor, trained jointly with
the multi-task loss ``L = CE(p, u) + [u ≥ 1] · smoothL1(t^u - v)``.

Mini-batches: 2 images × 64 RoIs, 25 % foreground (IoU ≥ 0.5 with a ground truth, which is
itself a candidate), the rest background with IoU in [0.1, 0.5); images whose proposals give
too few such backgrounds are topped up from IoU < 0.1 so every batch holds 128 RoIs (on sparse
scenes, unlike VOC, most proposals touch no object, and never seeing them costs precision).
Regression targets are normalised by (0, 0, 0, 0) / (0.1, 0.1, 0.2, 0.2). Images are resized
so the short side is ``scale`` (600) unless the long side would exceed ``max_size`` (1000).
Test time: per-class NMS at IoU 0.3, scores above 0.05, at most 100 detections per image.

The paper fine-tunes an ImageNet VGG-16 with SGD; without pretrained weights, the small backbone
trained from scratch converges several times faster with AdamW (``optimizer="adam"``, lr 1e-3) and
no dropout, which is what the synthetic-data runs use.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from convloc.models import box_coder
from convloc.models.backbones import VGG, build_backbone
from convloc.models.common import data_parallel, decode_detections, is_main, start_training, to_tensor

__all__ = [
    "FastRCNNConfig",
    "FastRCNN",
    "compress_fc",
    "sample_rois",
    "fast_rcnn_loss",
    "train_fast_rcnn",
]


@dataclass
class FastRCNNConfig:
    backbone: str = "small"
    fc_dim: int = 512
    dropout: float = 0.5
    scale: int = 600
    max_size: int = 1000
    images_per_batch: int = 2
    rois_per_image: int = 64
    fg_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_iou: tuple = (0.1, 0.5)
    bbox_stds: tuple = (0.1, 0.1, 0.2, 0.2)
    nms_iou: float = 0.3
    score_threshold: float = 0.05
    max_detections: int = 100
    iterations: int = 2000
    optimizer: str = "sgd"  # or "adam" (trains a from-scratch net faster)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_steps: tuple = (0.7,)  # fractions of ``iterations`` where lr drops ×0.1
    flip: bool = True
    seed: int = 0
    proposals: dict = field(default_factory=dict)  # how proposals were made, for detect and eval


class FastRCNN(nn.Module):
    def __init__(self, num_classes: int, cfg: FastRCNNConfig, backbone: VGG | None = None):
        from convloc.nn import RoIPool

        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes  # object classes; index 0 of the outputs is background
        self.backbone = backbone or build_backbone(cfg.backbone, fc_dim=cfg.fc_dim, dropout=cfg.dropout)
        b = self.backbone
        self.roi_pool = RoIPool((b.roi_size, b.roi_size), 1.0 / b.stride)
        self.cls_score = nn.Linear(b.fc_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(b.fc_dim, 4 * (num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.register_buffer("bbox_stds", torch.tensor(cfg.bbox_stds, dtype=torch.float32))

    def forward(self, images: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, 3, H, W] normalised, rois [K, 5] (batch index, x1, y1, x2, y2) in those
        images' pixels → (class logits [K, C+1], normalised box deltas [K, 4(C+1)])."""
        pooled = self.roi_pool(self.backbone.features(images), rois)
        fc7 = self.backbone.head(pooled.flatten(1))
        return self.cls_score(fc7), self.bbox_pred(fc7)

    def image_scale(self, height: int, width: int) -> float:
        s = self.cfg.scale / min(height, width)
        return min(s, self.cfg.max_size / max(height, width))

    @torch.no_grad()
    def detect(self, image: np.ndarray, proposals: np.ndarray) -> dict:
        """One image uint8 [H, W, 3] and its proposals [K, 4] → dict(boxes float32 [D, 4],
        scores [D], labels int64 [D] in 0..C-1), in the image's own pixels."""

        h, w = image.shape[:2]
        s = self.image_scale(h, w)
        x = resize(to_tensor(image), s)[None]
        props = torch.as_tensor(proposals, dtype=torch.float32).reshape(-1, 4)
        rois = torch.cat((torch.zeros(len(props), 1), props * s), 1)
        logits, deltas = self(x, rois)
        probs = F.softmax(logits, 1)[:, 1:]
        deltas = (deltas.view(len(props), -1, 4) * self.bbox_stds).view(len(props), -1)[:, 4:]
        return decode_detections(props, deltas, probs, h, w, self.cfg)


def resize(x: torch.Tensor, s: float) -> torch.Tensor:
    """Normalised image [3, H, W] scaled by ``s`` (bilinear, antialiased when shrinking)."""
    if s == 1:
        return x
    h, w = x.shape[1:]
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=s < 1)[0]


def compress_fc(model: nn.Module, rank: int | tuple[int, int]) -> nn.Module:
    """Truncated SVD of fc6 and fc7 (Fast R-CNN §3.1): ``W ≈ U_t Σ_t V_tᵀ`` becomes two layers,
    ``Σ_t V_tᵀ`` (no bias) then ``U_t`` (with W's bias), so a layer of u·v multiply-adds costs
    t(u + v). ``rank`` is one rank for both layers or (fc6, fc7). Returns a compressed deep copy."""
    model = copy.deepcopy(model)
    head = model.backbone.head if hasattr(model, "backbone") else model.head
    ranks = (rank, rank) if isinstance(rank, int) else tuple(rank)
    for index, t in zip((0, 3), ranks):
        fc = head[index]
        if not isinstance(fc, nn.Linear):
            raise ValueError("model: fc layers already compressed")
        u, s, vh = torch.linalg.svd(fc.weight.detach().double(), full_matrices=False)
        t = min(t, len(s))
        first = nn.Linear(fc.in_features, t, bias=False)
        second = nn.Linear(t, fc.out_features)
        first.weight.data = (s[:t, None] * vh[:t]).float()
        second.weight.data = u[:, :t].float().contiguous()
        second.bias.data = fc.bias.detach().clone()
        head[index] = nn.Sequential(first, second)
    return model


def sample_rois(
    proposals: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    cfg: FastRCNNConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fast R-CNN's RoI sampling for one image.

    Args:
        proposals [P, 4], gt_boxes [G, 4], gt_labels [G] in 0..C-1 (difficult objects removed).

    Returns:
        (rois [R, 4], labels [R] in 0..C (0 = background), normalised targets [R, 4]),
        foreground first, ``R = cfg.rois_per_image`` unless the image has fewer candidates.
    """
    from convloc.ops import box_iou

    candidates = torch.cat((gt_boxes, proposals), 0)
    n = cfg.rois_per_image
    if len(gt_boxes) == 0:
        idx = torch.randperm(len(candidates), generator=generator)[:n]
        return candidates[idx], torch.zeros(len(idx), dtype=torch.int64), torch.zeros(len(idx), 4)
    iou = box_iou(candidates.contiguous(), gt_boxes.contiguous()).nan_to_num(0)
    best, assigned = iou.max(1)

    def pick(mask: torch.Tensor, k: int) -> torch.Tensor:
        idx = torch.nonzero(mask).flatten()
        return idx[torch.randperm(len(idx), generator=generator)[:k]]

    fg = pick(best >= cfg.fg_iou, round(cfg.fg_fraction * n))
    bg = pick((best >= cfg.bg_iou[0]) & (best < cfg.bg_iou[1]), n - len(fg))
    bg = torch.cat((bg, pick(best < cfg.bg_iou[0], n - len(fg) - len(bg))))
    keep = torch.cat((fg, bg))
    labels = gt_labels[assigned[keep]] + 1
    labels[len(fg) :] = 0
    targets = box_coder.encode(candidates[keep], gt_boxes[assigned[keep]])
    targets = targets / torch.tensor(cfg.bbox_stds)
    targets[len(fg) :] = 0
    return candidates[keep], labels, targets


def fast_rcnn_loss(
    logits: torch.Tensor, deltas: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(classification loss, box loss): mean cross-entropy over RoIs, and smooth L1 (β = 1) on the
    true class's deltas of foreground RoIs, summed over coordinates and divided by the RoI count."""
    cls = F.cross_entropy(logits, labels)
    fg = torch.nonzero(labels > 0).flatten()
    pred = deltas.view(len(labels), -1, 4)[fg, labels[fg]]
    box = F.smooth_l1_loss(pred, targets[fg], beta=1.0, reduction="sum") / max(len(labels), 1)
    return cls, box


def _batch(dataset, proposals, indices, cfg, model, generator):
    """Images padded to one size, RoIs with batch index, labels and targets."""
    images, rois, labels, targets = [], [], [], []
    for b, i in enumerate(indices):
        sample = dataset[i]
        image = to_tensor(sample["image"])
        keep = ~sample["difficult"]
        gt = torch.as_tensor(sample["boxes"][keep], dtype=torch.float32).reshape(-1, 4)
        gt_labels = torch.as_tensor(sample["labels"][keep])
        props = torch.as_tensor(proposals[i], dtype=torch.float32).reshape(-1, 4)
        h, w = image.shape[1:]
        if cfg.flip and torch.rand(1, generator=generator).item() < 0.5:
            image = image.flip(2)
            gt, props = box_coder.hflip(gt, w), box_coder.hflip(props, w)
        s = model.image_scale(h, w)
        r, lab, t = sample_rois(props * s, gt * s, gt_labels, cfg, generator)
        images.append(resize(image, s))
        rois.append(torch.cat((torch.full((len(r), 1), float(b)), r), 1))
        labels.append(lab)
        targets.append(t)
    hmax, wmax = max(x.shape[1] for x in images), max(x.shape[2] for x in images)
    batch = torch.zeros(len(images), 3, hmax, wmax)
    for b, x in enumerate(images):
        batch[b, :, : x.shape[1], : x.shape[2]] = x
    return batch, torch.cat(rois), torch.cat(labels), torch.cat(targets)


def train_fast_rcnn(
    dataset,
    proposals: list[np.ndarray],
    cfg: FastRCNNConfig,
    checkpoint: str,
    resume: bool = True,
    pretrained: str | None = None,
    log_every: int = 50,
    save_every: int = 200,
) -> FastRCNN:
    """Trains on ``dataset`` (a :class:`~convloc.data.VOCDetection`) with its ``proposals``,
    saving ``checkpoint`` every ``save_every`` iterations and at the end; resumes from it when it
    exists and ``resume``. Under torchrun each rank draws its own images (seeded by rank) and
    DistributedDataParallel averages the gradients."""
    from convloc.models.backbones import load_torchvision_vgg

    def build() -> FastRCNN:
        model = FastRCNN(len(dataset.classes), cfg)
        if pretrained:
            load_torchvision_vgg(model.backbone, pretrained)
        return model

    run = start_training(build, cfg, cfg.iterations, checkpoint, resume)
    model, optimizer, scheduler, generator = run.model, run.optimizer, run.scheduler, run.generator
    start = run.resumed["iteration"] if run.resumed else 0
    net = data_parallel(model)
    model.train()
    n = len(dataset)
    bar = tqdm(range(start, cfg.iterations), desc="fast-rcnn", disable=not is_main(), initial=start,
               total=cfg.iterations)  # fmt: skip
    running, t0 = np.zeros(2), time.perf_counter()
    for it in bar:
        indices = torch.randint(n, (cfg.images_per_batch,), generator=generator).tolist()
        images, rois, labels, targets = _batch(dataset, proposals, indices, cfg, model, generator)
        logits, deltas = net(images, rois)
        cls, box = fast_rcnn_loss(logits, deltas, labels, targets)
        optimizer.zero_grad(set_to_none=True)
        (cls + box).backward()
        optimizer.step()
        scheduler.step()
        running += (cls.item(), box.item())
        if (it + 1) % log_every == 0:
            bar.set_postfix(cls=f"{running[0] / log_every:.3f}", box=f"{running[1] / log_every:.3f}")
            running[:] = 0
        if (it + 1) % save_every == 0 or it + 1 == cfg.iterations:
            run.save(checkpoint, "fast-rcnn", dataset.classes, cfg, it + 1)
    if start < cfg.iterations and is_main():
        bar.write(f"fast-rcnn: {cfg.iterations - start} iterations in {time.perf_counter() - t0:.0f} s")
    model.eval()
    return model


def load_fast_rcnn(state: dict, rank: int | None = None) -> FastRCNN:
    """A trained model from a checkpoint dict; ``rank`` rebuilds a :func:`compress_fc` model."""
    cfg = FastRCNNConfig(**state["config"])
    model = FastRCNN(len(state["classes"]), cfg)
    model.load_state_dict(state["model"])
    model.eval()
    return compress_fc(model, rank) if rank else model
