"""What both detectors share: image normalisation, seeds, checkpoints, distributed setup, and
the on-disk cache of region proposals."""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

__all__ = [
    "to_tensor",
    "seed_everything",
    "save_checkpoint",
    "load_checkpoint",
    "init_distributed",
    "is_main",
    "barrier",
    "compute_proposals",
    "load_proposals",
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
    Returns ``(rank, world_size)``; ``(0, 1)`` for a plain run."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


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
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    todo = [
        i for i in range(len(dataset)) if not os.path.exists(os.path.join(folder, f"{dataset.ids[i]}.npy"))
    ]
    for i in tqdm(todo[rank::world], desc="proposals", unit="img", disable=not todo or rank != 0):
        boxes = compute_proposals(dataset[i]["image"], method, mode, max_boxes, seed=i)
        path = os.path.join(folder, f"{dataset.ids[i]}.npy")
        np.save(path + ".tmp.npy", boxes)
        os.replace(path + ".tmp.npy", path)
    barrier()
    return [np.load(os.path.join(folder, f"{image_id}.npy")) for image_id in dataset.ids]
