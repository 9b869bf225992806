"""R-CNN (Girshick et al., CVPR 2014): every proposal is cropped with context, warped to the
network input and classified on its own CNN features.

Training, in the paper's stages:

1. fine-tune the CNN as a (K+1)-way classifier of warped proposals (batches of 128: 32 with
   IoU ≥ 0.5 with a ground truth, labelled with its class, 96 background);
2. extract fc7 features of the ground truths and proposals of every training image — batched,
   cached on disk (``features/<key>/``, the key digesting the CNN's weights and batch-norm
   statistics and the warping, one file per image named by its content, annotation and
   proposals; under torchrun the ranks extract their shares with rank 0's model);
3. one linear SVM per class: positives are the ground-truth boxes, negatives the proposals with
   IoU < 0.3 with every instance of the class, mined hard (kept when scored > -1, dropped when
   < -1.2, retrained whenever the cache grew); features scaled to a mean L2 norm of 20 so the
   paper's C = 0.001 (positives weighted 2, bias feature 10) carries over. The loss is the
   squared hinge, solved in the primal with L-BFGS (the paper used liblinear's hinge);
4. class-specific ridge regression (λ = 1000) from pool5 features to the box targets, on
   proposals with IoU > 0.6 with a ground truth of that class.

Test: SVM scores of all proposals, regressed boxes, per-class NMS at IoU 0.3, top 100.

Warping: the box is enlarged so that, once warped to ``crop × crop``, ``context_pad`` pixels of
context surround it (16 at the paper's 227, scaled by ``crop / 227`` for smaller inputs); the
part outside the image is filled with the mean (zero after normalisation).
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from convloc.data.files import atomic_file, read_ahead
from convloc.models import box_coder
from convloc.models.backbones import VGG, build_backbone, load_torchvision_vgg
from convloc.models.common import (
    Precision,
    barrier,
    broadcast_buffers,
    data_parallel,
    decode_detections,
    is_main,
    rank_world,
    start_training,
    to_tensor,
)

__all__ = ["RCNNConfig", "RCNN", "warp_regions", "train_svm", "train_rcnn", "load_rcnn"]


@dataclass
class RCNNConfig:
    backbone: str = "small"
    fc_dim: int = 512
    dropout: float = 0.5
    context_pad: int = 16  # at a 227-pixel input; scaled to the backbone's crop size
    finetune_iterations: int = 1000
    batch_size: int = 128
    images_per_batch: int = 8
    fg_fraction: float = 0.25
    fg_iou: float = 0.5
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_steps: tuple = (0.7,)
    svm_c: float = 1e-3
    svm_pos_weight: float = 2.0
    svm_bias: float = 10.0
    svm_neg_iou: float = 0.3
    hard_threshold: float = -1.0001
    easy_threshold: float = -1.2
    retrain_every: int = 2000  # new hard negatives between SVM retrainings
    feature_norm: float = 20.0
    bbox_iou: float = 0.6
    bbox_lambda: float = 1000.0
    nms_iou: float = 0.3
    score_threshold: float = -1.0
    max_detections: int = 100
    extract_batch: int = 128
    seed: int = 0
    proposals: dict = field(default_factory=dict)  # how proposals were made, for detect and eval


def warp_regions(image: torch.Tensor, boxes: torch.Tensor, crop: int, pad: float) -> torch.Tensor:
    """Normalised image [3, H, W], boxes [K, 4] → warped crops [K, 3, crop, crop] (bilinear),
    each box enlarged so that ``pad`` output pixels of context surround it."""
    _, h, w = image.shape
    k = len(boxes)
    if k == 0:
        return image.new_zeros(0, 3, crop, crop)
    grow = crop / (crop - 2 * pad)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    bw = (boxes[:, 2] - boxes[:, 0]).clamp(min=1) * grow
    bh = (boxes[:, 3] - boxes[:, 1]).clamp(min=1) * grow
    # Output pixel centre u ∈ (-1, 1) samples image x = cx + u·bw/2, in grid_sample's units.
    theta = torch.zeros(k, 2, 3, device=image.device)
    theta[:, 0, 0], theta[:, 0, 2] = bw / w, 2 * cx / w - 1
    theta[:, 1, 1], theta[:, 1, 2] = bh / h, 2 * cy / h - 1
    grid = F.affine_grid(theta, [k, 3, crop, crop], align_corners=False)
    # One image, K crops stacked along the height: no copy of the image per crop.
    out = F.grid_sample(image[None], grid.reshape(1, k * crop, crop, 2), align_corners=False)
    return out[0].reshape(3, k, crop, crop).transpose(0, 1).contiguous()


class RCNN(nn.Module):
    def __init__(self, num_classes: int, cfg: RCNNConfig, backbone: VGG | None = None):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.cnn = backbone or build_backbone(cfg.backbone, fc_dim=cfg.fc_dim, dropout=cfg.dropout)
        self.classifier = nn.Linear(self.cnn.fc_dim, num_classes + 1)  # fine-tuning only
        d = self.cnn.out_channels * self.cnn.roi_size**2
        self.register_buffer("svm_weight", torch.zeros(num_classes, self.cnn.fc_dim))
        self.register_buffer("svm_bias", torch.zeros(num_classes))
        self.register_buffer("bbox_weight", torch.zeros(num_classes, d + 1, 4))
        self.register_buffer("fc7_scale", torch.ones(()))
        self.register_buffer("pool5_scale", torch.ones(()))

    @property
    def crop(self) -> int:
        return self.cnn.crop_size

    @property
    def pad(self) -> float:
        return self.cfg.context_pad * self.crop / 227

    def crops(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return warp_regions(image, boxes, self.crop, self.pad)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """Fine-tuning logits [N, C+1]."""
        return self.classifier(self.cnn(crops))

    @torch.no_grad()
    def features(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pool5 [K, D], fc7 [K, fc_dim]) of ``boxes`` in normalised ``image``, in batches, on the
        model's device."""
        device = self.svm_bias.device
        image, boxes = image.to(device), boxes.to(device)
        pool5, fc7 = [], []
        for s in range(0, len(boxes), self.cfg.extract_batch):
            p = self.cnn.pool5(self.crops(image, boxes[s : s + self.cfg.extract_batch]))
            pool5.append(p)
            fc7.append(self.cnn.head(p))
        if not pool5:
            d = self.cnn.out_channels * self.cnn.roi_size**2
            return torch.zeros(0, d, device=device), torch.zeros(0, self.cnn.fc_dim, device=device)
        return torch.cat(pool5), torch.cat(fc7)

    @torch.no_grad()
    def detect(self, image: np.ndarray, proposals: np.ndarray) -> dict:
        """One image uint8 [H, W, 3] and its proposals [K, 4] → dict(boxes, scores, labels),
        computed on the model's device."""
        h, w = image.shape[:2]
        props = torch.as_tensor(proposals, dtype=torch.float32).reshape(-1, 4).to(self.svm_bias.device)
        pool5, fc7 = self.features(to_tensor(image), props)
        scores = (fc7 * self.fc7_scale) @ self.svm_weight.T + self.svm_bias
        x = torch.cat((pool5 * self.pool5_scale, pool5.new_ones(len(props), 1)), 1)
        deltas = torch.einsum("kd,cdj->kcj", x, self.bbox_weight).reshape(len(props), -1)
        return decode_detections(props, deltas, scores, h, w, self.cfg)


def _squared_hinge_svm(x, y, weights, c, bias_mult, w0=None):
    """Minimises ½‖w‖² + C Σ weights_i · max(0, 1 − y_i (w·[x_i, bias_mult]))² with L-BFGS."""
    xb = torch.cat((x, torch.full((len(x), 1), bias_mult)), 1).double()
    y, weights = y.double(), weights.double()
    w = (w0.clone() if w0 is not None else torch.zeros(xb.shape[1], dtype=torch.float64)).requires_grad_()
    opt = torch.optim.LBFGS([w], max_iter=200, tolerance_grad=1e-7, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        margin = (1 - y * (xb @ w)).clamp(min=0)
        loss = 0.5 * w @ w + c * (weights * margin**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def train_svm(
    positives: torch.Tensor, negative_batches, cfg: RCNNConfig, progress: bool = False
) -> tuple[torch.Tensor, float]:
    """One class's SVM with hard-negative mining.

    Args:
        positives: [P, D] scaled features; negative_batches: iterable of [N_i, D] negatives
            (one per image), visited once in order.

    Returns:
        (weight [D], bias)."""
    d = positives.shape[1]
    w = torch.zeros(d + 1, dtype=torch.float64)
    cache = torch.zeros(0, d)
    fresh = 0

    def score(x):
        return (x.double() @ w[:d] + w[d] * cfg.svm_bias).float()

    def retrain():
        nonlocal w, cache
        x = torch.cat((positives, cache))
        y = torch.cat((torch.ones(len(positives)), -torch.ones(len(cache))))
        weights = torch.cat((torch.full((len(positives),), cfg.svm_pos_weight), torch.ones(len(cache))))
        w = _squared_hinge_svm(x, y, weights, cfg.svm_c, cfg.svm_bias, w)
        cache = cache[score(cache) >= cfg.easy_threshold]

    for negatives in negative_batches:
        hard = negatives[score(negatives) > cfg.hard_threshold]
        cache = torch.cat((cache, hard))
        fresh += len(hard)
        if fresh >= cfg.retrain_every:
            retrain()
            fresh = 0
    if fresh or not len(cache):
        retrain()
    return w[:d].float(), float(w[d] * cfg.svm_bias)


def _ridge(x: torch.Tensor, t: torch.Tensor, lam: float) -> torch.Tensor:
    """[x, 1] → t with λ‖W‖² on the weights (not the bias): W [D+1, 4]."""
    xb = torch.cat((x, torch.ones(len(x), 1)), 1).double()
    reg = torch.eye(xb.shape[1], dtype=torch.float64) * lam
    reg[-1, -1] = 0
    return torch.linalg.solve(xb.T @ xb + reg, xb.T @ t.double()).float()


@lru_cache(maxsize=1024)
def _image(dataset, i: int) -> np.ndarray:
    return dataset.image(i)


def _sample_crops(model, dataset, proposals, cfg, generator):
    """A fine-tuning batch from ``images_per_batch`` random images: crops and labels."""
    from convloc.ops import box_iou

    crops, labels = [], []
    per_image = cfg.batch_size // cfg.images_per_batch
    n_fg = round(cfg.fg_fraction * per_image)
    for i in torch.randint(len(dataset), (cfg.images_per_batch,), generator=generator).tolist():
        t = dataset.target(i)
        keep = ~t["difficult"]
        gt = torch.as_tensor(t["boxes"][keep]).reshape(-1, 4)
        gt_labels = torch.as_tensor(t["labels"][keep])
        cand = torch.cat((gt, torch.as_tensor(proposals[i]).reshape(-1, 4)))
        if len(gt):
            best, assigned = box_iou(cand, gt).nan_to_num(0).max(1)
        else:
            best, assigned = torch.zeros(len(cand)), torch.zeros(len(cand), dtype=torch.int64)
        fg = torch.nonzero(best >= cfg.fg_iou).flatten()
        bg = torch.nonzero(best < cfg.fg_iou).flatten()
        fg = fg[torch.randperm(len(fg), generator=generator)[:n_fg]]
        bg = bg[torch.randperm(len(bg), generator=generator)[: per_image - len(fg)]]
        image = to_tensor(_image(dataset, i))
        if torch.rand(1, generator=generator).item() < 0.5:  # horizontal flip
            image = image.flip(2)
            cand = box_coder.hflip(cand, image.shape[2])
        device = model.svm_bias.device
        crops.append(model.crops(image.to(device), cand[torch.cat((fg, bg))].to(device)))
        lab = torch.zeros(len(fg) + len(bg), dtype=torch.int64)
        if len(gt):
            lab[: len(fg)] = gt_labels[assigned[fg]] + 1
        labels.append(lab)
    return torch.cat(crops), torch.cat(labels)


def _feature_key(model: RCNN) -> str:
    """What the cached features depend on besides the data: the CNN's weights and buffers as used
    in eval mode (batch-norm statistics included) and the warping."""
    h = hashlib.sha1(f"{model.crop}|{model.pad}".encode())
    for k, v in model.cnn.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _feature_files(dataset, proposals, folder: str) -> list[str]:
    """One file per image, named by what its features are computed from: the image's content,
    its annotation and its proposals."""
    paths = []
    for i in range(len(dataset)):
        t = dataset.target(i)
        h = hashlib.sha1(dataset.image_digest(i).encode())
        for a in (t["boxes"], t["labels"], t["difficult"], np.asarray(proposals[i], np.float32)):
            h.update(a.tobytes())
        paths.append(os.path.join(folder, f"{h.hexdigest()[:20]}.npz"))
    return paths


def _extract(model, dataset, proposals, folder, rank, world, workers: int = 0) -> list[str]:
    """Caches per image: fc7 of [gt; proposals], the max IoU with each class, and pool5 with the
    regression target of the boxes that overlap a ground truth by more than ``bbox_iou``. Each
    rank computes its share of the missing files, its images read ahead by ``workers`` threads;
    returns every image's file once all are there."""
    from convloc.ops import box_iou

    os.makedirs(folder, exist_ok=True)
    cfg = model.cfg
    paths = _feature_files(dataset, proposals, folder)
    # this rank's images by index, whatever the others have written by now
    todo = [i for i in range(rank, len(paths), world) if not os.path.exists(paths[i])]
    images = read_ahead(lambda i: _image(dataset, i), todo, workers)
    for i, image in zip(tqdm(todo, desc="rcnn features", unit="img", disable=not todo or rank != 0), images):
        t = dataset.target(i)
        gt_all = torch.as_tensor(t["boxes"]).reshape(-1, 4)
        keep = ~t["difficult"]
        gt = gt_all[torch.as_tensor(keep)]
        boxes = torch.cat((gt, torch.as_tensor(proposals[i]).reshape(-1, 4)))
        pool5, fc7 = (f.cpu() for f in model.features(to_tensor(image), boxes))
        class_iou = torch.zeros(len(boxes), model.num_classes)
        reg_idx, reg_cls, reg_t = (
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros((0, 4), np.float32),
        )
        if len(gt_all):
            iou = box_iou(boxes, gt_all).nan_to_num(0)
            for c in range(model.num_classes):
                sel = torch.as_tensor(t["labels"] == c)
                if sel.any():
                    class_iou[:, c] = iou[:, sel].max(1).values
        if len(gt):
            iou = box_iou(boxes, gt).nan_to_num(0)
            best, assigned = iou.max(1)
            idx = torch.nonzero(best > cfg.bbox_iou).flatten()
            reg_idx = idx.numpy()
            reg_cls = t["labels"][keep][assigned[idx].numpy()]
            reg_t = box_coder.encode(boxes[idx], gt[assigned[idx]]).numpy()
        path = paths[i]
        buf = io.BytesIO()
        np.savez(
            buf, fc7=fc7.numpy().astype(np.float16), n_gt=len(gt), gt_labels=t["labels"][keep],
            class_iou=class_iou.numpy().astype(np.float16),
            pool5=pool5[reg_idx].numpy().astype(np.float16),
            reg_cls=reg_cls, reg_targets=reg_t,
        )  # fmt: skip
        with atomic_file(path) as tmp:
            tmp.write_bytes(buf.getvalue())
    barrier()
    return paths


def train_rcnn(
    dataset,
    proposals: list[np.ndarray],
    cfg: RCNNConfig,
    checkpoint: str,
    resume: bool = True,
    pretrained: str | None = None,
    save_every: int = 200,
    device: str | torch.device = "cpu",
    amp: str = "off",
    workers: int = 0,
) -> RCNN:
    """All four stages; ``checkpoint`` records the stage reached, so a rerun resumes there. The
    CNN fine-tunes and extracts on ``device``, fine-tuning in ``amp``
    (:class:`~convloc.models.common.Precision`); ``workers`` threads read the images ahead of the
    extraction; the SVMs and regressors are fitted on the CPU.
    Under torchrun the fine-tuning is data-parallel and the feature extraction is split by rank;
    the SVMs and regressors are fitted on rank 0."""
    rank, world = rank_world()

    def build() -> RCNN:
        model = RCNN(len(dataset.classes), cfg)
        if pretrained:
            load_torchvision_vgg(model.cnn, pretrained)
        return model

    precision = Precision(amp, device)
    data = dataset.digest()
    run = start_training(build, cfg, "finetune_iterations", "rcnn", data, checkpoint, resume, precision)
    model, optimizer, scheduler, generator = run.model, run.optimizer, run.scheduler, run.generator
    stage, start = (run.resumed["stage"], run.resumed["iteration"]) if run.resumed else ("finetune", 0)

    def save(stage_name, iteration):
        run.save(checkpoint, dataset.classes, cfg, iteration, stage_name == "done", stage=stage_name)

    if stage == "finetune":
        net = data_parallel(model)
        model.train()
        bar = tqdm(range(start, cfg.finetune_iterations), desc="rcnn fine-tune", disable=rank != 0,
                   initial=start, total=cfg.finetune_iterations)  # fmt: skip
        running = 0.0
        for it in bar:
            crops, labels = _sample_crops(model, dataset, proposals, cfg, generator)
            with precision.autocast():
                loss = F.cross_entropy(net(crops), labels.to(precision.device))
            precision.step(loss, optimizer)
            scheduler.step()
            running += loss.item()
            if (it + 1) % 20 == 0:
                bar.set_postfix(loss=f"{running / 20:.3f}")
                running = 0.0
            if (it + 1) % save_every == 0 and it + 1 < cfg.finetune_iterations:
                save("finetune", it + 1)
        # DDP keeps the weights alike but each rank's batch-norm statistics follow its own
        # batches: every rank extracts with rank 0's, the model the checkpoint holds.
        broadcast_buffers(model)
        save("features", cfg.finetune_iterations)
        stage = "features"
    model.eval()
    if stage == "features":
        folder = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "features", _feature_key(model))
        files = _extract(model, dataset, proposals, folder, rank, world, workers)
        if is_main():
            _fit_svms_and_regressors(model, files, cfg)
        stage = "done"
        save("done", cfg.finetune_iterations)
    broadcast_buffers(model)  # every rank returns the fitted model
    return model


def _fit_svms_and_regressors(model: RCNN, paths: list[str], cfg: RCNNConfig) -> None:
    files = [np.load(path) for path in paths]
    fc7_norm = np.mean([np.linalg.norm(f["fc7"].astype(np.float32), axis=1).mean() for f in files])
    model.fc7_scale.fill_(cfg.feature_norm / max(float(fc7_norm), 1e-6))
    pool5 = [torch.from_numpy(f["pool5"].astype(np.float32)) for f in files]
    reg_cls = [torch.from_numpy(f["reg_cls"]) for f in files]
    reg_t = [torch.from_numpy(f["reg_targets"]) for f in files]
    all_pool5 = torch.cat(pool5)
    if len(all_pool5):
        model.pool5_scale.fill_(cfg.feature_norm / max(float(all_pool5.norm(dim=1).mean()), 1e-6))
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    for c in tqdm(range(model.num_classes), desc="svm + bbox regression", unit="class"):
        scale = float(model.fc7_scale)
        pos = [
            torch.from_numpy(f["fc7"][: int(f["n_gt"])][f["gt_labels"] == c].astype(np.float32))
            for f in files
        ]
        positives = torch.cat(pos) * scale

        def negatives(c=c, scale=scale):
            for i in order:
                f = files[i]
                n_gt = int(f["n_gt"])
                neg = f["class_iou"][n_gt:, c].astype(np.float32) < cfg.svm_neg_iou
                yield torch.from_numpy(f["fc7"][n_gt:][neg].astype(np.float32)) * scale

        if len(positives):
            w, b = train_svm(positives, negatives(), cfg)
            model.svm_weight[c], model.svm_bias[c] = w, b
        x = torch.cat([p[k == c] for p, k in zip(pool5, reg_cls)]) * float(model.pool5_scale)
        t = torch.cat([r[k == c] for r, k in zip(reg_t, reg_cls)])
        if len(x):
            model.bbox_weight[c] = _ridge(x, t, cfg.bbox_lambda)


def load_rcnn(state: dict) -> RCNN:
    model = RCNN(len(state["classes"]), RCNNConfig(**state["config"]))
    model.load_state_dict(state["model"])
    model.eval()
    return model
