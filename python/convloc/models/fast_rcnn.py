"""Fast R-CNN (Girshick, ICCV 2015): one convolutional pass per image, RoI max pooling to 7×7,
fc6/fc7, then a softmax over K+1 classes and a per-class box regressor, trained jointly with
the multi-task loss ``L = CE(p, u) + [u ≥ 1] · smoothL1(t^u - v)``.

Mini-batches: 2 images × 64 RoIs, 25 % foreground (IoU ≥ 0.5 with a ground truth, which is
itself a candidate), the rest background with IoU in ``bg_iou``; images whose proposals give too
few such backgrounds are topped up from below its lower end so every batch holds 128 RoIs.
Regression targets are normalised by (0, 0, 0, 0) / (0.1, 0.1, 0.2, 0.2). Images are resized
so the short side is ``scale`` unless the long side would exceed ``max_size``; each goes through
the backbone on its own. Test time: per-class NMS at IoU 0.3, scores above 0.05, at most 100
detections per image.

Two recipes (:data:`RECIPES`). The paper fine-tunes an ImageNet VGG-16 with SGD at 600 px, with
backgrounds of IoU [0.1, 0.5) (``"paper"``). The small backbone trained from scratch (``"scratch"``,
the defaults) needs more: AdamW at lr 1e-3 without dropout, which converges several times faster;
images near their own size, where its 26-px receptive field sees the shapes' outlines; and
backgrounds of IoU [0, 0.5), since boxes that hold several objects or the whole image have
IoU < 0.1 with each and were otherwise never shown as background. Whatever the recipe, batch norm
normalises each image by its own statistics, at test time as in training: running averages over
two-image batches misjudge single images (whole images scored as squares, mAP 0.74 instead of
0.90 on the synthetic shapes).
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
from convloc.models.common import (
    Precision,
    data_parallel,
    decode_detections,
    is_main,
    start_training,
    to_tensor,
)

__all__ = [
    "FastRCNNConfig",
    "RECIPES",
    "FastRCNN",
    "image_scale",
    "compress_fc",
    "sample_rois",
    "fast_rcnn_loss",
    "train_fast_rcnn",
]


@dataclass
class FastRCNNConfig:
    """A Fast R-CNN's settings; the defaults are the ``scratch`` recipe (:data:`RECIPES`)."""

    backbone: str = "small"
    fc_dim: int = 128
    dropout: float = 0.0
    scale: int = 128
    max_size: int = 192
    images_per_batch: int = 2
    rois_per_image: int = 64
    fg_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_iou: tuple = (0.0, 0.5)
    bbox_stds: tuple = (0.1, 0.1, 0.2, 0.2)
    nms_iou: float = 0.3
    score_threshold: float = 0.05
    max_detections: int = 100
    iterations: int = 2000
    optimizer: str = "adam"  # or "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_steps: tuple = (0.7,)  # fractions of ``iterations`` where lr drops ×0.1
    flip: bool = True
    seed: int = 0
    proposals: dict = field(default_factory=dict)  # how proposals were made, for detect and eval


# ``scratch``: the small backbone from random weights on images near their own size (its 3x3
# convs see 26 px: at the paper's 600 px, 16-64 px shapes become textures larger than that).
# ``paper``: the paper's fine-tuning of an ImageNet VGG-16.
RECIPES = {
    "scratch": dict(optimizer="adam", lr=1e-3, dropout=0.0, scale=128, max_size=192, bg_iou=(0.0, 0.5)),
    "paper": dict(optimizer="sgd", lr=1e-3, dropout=0.5, scale=600, max_size=1000, bg_iou=(0.1, 0.5)),
}


class FastRCNN(nn.Module):
    def __init__(self, num_classes: int, cfg: FastRCNNConfig, backbone: VGG | None = None):
        from convloc.nn import RoIPool

        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes  # object classes; index 0 of the outputs is background
        # Batch norm (the small backbone's) normalises each image by its own statistics, in
        # training as at test: running averages over mini-batches of two images misrepresent
        # single images, and scored whole images as squares.
        self.backbone = backbone or build_backbone(
            cfg.backbone, fc_dim=cfg.fc_dim, dropout=cfg.dropout, running_stats=False
        )
        b = self.backbone
        self.roi_pool = RoIPool((b.roi_size, b.roi_size), 1.0 / b.stride)
        self.cls_score = nn.Linear(b.fc_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(b.fc_dim, 4 * (num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.register_buffer("bbox_stds", torch.tensor(cfg.bbox_stds, dtype=torch.float32))

    def forward(
        self, images: list[torch.Tensor], rois: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images [3, H_i, W_i] and their RoIs [K_i, 4] (x1, y1, x2, y2) in those
        images' pixels → (class logits [ΣK_i, C+1], normalised box deltas [ΣK_i, 4(C+1)]). Each
        image goes through the backbone alone: no padding to a common size, and batch norm
        sees one image's statistics."""
        pooled = []
        for x, r in zip(images, rois):
            r = torch.cat((r.new_zeros(len(r), 1), r), 1)
            pooled.append(self.roi_pool(self.backbone.features(x[None]), r))
        fc7 = self.backbone.head(torch.cat(pooled).flatten(1))
        return self.cls_score(fc7), self.bbox_pred(fc7)

    def image_scale(self, height: int, width: int) -> float:
        return image_scale(self.cfg, height, width)

    @torch.no_grad()
    def detect(self, image: np.ndarray, proposals: np.ndarray) -> dict:
        """One image uint8 [H, W, 3] and its proposals [K, 4] → dict(boxes float32 [D, 4],
        scores [D], labels int64 [D] in 0..C-1), in the image's own pixels; computed on the
        model's device."""
        device = self.bbox_stds.device
        h, w = image.shape[:2]
        s = self.image_scale(h, w)
        x = resize(to_tensor(image).to(device), s)
        props = torch.as_tensor(proposals, dtype=torch.float32).reshape(-1, 4).to(device)
        logits, deltas = self([x], [props * s])
        probs = F.softmax(logits, 1)[:, 1:]
        deltas = (deltas.view(len(props), -1, 4) * self.bbox_stds).view(len(props), -1)[:, 4:]
        return decode_detections(props, deltas, probs, h, w, self.cfg)


def image_scale(cfg: FastRCNNConfig, height: int, width: int) -> float:
    """The factor that brings an image's short side to ``cfg.scale``, or its long side to
    ``cfg.max_size`` when that is smaller."""
    return min(cfg.scale / min(height, width), cfg.max_size / max(height, width))


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


class _Batches(torch.utils.data.IterableDataset):
    """The training batches from iteration ``start`` on, for a DataLoader. Each iteration's images,
    flips and sampled RoIs are drawn from ``generator`` in the order of a loop without a loader,
    from the annotations, the proposals and the image sizes alone; then the image files are read,
    flipped and resized. Each worker of the loader draws every batch and reads its share: whatever
    the number of workers, the batches are the same. A batch also carries the generator's state
    after its draws, from which a checkpoint of the batches trained so far resumes."""

    def __init__(self, dataset, proposals, cfg: FastRCNNConfig, generator: torch.Generator, start: int):
        self.dataset, self.proposals, self.cfg, self.generator = dataset, proposals, cfg, generator
        self.count = cfg.iterations - start

    def _plans(self):
        """Per iteration: the images to read (index, flip, scale), each image's RoIs, the labels and
        targets of all RoIs, and the generator's state after these draws."""
        cfg, n = self.cfg, len(self.dataset)
        for _ in range(self.count):
            reads, rois, labels, targets = [], [], [], []
            for i in torch.randint(n, (cfg.images_per_batch,), generator=self.generator).tolist():
                t = self.dataset.target(i)
                keep = ~t["difficult"]
                gt = torch.as_tensor(t["boxes"][keep], dtype=torch.float32).reshape(-1, 4)
                gt_labels = torch.as_tensor(t["labels"][keep])
                props = torch.as_tensor(self.proposals[i], dtype=torch.float32).reshape(-1, 4)
                h, w = self.dataset.image_size(i)
                flip = cfg.flip and torch.rand(1, generator=self.generator).item() < 0.5
                if flip:
                    gt, props = box_coder.hflip(gt, w), box_coder.hflip(props, w)
                s = image_scale(cfg, h, w)
                r, lab, tgt = sample_rois(props * s, gt * s, gt_labels, cfg, self.generator)
                reads.append((i, flip, s))
                rois.append(r)
                labels.append(lab)
                targets.append(tgt)
            yield reads, rois, torch.cat(labels), torch.cat(targets), self.generator.get_state()

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers, me = (info.num_workers, info.id) if info else (1, 0)
        for k, (reads, *batch) in enumerate(self._plans()):
            if k % workers == me:  # the loader takes the workers' batches in turn
                yield [self._read(*r) for r in reads], *batch

    def _read(self, i: int, flip: bool, scale: float) -> torch.Tensor:
        image = to_tensor(self.dataset.image(i))
        return resize(image.flip(2) if flip else image, scale)


def train_fast_rcnn(
    dataset,
    proposals: list[np.ndarray],
    cfg: FastRCNNConfig,
    checkpoint: str,
    resume: bool = True,
    pretrained: str | None = None,
    log_every: int = 50,
    save_every: int = 200,
    device: str | torch.device = "cpu",
    amp: str = "off",
    workers: int = 0,
) -> FastRCNN:
    """Trains on ``dataset`` (a :class:`~convloc.data.VOCDetection`) with its ``proposals`` on
    ``device`` in ``amp`` (:class:`~convloc.models.common.Precision`), saving ``checkpoint`` every
    ``save_every`` iterations and at the end. ``workers`` DataLoader processes read and resize the
    images (pinned for a GPU) while the model trains; the batches do not depend on their number.
    With ``resume`` a run continues from ``checkpoint`` when it exists, to the bits an
    uninterrupted run ends with on the same device and thread count (a ``ValueError`` when the
    file holds another kind of run, data or config). Under torchrun each rank draws its own
    images (seeded by rank) and DistributedDataParallel averages the gradients."""
    from convloc.models.backbones import load_torchvision_vgg

    def build() -> FastRCNN:
        model = FastRCNN(len(dataset.classes), cfg)
        if pretrained:
            load_torchvision_vgg(model.backbone, pretrained)
        return model

    precision = Precision(amp, device)
    run = start_training(
        build, cfg, "iterations", "fast-rcnn", dataset.digest(), checkpoint, resume, precision
    )
    model, optimizer, scheduler = run.model, run.optimizer, run.scheduler
    start = run.resumed["iteration"] if run.resumed else 0
    net = data_parallel(model)
    model.train()
    on_gpu = precision.device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        _Batches(dataset, proposals, cfg, run.generator, start), batch_size=None, num_workers=workers,
        pin_memory=on_gpu, generator=torch.Generator(),  # its seed for the workers leaves torch's alone
    )  # fmt: skip
    bar = tqdm(range(start, cfg.iterations), desc="fast-rcnn", disable=not is_main(), initial=start,
               total=cfg.iterations)  # fmt: skip
    running, t0 = np.zeros(2), time.perf_counter()

    def move(x: torch.Tensor) -> torch.Tensor:
        return x.to(precision.device, non_blocking=on_gpu)

    for it, (images, rois, labels, targets, drawn) in zip(bar, loader):
        with precision.autocast():
            logits, deltas = net([move(x) for x in images], [move(r) for r in rois])
            cls, box = fast_rcnn_loss(logits.float(), deltas.float(), move(labels), move(targets))
        precision.step(cls + box, optimizer)
        scheduler.step()
        running += (cls.item(), box.item())
        if (it + 1) % log_every == 0:
            bar.set_postfix(cls=f"{running[0] / log_every:.3f}", box=f"{running[1] / log_every:.3f}")
            running[:] = 0
        if (it + 1) % save_every == 0 or it + 1 == cfg.iterations:
            run.save(checkpoint, dataset.classes, cfg, it + 1, it + 1 == cfg.iterations, sampler_state=drawn)
    if is_main():
        if start < cfg.iterations:
            seconds = time.perf_counter() - t0
            rate = (cfg.iterations - start) * cfg.images_per_batch / seconds
            bar.write(
                f"fast-rcnn: {cfg.iterations - start} iterations in {seconds:.0f} s ({rate:.1f} images/s)"
            )
        else:
            bar.write(f"fast-rcnn: {checkpoint} holds the {cfg.iterations} iterations already")
    model.eval()
    return model


def load_fast_rcnn(state: dict, rank: int | None = None) -> FastRCNN:
    """A trained model from a checkpoint dict; ``rank`` rebuilds a :func:`compress_fc` model."""
    cfg = FastRCNNConfig(**state["config"])
    model = FastRCNN(len(state["classes"]), cfg)
    model.load_state_dict(state["model"])
    model.eval()
    return compress_fc(model, rank) if rank else model
