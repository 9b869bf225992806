"""What the pipelines share: image normalisation, seeds, checkpoints, distributed (torchrun)
training helpers and the minibatch loop; and what the two detectors share: the on-disk cache of
region proposals, the optimizer, the training prologue (seeding, schedule, resuming), the
checkpoint and the test-time selection of detections."""

from __future__ import annotations

import ctypes
import datetime
import hashlib
import os
import random
import re
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from convloc.data.files import atomic_file
from convloc.models import box_coder

__all__ = [
    "to_tensor",
    "resolve_device",
    "describe_device",
    "Precision",
    "keep_freed_memory",
    "seed_everything",
    "save_checkpoint",
    "load_checkpoint",
    "init_distributed",
    "close_distributed",
    "is_main",
    "barrier",
    "rank_world",
    "data_parallel",
    "model_device",
    "rng_states",
    "set_rng_state",
    "check_resumable",
    "tensors_digest",
    "broadcast_buffers",
    "fit_epochs",
    "compute_proposals",
    "load_proposals",
    "make_optimizer",
    "TrainingRun",
    "start_training",
    "EpochCheckpoint",
    "decode_detections",
]

# torchvision's ImageNet statistics: a user's pretrained VGG-16 sees the inputs it was trained on.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] RGB → normalised float32 [3, H, W]."""
    x = torch.from_numpy(np.array(image, np.float32)).permute(2, 0, 1) / 255
    return (x - MEAN) / STD


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The device ``--device`` names: ``auto`` is the GPU where convloc's CUDA kernels can run
    (:func:`convloc.cuda_available`: a CUDA build, and a GPU torch sees), else the CPU; ``cuda`` is
    the GPU of ``LOCAL_RANK`` under torchrun (one process per GPU), else GPU 0; ``cuda:N`` is GPU N.
    A ``ValueError`` starting ``device:`` when the device named cannot be used here."""
    import convloc

    text = str(spec)
    if text == "auto":
        text = "cuda" if convloc.cuda_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not match:
        raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got {text!r}")
    if not convloc.cuda_available():
        why = (
            "torch sees no CUDA GPU"
            if convloc.info()["compiled_with_cuda"]
            else "convloc was built without CUDA"
        )
        raise ValueError(f"device: {text!r} asked for, but {why}; --device cpu runs on the CPU")
    if match.group(1) is not None and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ValueError(
            f"device: {text!r} would put every torchrun process on one GPU; 'cuda' gives each the GPU "
            "of its LOCAL_RANK"
        )
    index = int(match.group(1) if match.group(1) is not None else os.environ.get("LOCAL_RANK", 0))
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(
            f"device: cuda:{index} asked for, but torch sees {count} GPU(s), cuda:0 to cuda:{count - 1}"
        )
    return torch.device("cuda", index)


def describe_device(device: torch.device) -> str:
    """``cpu, N threads`` or ``cuda:N (the GPU's name)``: what a command says it runs on."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu, {torch.get_num_threads()} thread(s)"


class Precision:
    """``--amp``: what the training loops compute in on ``device``. ``off`` is float32; ``bf16`` and
    ``fp16`` run the forward passes under :func:`torch.autocast` in that type (the weights, their
    gradients and the optimizer stay float32); ``fp16`` scales the loss (:class:`torch.amp.GradScaler`)
    so that small gradients do not underflow, and needs a GPU (the CPU's autocast computes in
    bfloat16). A ``ValueError`` starting ``amp:`` otherwise."""

    DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, amp: str = "off", device: str | torch.device = "cpu") -> None:
        if amp not in self.DTYPES:
            raise ValueError(f"amp: expected off, bf16 or fp16, got {amp!r}")
        self.amp, self.device = amp, torch.device(device)
        if amp == "fp16" and self.device.type != "cuda":
            raise ValueError(f"amp: fp16 needs a CUDA device, got {self.device.type!r}; bf16 runs on the CPU")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")

    def autocast(self) -> torch.autocast:
        """The region in which the forward pass and the loss are computed."""
        return torch.autocast(self.device.type, dtype=self.DTYPES[self.amp], enabled=self.amp != "off")

    def step(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Clears the gradients, backpropagates ``loss`` and steps ``optimizer`` (through the loss
        scaler with fp16: a step whose gradients overflowed is skipped and the scale lowered)."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def keep_freed_memory() -> None:
    """Makes glibc's malloc keep the memory a training step frees for the next step (no-op with
    another C library). By default it maps every block above 32 MB afresh and unmaps it when freed,
    and returns freed heap to the system: first touching those pages again costs page faults
    every step (at the paper's 600-px scale, system time was a quarter of the user time)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt's parameters, from <malloc.h>
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2**31 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(path: str, state: dict) -> None:
    """Writes atomically (a run killed mid-save keeps its previous checkpoint), every tensor on the
    CPU: a checkpoint written on a GPU loads where there is none."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_file(path) as tmp:
        torch.save(_on_cpu(state), tmp)


def _on_cpu(x):
    """``x`` with the tensors in its dicts, lists and tuples moved to the CPU."""
    if isinstance(x, Tensor):
        return x.cpu()
    if isinstance(x, dict):
        return {k: _on_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_on_cpu(v) for v in x)
    return x


def load_checkpoint(path: str) -> dict:
    """The dict :func:`save_checkpoint` wrote; a ``ValueError`` starting ``checkpoint:`` when the
    file is missing, truncated, corrupt or holds something else."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - whatever torch.load meets in a bad file, one message
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"checkpoint: {path!r} is not a checkpoint ({reason})") from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint: {path!r} holds a {type(state).__name__}, not a convloc checkpoint")
    return state


def check_resumable(state: dict, kind: str, data: str, settings: dict) -> None:
    """Raises a one-line ``ValueError`` starting ``checkpoint:`` unless ``state`` is a checkpoint
    of a ``kind`` run on the same ``data`` (a content digest) with the same ``settings`` (what
    defines the model and its training; the length of the run may differ)."""
    if state.get("kind") != kind:
        got = f"a {state['kind']!r} run" if state.get("kind") else "no convloc training run"
        raise ValueError(f"checkpoint: holds {got}, not a {kind!r} one")
    if state.get("data") != data:
        raise ValueError("checkpoint: was trained on other data (another dataset or split)")
    saved = state.get("settings", {})
    changed = [f"{k} {saved.get(k)!r} there, {v!r} here" for k, v in settings.items() if saved.get(k) != v]
    if changed:
        raise ValueError(f"checkpoint: was trained with other settings ({'; '.join(changed)})")


def tensors_digest(*tensors) -> str:
    """SHA-1 of arrays' or tensors' contents: the data key of a run trained on arrays."""
    h = hashlib.sha1()
    for t in tensors:
        a = t.numpy() if isinstance(t, Tensor) else np.asarray(t)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def init_distributed(device: str | torch.device = "cpu") -> tuple[int, int]:
    """Joins the process group when started by ``torchrun``: NCCL when the ranks train on GPUs
    (``device``, one per process, :func:`resolve_device`), gloo on the CPU. Returns
    ``(rank, world_size)``; ``(0, 1)`` for a plain run. The other ranks wait while rank 0 alone
    evaluates (hours on a full VOC split), so collectives time out after a day, not the default
    30 minutes; torchrun stops every rank as soon as one fails."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1
    device = torch.device(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(days=1))
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
    under torchrun, on the GPU its parameters are on; ``model`` itself otherwise."""
    if rank_world()[1] == 1:
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def model_device(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """``device`` (``model`` moved there), or where ``model``'s parameters are when it is None."""
    if device is None:
        return next(model.parameters()).device
    model.to(device)
    return torch.device(device)


def rng_states(generator: torch.Generator, sampler_state: Tensor | None = None) -> list[dict]:
    """Every rank's random state in rank order: its sample ``generator`` (or ``sampler_state``, the
    state it had when the batches trained so far were drawn, where a loader draws ahead) and
    torch's global generators (dropout), for a checkpoint that resumes each rank where it stopped."""
    state = {
        "sampler": generator.get_state() if sampler_state is None else sampler_state,
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    world = rank_world()[1]
    if world == 1:
        return [state]
    states = [None] * world
    dist.all_gather_object(states, state)
    return states


def set_rng_state(generator: torch.Generator, states: list[dict]) -> None:
    """Restores this rank's entry of :func:`rng_states` (a rank the run did not have keeps its
    fresh seed)."""
    rank = rank_world()[0]
    if rank < len(states):
        generator.set_state(states[rank]["sampler"])
        torch.set_rng_state(states[rank]["torch"])
        if "cuda" in states[rank] and torch.cuda.is_initialized():
            torch.cuda.set_rng_state(states[rank]["cuda"])


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
    resume: dict | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    precision: Precision | None = None,
) -> list[float]:
    """The minibatch loop of the segmentation and face trainers, data-parallel under torchrun,
    each step under ``precision`` (:class:`Precision`; float32 on the CPU when None).

    Each epoch shuffles ``range(n)`` with ``generator`` into batches of ``batch_size``. Seeded
    alike on every rank, the generator gives all ranks the same batches; ``loss_of(batch, part)``
    makes its random draws for the whole ``batch`` (keeping the ranks' generators in step) and
    returns the mean loss over this rank's share ``batch[part]``, through a :func:`data_parallel`
    model so that ``backward`` averages the gradients. Every rank needs ``min_per_rank`` items of
    a batch (a ``ValueError`` otherwise, rather than a run that skips every batch); a final short
    batch without them (with ``drop_last``, any final short batch) is skipped. Returns each epoch's
    mean loss over all ranks; tqdm shows on rank 0 only.

    After each epoch ``on_epoch`` gets the loop's state (epoch, losses, optimizer, scheduler, loss
    scale, the generator and torch's global generator); ``resume``, such a state, continues the loop
    after its epoch with the same draws, so the model ends with the bits of an uninterrupted run.
    """
    precision = precision or Precision()
    rank, world = rank_world()
    if batch_size < world * min_per_rank:
        raise ValueError(
            f"batch_size: a batch of {batch_size} cannot give each of the {world} ranks "
            f"{min_per_rank} item(s); expected at least {world * min_per_rank}"
        )
    part = slice(rank, None, world)
    history: list[float] = []
    if resume:
        history = list(resume["history"])
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(resume["scheduler"])
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        if resume.get("scaler"):
            precision.scaler.load_state_dict(resume["scaler"])
        if resume.get("cuda_rng") is not None and torch.cuda.is_initialized():
            torch.cuda.set_rng_state(resume["cuda_rng"])
    bar = tqdm(range(len(history), epochs), desc=desc, disable=not progress or rank != 0,
               initial=len(history), total=epochs)  # fmt: skip
    for _ in bar:
        order = torch.randperm(n, generator=generator)
        stats = torch.zeros(2, dtype=torch.float64)  # loss sum, items
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            if len(batch) < (batch_size if drop_last else world * min_per_rank):
                continue
            with precision.autocast():
                loss = loss_of(batch, part)
            precision.step(loss, optimizer)
            share = len(batch[part])
            stats += torch.tensor([loss.item() * share, share], dtype=torch.float64)
        if scheduler is not None:
            scheduler.step()
        if world > 1:
            stats = stats.to(precision.device)  # NCCL reduces GPU tensors only
            dist.all_reduce(stats)
            stats = stats.cpu()
        history.append(float(stats[0] / stats[1].clamp_min(1)))
        if on_epoch is not None:
            on_epoch({
                "history": list(history), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": precision.scaler.state_dict(),
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
            })  # fmt: skip
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
    """Proposals for every image of ``dataset``, computed once and cached in ``cache_dir``, one
    file per image named by its content (:meth:`~convloc.data.VOCDetection.image_digest`) in a
    folder named by the settings: a rewritten image gets fresh proposals, and ``convloc detect``
    computes the same boxes for the same pixels.

    Under torchrun each rank computes its share of the missing images, then all read the cache."""
    folder = os.path.join(cache_dir, f"proposals-{method}-{mode}-{max_boxes}")
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"{dataset.image_digest(i)}.npy") for i in range(len(dataset))]
    rank, world = rank_world()
    # this rank's images by index, whatever the others have written by now
    todo = [i for i in range(rank, len(paths), world) if not os.path.exists(paths[i])]
    for i in tqdm(todo, desc="proposals", unit="img", disable=not todo or rank != 0):
        boxes = compute_proposals(dataset[i]["image"], method, mode, max_boxes)
        with atomic_file(paths[i]) as tmp:
            np.save(tmp, boxes)
    barrier()
    return [np.load(path) for path in paths]


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
    """A detector's training state: the model (on its device), its optimizer and schedule, the
    :class:`Precision` of its steps, this rank's generator of training samples, the checkpoint's
    header (kind, data digest, settings) and ``resumed``, the checkpoint the run resumed from
    (None when fresh)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision
    generator: torch.Generator
    header: dict
    resumed: dict | None

    def save(
        self, path: str, classes, cfg, iteration: int, complete: bool, sampler_state=None, **extra
    ) -> None:
        """Writes the checkpoint that :func:`start_training` resumes from (rank 0 writes, every rank
        waits): the header, ``classes``, the config, the model, optimizer, schedule and loss-scale
        states, ``iteration``, every rank's random state (``sampler_state``: as for
        :func:`rng_states`), whether training is ``complete``, and ``extra``."""
        # a resumed run draws what the uninterrupted one would
        states = rng_states(self.generator, sampler_state)
        if is_main():
            save_checkpoint(
                path,
                {
                    **self.header,
                    "classes": list(classes),
                    "config": asdict(cfg),
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.precision.scaler.state_dict(),
                    "iteration": iteration,
                    "generators": states,
                    "complete": complete,
                    **extra,
                },
            )
        barrier()


def start_training(
    build: Callable[[], nn.Module],
    cfg,
    length: str,
    kind: str,
    data: str,
    checkpoint: str,
    resume: bool,
    precision: Precision | None = None,
) -> TrainingRun:
    """The detectors' training prologue: seeds torch with ``cfg.seed`` and calls ``build`` (the
    same initial weights for a seed, on any device), moves the model to ``precision``'s device
    (float32 on the CPU when None), makes the optimizer (:func:`make_optimizer`) and a schedule
    that multiplies the learning rate by 0.1 at the fractions ``cfg.lr_steps`` of the iterations
    (``cfg``'s field ``length``), and seeds this rank's sample generator with
    ``cfg.seed * 1000 + rank``. When ``resume`` and ``checkpoint`` exists, the model, optimizer,
    schedule and random states continue from it, provided it is a ``kind`` run on the same
    ``data`` (digest) with the same config but for its length (a ``ValueError`` otherwise)."""
    rank = rank_world()[0]
    settings = {k: v for k, v in asdict(cfg).items() if k != length}
    header = {"kind": kind, "data": data, "settings": settings}
    state = None
    if resume and os.path.exists(checkpoint):
        state = load_checkpoint(checkpoint)
        check_resumable(state, kind, data, settings)
    precision = precision or Precision()
    torch.manual_seed(cfg.seed)
    model = build().to(precision.device)
    optimizer = make_optimizer(model, cfg)
    milestones = [int(f * getattr(cfg, length)) for f in cfg.lr_steps]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, 0.1)
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    if state:
        if state["iteration"] > getattr(cfg, length):
            raise ValueError(
                f"checkpoint: holds {state['iteration']} iterations, more than the "
                f"{getattr(cfg, length)} asked for"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            precision.scaler.load_state_dict(state["scaler"])
        set_rng_state(generator, state["generators"])
    return TrainingRun(model, optimizer, scheduler, precision, generator, header, state)


class EpochCheckpoint:
    """The checkpoint file of an epoch-based run (``convloc train fcn|crfrnn|face``), whose
    training goes through named ``stages`` in order, each a :func:`fit_epochs` loop.

    :meth:`save` (rank 0 writes, every rank waits) records the header (``kind``, the ``data``
    digest, the ``settings``), the stage, its loop state, the model's ``state_dict``, whether the
    run is ``complete``, and what the command adds. Built with ``resume`` where ``path`` exists,
    it reads the file back, refusing a run of another kind, data or settings (``ValueError``);
    :meth:`restore`, :meth:`done` and :meth:`loop` then continue the run where it stopped."""

    def __init__(self, path: str, kind: str, data: str, settings: dict, stages, resume: bool = True):
        self.path, self.stages = path, list(stages)
        self.header = {"kind": kind, "data": data, "settings": settings}
        self.saved = None
        if resume and os.path.exists(path):
            self.saved = load_checkpoint(path)
            check_resumable(self.saved, kind, data, settings)
        self._loop = self.saved["loop"] if self.saved else None

    def restore(self, model: nn.Module) -> None:
        """Loads the saved weights into ``model`` (nothing on a fresh run)."""
        if self.saved:
            model.load_state_dict(self.saved["state_dict"])

    def done(self, stage: str) -> bool:
        """Whether the saved run went past ``stage``."""
        return bool(self.saved) and self.stages.index(self.saved["stage"]) > self.stages.index(stage)

    def loop(self, stage: str, epochs: int) -> dict | None:
        """The saved loop state of ``stage`` to resume (None unless the run stopped in it); a
        ``ValueError`` when it holds more than ``epochs`` epochs."""
        if not self.saved or self.saved["stage"] != stage:
            return None
        loop = self.saved["loop"]
        if len(loop["history"]) > epochs:
            raise ValueError(
                f"checkpoint: holds {len(loop['history'])} epochs of {stage}, more than the {epochs} asked for"
            )
        return loop

    def save(
        self, model: nn.Module, stage: str, loop: dict | None = None, complete: bool = False, **extra
    ) -> None:
        """Writes the checkpoint; ``loop`` None keeps the last loop state saved."""
        self._loop = loop if loop is not None else self._loop
        loop = self._loop
        if is_main():
            save_checkpoint(self.path, {
                **self.header, "stage": stage, "loop": loop, "state_dict": model.state_dict(),
                "complete": complete, **extra,
            })  # fmt: skip
        barrier()


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
    labels = torch.arange(c, device=scores.device).expand(k, c)
    keep = scores > cfg.score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    widths = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
    boxes, scores, labels = boxes[widths], scores[widths], labels[widths]
    keep = batched_nms(boxes.contiguous(), scores.contiguous(), labels.contiguous(), cfg.nms_iou)
    keep = keep[: cfg.max_detections]
    return {
        "boxes": boxes[keep].cpu().numpy().astype(np.float32),
        "scores": scores[keep].cpu().numpy().astype(np.float32),
        "labels": labels[keep].cpu().numpy().astype(np.int64),
    }
