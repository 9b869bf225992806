"""Segmentation and face-verification commands: ``convloc train fcn|crfrnn|face``,
``convloc segment``, ``convloc verify``, ``convloc data make-segmentation|make-faces``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

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
        "make-segmentation",
        help="write the synthetic VOC-format segmentation set",
        description="Writes images of 1-3 shapes (disk, square, triangle, ring: the class is the "
        "shape, not the colour) on textured ground as a PASCAL VOC segmentation set: JPEGImages, "
        "SegmentationClass (palette PNGs, 255 on a one-pixel band along every boundary), "
        "ImageSets/Segmentation/{train,val}.txt and classes.txt. Deterministic in the seed.",
    )
    p.add_argument("root", type=output_dir, help="folder to write the set into (made when missing)")
    p.add_argument("--train", type=integer(1), default=300, help="images in the train split")
    p.add_argument("--val", type=integer(1), default=100, help="images in the val split")
    p.add_argument("--size", type=integer(8), default=64, help="image side in pixels")
    p.add_argument("--seed", type=integer(0), default=0, help="random seed")
    p.set_defaults(func=_make_segmentation)

    p = sub.add_parser(
        "make-faces",
        help="write the synthetic LFW-format identity set and pairs file",
        description="Writes synthetic people (face shape, skin, hair, eyes, ...) under varying "
        "pose, lighting and background in LFW's layout: ROOT/train/<Name>/<Name>_0001.jpg to train "
        "on, ROOT/lfw/... with other people, and ROOT/pairs.txt over ROOT/lfw: 10 folds of "
        "disjoint people, each with matched and as many mismatched pairs. Deterministic in the seed.",
    )
    p.add_argument("root", type=output_dir, help="folder to write the set into (made when missing)")
    p.add_argument("--train-identities", type=integer(1), default=200, help="people in ROOT/train")
    p.add_argument(
        "--test-identities",
        type=integer(20),
        default=100,
        help="people in ROOT/lfw, at least 2 for each of the 10 folds",
    )
    p.add_argument("--images", type=integer(2), default=8, help="images per person")
    p.add_argument(
        "--pairs-per-fold", type=integer(1), default=60, help="matched (= mismatched) pairs per fold"
    )
    p.add_argument("--size", type=integer(8), default=32, help="image side in pixels")
    p.add_argument("--seed", type=integer(0), default=0, help="random seed")
    p.set_defaults(func=_make_faces)


def register_train(sub) -> None:
    p = sub.add_parser(
        "fcn",
        help="FCN-32s/16s/8s on a VOC-format segmentation set (torchrun for DDP)",
        description="Trains a fully convolutional network (Long et al. 2015) on a VOC-format "
        "segmentation split, prints its scores on the validation split as JSON and writes a "
        "checkpoint for `convloc segment`, `train crfrnn` and `train fcn --init`.",
    )
    _seg_args(p)
    p.add_argument(
        "--variant",
        choices=("32s", "16s", "8s"),
        default="8s",
        help="stride of the finest skip: 32s none, 16s pool4, 8s pool4 and pool3",
    )
    p.add_argument(
        "--layout",
        choices=("small", "vgg16"),
        default="small",
        help="backbone: a small VGG-style net or VGG-16",
    )
    p.add_argument(
        "--pad", type=integer(0),
        help="padding of conv1 (default: the layout's, any input size; an exact fit such as 17 with "
        "--fc-kernel 3 for 64 px images leaves FCN-32s a 1x1 score map)",
    )  # fmt: skip
    p.add_argument("--fc-kernel", type=integer(1), help="kernel of fc6 (default: the layout's)")
    p.add_argument(
        "--init",
        type=existing_file,
        help="checkpoint of the coarser FCN to start from (32s for 16s, 16s for 8s)",
    )
    p.add_argument(
        "--pretrained",
        type=existing_file,
        help="ImageNet VGG weights in torchvision's format (a local .pth) for --layout vgg16",
    )
    p.add_argument("--epochs", type=integer(1), default=20, help="passes over the train split")
    p.add_argument("--lr", type=real("(0, inf)"), default=3e-3, help="Adam's learning rate")
    p.add_argument("--weight-decay", type=real("[0, inf)"), default=0.0, help="Adam's weight decay")
    p.set_defaults(func=_train_fcn)

    p = sub.add_parser(
        "crfrnn",
        help="CRF-as-RNN on top of a trained FCN, end to end (torchrun for DDP)",
        description="Puts a CRF-as-RNN (Zheng et al. 2015) on a trained FCN and trains both end to "
        "end; prints, as JSON, the validation scores of the FCN, of the FCN with a dense CRF after "
        "it, of the untrained and of the trained CRF-as-RNN, and writes a checkpoint for "
        "`convloc segment`.",
    )
    _seg_args(p)
    p.add_argument(
        "--fcn",
        required=True,
        type=existing_file,
        help="checkpoint of `convloc train fcn` giving the unaries",
    )
    p.add_argument("--iterations", type=integer(1), default=5, help="mean-field iterations of the CRF")
    p.add_argument(
        "--filter",
        choices=("lattice", "exact", "learned"),
        default="lattice",
        help="the Gaussian filtering of the messages: the permutohedral lattice (approximate), exact "
        "(O(N^2), tiny images only) or learned lattice filters",
    )
    p.add_argument("--epochs", type=integer(1), default=5, help="passes over the train split")
    p.add_argument(
        "--lr",
        type=real("(0, inf)"),
        default=1e-4,
        help="learning rate of the FCN (the CRF's parameters use 0.01)",
    )
    p.add_argument("--freeze-fcn", action="store_true", help="train only the CRF's parameters")
    p.set_defaults(func=_train_crfrnn)

    p = sub.add_parser(
        "face",
        help="face embedding + triplet-loss projection, LFW-style tree (torchrun for DDP)",
        description="Trains a face descriptor as an identity classifier, then a projection of it "
        "with the triplet loss; prints, as JSON, the 10-fold accuracy on the pairs before and after "
        "the projection and writes a checkpoint for `convloc verify`.",
    )
    p.add_argument(
        "--data",
        required=True,
        type=existing_dir,
        help="root written by `convloc data make-faces` or a real one",
    )
    p.add_argument("--train-dir", default="train", help="identity folders to train on (under --data)")
    p.add_argument("--test-dir", default="lfw", help="identity folders the pairs refer to (under --data)")
    p.add_argument("--pairs", default="pairs.txt", help="LFW pairs file (under --data)")
    p.add_argument("--pretrain-epochs", type=integer(0), default=15, help="epochs of the identity classifier")
    p.add_argument("--triplet-epochs", type=integer(0), default=15, help="epochs of the triplet loss")
    p.add_argument(
        "--mining", type=_minings, default="semihard",
        help="all, hard or semihard; a comma list trains one W' per mining from the same phi "
        "(the checkpoint keeps the first)",
    )  # fmt: skip
    p.add_argument("--margin", type=real("[0, inf)"), default=0.2, help="margin of the triplet loss")
    p.add_argument("--dim", type=integer(1), default=64, help="dimension of the projection W'")
    p.add_argument("--roc", type=output_file(".png"), help="write the ROC curve to this PNG")
    _epoch_training_args(p)
    p.set_defaults(func=_train_face)


def _minings(text: str) -> list[str]:
    """An argparse type: a comma list of triplet minings."""
    from convloc.models.face import MINING

    minings = text.split(",")
    if not all(m in MINING for m in minings):
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(MINING)}, got {text!r}")
    return minings


def register(sub) -> None:
    p = sub.add_parser(
        "segment",
        help="segment an image with a trained FCN / CRF-as-RNN checkpoint",
        description="Labels every pixel of an image, writes a picture of it (the image enlarged, "
        "each class outlined in its colour over a light tint, a legend with the classes' names "
        "and shares) and prints, as JSON, the fraction of the image each class covers.",
    )
    p.add_argument("checkpoint", type=existing_file, help="checkpoint of `convloc train fcn|crfrnn`")
    p.add_argument("image", type=existing_file, help="image to segment")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        type=output_file(".png", ".jpg", ".jpeg"),
        help="the picture: the image with the segments outlined and a legend",
    )
    p.add_argument("--labels", type=output_file(".png"), help="also write the class-index palette PNG here")
    device_args(p)
    p.set_defaults(func=_segment)

    p = sub.add_parser(
        "verify",
        help="same person or not, with a trained face checkpoint",
        description="Says whether two face images show the same person: prints, as JSON, the "
        "verdict and the distance of their embeddings against the checkpoint's threshold. Exit "
        "status 0 for the same person, 1 for different people.",
    )
    p.add_argument("checkpoint", type=existing_file, help="checkpoint of `convloc train face`")
    p.add_argument("a", type=existing_file, metavar="IMAGE_A", help="first face image")
    p.add_argument("b", type=existing_file, metavar="IMAGE_B", help="second face image")
    device_args(p)
    p.set_defaults(func=_verify)


def _seg_args(p) -> None:
    p.add_argument(
        "--data", required=True, type=existing_dir, help="VOC-format root (e.g. VOCdevkit/VOC2012)"
    )
    p.add_argument(
        "--train-split", default="train", help="image set to train on (ImageSets/Segmentation/SPLIT.txt)"
    )
    p.add_argument("--val-split", default="val", help="image set to evaluate on")
    p.add_argument("--batch-size", type=integer(1), default=8, help="images per batch (over all ranks)")
    _epoch_training_args(p)


def _epoch_training_args(p) -> None:
    """The options of the training commands here: :func:`training_args` and the checkpoint."""
    training_args(p, "threads reading and decoding the images, which the training then holds in memory "
                  "(0: the main thread)")  # fmt: skip
    p.add_argument(
        "-o", "--output", required=True, type=checkpoint_path,
        help="checkpoint, written after every epoch and resumed when present",
    )  # fmt: skip
    p.add_argument("--no-resume", action="store_true", help="start afresh even when --output exists")


def _file_digest(path: str | None) -> str | None:
    """SHA-1 of a file's bytes (None for no file): a run's settings name the weights it started
    from by content."""
    if path is None:
        return None
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def _setup(args, device) -> bool:
    """Threads, seed and, under torchrun, the process group on ``device``. Every rank gets the same
    seed (the same batch order); the returned flag says whether this is rank 0, which alone
    evaluates, prints and writes the checkpoint."""
    import torch

    from convloc.models.common import init_distributed, keep_freed_memory

    keep_freed_memory()
    rank, _ = init_distributed(device)
    torch.manual_seed(args.seed)
    set_threads(args.threads)
    return rank == 0


def _make_segmentation(args) -> int:
    from convloc.data.voc_seg import make_synthetic_segmentation

    make_synthetic_segmentation(args.root, args.train, args.val, args.size, args.seed)
    print(
        f"wrote {args.train} train and {args.val} val images ({args.size}x{args.size}) with their "
        f"labels to {args.root} (VOC segmentation set; classes in classes.txt)"
    )
    return 0


def _split(root: str, split: str, option: str):
    """The segmentation split named on the command line; a :class:`UsageError` naming ``option``
    when there is none or it lists no images."""
    from convloc.data.voc_seg import VOCSegmentation

    try:
        ds = VOCSegmentation(root, split)
    except FileNotFoundError as e:
        raise renamed(e, {"split": option}) from None
    if not len(ds):
        raise UsageError(f"{option}: ImageSets/Segmentation/{split}.txt in {root} lists no images")
    return ds


def _arrays(ds, workers: int = 0):
    """The images and labels of a split as tensors, read by ``workers`` threads."""
    import torch

    images, labels = ds.arrays(workers)
    return torch.from_numpy(images), torch.from_numpy(labels)


def _report(name: str, scores, extra: dict | None = None) -> None:
    print(
        json.dumps(
            {
                "model": name,
                **{k: round(v, 4) for k, v in scores.as_dict().items()},
                **(extra or {}),
            }
        )
    )


def load_checkpoint(
    path: str, kinds: tuple[str, ...] = ("fcn", "crfrnn", "face"), option: str = "checkpoint"
):
    """The model stored by ``convloc train fcn|crfrnn|face`` (eval mode) and the checkpoint dict;
    a :class:`UsageError` naming ``option`` when ``path`` is no checkpoint of one of ``kinds``."""
    ckpt = read_checkpoint(path, kinds, option)
    kind = ckpt["kind"]
    with building(path, kind, option):
        if kind == "fcn":
            model = _build_fcn(ckpt)
        elif kind == "crfrnn":
            from convloc.models.fcn import FCNWithCRF

            model = FCNWithCRF(_build_fcn(ckpt["fcn"]), **ckpt["crf_args"])
        else:
            from convloc.models.face import FaceVerifier

            model = FaceVerifier(**ckpt["model_args"])
            missing = {"size", "threshold"} - set(ckpt)  # what `convloc verify` reads besides
            if missing:
                raise KeyError(", ".join(sorted(missing)))
        model.load_state_dict(ckpt["state_dict"])
        return model.eval(), ckpt


def _build_fcn(ckpt):
    from convloc.models.fcn import FCN, Layout

    layout = Layout(**{k: (tuple(map(tuple, v)) if k == "stages" else v) for k, v in ckpt["layout"].items()})
    return FCN(ckpt["num_classes"], ckpt["variant"], layout)


def _fcn_ckpt(model, classes) -> dict:
    return {
        "kind": "fcn",
        "variant": model.variant,
        "layout": dataclasses.asdict(model.layout),
        "num_classes": model.num_classes,
        "classes": list(classes),
        "state_dict": model.state_dict(),
    }


def _train_fcn(args) -> int:
    from convloc.models import fcn
    from convloc.models.common import EpochCheckpoint, tensors_digest
    from convloc.models.segmentation import evaluate, fit, predict_scores

    device = pick_device(args)
    ds = _split(args.data, args.train_split, "--train-split")
    val = _split(args.data, args.val_split, "--val-split")
    layout = fcn.SMALL if args.layout == "small" else fcn.VGG16
    overrides = {"pad": args.pad, "fc_kernel": args.fc_kernel}
    layout = dataclasses.replace(layout, **{k: v for k, v in overrides.items() if v is not None})
    main = _setup(args, device)
    try:
        model = fcn.FCN(ds.num_classes, args.variant, layout)
        if args.pretrained:
            model.load_classifier(args.pretrained)
    except ValueError as e:
        raise renamed(e, {"layout": "--pad/--fc-kernel", "state_dict": "--pretrained"}) from None
    if args.init:
        coarser, _ = load_checkpoint(args.init, ("fcn",), "--init")
        model.init_from(coarser)
    x, y = _arrays(ds, args.workers)
    settings = {
        "variant": args.variant, "layout": dataclasses.asdict(layout), "batch_size": args.batch_size,
        "lr": args.lr, "weight_decay": args.weight_decay, "seed": args.seed,
        "init": _file_digest(args.init), "pretrained": _file_digest(args.pretrained),
    }  # fmt: skip
    with naming({"checkpoint": "--output"}):
        ck = EpochCheckpoint(args.output, "fcn", tensors_digest(x, y), settings, ["fit"], not args.no_resume)
        resume = ck.loop("fit", args.epochs)
    ck.restore(model)
    info = {k: v for k, v in _fcn_ckpt(model, ds.classes).items() if k not in ("kind", "state_dict")}

    def save(loop):
        ck.save(model, "fit", loop, complete=len(loop["history"]) == args.epochs, **info)

    announce_device(device, args)
    epochs = args.epochs - len(resume["history"]) if resume else args.epochs  # to train now
    start = time.perf_counter()
    losses = fit(model, x, y, args.epochs, args.batch_size, args.lr, args.weight_decay, args.seed, main,
                 resume=resume, on_epoch=save, device=device, amp=args.amp)  # fmt: skip
    rate = epochs * len(x) / (time.perf_counter() - start)
    if main:
        xv, yv = _arrays(val, args.workers)
        scores = evaluate(predict_scores(model, xv), yv, ds.num_classes)
        _report(
            f"FCN-{args.variant}",
            scores,
            {"final_loss": round(losses[-1], 4), "train_images_per_s": round(rate, 1)},
        )
    return 0


def _make_faces(args) -> int:
    from convloc.data.lfw import make_synthetic_faces

    root = make_synthetic_faces(
        args.root, args.train_identities, args.test_identities, args.images, args.pairs_per_fold,
        args.size, seed=args.seed,
    )  # fmt: skip
    print(
        f"wrote {args.train_identities} people to {root / 'train'} and {args.test_identities} to "
        f"{root / 'lfw'}, {args.images} images of {args.size}x{args.size} each, and 10 folds of "
        f"{args.pairs_per_fold} matched and {args.pairs_per_fold} mismatched pairs to {root / 'pairs.txt'}"
    )
    return 0


def evaluate_face(model, pairs, size: int, projected: bool = True):
    """LFW protocol on ``pairs``: 10-fold accuracy, ROC, AUC, EER."""
    import torch

    from convloc.data.lfw import load_images
    from convloc.metrics import verification as ver
    from convloc.models.face import pair_scores

    a = torch.from_numpy(load_images(pairs.a, size))
    b = torch.from_numpy(load_images(pairs.b, size))
    scores = pair_scores(model, a, b, projected)
    kf = ver.kfold_accuracy(scores, pairs.same, pairs.fold)
    fpr, tpr, _ = ver.roc_curve(scores, pairs.same)
    return kf, fpr, tpr, scores


def _train_face(args) -> int:
    import torch
    from torch import nn

    from convloc.data.lfw import load_images, read_identities
    from convloc.metrics import verification as ver
    from convloc.models import face
    from convloc.models.common import EpochCheckpoint, tensors_digest

    device = pick_device(args)
    root = Path(args.data)
    paths, labels, names = read_identities(_folder(root, args.train_dir, "--train-dir"))
    if len(names) < 2:
        raise UsageError(
            f"--train-dir: expected identity folders (<Name>/<Name>_0001.jpg) of at least 2 people "
            f"in {root / args.train_dir}, got {len(names)}"
        )
    pairs = _read_pairs(root, args)
    main = _setup(args, device)
    x = torch.from_numpy(load_images(paths, workers=args.workers))
    size = x.shape[-1]
    y = torch.from_numpy(labels)
    model_args = {"num_identities": len(names), "dim": args.dim}
    model = face.FaceVerifier(**model_args)
    minings = args.mining
    stages = ["classify", *(f"triplet-{m}" for m in minings)]
    settings = {
        "dim": args.dim, "margin": args.margin, "mining": minings, "seed": args.seed,
        "pretrain_epochs": args.pretrain_epochs, "triplet_epochs": args.triplet_epochs,
    }  # fmt: skip
    with naming({"checkpoint": "--output"}):
        ck = EpochCheckpoint(args.output, "face", tensors_digest(x, y), settings, stages, not args.no_resume)
        resume = ck.loop("classify", args.pretrain_epochs)
    ck.restore(model)
    kept = ck.saved.get("kept") if ck.saved else None  # the first mining's projection, once trained
    info = {"model_args": model_args, "size": size}

    def saver(stage):
        def save(loop):
            ck.save(model, stage, loop, kept=kept, **info)

        return save

    announce_device(device, args)
    run = dict(device=device, amp=args.amp)
    if not ck.done("classify"):
        face.pretrain_classifier(model, x, y, args.pretrain_epochs, seed=args.seed, progress=main,
                                 resume=resume, on_epoch=saver("classify"), **run)  # fmt: skip
        if main:
            kf0, *_ = evaluate_face(model, pairs, size, projected=False)
            print(json.dumps({"stage": "descriptor", "acc": round(kf0.mean, 4), "std": round(kf0.std, 4)}))
    for mining, stage in zip(minings, stages[1:]):
        if ck.done(stage):
            continue
        with naming({"checkpoint": "--output"}):
            resume = ck.loop(stage, args.triplet_epochs)
        if resume is None:
            torch.manual_seed(args.seed)
            nn.init.orthogonal_(model.projection.weight)
        face.train_projection(
            model, x, y, args.triplet_epochs, mining, args.margin, seed=args.seed, progress=main,
            resume=resume, on_epoch=saver(stage), **run,
        )  # fmt: skip
        if main:
            kf, fpr, tpr, _ = evaluate_face(model, pairs, size)
            print(json.dumps({
                "stage": "projected", "mining": mining,
                "acc": round(kf.mean, 4), "std": round(kf.std, 4),
                "auc": round(ver.auc(fpr, tpr), 4), "eer": round(ver.equal_error_rate(fpr, tpr), 4),
            }))  # fmt: skip
        if mining == minings[0]:
            kept = model.projection.weight.detach().clone()
    model.projection.weight.data.copy_(kept)
    threshold = None
    if main:
        _, fpr, tpr, scores = evaluate_face(model, pairs, size)
        if args.roc:
            ver.save_roc_png(args.roc, fpr, tpr, f"W' ({minings[0]} mining)")
        # The threshold `convloc verify` uses: the best one over all pairs.
        threshold, _ = ver.best_threshold(scores, pairs.same)
    ck.save(model, stages[-1], complete=True, kept=kept, threshold=threshold, **info)
    return 0


def _folder(root: Path, name: str, option: str) -> Path:
    """``root / name``; a :class:`UsageError` naming ``option`` when it is not a directory."""
    if not (root / name).is_dir():
        raise UsageError(f"{option}: no directory {str(root / name)!r} (it is looked up under --data)")
    return root / name


def _read_pairs(root: Path, args):
    """The pairs of ``--pairs`` over ``--test-dir``; a :class:`UsageError` when the file is
    missing or malformed, or names images that are missing."""
    from convloc.data.lfw import read_pairs

    if not (root / args.pairs).is_file():
        raise UsageError(f"--pairs: no file {str(root / args.pairs)!r} (it is looked up under --data)")
    try:
        pairs = read_pairs(root / args.pairs, _folder(root, args.test_dir, "--test-dir"))
    except ValueError as e:
        raise renamed(e, {"pairs_file": "--pairs"}) from None
    if not len(pairs):
        raise UsageError(f"--pairs: {str(root / args.pairs)!r} lists no pairs")
    missing = [p for p in pairs.a + pairs.b if not p.is_file()]
    if missing:
        raise UsageError(
            f"--test-dir: {len(missing)} of the images {args.pairs} names are missing, e.g. {missing[0]}"
        )
    return pairs


def _verify(args) -> int:
    import torch

    from convloc.data.lfw import load_images
    from convloc.models.face import embed

    device = pick_device(args)
    model, ckpt = load_checkpoint(args.checkpoint, ("face",))
    x = torch.from_numpy(load_images([args.a, args.b], ckpt["size"]))
    announce_device(device, args)
    e = embed(model.to(device), x).cpu()
    score = -float(((e[0] - e[1]) ** 2).sum())
    same = score >= ckpt["threshold"]
    print(json.dumps({"same": bool(same), "distance": -score, "threshold_distance": -ckpt["threshold"]}))
    return 0 if same else 1


def _train_crfrnn(args) -> int:
    from convloc.models.common import EpochCheckpoint, tensors_digest
    from convloc.models.fcn import FCNWithCRF
    from convloc.models.segmentation import (
        dense_crf_refiner,
        evaluate,
        fit,
        predict_scores,
        tune_dense_crf,
    )

    device = pick_device(args)
    ds = _split(args.data, args.train_split, "--train-split")
    vds = _split(args.data, args.val_split, "--val-split")
    main = _setup(args, device)
    x, y = _arrays(ds, args.workers)
    fcn_model, fcn_ckpt = load_checkpoint(args.fcn, ("fcn",), "--fcn")
    n = ds.num_classes
    if fcn_model.num_classes != n:
        raise UsageError(
            f"--fcn: expected an FCN of the data's {n} classes, got one of {fcn_model.num_classes}"
        )
    crf_args = {"iterations": args.iterations, "filter": args.filter}
    model = FCNWithCRF(fcn_model, **crf_args)
    fcn_info = {k: fcn_ckpt[k] for k in ("kind", "variant", "layout", "num_classes", "classes")}
    settings = {
        **crf_args, "fcn": _file_digest(args.fcn), "batch_size": args.batch_size, "lr": args.lr,
        "freeze_fcn": args.freeze_fcn, "seed": args.seed,
    }  # fmt: skip
    with naming({"checkpoint": "--output"}):
        ck = EpochCheckpoint(
            args.output, "crfrnn", tensors_digest(x, y), settings, ["fit"], not args.no_resume
        )
        resume = ck.loop("fit", args.epochs)
    announce_device(device, args)
    model.to(device)
    if main:  # the baselines; the other ranks wait for rank 0 in fit's DistributedDataParallel
        xv, yv = _arrays(vds, args.workers)
        train_scores, val_scores = predict_scores(fcn_model, x), predict_scores(fcn_model, xv)
        _report("FCN", evaluate(val_scores, yv, n))
        # Dense CRF post-processing (convloc.ops.dense_crf), its bilateral kernel tuned on train.
        raw = lambda d: np.stack([d[i][0] for i in range(len(d))])  # noqa: E731
        kernels, train_miu = tune_dense_crf(train_scores, y, raw(ds), n)
        post = evaluate(val_scores, yv, n, dense_crf_refiner(raw(vds), kernels))
        _report("FCN + dense CRF", post, {"kernels": repr(kernels)})
        _report("FCN + CRF-as-RNN (untrained, Potts init)", evaluate(predict_scores(model, xv), yv, n))
    ck.restore(model)
    groups = [{"params": model.crf.parameters(), "lr": 1e-2}]
    if args.freeze_fcn:  # no backward through the FCN, and no gradients for DDP to average
        model.fcn.requires_grad_(False)
    else:
        groups.append({"params": model.fcn.parameters(), "lr": args.lr})

    def save(loop):
        ck.save(
            model, "fit", loop, complete=len(loop["history"]) == args.epochs, crf_args=crf_args,
            fcn={**fcn_info, "state_dict": model.fcn.state_dict()}, classes=fcn_ckpt["classes"],
        )  # fmt: skip

    fit(model, x, y, args.epochs, args.batch_size, args.lr, seed=args.seed, progress=main, params=groups,
        resume=resume, on_epoch=save, amp=args.amp)  # fmt: skip
    if main:
        _report("FCN + CRF-as-RNN (end to end)", evaluate(predict_scores(model, xv), yv, n))
    return 0


def _segment(args) -> int:
    import torch
    from PIL import Image

    from convloc.data.files import atomic_file, read_image
    from convloc.data.pictures import segmentation_picture
    from convloc.data.voc_seg import normalize, write_label

    device = pick_device(args)
    model, ckpt = load_checkpoint(args.checkpoint, ("fcn", "crfrnn"))
    try:
        image = np.array(read_image(args.image, "RGB"))
    except ValueError as e:
        raise UsageError(f"image: {e}") from None
    announce_device(device, args)
    with torch.no_grad():
        x = torch.from_numpy(normalize(image))[None].to(device)
        labels = model.to(device)(x)[0].argmax(0).cpu().numpy().astype(np.uint8)
    classes = ckpt.get("classes") or [str(i) for i in range(labels.max() + 1)]
    with atomic_file(args.output) as tmp:
        Image.fromarray(segmentation_picture(image, labels, classes)).save(tmp)
    if args.labels:
        write_label(args.labels, labels)
    counts = np.bincount(labels.ravel(), minlength=len(classes))
    print(json.dumps({classes[i]: round(c / labels.size, 4) for i, c in enumerate(counts) if c}))
    return 0
