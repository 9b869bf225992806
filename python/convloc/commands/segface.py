"""Segmentation and face-verification commands: ``convloc train fcn|crfrnn|face``,
``convloc segment``, ``convloc verify``, ``convloc data make-segmentation|make-faces``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np


def register_data(sub) -> None:
    p = sub.add_parser("make-segmentation", help="write the synthetic VOC-format segmentation set")
    p.add_argument("root")
    p.add_argument("--train", type=int, default=300)
    p.add_argument("--val", type=int, default=100)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_segmentation)

    p = sub.add_parser("make-faces", help="write the synthetic LFW-format identity set and pairs file")
    p.add_argument("root")
    p.add_argument("--train-identities", type=int, default=200)
    p.add_argument("--test-identities", type=int, default=100)
    p.add_argument("--images", type=int, default=8, help="images per identity")
    p.add_argument("--pairs-per-fold", type=int, default=60, help="matched (= mismatched) pairs per fold")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_faces)


def register_train(sub) -> None:
    p = sub.add_parser("fcn", help="FCN-32s/16s/8s on a VOC-format segmentation set (torchrun for DDP)")
    _seg_args(p)
    p.add_argument("--variant", choices=("32s", "16s", "8s"), default="8s")
    p.add_argument("--layout", choices=("small", "vgg16"), default="small")
    p.add_argument(
        "--pad", type=int,
        help="padding of conv1 (default: the layout's, any input size; an exact fit such as 17 with "
        "--fc-kernel 3 for 64 px images leaves FCN-32s a 1x1 score map)",
    )  # fmt: skip
    p.add_argument("--fc-kernel", type=int, help="kernel of fc6 (default: the layout's)")
    p.add_argument("--init", help="checkpoint of the coarser FCN to start from (32s for 16s, 16s for 8s)")
    p.add_argument(
        "--pretrained", help="ImageNet VGG weights in torchvision's format (a local .pth) for --layout vgg16"
    )
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.set_defaults(func=_train_fcn)

    p = sub.add_parser("crfrnn", help="CRF-as-RNN on top of a trained FCN, end to end (torchrun for DDP)")
    _seg_args(p)
    p.add_argument("--fcn", required=True, help="checkpoint of the FCN giving the unaries")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--filter", choices=("lattice", "exact", "learned"), default="lattice")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--freeze-fcn", action="store_true", help="train only the CRF's parameters")
    p.set_defaults(func=_train_crfrnn)

    p = sub.add_parser(
        "face", help="face embedding + triplet-loss projection, LFW-style tree (torchrun for DDP)"
    )
    p.add_argument("--data", required=True, help="root written by `convloc data make-faces` or a real one")
    p.add_argument("--train-dir", default="train", help="identity folders to train on (under --data)")
    p.add_argument("--test-dir", default="lfw", help="identity folders the pairs refer to")
    p.add_argument("--pairs", default="pairs.txt")
    p.add_argument("--pretrain-epochs", type=int, default=15)
    p.add_argument("--triplet-epochs", type=int, default=15)
    p.add_argument(
        "--mining", default="semihard",
        help="all, hard or semihard; a comma list trains one W' per mining from the same phi "
        "(the checkpoint keeps the first)",
    )  # fmt: skip
    p.add_argument("--margin", type=float, default=0.2)
    p.add_argument("--dim", type=int, default=64, help="dimension of the projection W'")
    p.add_argument("--roc", help="write the ROC curve to this PNG")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=_train_face)


def register(sub) -> None:
    p = sub.add_parser("segment", help="segment an image with a trained FCN / CRF-as-RNN checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("image")
    p.add_argument("-o", "--output", required=True, help="overlay PNG")
    p.add_argument("--labels", help="also write the class-index palette PNG here")
    p.set_defaults(func=_segment)

    p = sub.add_parser("verify", help="same person or not, with a trained face checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(func=_verify)


def _seg_args(p) -> None:
    p.add_argument("--data", required=True, help="VOC-format root (e.g. VOCdevkit/VOC2012)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("-o", "--output", required=True, help="checkpoint to write")


def _setup(args) -> bool:
    """Threads, seed and, under torchrun, the process group. Every rank gets the same seed (the
    same batch order); the returned flag says whether this is rank 0, which alone evaluates,
    prints and writes the checkpoint."""
    import torch

    from convloc.models.common import init_distributed

    rank, _ = init_distributed()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    return rank == 0


def _make_segmentation(args) -> int:
    from convloc.data.voc_seg import make_synthetic_segmentation

    make_synthetic_segmentation(args.root, args.train, args.val, args.size, args.seed)
    return 0


def _load_split(root, split):
    import torch

    from convloc.data.voc_seg import VOCSegmentation

    ds = VOCSegmentation(root, split)
    images, labels = ds.arrays()
    return ds, torch.from_numpy(images), torch.from_numpy(labels)


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


def load_checkpoint(path):
    """The model stored by ``convloc train fcn|crfrnn|face`` (eval mode) and the checkpoint dict."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    kind = ckpt["kind"]
    if kind == "fcn":
        model = _build_fcn(ckpt)
    elif kind == "crfrnn":
        from convloc.models.fcn import FCNWithCRF

        model = FCNWithCRF(_build_fcn(ckpt["fcn"]), **ckpt["crf_args"])
    elif kind == "face":
        from convloc.models.face import FaceVerifier

        model = FaceVerifier(**ckpt["model_args"])
    else:
        raise ValueError(f"checkpoint: unknown kind {kind!r}")
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
    from convloc.models.common import save_checkpoint
    from convloc.models.segmentation import evaluate, fit, predict_scores

    main = _setup(args)
    ds, x, y = _load_split(args.data, args.train_split)
    layout = fcn.SMALL if args.layout == "small" else fcn.VGG16
    overrides = {"pad": args.pad, "fc_kernel": args.fc_kernel}
    layout = dataclasses.replace(layout, **{k: v for k, v in overrides.items() if v is not None})
    model = fcn.FCN(ds.num_classes, args.variant, layout)
    if args.pretrained:
        model.load_classifier(args.pretrained)
    if args.init:
        coarser, _ = load_checkpoint(args.init)
        model.init_from(coarser)
    losses = fit(model, x, y, args.epochs, args.batch_size, args.lr, args.weight_decay, args.seed, main)
    if main:
        _, xv, yv = _load_split(args.data, args.val_split)
        scores = evaluate(predict_scores(model, xv), yv, ds.num_classes)
        _report(f"FCN-{args.variant}", scores, {"final_loss": round(losses[-1], 4)})
        save_checkpoint(args.output, _fcn_ckpt(model, ds.classes))
    return 0


def _make_faces(args) -> int:
    from convloc.data.lfw import make_synthetic_faces

    make_synthetic_faces(
        args.root, args.train_identities, args.test_identities, args.images, args.pairs_per_fold,
        args.size, seed=args.seed,
    )  # fmt: skip
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

    from convloc.data.lfw import load_images, read_identities, read_pairs
    from convloc.metrics import verification as ver
    from convloc.models import face
    from convloc.models.common import save_checkpoint

    main = _setup(args)
    root = Path(args.data)
    paths, labels, names = read_identities(root / args.train_dir)
    x = torch.from_numpy(load_images(paths))
    size = x.shape[-1]
    y = torch.from_numpy(labels)
    model_args = {"num_identities": len(names), "dim": args.dim}
    model = face.FaceVerifier(**model_args)
    face.pretrain_classifier(model, x, y, args.pretrain_epochs, seed=args.seed, progress=main)
    pairs = read_pairs(root / args.pairs, root / args.test_dir)
    if main:
        kf0, *_ = evaluate_face(model, pairs, size, projected=False)
        print(json.dumps({"stage": "descriptor", "acc": round(kf0.mean, 4), "std": round(kf0.std, 4)}))
    minings = args.mining.split(",")
    for mining in minings:
        torch.manual_seed(args.seed)
        nn.init.orthogonal_(model.projection.weight)
        face.train_projection(
            model, x, y, args.triplet_epochs, mining, args.margin, seed=args.seed, progress=main
        )
        if not main:
            continue
        kf, fpr, tpr, scores = evaluate_face(model, pairs, size)
        print(json.dumps({
            "stage": "projected", "mining": mining,
            "acc": round(kf.mean, 4), "std": round(kf.std, 4),
            "auc": round(ver.auc(fpr, tpr), 4), "eer": round(ver.equal_error_rate(fpr, tpr), 4),
        }))  # fmt: skip
        if mining == minings[0]:
            kept = ({k: v.clone() for k, v in model.state_dict().items()}, fpr, tpr, scores)
    if not main:
        return 0
    state, fpr, tpr, scores = kept
    model.load_state_dict(state)
    if args.roc:
        ver.save_roc_png(args.roc, fpr, tpr, f"W' ({minings[0]} mining)")
    # The threshold `convloc verify` uses: the best one over all pairs.
    threshold, _ = ver.best_threshold(scores, pairs.same)
    save_checkpoint(
        args.output,
        {"kind": "face", "model_args": model_args, "size": size, "threshold": threshold,
         "state_dict": model.state_dict()},
    )  # fmt: skip
    return 0


def _verify(args) -> int:
    import torch

    from convloc.data.lfw import load_images
    from convloc.models.face import embed

    model, ckpt = load_checkpoint(args.checkpoint)
    x = torch.from_numpy(load_images([args.a, args.b], ckpt["size"]))
    e = embed(model, x)
    score = -float(((e[0] - e[1]) ** 2).sum())
    same = score >= ckpt["threshold"]
    print(json.dumps({"same": bool(same), "distance": -score, "threshold_distance": -ckpt["threshold"]}))
    return 0 if same else 1


def _train_crfrnn(args) -> int:
    from convloc.models.common import save_checkpoint
    from convloc.models.fcn import FCNWithCRF
    from convloc.models.segmentation import (
        dense_crf_refiner,
        evaluate,
        fit,
        predict_scores,
        tune_dense_crf,
    )

    main = _setup(args)
    ds, x, y = _load_split(args.data, args.train_split)
    fcn_model, fcn_ckpt = load_checkpoint(args.fcn)
    n = ds.num_classes
    crf_args = {"iterations": args.iterations, "filter": args.filter}
    model = FCNWithCRF(fcn_model, **crf_args)
    if main:  # the baselines; the other ranks wait for rank 0 in fit's DistributedDataParallel
        vds, xv, yv = _load_split(args.data, args.val_split)
        train_scores, val_scores = predict_scores(fcn_model, x), predict_scores(fcn_model, xv)
        _report("FCN", evaluate(val_scores, yv, n))
        # Dense CRF post-processing (convloc.ops.dense_crf), its bilateral kernel tuned on train.
        raw = lambda d: np.stack([d[i][0] for i in range(len(d))])  # noqa: E731
        kernels, train_miu = tune_dense_crf(train_scores, y, raw(ds), n)
        post = evaluate(val_scores, yv, n, dense_crf_refiner(raw(vds), kernels))
        _report("FCN + dense CRF", post, {"kernels": repr(kernels)})
        _report("FCN + CRF-as-RNN (untrained, Potts init)", evaluate(predict_scores(model, xv), yv, n))
    groups = [{"params": model.crf.parameters(), "lr": 1e-2}]
    if args.freeze_fcn:  # no backward through the FCN, and no gradients for DDP to average
        model.fcn.requires_grad_(False)
    else:
        groups.append({"params": model.fcn.parameters(), "lr": args.lr})
    fit(
        model,
        x,
        y,
        args.epochs,
        args.batch_size,
        args.lr,
        seed=args.seed,
        progress=main,
        params=groups,
    )
    if main:
        _report("FCN + CRF-as-RNN (end to end)", evaluate(predict_scores(model, xv), yv, n))
        fcn_ckpt = {**fcn_ckpt, "state_dict": model.fcn.state_dict()}
        ckpt = {"kind": "crfrnn", "fcn": fcn_ckpt, "crf_args": crf_args, "classes": fcn_ckpt["classes"],
                "state_dict": model.state_dict()}  # fmt: skip
        save_checkpoint(args.output, ckpt)
    return 0


def _segment(args) -> int:
    import torch
    from PIL import Image

    from convloc.data.voc_seg import normalize, overlay, write_label

    model, ckpt = load_checkpoint(args.checkpoint)
    with Image.open(args.image) as im:
        image = np.array(im.convert("RGB"))
    with torch.no_grad():
        labels = model(torch.from_numpy(normalize(image))[None])[0].argmax(0).numpy().astype(np.uint8)
    Image.fromarray(overlay(image, labels)).save(args.output)
    if args.labels:
        write_label(args.labels, labels)
    classes = ckpt.get("classes") or [str(i) for i in range(labels.max() + 1)]
    counts = np.bincount(labels.ravel(), minlength=len(classes))
    print(json.dumps({classes[i]: round(c / labels.size, 4) for i, c in enumerate(counts) if c}))
    return 0
