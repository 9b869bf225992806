"""Detection commands: ``convloc train rcnn|fast-rcnn``, ``convloc eval``, ``convloc detect``,
``convloc data make-shapes``."""

from __future__ import annotations

import json
import os
import time

import numpy as np


def register_data(sub) -> None:
    p = sub.add_parser("make-shapes", help="write the synthetic shapes detection dataset as a VOC tree")
    p.add_argument("dir")
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--image-size", type=int, nargs=2, default=(128, 192), metavar=("MIN", "MAX"),
                   help="image sides are drawn from [MIN, MAX]")  # fmt: skip
    p.add_argument("--object-size", type=int, nargs=2, default=(16, 64), metavar=("MIN", "MAX"))
    p.set_defaults(func=_make_shapes)


def _make_shapes(args) -> int:
    from convloc.data.shapes import make_shapes

    make_shapes(
        args.dir, args.images, seed=args.seed, test_fraction=args.test_fraction,
        size=tuple(args.image_size), min_size=args.object_size[0], max_size=args.object_size[1],
    )  # fmt: skip
    print(f"wrote {args.images} images to {args.dir}")
    return 0


def _proposal_args(p) -> None:
    p.add_argument("--proposals", choices=["selective-search", "sliding"], default="selective-search")
    p.add_argument("--ss-mode", choices=["fast", "quality", "single"], default="fast")
    p.add_argument("--max-proposals", type=int, default=500)
    p.add_argument("--cache", help="proposal cache folder (default: DATA/cache)")


def register_train(sub) -> None:
    for kind in ("rcnn", "fast-rcnn"):
        p = sub.add_parser(kind, help=f"train {kind} on a VOC-format dataset (torchrun for DDP)")
        p.add_argument("--data", required=True, help="VOC tree (year folder or its parent)")
        p.add_argument("--split", default="trainval")
        p.add_argument("--out", required=True, help="checkpoint file (resumed when present)")
        p.add_argument("--no-resume", action="store_true")
        p.add_argument("--backbone", choices=["small", "vgg16"], default="small")
        p.add_argument("--fc-dim", type=int, help="fc6/fc7 width (default 512 small, 4096 vgg16)")
        p.add_argument("--pretrained", help="torchvision-style VGG state dict file")
        p.add_argument("--iterations", type=int, default=2000 if kind == "fast-rcnn" else 1000)
        p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
        p.add_argument("--lr", type=float, default=0.01)
        p.add_argument("--dropout", type=float, default=0.5)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: default)")
        if kind == "fast-rcnn":
            p.add_argument("--scale", type=int, default=600)
            p.add_argument("--max-size", type=int, default=1000)
        _proposal_args(p)
        p.set_defaults(func=_train, model=kind)


def _setup(args):
    import torch

    from convloc.data import VOCDetection
    from convloc.models.common import init_distributed, seed_everything

    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world = init_distributed()
    seed_everything(args.seed + rank)
    dataset = VOCDetection(args.data, args.split)
    return dataset, rank, world


def _proposals(dataset, args, settings=None):
    from convloc.models.common import load_proposals

    s = settings or {
        "method": args.proposals,
        "mode": args.ss_mode,
        "max_boxes": args.max_proposals,
    }
    cache = getattr(args, "cache", None) or os.path.join(dataset.root, "cache")
    return load_proposals(dataset, cache, s["method"], s["mode"], s["max_boxes"]), s


def _train(args) -> int:
    dataset, rank, world = _setup(args)
    proposals, settings = _proposals(dataset, args)
    fc_dim = args.fc_dim or (512 if args.backbone == "small" else 4096)
    common = dict(
        backbone=args.backbone, fc_dim=fc_dim, optimizer=args.optimizer, lr=args.lr,
        dropout=args.dropout, seed=args.seed, proposals=settings,
    )  # fmt: skip
    if args.model == "fast-rcnn":
        from convloc.models.fast_rcnn import FastRCNNConfig, train_fast_rcnn

        cfg = FastRCNNConfig(iterations=args.iterations, scale=args.scale, max_size=args.max_size, **common)
        train_fast_rcnn(dataset, proposals, cfg, args.out, not args.no_resume, args.pretrained)
    else:
        from convloc.models.rcnn import RCNNConfig, train_rcnn

        cfg = RCNNConfig(finetune_iterations=args.iterations, **common)
        train_rcnn(dataset, proposals, cfg, args.out, not args.no_resume, args.pretrained)
    if rank == 0:
        print(f"saved {args.out}")
    return 0


def load_detector(path: str, svd_rank=None):
    """(model with ``detect(image, proposals)``, classes, proposal settings) from a checkpoint."""
    from convloc.models.common import load_checkpoint

    state = load_checkpoint(path)
    if state["kind"] == "fast-rcnn":
        from convloc.models.fast_rcnn import load_fast_rcnn

        model = load_fast_rcnn(state, svd_rank)
    elif state["kind"] == "rcnn":
        from convloc.models.rcnn import load_rcnn

        if svd_rank:
            raise ValueError("--svd: only for fast-rcnn checkpoints")
        if state["stage"] != "done":
            raise ValueError(f"checkpoint: R-CNN training stopped at stage {state['stage']!r}; rerun train")
        model = load_rcnn(state)
    else:
        raise ValueError(f"checkpoint: unknown kind {state['kind']!r}")
    return model, state["classes"], state["config"]["proposals"]


def _svd_rank(text):
    if text is None:
        return None
    parts = [int(v) for v in text.split(",")]
    return parts[0] if len(parts) == 1 else tuple(parts)


def register(sub) -> None:
    p = sub.add_parser("eval", help="VOC AP of a detector checkpoint on a VOC-format split")
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--svd", help="fast-rcnn: truncated-SVD ranks of fc6[,fc7]")
    p.add_argument("--limit", type=int, help="first N images only")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--cache", help="proposal cache folder (default: DATA/cache)")
    p.set_defaults(func=_eval)

    p = sub.add_parser("detect", help="draw a detector's boxes on an image")
    p.add_argument("checkpoint")
    p.add_argument("image")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--threshold", type=float, help="minimum score to draw (default 0.5; R-CNN 0)")
    p.add_argument("--svd", help="fast-rcnn: truncated-SVD ranks of fc6[,fc7]")
    p.set_defaults(func=_detect)


def evaluate_detector(model, dataset, proposals, limit=None, progress=True) -> dict:
    """Runs ``model`` over ``dataset`` → VOC07 and area AP, and the mean detection time per image
    (network and post-processing; proposals excluded, as in the papers' timing tables)."""
    from tqdm import tqdm

    from convloc.metrics.detection import evaluate

    n = min(limit or len(dataset), len(dataset))
    detections, truths, seconds = [], [], []
    for i in tqdm(range(n), desc="eval", unit="img", disable=not progress):
        sample = dataset[i]
        t0 = time.perf_counter()
        detections.append(model.detect(sample["image"], proposals[i]))
        seconds.append(time.perf_counter() - t0)
        truths.append(sample)
    c = len(dataset.classes)
    return {
        "voc07": evaluate(detections, truths, c, use_07_metric=True),
        "area": evaluate(detections, truths, c, use_07_metric=False),
        "seconds_per_image": float(np.mean(seconds)) if seconds else float("nan"),
        "images": n,
    }


def _eval(args) -> int:
    import torch

    from convloc.data import VOCDetection
    from convloc.metrics.detection import format_table

    if args.threads:
        torch.set_num_threads(args.threads)
    model, classes, settings = load_detector(args.checkpoint, _svd_rank(args.svd))
    dataset = VOCDetection(args.data, args.split, classes=classes)
    proposals, _ = _proposals(dataset, args, settings)
    r = evaluate_detector(model, dataset, proposals, args.limit)
    print(format_table(classes, {"AP (VOC07)": r["voc07"], "AP (area)": r["area"]}))
    print(
        f"test time: {1000 * r['seconds_per_image']:.1f} ms/image over {r['images']} images"
        " (proposals excluded)"
    )
    if args.json:
        out = {
            "checkpoint": args.checkpoint, "svd": args.svd, "classes": list(classes),
            "ap_voc07": r["voc07"]["ap"].tolist(), "map_voc07": r["voc07"]["map"],
            "ap_area": r["area"]["ap"].tolist(), "map_area": r["area"]["map"],
            "seconds_per_image": r["seconds_per_image"], "images": r["images"],
            "threads": torch.get_num_threads(),
        }  # fmt: skip
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


def _detect(args) -> int:
    from PIL import Image, ImageDraw

    from convloc.models.common import compute_proposals

    model, classes, settings = load_detector(args.checkpoint, _svd_rank(args.svd))
    with Image.open(args.image) as im:
        image = np.asarray(im.convert("RGB"))
    props = compute_proposals(image, settings["method"], settings["mode"], settings["max_boxes"])
    det = model.detect(image, props)
    threshold = args.threshold if args.threshold is not None else (0.5 if hasattr(model, "roi_pool") else 0.0)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    palette = [
        (255, 64, 64),
        (64, 200, 64),
        (64, 128, 255),
        (255, 200, 0),
        (200, 64, 255),
        (0, 220, 220),
    ]
    shown = 0
    for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
        if score < threshold:
            continue
        colour = palette[int(label) % len(palette)]
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        text = f"{classes[label]} {score:.2f}"
        tx, ty = x1, max(0.0, y1 - 11)
        draw.rectangle(draw.textbbox((tx, ty), text), fill=colour)
        draw.text((tx, ty), text, fill=(0, 0, 0))
        shown += 1
    canvas.save(args.output)
    print(f"{shown} detections drawn to {args.output}")
    return 0


__all__ = ["evaluate_detector", "load_detector", "register", "register_data", "register_train"]
