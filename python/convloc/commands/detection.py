"""Detection commands: ``convloc train rcnn|fast-rcnn``, ``convloc eval``, ``convloc detect``,
``convloc data make-shapes``."""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from convloc.commands import (
    UsageError,
    announce_device,
    building,
    checkpoint_path,
    device_args,
    existing_dir,
    existing_file,
    integer,
    naming,
    output_dir,
    output_file,
    pick_device,
    read_checkpoint,
    real,
    renamed,
    set_threads,
    training_args,
)


def register_data(sub) -> None:
    p = sub.add_parser(
        "make-shapes",
        help="write the synthetic shapes detection dataset as a VOC tree",
        description="Writes images of 2-5 textured shapes (circle, square, triangle, cross) on "
        "cluttered backgrounds as a PASCAL VOC tree: JPEGImages, Annotations, ImageSets/Main "
        "(train, val, trainval, test and per-class lists) and classes.txt. Image i depends only on "
        "the seed and i.",
    )
    p.add_argument("dir", type=output_dir, help="folder to write the tree into (made when missing)")
    p.add_argument("--images", type=integer(1), default=400, help="number of images")
    p.add_argument("--seed", type=integer(0), default=0, help="random seed")
    p.add_argument(
        "--test-fraction", type=real("[0, 1)"), default=0.25, help="fraction of the images in the test split"
    )
    p.add_argument(
        "--image-size",
        type=integer(16),
        nargs=2,
        default=[128, 192],
        metavar=("MIN", "MAX"),
        help="image sides are drawn from [MIN, MAX] (default: 128 192)",
    )
    p.add_argument(
        "--object-size",
        type=integer(2),
        nargs=2,
        default=[16, 64],
        metavar=("MIN", "MAX"),
        help="object sides are drawn from [MIN, MAX] on a log scale; objects smaller than "
        "16 pixels are marked difficult (default: 16 64)",
    )
    p.set_defaults(func=_make_shapes)


def _make_shapes(args) -> int:
    from convloc.data.shapes import make_shapes

    for option, (low, high) in (("--image-size", args.image_size), ("--object-size", args.object_size)):
        if low > high:
            raise UsageError(f"{option}: expected MIN <= MAX, got {low} {high}")
    make_shapes(
        args.dir, args.images, seed=args.seed, test_fraction=args.test_fraction,
        size=tuple(args.image_size), min_size=args.object_size[0], max_size=args.object_size[1],
    )  # fmt: skip
    print(f"wrote {args.images} images to {args.dir} (VOC tree; splits in ImageSets/Main)")
    return 0


def _proposal_args(p) -> None:
    g = p.add_argument_group("region proposals (computed once per image and cached)")
    g.add_argument(
        "--proposals",
        choices=["selective-search", "sliding"],
        default="selective-search",
        help="selective search, or sliding windows (a cheap baseline)",
    )
    g.add_argument(
        "--ss-mode",
        choices=["fast", "quality", "single"],
        default="fast",
        help="selective search's strategy set",
    )
    g.add_argument("--max-proposals", type=integer(1), default=500, help="proposals per image")
    g.add_argument("--cache", type=output_dir, help="proposal cache folder (default: DATA/cache)")


def register_train(sub) -> None:
    for kind, paper in (
        ("rcnn", "R-CNN (Girshick et al. 2014)"),
        ("fast-rcnn", "Fast R-CNN (Girshick 2015)"),
    ):
        p = sub.add_parser(
            kind,
            help=f"train {kind} on a VOC-format dataset (torchrun for DDP)",
            description=f"Trains {paper} on a VOC-format detection split and writes a checkpoint "
            "for `convloc eval` and `convloc detect`. Under torchrun the ranks share the training "
            "data-parallel.",
        )
        p.add_argument(
            "--data",
            required=True,
            type=existing_dir,
            help="VOC tree: the year folder or a folder holding VOC2007 or VOCdevkit/VOC2007",
        )
        p.add_argument("--split", default="trainval", help="image set to train on (ImageSets/Main/SPLIT.txt)")
        p.add_argument(
            "--out", required=True, type=checkpoint_path, help="checkpoint file (resumed when present)"
        )
        p.add_argument("--no-resume", action="store_true", help="start afresh even when --out exists")
        p.add_argument(
            "--backbone",
            choices=["small", "vgg16"],
            default="small",
            help="VGG-style network under the detector",
        )
        small = 128 if kind == "fast-rcnn" else 512
        p.add_argument(
            "--fc-dim",
            type=integer(1),
            help=f"fc6/fc7 width (default: {small} on the small backbone, 4096 on vgg16)",
        )
        p.add_argument("--pretrained", type=existing_file, help="torchvision-style VGG state dict file")
        if kind == "fast-rcnn":
            _fast_rcnn_args(p)
        else:
            p.add_argument(
                "--iterations", type=integer(1), default=1000,
                help="fine-tuning iterations, of 128 warped regions each (then the SVMs)",
            )  # fmt: skip
            p.add_argument(
                "--optimizer", choices=["sgd", "adam"], default="sgd",
                help="SGD with momentum 0.9 as in the paper, or AdamW",
            )  # fmt: skip
            p.add_argument(
                "--lr",
                type=real("(0, inf)"),
                default=0.01,
                help="learning rate, x0.1 after 70%% of the iterations",
            )
            p.add_argument("--dropout", type=real("[0, 1)"), default=0.5, help="dropout after fc6 and fc7")
        training_args(
            p,
            "DataLoader processes reading and resizing the images while the model trains (the batches "
            "are the same for any number)"
            if kind == "fast-rcnn"
            else "threads reading the images ahead of the feature extraction",
        )
        _proposal_args(p)
        p.set_defaults(func=_train, model=kind)


def _fast_rcnn_args(p) -> None:
    g = p.add_argument_group(
        "training recipe (--recipe sets the options below; an option given overrides it)"
    )
    g.add_argument(
        "--recipe",
        choices=["scratch", "paper"],
        default="scratch",
        help="scratch: the small backbone trained from scratch, AdamW lr 1e-3 without dropout, "
        "images near their own size (--scale 128 --max-size 192), backgrounds of IoU [0, 0.5) with "
        "the objects; paper: the paper's fine-tuning of a pretrained VGG-16, SGD lr 1e-3 with "
        "momentum 0.9, dropout 0.5, --scale 600 --max-size 1000, backgrounds of IoU [0.1, 0.5)",
    )
    g.add_argument(
        "--iterations", type=integer(1), default=2000, help="training iterations, of 2 images x 64 RoIs each"
    )
    g.add_argument(
        "--optimizer", choices=["sgd", "adam"], help="SGD with momentum 0.9, or AdamW (default: the recipe's)"
    )
    g.add_argument(
        "--lr",
        type=real("(0, inf)"),
        help="learning rate, x0.1 after 70%% of the iterations (default: the recipe's)",
    )
    g.add_argument("--dropout", type=real("[0, 1)"), help="dropout after fc6 and fc7 (default: the recipe's)")
    g.add_argument("--scale", type=integer(1), help="shorter image side in pixels (default: the recipe's)")
    g.add_argument(
        "--max-size",
        type=integer(1),
        help="longest image side in pixels, caps --scale (default: the recipe's)",
    )


def _dataset(root: str, split: str, classes=None):
    """The VOC split named on the command line; a :class:`UsageError` naming --data or --split
    when there is none or it lists no images."""
    from convloc.data import VOCDetection

    try:
        dataset = VOCDetection(root, split, classes=classes)
    except FileNotFoundError as e:
        raise renamed(e, {"root": "--data", "split": "--split"}) from None
    if not len(dataset):
        raise UsageError(f"--split: ImageSets/Main/{split}.txt in {dataset.root} lists no images")
    return dataset


def _setup(args):
    from convloc.models.common import init_distributed, keep_freed_memory, seed_everything

    device = pick_device(args)
    set_threads(args.threads)
    keep_freed_memory()
    dataset = _dataset(args.data, args.split)
    rank, world = init_distributed(device)
    seed_everything(args.seed + rank)
    announce_device(device, args)
    return dataset, device, rank


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
    dataset, device, rank = _setup(args)
    proposals, settings = _proposals(dataset, args)
    # Fast R-CNN runs fc6/fc7 on every proposal of the shared feature map: at 512 they took a
    # third of its test time, for no better mAP on the synthetic shapes than at 128.
    fc_dim = args.fc_dim or (4096 if args.backbone == "vgg16" else 128 if args.model == "fast-rcnn" else 512)
    common = dict(backbone=args.backbone, fc_dim=fc_dim, seed=args.seed, proposals=settings)
    run = dict(device=device, amp=args.amp)
    if args.model == "fast-rcnn":
        from convloc.models.fast_rcnn import RECIPES, FastRCNNConfig, train_fast_rcnn

        options = ("optimizer", "lr", "dropout", "scale", "max_size")
        given = {k: getattr(args, k) for k in options if getattr(args, k) is not None}
        cfg = FastRCNNConfig(iterations=args.iterations, **{**RECIPES[args.recipe], **given}, **common)
        with naming({"checkpoint": "--out"}):
            train_fast_rcnn(
                dataset,
                proposals,
                cfg,
                args.out,
                not args.no_resume,
                args.pretrained,
                workers=args.workers,
                **run,
            )
    else:
        from convloc.models.rcnn import RCNNConfig, train_rcnn

        cfg = RCNNConfig(
            finetune_iterations=args.iterations, optimizer=args.optimizer, lr=args.lr, dropout=args.dropout,
            **common,
        )  # fmt: skip
        with naming({"checkpoint": "--out"}):
            train_rcnn(dataset, proposals, cfg, args.out, not args.no_resume, args.pretrained,
                       workers=args.workers, **run)  # fmt: skip
    if rank == 0:
        print(f"saved {args.out}")
    return 0


def load_detector(path: str, svd_rank: int | tuple[int, int] | None = None):
    """(model with ``detect(image, proposals)``, classes, proposal settings) from a checkpoint of
    ``convloc train rcnn|fast-rcnn``; ``svd_rank`` compresses a Fast R-CNN's fc layers. A
    :class:`UsageError` when the file or ``svd_rank`` does not fit."""
    state = read_checkpoint(path, ("fast-rcnn", "rcnn"))
    if state["kind"] == "rcnn" and svd_rank:
        raise UsageError("--svd: only for fast-rcnn checkpoints, got an rcnn one")
    with building(path, state["kind"]):
        if state["kind"] == "fast-rcnn":
            from convloc.models.fast_rcnn import load_fast_rcnn

            model = load_fast_rcnn(state, svd_rank)
        else:
            from convloc.models.rcnn import load_rcnn

            model = load_rcnn(state)
        proposals = {k: state["config"]["proposals"][k] for k in ("method", "mode", "max_boxes")}
        return model, state["classes"], proposals


def _svd_rank(text: str) -> int | tuple[int, int]:
    """An argparse type: ``RANK`` for fc6 and fc7, or ``FC6,FC7``."""
    try:
        ranks = [int(v) for v in text.split(",")]
    except ValueError:
        ranks = []
    if len(ranks) not in (1, 2) or min(ranks) < 1:
        raise argparse.ArgumentTypeError(f"expected RANK or FC6,FC7 (positive integers), got {text!r}")
    return ranks[0] if len(ranks) == 1 else tuple(ranks)


def register(sub) -> None:
    svd_help = "fast-rcnn: truncated-SVD ranks of fc6 and fc7, RANK or FC6,FC7 (default: no compression)"
    p = sub.add_parser(
        "eval",
        help="VOC AP of a detector checkpoint on a VOC-format split",
        description="Detects the objects of every image of a VOC-format split with the proposals "
        "the detector was trained with, and prints each class's AP (VOC07 11-point and area under "
        "the curve), the mAP and the time per image.",
    )
    p.add_argument("checkpoint", type=existing_file, help="checkpoint of `convloc train rcnn|fast-rcnn`")
    p.add_argument("--data", required=True, type=existing_dir, help="VOC tree, as for `convloc train`")
    p.add_argument("--split", default="test", help="image set to evaluate (ImageSets/Main/SPLIT.txt)")
    p.add_argument("--svd", type=_svd_rank, help=svd_help)
    p.add_argument("--limit", type=integer(1), help="evaluate the first N images only (default: all)")
    p.add_argument(
        "--threads",
        type=integer(0),
        default=0,
        help="threads of torch and of convloc's kernels; 0: their defaults",
    )
    p.add_argument("--json", type=output_file(".json"), help="also write the results to this JSON file")
    p.add_argument("--cache", type=output_dir, help="proposal cache folder (default: DATA/cache)")
    device_args(p)
    p.set_defaults(func=_eval)

    p = sub.add_parser(
        "detect",
        help="draw a detector's boxes on an image",
        description="Detects objects in one image and draws their boxes, each in its class's "
        "colour with the class and score.",
    )
    p.add_argument("checkpoint", type=existing_file, help="checkpoint of `convloc train rcnn|fast-rcnn`")
    p.add_argument("image", type=existing_file, help="image to detect objects in")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        type=output_file(".png", ".jpg", ".jpeg"),
        help="the image with the boxes drawn",
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="minimum score to draw (default: 0.5 for fast-rcnn's probabilities, 0 for rcnn's SVM scores)",
    )
    p.add_argument("--svd", type=_svd_rank, help=svd_help)
    device_args(p)
    p.set_defaults(func=_detect)


def evaluate_detector(model, dataset, proposals, limit=None, progress=True) -> dict:
    """Runs ``model`` over ``dataset`` → VOC07 and area AP, and the mean detection time per image
    (network and post-processing; proposals excluded, as in the papers' timing tables), on the
    clock and in CPU time (all threads; on one thread it is the time an idle machine takes)."""
    from tqdm import tqdm

    from convloc.metrics.detection import evaluate

    n = min(limit or len(dataset), len(dataset))
    if n:  # untimed: the first call's one-off costs (allocations, kernel selection)
        model.detect(dataset[0]["image"], proposals[0])
    detections, truths, seconds, cpu = [], [], [], []
    for i in tqdm(range(n), desc="eval", unit="img", disable=not progress):
        sample = dataset[i]
        t0, c0 = time.perf_counter(), time.process_time()
        detections.append(model.detect(sample["image"], proposals[i]))
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        truths.append(sample)
    c = len(dataset.classes)
    return {
        "voc07": evaluate(detections, truths, c, use_07_metric=True),
        "area": evaluate(detections, truths, c, use_07_metric=False),
        "seconds_per_image": float(np.mean(seconds)) if seconds else float("nan"),
        "cpu_seconds_per_image": float(np.mean(cpu)) if cpu else float("nan"),
        "images": n,
    }


def _eval(args) -> int:
    import torch

    from convloc.data.files import atomic_file
    from convloc.metrics.detection import format_table
    from convloc.models.common import keep_freed_memory

    device = pick_device(args)
    set_threads(args.threads)
    keep_freed_memory()
    model, classes, settings = load_detector(args.checkpoint, args.svd)
    dataset = _dataset(args.data, args.split, classes)
    announce_device(device, args)
    proposals, _ = _proposals(dataset, args, settings)
    r = evaluate_detector(model.to(device), dataset, proposals, args.limit)
    print(format_table(classes, {"AP (VOC07)": r["voc07"], "AP (area)": r["area"]}))
    print(
        f"test time: {1000 * r['seconds_per_image']:.1f} ms/image ({1000 * r['cpu_seconds_per_image']:.1f} ms "
        f"of CPU) over {r['images']} images (proposals excluded)"
    )
    if args.json:
        out = {
            "checkpoint": args.checkpoint, "svd": args.svd, "classes": list(classes),
            "ap_voc07": r["voc07"]["ap"].tolist(), "map_voc07": r["voc07"]["map"],
            "ap_area": r["area"]["ap"].tolist(), "map_area": r["area"]["map"],
            "seconds_per_image": r["seconds_per_image"], "cpu_seconds_per_image": r["cpu_seconds_per_image"],
            "images": r["images"],
            "threads": torch.get_num_threads(),
        }  # fmt: skip
        with atomic_file(args.json) as tmp:
            tmp.write_text(json.dumps(out, indent=2))
    return 0


def _detect(args) -> int:
    from PIL import Image

    from convloc.data.files import atomic_file, read_image
    from convloc.data.pictures import detection_picture
    from convloc.models.common import compute_proposals

    device = pick_device(args)
    model, classes, settings = load_detector(args.checkpoint, args.svd)
    try:
        image = read_image(args.image, "RGB")
    except ValueError as e:
        raise UsageError(f"image: {e}") from None
    announce_device(device, args)
    props = compute_proposals(image, settings["method"], settings["mode"], settings["max_boxes"])
    det = model.to(device).detect(image, props)
    threshold = args.threshold if args.threshold is not None else (0.5 if hasattr(model, "roi_pool") else 0.0)
    with atomic_file(args.output) as tmp:
        Image.fromarray(detection_picture(image, det, classes, threshold)).save(tmp)
    shown = int((det["scores"] >= threshold).sum())
    print(f"{shown} detections drawn to {args.output}")
    return 0


__all__ = ["evaluate_detector", "load_detector", "register", "register_data", "register_train"]
