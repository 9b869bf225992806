"""``convloc crf`` (refine segmentation probabilities with a dense CRF) and ``convloc demo``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from convloc.commands import UsageError, integer, output_file, real

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MAX_LABELS = 256  # the output is a palette PNG


def load_image(path: Path) -> np.ndarray:
    from convloc.data.files import read_image

    return np.ascontiguousarray(read_image(path, "RGB"))


def load_unary(path: Path, shape: tuple[int, int], args: argparse.Namespace) -> np.ndarray:
    """[L, H, W] unary from a .npy of probabilities or a label PNG; ValueError naming the file."""
    from convloc import ops
    from convloc.data.files import open_image

    if path.suffix == ".npy":
        p = np.load(path, allow_pickle=False)
        if p.ndim != 3 or p.shape[1:] != shape:
            raise ValueError(f"{path}: expected probabilities [L, {shape[0]}, {shape[1]}], got {p.shape}")
        if not 2 <= p.shape[0] <= MAX_LABELS:
            raise ValueError(
                f"{path}: expected 2 to {MAX_LABELS} labels (the output is a palette PNG), got {p.shape[0]}"
            )
        try:  # (probabilities: real, a distribution per pixel)
            return ops.unary_from_softmax(p, clip=1e-5)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None
    with open_image(path) as im:
        lab = np.asarray(im if im.mode in ("P", "L", "I", "I;16") else im.convert("L")).astype(np.int64)
    if lab.shape != shape:
        raise ValueError(
            f"{path}: expected a {shape[0]}x{shape[1]} label map like the image, got {lab.shape}"
        )
    unsure = lab == args.unsure
    n = args.n_labels or int(lab[~unsure].max(initial=0)) + 1
    if n < 2:
        raise ValueError(f"{path}: need at least 2 labels (pass --n-labels)")
    if n > MAX_LABELS or lab[~unsure].max(initial=0) >= n:
        raise ValueError(
            f"{path}: expected labels 0 to {min(n, MAX_LABELS) - 1} (at most {MAX_LABELS}: the output is a "
            f"palette PNG), got values up to {int(lab[~unsure].max(initial=0))}"
        )
    lab = np.where(unsure, 0, lab)
    u = ops.unary_from_labels(lab, n, args.gt_prob, zero_unsure=False)
    u[:, unsure] = np.log(n)
    return u


def refine(image: np.ndarray, unary: np.ndarray, args: argparse.Namespace) -> np.ndarray:
    """MAP labels [H, W] (NumPy) of the dense CRF, on args.device."""
    from convloc import ops

    kernels = [
        ops.Gaussian(args.gauss_sxy, args.gauss_compat),
        ops.Bilateral(args.sxy, args.srgb, args.compat),
    ]
    if args.device == "cuda":
        import torch

        unary = torch.from_numpy(unary).cuda()
    labels = ops.dense_crf(
        unary, image=image, kernels=kernels, iterations=args.iterations, return_labels=True
    )[1]
    return labels if isinstance(labels, np.ndarray) else labels.cpu().numpy()


def check_device(device: str) -> None:
    """A :class:`UsageError` when ``--device cuda`` cannot run here."""
    import convloc

    if device == "cuda" and not convloc.cuda_available():
        raise UsageError("--device cuda needs a CUDA build of convloc, torch and a GPU")


def _pairs(args: argparse.Namespace) -> list[tuple[Path, Path, Path]]:
    """(image, probs, output label PNG) for one image, a directory or a .txt list of images."""
    image, probs, out = Path(args.image), Path(args.probs), Path(args.out)
    if image.is_file() and image.suffix.lower() in IMAGE_SUFFIXES:
        if out.is_dir():
            return [(image, probs, out / f"{image.stem}.png")]
        if out.suffix.lower() != ".png":
            raise UsageError(
                f"-o: expected a .png file or an existing directory for one image, got {str(out)!r}"
            )
        return [(image, probs, out)]
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o: expected a directory for many images, got {str(out)!r} (a file)")
    if image.is_dir():
        images = sorted(p for p in image.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif image.suffix == ".txt":
        images = [Path(line.strip()) for line in image.read_text().splitlines() if line.strip()]
    else:
        raise FileNotFoundError(f"{image}: not an image, a directory or a .txt list")
    if not probs.is_dir():
        raise NotADirectoryError(
            f"{probs}: with many images PROBS is a directory of <stem>.npy or <stem>.png"
        )
    pairs = []
    for im in images:
        p = probs / f"{im.stem}.npy"
        if not p.exists():
            p = probs / f"{im.stem}.png"
        if not p.exists():
            raise FileNotFoundError(f"{im}: no {im.stem}.npy or {im.stem}.png in {probs}")
        pairs.append((im, p, out / f"{im.stem}.png"))
    return pairs


def _cmd_crf(args: argparse.Namespace) -> int:
    from PIL import Image
    from tqdm import tqdm

    import convloc
    from convloc.data.files import atomic_file
    from convloc.data.voc_seg import overlay, write_label

    convloc.set_num_threads(args.threads)
    check_device(args.device)
    try:
        pairs = _pairs(args)
    except (OSError, ValueError) as e:
        print(f"convloc crf: {e}", file=sys.stderr)
        return 2
    for image_path, probs_path, out in tqdm(pairs, disable=len(pairs) < 2, unit="image"):
        try:
            image = load_image(image_path)
            unary = load_unary(probs_path, image.shape[:2], args)
        except (OSError, ValueError) as e:
            print(f"convloc crf: {e}", file=sys.stderr)
            return 2
        labels = refine(image, unary, args)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_label(out, labels)
        with atomic_file(out.with_name(out.stem + "_overlay.png")) as tmp:
            Image.fromarray(overlay(image, labels)).save(tmp)
    if len(pairs) == 1:
        print(f"wrote {pairs[0][2]} and {pairs[0][2].with_name(pairs[0][2].stem + '_overlay.png')}")
    else:
        print(f"wrote {len(pairs)} label maps and overlays to {Path(args.out)}")
    return 0


def demo_unary(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """A coarse, noisy prediction made from a label map, like an FCN-32s output: one-hot labels
    averaged over 16x16 blocks, upsampled bilinearly, with smooth noise, as -log P."""
    from convloc import ops

    h, w = labels.shape
    one_hot = (labels[None] == np.arange(n)[:, None, None]).astype(np.float32)
    coarse = one_hot.reshape(n, h // 16, 16, w // 16, 16).mean((2, 4))
    ys, xs = (np.arange(h) + 0.5) / 16 - 0.5, (np.arange(w) + 0.5) / 16 - 0.5
    y0, x0 = (
        np.clip(np.floor(ys).astype(int), 0, h // 16 - 2),
        np.clip(np.floor(xs).astype(int), 0, w // 16 - 2),
    )
    fy, fx = np.clip(ys - y0, 0, 1)[:, None], np.clip(xs - x0, 0, 1)[None, :]
    c = (
        coarse[:, y0][:, :, x0],
        coarse[:, y0][:, :, x0 + 1],
        coarse[:, y0 + 1][:, :, x0],
        coarse[:, y0 + 1][:, :, x0 + 1],
    )
    up = (c[0] * (1 - fx) + c[1] * fx) * (1 - fy) + (c[2] * (1 - fx) + c[3] * fx) * fy
    noise = np.random.default_rng(seed).standard_normal((n, h // 8, w // 8)).repeat(8, 1).repeat(8, 2)
    logits = 4.0 * up + 0.5 * noise
    p = np.exp(logits - logits.max(0))
    return ops.unary_from_softmax(p / p.sum(0), clip=1e-5)


def _cmd_demo(args: argparse.Namespace) -> int:
    from PIL import Image

    import convloc
    from convloc.data.files import atomic_file, read_image
    from convloc.data.voc_seg import colorize

    out = Path(args.out)
    convloc.set_num_threads(args.threads)
    check_device(args.device)
    image = load_image(DATA_DIR / "crf_demo_astronaut.jpg")
    reference = read_image(DATA_DIR / "crf_demo_labels.png").astype(np.int64)
    n = int(reference.max()) + 1
    unary = demo_unary(reference, n)
    before = unary.argmin(0)
    t0 = time.perf_counter()
    after = refine(image, unary, args)
    ms = 1e3 * (time.perf_counter() - t0)
    panel = np.concatenate([image, colorize(before), colorize(after)], axis=1)
    with atomic_file(out) as tmp:
        Image.fromarray(panel).save(tmp)
    h, w = before.shape
    print(f"dense CRF on a {w}x{h} image, {n} labels, {args.iterations} iterations: {ms:.1f} ms")
    print(f"pixels changed by the CRF: {(before != after).mean():.1%}")
    print(
        f"agreement with the reference labels: unary {(before == reference).mean():.1%} -> "
        f"CRF {(after == reference).mean():.1%}"
    )
    print(f"wrote {out} (image | unary argmax | CRF labels)")
    return 0


def _crf_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CRF parameters (pydensecrf's meanings)")
    g.add_argument("--sxy", type=real("(0, inf)"), default=80.0, help="bilateral spatial std in pixels")
    g.add_argument("--srgb", type=real("(0, inf)"), default=13.0, help="bilateral colour std")
    g.add_argument("--compat", type=real("[0, inf)"), default=10.0, help="bilateral Potts weight")
    g.add_argument("--gauss-sxy", type=real("(0, inf)"), default=3.0, help="smoothness spatial std in pixels")
    g.add_argument("--gauss-compat", type=real("[0, inf)"), default=3.0, help="smoothness Potts weight")
    g.add_argument("--iterations", type=integer(0), default=5, help="mean-field iterations")
    p.add_argument("--threads", type=integer(0), default=0, help="CPU threads; 0: all cores")
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the CRF runs (cuda: a CUDA build of convloc, torch and a GPU; the smoothness "
        "Gaussian then runs on the lattice, not on the CPU's grid)",
    )


def register(sub) -> None:
    p = sub.add_parser(
        "crf",
        help="refine class probabilities with a dense CRF",
        description="Refines a segmentation with a fully connected CRF (Krähenbühl & Koltun 2011). "
        "Writes OUT (a palette PNG of labels) and OUT_overlay.png.",
    )
    p.add_argument("image", help="an image, a directory of images or a .txt list of image paths")
    p.add_argument(
        "probs",
        help=".npy class probabilities [L, H, W] or a label PNG; for many images, a directory of "
        "<image stem>.npy / .png",
    )
    p.add_argument("-o", "--out", required=True, help="output label PNG (one image) or directory")
    g = p.add_argument_group("label PNG input")
    g.add_argument("--gt-prob", type=real("(0, 1)"), default=0.7, help="confidence in a label PNG's labels")
    g.add_argument(
        "--n-labels", type=integer(0), default=0, help="number of labels (default: the largest + 1)"
    )
    g.add_argument("--unsure", type=int, default=255, help="label value meaning 'unknown'")
    _crf_args(p)
    p.set_defaults(func=_cmd_crf)

    p = sub.add_parser(
        "demo",
        help="dense CRF on a shipped image: writes demo_crf.png",
        description="Refines a coarse, noisy labelling of a shipped photograph with the dense CRF, "
        "prints the time and how much closer the labels came to the reference, and writes the "
        "image, the labels before and the labels after side by side.",
    )
    p.add_argument("-o", "--out", type=output_file(".png"), default="demo_crf.png", help="output PNG")
    _crf_args(p)
    p.set_defaults(func=_cmd_demo)
