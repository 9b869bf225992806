"""Labeled Faces in the Wild in its own on-disk format, and a synthetic identity set written in it.

Layout: ``<root>/<Name>/<Name>_0001.jpg`` (one folder per identity, images numbered from 1) and
a pairs file whose first line is ``<folds> <pairs per fold>`` (``pairs.txt``) or ``<pairs>``
(``pairsDevTrain.txt``: one fold); each fold lists its matched pairs ``Name i j`` and then its
mismatched pairs ``Name1 i Name2 j``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from convloc.data.files import fresh_tree, open_image, read_all


def image_path(root: str | os.PathLike, name: str, index: int) -> Path:
    return Path(root) / name / f"{name}_{index:04d}.jpg"


@dataclass
class Pairs:
    """Pairs of images: paths ``a[k]``, ``b[k]``, ``same[k]``, ``fold[k]``."""

    a: list[Path]
    b: list[Path]
    same: np.ndarray
    fold: np.ndarray

    def __len__(self) -> int:
        return len(self.a)


def read_pairs(pairs_file: str | os.PathLike, root: str | os.PathLike) -> Pairs:
    """Parses an LFW pairs file; image paths are resolved under ``root`` (not checked here)."""
    lines = [ln.split() for ln in Path(pairs_file).read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"pairs_file: {pairs_file} is empty")
    header = [int(v) for v in lines[0]]
    n_folds, per_fold = (1, header[0]) if len(header) == 1 else header[:2]
    body = lines[1:]
    if len(body) != 2 * n_folds * per_fold:
        raise ValueError(
            f"pairs_file: header says {n_folds} folds of {per_fold} + {per_fold} pairs, "
            f"found {len(body)} lines"
        )
    a, b, same, fold = [], [], [], []
    for k, fields in enumerate(body):
        if len(fields) == 3:
            name, i, j = fields
            a.append(image_path(root, name, int(i)))
            b.append(image_path(root, name, int(j)))
            same.append(True)
        elif len(fields) == 4:
            n1, i, n2, j = fields
            a.append(image_path(root, n1, int(i)))
            b.append(image_path(root, n2, int(j)))
            same.append(False)
        else:
            raise ValueError(f"pairs_file: line {k + 2} has {len(fields)} fields, expected 3 or 4")
        fold.append(k // (2 * per_fold))
    return Pairs(a, b, np.array(same), np.array(fold))


def read_identities(root: str | os.PathLike) -> tuple[list[Path], np.ndarray, list[str]]:
    """Every image under ``root``'s identity folders: paths, integer labels, identity names."""
    names = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
    paths, labels = [], []
    for k, name in enumerate(names):
        for f in sorted((Path(root) / name).glob("*.jpg")):
            paths.append(f)
            labels.append(k)
    return paths, np.array(labels, dtype=np.int64), names


def load_images(paths, size: int | None = None, workers: int = 0) -> np.ndarray:
    """Images as ``[N, 3, S, S]`` float32 in [-1, 1] (resized to ``size`` when given), read by
    ``workers`` threads (0: this one; see :func:`~convloc.data.files.read_all`)."""

    def load(p) -> np.ndarray:
        with open_image(p) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1

    out = read_all(load, paths, workers)
    return np.stack(out) if out else np.zeros((0, 3, size or 0, size or 0), np.float32)


def summary(root: str | os.PathLike) -> dict:
    """What the LFW-format tree at ``root`` holds: for ``root`` and each folder in it that holds
    identity folders (``<Name>/<Name>_0001.jpg``), its identities, images and identities with two
    images or more (``"."`` is ``root``); for each pairs file in ``root`` (``pairs*.txt``), its
    folds and matched and mismatched pairs, or the error that stopped its reading."""
    root = Path(root)
    folders = {}
    for folder in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        counts = [len(list(d.glob(f"{d.name}_*.jpg"))) for d in folder.iterdir() if d.is_dir()]
        counts = [c for c in counts if c]
        if counts:
            name = "." if folder == root else folder.name
            folders[name] = {
                "identities": len(counts),
                "images": sum(counts),
                "identities_with_2_images": sum(c >= 2 for c in counts),
            }
    pairs = {}
    for path in sorted(root.glob("pairs*.txt")):
        try:
            p = read_pairs(path, root)
        except ValueError as e:
            pairs[path.name] = {"error": str(e)}
            continue
        pairs[path.name] = {
            "folds": int(p.fold.max()) + 1 if len(p) else 0,
            "matched": int(p.same.sum()),
            "mismatched": int((~p.same).sum()),
        }
    return {"root": str(root), "identity_folders": folders, "pairs": pairs}


# ---- synthetic identities ------------------------------------------------------------------


def _identity(rng: np.random.Generator) -> dict:
    """Fixed traits of one synthetic person."""
    return {
        "skin": rng.uniform([120, 80, 60], [240, 200, 170]),
        "hair": rng.uniform(0, 200, size=3),
        "face_w": rng.uniform(0.28, 0.38),
        "face_h": rng.uniform(0.36, 0.46),
        "eye_dx": rng.uniform(0.1, 0.18),
        "eye_y": rng.uniform(-0.12, 0.0),
        "eye_r": rng.uniform(0.025, 0.05),
        "eye_col": rng.uniform(0, 150, size=3),
        "brow": rng.uniform(0.02, 0.07),
        "nose": rng.uniform(0.05, 0.14),
        "mouth_w": rng.uniform(0.06, 0.16),
        "mouth_y": rng.uniform(0.14, 0.24),
        "fringe": rng.uniform(-0.38, -0.2),
        "beard": rng.uniform() < 0.3,
    }


def render_face(person: dict, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One image ``[size, size, 3]`` uint8 of ``person`` under random pose (rotation, shift,
    scale), expression, lighting, background and noise."""
    s = 4 * size  # draw large, then downsample: smooth edges
    bg = rng.uniform(0, 255, size=3)
    im = Image.new("RGB", (s, s), tuple(int(v) for v in bg))
    d = ImageDraw.Draw(im)
    scale = s * rng.uniform(0.9, 1.1)
    cx, cy = s / 2 + rng.normal(0, 0.04 * s, size=2)
    yaw = rng.uniform(-0.06, 0.06)  # a turned head shifts the inner features sideways

    def box(x, y, rx, ry):
        return [
            cx + (x - rx) * scale,
            cy + (y - ry) * scale,
            cx + (x + rx) * scale,
            cy + (y + ry) * scale,
        ]

    def col(c):
        return tuple(int(v) for v in np.clip(c, 0, 255))

    p = person
    d.ellipse(box(0, -0.06, p["face_w"] + 0.03, p["face_h"] * 0.85), fill=col(p["hair"]))
    d.ellipse(box(0, 0, p["face_w"], p["face_h"]), fill=col(p["skin"]))
    d.rectangle(box(0, p["fringe"] - 0.06, p["face_w"], 0.08), fill=col(p["hair"]))
    if p["beard"]:
        d.ellipse(box(0, p["mouth_y"] + 0.05, p["face_w"] * 0.7, 0.12), fill=col(p["hair"] * 0.8))
    for side in (-1, 1):
        ex = side * p["eye_dx"] + yaw
        d.ellipse(box(ex, p["eye_y"], p["eye_r"] * 1.6, p["eye_r"]), fill=(245, 245, 245))
        d.ellipse(box(ex, p["eye_y"], p["eye_r"] * 0.8, p["eye_r"] * 0.8), fill=col(p["eye_col"]))
        d.rectangle(
            box(ex, p["eye_y"] - p["brow"] - p["eye_r"], p["eye_r"] * 1.8, 0.012),
            fill=col(p["hair"] * 0.6),
        )
    d.line([(cx + yaw * scale, cy + (p["eye_y"] + 0.04) * scale),
            (cx + (yaw + 0.02) * scale, cy + (p["eye_y"] + 0.04 + p["nose"]) * scale)],
           fill=col(p["skin"] * 0.7), width=max(1, s // 40))  # fmt: skip
    open_mouth = rng.uniform(0.005, 0.04)
    d.ellipse(box(yaw, p["mouth_y"], p["mouth_w"], open_mouth), fill=(120, 30, 40))
    im = im.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR, center=(cx, cy), fillcolor=col(bg))
    im = im.resize((size, size), Image.BOX)
    arr = np.asarray(im, dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    light = rng.uniform(0.7, 1.3) + 0.5 * (xx * rng.normal() + yy * rng.normal())
    arr = arr * light[..., None] + rng.normal(0, 6, size=arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def make_synthetic_faces(
    root: str | os.PathLike,
    train_identities: int = 200,
    test_identities: int = 100,
    images_per_identity: int = 8,
    pairs_per_fold: int = 60,
    size: int = 32,
    folds: int = 10,
    seed: int = 0,
) -> Path:
    """Writes ``root/train`` and ``root/lfw`` (disjoint identities, LFW folder layout) and
    ``root/pairs.txt`` over ``root/lfw``: ``folds`` identity-disjoint folds, each with
    ``pairs_per_fold`` matched and as many mismatched pairs. Deterministic in ``seed``. Replaces what
    an earlier run wrote there (see :func:`~convloc.data.files.fresh_tree`)."""
    if test_identities < 2 * folds:
        raise ValueError(f"test_identities: expected >= {2 * folds} (2 per fold), got {test_identities}")
    if images_per_identity < 2:
        raise ValueError(f"images_per_identity: expected >= 2, got {images_per_identity}")
    with fresh_tree(root) as out:
        rng = np.random.default_rng(seed)
        names = {"train": [], "lfw": []}
        for split, count in (("train", train_identities), ("lfw", test_identities)):
            for k in range(count):
                name = f"Synth_{split.capitalize()}{k:04d}"
                person = _identity(rng)
                (out / split / name).mkdir(parents=True, exist_ok=True)
                for i in range(1, images_per_identity + 1):
                    Image.fromarray(render_face(person, rng, size)).save(
                        image_path(out / split, name, i), quality=95
                    )
                names[split].append(name)
        lines = [f"{folds}\t{pairs_per_fold}"]
        groups = np.array_split(np.array(names["lfw"]), folds)
        for group in groups:
            for _ in range(pairs_per_fold):
                name = group[rng.integers(len(group))]
                i, j = rng.choice(images_per_identity, size=2, replace=False) + 1
                lines.append(f"{name}\t{i}\t{j}")
            for _ in range(pairs_per_fold):
                n1, n2 = rng.choice(group, size=2, replace=False)
                i, j = rng.integers(1, images_per_identity + 1, size=2)
                lines.append(f"{n1}\t{i}\t{n2}\t{j}")
        (out / "pairs.txt").write_text("\n".join(lines) + "\n")
    return Path(root)
