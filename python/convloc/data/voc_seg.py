"""PASCAL VOC semantic segmentation in its own on-disk format, and a synthetic set written in it.

Layout (``root`` is e.g. ``VOCdevkit/VOC2012``)::

    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png          palette PNG: pixel value = class index, 255 = void
    ImageSets/Segmentation/<split>.txt  one id per line

A synthetic root also holds ``classes.txt`` (one class name per line); a real VOC root does not
and gets :data:`VOC_CLASSES`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from convloc.data.files import atomic_file, fresh_tree, open_image, read_all, read_image

IGNORE_LABEL = 255

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

SYNTHETIC_CLASSES = ("background", "disk", "square", "triangle", "ring")

# ImageNet statistics, the usual input normalisation of VGG-style backbones.
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def voc_palette(n: int = 256) -> np.ndarray:
    """The VOC colour map ``[n, 3]`` uint8: class c's colour spreads the bits of c over R, G, B."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for c in range(n):
        r = g = b = 0
        code = c
        for shift in range(7, -1, -1):
            r |= (code & 1) << shift
            g |= ((code >> 1) & 1) << shift
            b |= ((code >> 2) & 1) << shift
            code >>= 3
        palette[c] = (r, g, b)
    return palette


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Class indices ``[H, W]`` uint8 of a SegmentationClass PNG (palette or RGB-coloured)."""
    with open_image(path) as im:
        if im.mode == "P":
            return np.array(im, dtype=np.uint8)
        rgb = np.array(im.convert("RGB"), dtype=np.int64)
    # An RGB-coloured label image: look every colour up in the palette.
    keys = voc_palette().astype(np.int64) @ np.array([65536, 256, 1])
    lut = {int(k): i for i, k in enumerate(keys)}
    flat = rgb @ np.array([65536, 256, 1])
    uniq, inverse = np.unique(flat, return_inverse=True)
    try:
        idx = np.array([lut[int(u)] for u in uniq], dtype=np.uint8)
    except KeyError as e:
        raise ValueError(f"path: colour {e.args[0]:06x} of {path} is not in the VOC palette") from None
    return idx[inverse].reshape(flat.shape)


def write_label(path: str | os.PathLike, label: np.ndarray) -> None:
    """Writes class indices ``[H, W]`` (0-255) as a VOC palette PNG."""
    label = np.asarray(label)
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label: a palette PNG holds class indices 0-255, got {label.min()}..{label.max()}")
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    im.putpalette(voc_palette().ravel().tolist())
    with atomic_file(path) as tmp:
        im.save(tmp)


def colorize(label: np.ndarray) -> np.ndarray:
    """``[H, W]`` class indices to ``[H, W, 3]`` uint8 VOC colours."""
    return voc_palette()[np.asarray(label, dtype=np.uint8)]


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` ``[H, W, 3+]`` uint8 with the VOC colours of ``label`` ``[H, W]`` blended in
    (weight ``alpha``): ``[H, W, 3]`` uint8."""
    colours = colorize(label).astype(np.float32)
    return (image[..., :3].astype(np.float32) * (1 - alpha) + colours * alpha).astype(np.uint8)


def normalize(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 to the ``[3, H, W]`` float32 input of the models."""
    return np.ascontiguousarray(((image.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1))


class VOCSegmentation:
    """``dataset[i]`` = ``(image [H, W, 3] uint8, label [H, W] uint8)``; ``ids[i]`` its id."""

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        self.root = Path(root)
        split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(
                f"split: no {split_file}; this set's splits: {', '.join(image_sets(root)) or 'none'}"
            )
        self.ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        self.classes = _read_classes(self.root)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        id_ = self.ids[i]
        image = np.array(read_image(self.root / "JPEGImages" / f"{id_}.jpg", "RGB"), dtype=np.uint8)
        label = read_label(self.root / "SegmentationClass" / f"{id_}.png")
        if label.shape != image.shape[:2]:
            raise ValueError(f"label: {id_} is {label.shape}, its image {image.shape[:2]}")
        return image, label

    def arrays(self, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Images ``[N, 3, H, W]`` normalised float32, labels ``[N, H, W]`` int64 (one size), read
        by ``workers`` threads (0: this one; see :func:`~convloc.data.files.read_all`)."""
        pairs = read_all(self.__getitem__, range(len(self)), workers)
        images = np.stack([normalize(im) for im, _ in pairs])
        labels = np.stack([lab for _, lab in pairs]).astype(np.int64)
        return images, labels


def image_sets(root: str | os.PathLike) -> list[str]:
    """The splits of the segmentation set at ``root``: the lists in ``ImageSets/Segmentation``."""
    return sorted(p.stem for p in (Path(root) / "ImageSets" / "Segmentation").glob("*.txt"))


def summary(root: str | os.PathLike) -> dict:
    """What the segmentation set at ``root`` holds: its classes and the images of each split."""
    splits = {split: len(VOCSegmentation(root, split)) for split in image_sets(root)}
    return {"root": str(root), "classes": list(_read_classes(Path(root))), "splits": splits}


def _read_classes(root: Path) -> tuple[str, ...]:
    """``classes.txt`` of ``root`` when present (one name a line), else the 21 VOC classes."""
    names = root / "classes.txt"
    return tuple(names.read_text().split()) if names.is_file() else VOC_CLASSES


def render_synthetic(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic scene: 1-3 shapes whose class is their shape (not their colour) on textured
    ground, with lighting, noise and a one-pixel void band along every boundary, as in VOC."""
    label_im = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(label_im)
    objects = []
    for _ in range(rng.integers(1, 4)):
        cls = int(rng.integers(1, len(SYNTHETIC_CLASSES)))
        r = rng.uniform(0.12, 0.28) * size
        cx, cy = rng.uniform(r, size - r, size=2)
        theta = rng.uniform(0, 2 * np.pi)
        if cls == 1:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=cls)
        elif cls == 2:
            corners = [theta + k * np.pi / 2 for k in range(4)]
            draw.polygon([(cx + r * np.cos(a), cy + r * np.sin(a)) for a in corners], fill=cls)
        elif cls == 3:
            corners = [theta + k * 2 * np.pi / 3 for k in range(3)]
            draw.polygon([(cx + 1.2 * r * np.cos(a), cy + 1.2 * r * np.sin(a)) for a in corners], fill=cls)
        else:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=cls)
            draw.ellipse([cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2], fill=0)
        objects.append(np.array(label_im).copy())
    label = np.array(label_im, dtype=np.uint8)

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ground = rng.uniform(40, 215, size=3).astype(np.float32)
    image = ground + 25 * np.sin(2 * np.pi * (rng.uniform(1, 4) * xx + rng.uniform(1, 4) * yy))[..., None]
    # Each object gets its own colour far from the ground's, and a stripe or noise texture.
    owner = np.zeros((size, size), dtype=np.int64)
    previous = np.zeros((size, size), dtype=np.uint8)
    for k, snapshot in enumerate(objects, start=1):
        owner[snapshot != previous] = k
        previous = snapshot
    owner[label == 0] = 0  # a ring's hole may cut into an earlier object: it shows the ground
    for k in range(1, len(objects) + 1):
        colour = rng.uniform(0, 255, size=3)
        while np.abs(colour - ground).sum() < 150:
            colour = rng.uniform(0, 255, size=3)
        freq = rng.uniform(3, 8)
        texture = 20 * np.sin(2 * np.pi * freq * (xx * np.cos(k) + yy * np.sin(k)))
        image[owner == k] = (colour + texture[..., None])[owner == k]
    light = 1 + 0.3 * ((xx - 0.5) * rng.normal() + (yy - 0.5) * rng.normal())
    image = image * light[..., None] + rng.normal(0, 8, size=image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)

    edge = np.zeros_like(label, dtype=bool)
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    edge[:-1, :] |= label[:-1, :] != label[1:, :]
    label = np.where(edge, IGNORE_LABEL, label).astype(np.uint8)
    return image, label


def make_synthetic_segmentation(
    root: str | os.PathLike, n_train: int = 200, n_val: int = 50, size: int = 64, seed: int = 0
) -> Path:
    """Writes a deterministic synthetic segmentation set in VOC's format under ``root``
    (replacing the folders an earlier one wrote there: see :func:`~convloc.data.files.fresh_tree`)."""
    with fresh_tree(root) as out:
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        splits = {"train": [], "val": []}
        for i in range(n_train + n_val):
            id_ = f"synth_{i:05d}"
            image, label = render_synthetic(rng, size)
            Image.fromarray(image).save(out / "JPEGImages" / f"{id_}.jpg", quality=95)
            write_label(out / "SegmentationClass" / f"{id_}.png", label)
            splits["train" if i < n_train else "val"].append(id_)
        for split, ids in splits.items():
            (out / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        (out / "classes.txt").write_text("\n".join(SYNTHETIC_CLASSES) + "\n")
    return Path(root)
