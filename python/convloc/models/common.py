"""What the pipelines share: image normalisation, seeds, checkpoints, distributed (torchrun)
training helpers and the minibatch loop; and what the two detectors share: the on-disk cache of
region proposals, the optimizer, the training prologue (seeding, schedule, resuming), the
checkpoint and the test-time selection of detections."""

from __future__ import annotations

import datetime
import hashlib
import os
import random
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from convloc.models import box_coder

__all__ = [
    "to_tensor",
    "seed_everything",
    "save_checkpoint",
    "load_checkpoint",
    "init_distributed",
    "close_distributed",
    "is_main",
    "barrier",
    "rank_world",
    "data_parallel",
    "generator_states",
    "broadcast_buffers",
    "fit_epochs",
    "compute_proposals",
    "load_proposals",
    "make_optimizer",
    "TrainingRun",
    "start_training",
    "decode_detections",
]

# torchvision's ImageNet statistics: a user's pretrained VGG-16 sees the inputs it was trained on.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] RGB → normalised float32 [3, H, W]."""
    x = torch.from_numpy(np.array(image, np.float32)).permute(2, 0, 1) / 255
    return (x - MEAN) / STD


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(path: str, state: dict) -> None:
    """Writes atomically: a run killed mid-save keeps its previous checkpoint."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def init_distributed() -> tuple[int, int]:
    """Joins the process group when started by ``torchrun``. The pipelines train on the CPU, so the
    backend is gloo even where a GPU exists (nccl refuses CPU tensors and several ranks per GPU).
    Returns ``(rank, world_size)``; ``(0, 1)`` for a plain run. The other ranks wait while rank 0
    alone evaluates (hours on a full VOC split), so collectives time out after a day, not gloo's
    default 30 minutes; torchrun stops every rank as soon as one fails."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=1))
    return dist.get_rank(), dist.get_world_size()


def close_distributed() -> None:
    """Waits for every rank, then leaves the process group of a torchrun run (no-op otherwise).
    A rank that exits while the group lives (rank 1 returns from training while rank 0 still
    evaluates) can abort at exit in gloo's threads ("terminate called without an active
    exception"). Call it after a run that succeeded; torchrun stops the
    other ranks when one fails."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the process group; ``(0, 1)`` outside torchrun."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def data_parallel(model: nn.Module) -> nn.Module:
    """``model`` in DistributedDataParallel (rank 0's weights, gradients averaged over ranks)
    under torchrun; ``model`` itself otherwise."""
    return nn.parallel.DistributedDataParallel(model) if rank_world()[1] > 1 else model


def generator_states(generator: torch.Generator) -> list[Tensor]:
    """Every rank's ``generator`` state in rank order, for a checkpoint that resumes each rank's
    sampling where it stopped."""
    world = rank_world()[1]
    if world == 1:
        return [generator.get_state()]
    states = [None] * world
    dist.all_gather_object(states, generator.get_state())
    return states


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (batch-norm statistics, fitted SVMs) on every rank, so all ranks hold the
    same model after training."""
    if dist.is_initialized():
        for buf in model.buffers():
            dist.broadcast(buf, 0)


def fit_epochs(
    loss_of: Callable[[Tensor, slice], Tensor],
    optimizer: torch.optim.Optimizer,
    n: int,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    desc: str = "train",
    progress: bool = False,
    drop_last: bool = False,
    scheduler=None,
    min_per_rank: int = 1,
) -> list[float]:
    """The minibatch loop of the segmentation and face trainers, data-parallel under torchrun.

    Each epoch shuffles ``range(n)`` with ``generator`` into batches of ``batch_size``. Seeded
    alike on every rank, the generator gives all ranks the same batches; ``loss_of(batch, part)``
    makes its random draws for the whole ``batch`` (keeping the ranks' generators in step) and
    returns the mean loss over this rank's share ``batch[part]``, through a :func:`data_parallel`
    model so that ``backward`` averages the gradients. Every rank needs ``min_per_rank`` items of
    a batch (a ``ValueError`` otherwise, rather than a run that skips every batch); a final short
    batch without them (with ``drop_last``, any final short batch) is skipped. Returns each epoch's
    mean loss over all ranks; tqdm shows on rank 0 only.
    """
    rank, world = rank_world()
    if batch_size < world * min_per_rank:
        raise ValueError(
            f"batch_size: a batch of {batch_size} cannot give each of the {world} ranks "
            f"{min_per_rank} item(s); expected at least {world * min_per_rank}"
        )
    part = slice(rank, None, world)
    history = []
    for _ in tqdm(range(epochs), desc=desc, disable=not progress or rank != 0):
        order = torch.randperm(n, generator=generator)
        stats = torch.zeros(2, dtype=torch.float64)  # loss sum, items
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            if len(batch) < (batch_size if drop_last else world * min_per_rank):
                continue
            loss = loss_of(batch, part)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            share = len(batch[part])
            stats += torch.tensor([loss.item() * share, share], dtype=torch.float64)
        if scheduler is not None:
            scheduler.step()
        if world > 1:
            dist.all_reduce(stats)
        history.append(float(stats[0] / stats[1].clamp_min(1)))
    return history


def compute_proposals(
    image: np.ndarray,
    method: str = "selective-search",
    mode: str = "fast",
    max_boxes: int = 500,
    seed: int = 0,
) -> np.ndarray:
    """Region proposals for one image → float32 [K, 4] (x1, y1, x2, y2).

    ``selective-search`` is :func:`convloc.ops.selective_search`; ``sliding`` is
    :func:`convloc.ops.sliding_windows` over square and 2:1 / 1:2 windows from 16 px to the image
    side at a quarter-window stride (a cheap baseline)."""
    from convloc import ops

    if method == "selective-search":
        boxes = ops.selective_search(image, mode=mode, seed=seed, max_boxes=max_boxes)
    elif method == "sliding":
        h, w = image.shape[:2]
        sizes, strides = [], []
        side = 16
        while side <= max(h, w):
            for ww, hh in ((side, side), (side, side // 2), (side // 2, side)):
                sizes.append((hh, ww))
                strides.append((max(hh // 4, 1), max(ww // 4, 1)))
            side = int(side * 1.5)
        boxes = np.concatenate([ops.sliding_windows((h, w), [s], [t]) for s, t in zip(sizes, strides)])
        if len(boxes) > max_boxes:
            boxes = boxes[np.random.default_rng(seed).choice(len(boxes), max_boxes, replace=False)]
    else:
        raise ValueError(f"method: expected 'selective-search' or 'sliding', got {method!r}")
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def load_proposals(
    dataset,
    cache_dir: str,
    method: str = "selective-search",
    mode: str = "fast",
    max_boxes: int = 500,
) -> list[np.ndarray]:
    """Proposals for every image of ``dataset``, computed once and cached in ``cache_dir``.

    Under torchrun each rank computes its share of the missing images, then all read the cache."""
    key = hashlib.sha1(f"{dataset.root}|{method}|{mode}|{max_boxes}".encode()).hexdigest()[:10]
    folder = os.path.join(cache_dir, f"proposals-{method}-{mode}-{max_boxes}-{key}")
    os.makedirs(folder, exist_ok=True)
    rank, world = rank_world()
    todo = [
        i for i in range(len(dataset)) if not os.path.exists(os.path.join(folder, f"{dataset.ids[i]}.npy"))
    ]
    barrier()  # every rank has listed the missing images before one is written: one list, shared out
    for i in tqdm(todo[rank::world], desc="proposals", unit="img", disable=not todo or rank != 0):
        boxes = compute_proposals(dataset[i]["image"], method, mode, max_boxes, seed=i)
        path = os.path.join(folder, f"{dataset.ids[i]}.npy")
        np.save(path + ".tmp.npy", boxes)
        os.replace(path + ".tmp.npy", path)
    barrier()
    return [np.load(os.path.join(folder, f"{image_id}.npy")) for image_id in dataset.ids]


def make_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay as in the papers, or Adam (decoupled weight decay), from
    a detector config's ``optimizer``, ``lr``, ``momentum`` and ``weight_decay``."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {cfg.optimizer!r}")


@dataclass
class TrainingRun:
    """A detector's training state: the model, its optimizer and schedule, this rank's generator
    of training samples, and ``resumed``, the checkpoint the run resumed from (None when fresh)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    resumed: dict | None

    def save(self, path: str, kind: str, classes, cfg, iteration: int, **extra) -> None:
        """Writes the checkpoint that :func:`start_training` resumes from (rank 0 writes, every rank
        waits): ``kind``, ``classes``, the config, the model, optimizer and scheduler states,
        ``iteration``, every rank's generator state and ``extra``."""
        states = generator_states(self.generator)  # a resumed run draws the same samples on every rank
        if is_main():
            save_checkpoint(
                path,
                {
                    "kind": kind,
                    "classes": list(classes),
                    "config": asdict(cfg),
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "iteration": iteration,
                    "generators": states,
                    **extra,
                },
            )
        barrier()


def start_training(
    build: Callable[[], nn.Module], cfg, iterations: int, checkpoint: str, resume: bool
) -> TrainingRun:
    """The detectors' training prologue: seeds torch with ``cfg.seed`` and calls ``build`` (the
    same initial weights for a seed), makes the optimizer (:func:`make_optimizer`) and a schedule
    that multiplies the learning rate by 0.1 at the fractions ``cfg.lr_steps`` of ``iterations``,
    and seeds this rank's sample generator with ``cfg.seed * 1000 + rank``. When ``resume`` and
    ``checkpoint`` exists, the model, optimizer, schedule and generator continue from it."""
    rank = rank_world()[0]
    torch.manual_seed(cfg.seed)
    model = build()
    optimizer = make_optimizer(model, cfg)
    milestones = [int(f * iterations) for f in cfg.lr_steps]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, 0.1)
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    state = load_checkpoint(checkpoint) if resume and os.path.exists(checkpoint) else None
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if rank < len(state["generators"]):
            generator.set_state(state["generators"][rank])
    return TrainingRun(model, optimizer, scheduler, generator, state)


def decode_detections(
    proposals: Tensor, deltas: Tensor, scores: Tensor, height: int, width: int, cfg
) -> dict:
    """A detector's test-time output for one image. ``proposals`` [K, 4] moved by their per-class
    box ``deltas`` [K, 4C] (:func:`convloc.models.box_coder.decode`) and clipped to the image, with
    per-class ``scores`` [K, C]; kept where the score exceeds ``cfg.score_threshold`` and the box is
    not empty, then per-class NMS at ``cfg.nms_iou`` and the ``cfg.max_detections`` best →
    dict(boxes float32 [D, 4], scores float32 [D], labels int64 [D] in 0..C-1)."""
    from convloc.ops import batched_nms

    k, c = scores.shape
    boxes = box_coder.clip(box_coder.decode(proposals, deltas), height, width).view(k, c, 4)
    labels = torch.arange(c).expand(k, c)
    keep = scores > cfg.score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    widths = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
    boxes, scores, labels = boxes[widths], scores[widths], labels[widths]
    keep = batched_nms(boxes.contiguous(), scores.contiguous(), labels.contiguous(), cfg.nms_iou)
    keep = keep[: cfg.max_detections]
    return {
        "boxes": boxes[keep].numpy().astype(np.float32),
        "scores": scores[keep].numpy().astype(np.float32),
        "labels": labels[keep].numpy().astype(np.int64),
    }
