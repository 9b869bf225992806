"""A deterministic synthetic detection dataset written as a PASCAL VOC tree.

Each image holds 2-5 textured shapes (ellipse-like circles, rectangles, triangles, crosses) on a
cluttered background, over a 4x range of sizes, overlapping (IoU up to 0.35, later shapes occlude
earlier ones). Objects smaller than ``difficult_size`` pixels or less than 60 % visible are marked
``difficult``, as VOC does for objects that are hard to recognise. Image ``i`` depends only on
``(seed, i)``, so a tree of N images is a prefix of one with more.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from tqdm import tqdm

from convloc.data.files import fresh_tree
from convloc.data.voc import Annotation, write_annotation

__all__ = ["SHAPE_CLASSES", "make_shapes", "render_image"]

SHAPE_CLASSES = ("circle", "square", "triangle", "cross")


def _shape_mask(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    u, v = (x + 0.5) / w * 2 - 1, (y + 0.5) / h * 2 - 1  # [-1, 1] over the box
    if kind == "circle":
        return u**2 + v**2 <= 1
    if kind == "square":
        return np.ones((h, w), bool)
    if kind == "triangle":  # apex at top, random horizontal offset
        apex = rng.uniform(-0.5, 0.5)
        t = (v + 1) / 2  # 0 at top, 1 at bottom
        return (u >= apex - t * (apex + 1)) & (u <= apex + t * (1 - apex))
    if kind == "cross":
        bar = rng.uniform(0.3, 0.45)
        return (np.abs(u) <= bar) | (np.abs(v) <= bar)
    raise ValueError(kind)


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    kind = rng.integers(4)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:
        t = np.zeros((h, w))
    elif kind == 1:  # stripes at a random angle
        a, period = rng.uniform(0, np.pi), rng.uniform(4, 10)
        t = (np.sin((x * np.cos(a) + y * np.sin(a)) * 2 * np.pi / period) > 0).astype(np.float32)
    elif kind == 2:  # checkerboard
        cell = rng.integers(3, 8)
        t = ((x // cell + y // cell) % 2).astype(np.float32)
    else:  # speckle
        t = rng.uniform(0, 1, (h, w)) > 0.5
    tex = c1 + t[..., None] * (c2 - c1)
    return tex + rng.normal(0, 6, (h, w, 1))


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, cx, cy = rng.uniform(40, 215, 3), rng.uniform(-60, 60, 3), rng.uniform(-60, 60, 3)
    img = c0 + cx * (x / w)[..., None] + cy * (y / h)[..., None] + rng.normal(0, 10, (h, w, 3))
    for _ in range(rng.integers(2, 6)):  # clutter: thin random lines
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        a, length = rng.uniform(0, np.pi), rng.uniform(10, max(w, h))
        s = np.linspace(0, 1, int(length))
        xs = np.clip((x0 + s * length * np.cos(a)).astype(int), 0, w - 1)
        ys = np.clip((y0 + s * length * np.sin(a)).astype(int), 0, h - 1)
        img[ys, xs] = rng.uniform(0, 255, 3)
    return img


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def render_image(
    rng: np.random.Generator,
    size: tuple[int, int] = (128, 192),
    min_size: int = 16,
    max_size: int = 64,
    difficult_size: int = 16,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image: (uint8 [H, W, 3], boxes float32 [N, 4] continuous, labels int64 [N],
    difficult bool [N])."""
    h = int(rng.integers(size[0], size[1] + 1))
    w = int(rng.integers(size[0], size[1] + 1))
    img = _background(h, w, rng)
    owner = np.full((h, w), -1)  # which object each pixel shows, for visibility
    boxes, labels, areas = [], [], []
    for _ in range(int(rng.integers(2, 6))):
        for _try in range(20):
            side = np.exp(rng.uniform(np.log(min_size), np.log(max_size)))
            aspect = np.exp(rng.uniform(-0.4, 0.4))
            bw = int(np.clip(round(side * aspect), min_size // 2, w - 2))
            bh = int(np.clip(round(side / aspect), min_size // 2, h - 2))
            x1, y1 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            box = (x1, y1, x1 + bw, y1 + bh)
            if all(_iou(box, b) <= 0.35 for b in boxes):
                break
        else:
            continue
        label = int(rng.integers(len(SHAPE_CLASSES)))
        mask = _shape_mask(SHAPE_CLASSES[label], bh, bw, rng)
        region = img[y1 : y1 + bh, x1 : x1 + bw]
        region[mask] = _texture(bh, bw, rng)[mask]
        owner[y1 : y1 + bh, x1 : x1 + bw][mask] = len(boxes)
        boxes.append(box)
        labels.append(label)
        areas.append(int(mask.sum()))
    visible = np.bincount(owner[owner >= 0], minlength=len(boxes))
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    small = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) < difficult_size
    difficult = small | (visible < 0.6 * np.asarray(areas))
    image = np.clip(img, 0, 255).astype(np.uint8)
    return image, boxes, np.asarray(labels, np.int64), difficult


def make_shapes(root: str, images: int, seed: int = 0, test_fraction: float = 0.25, **kw) -> str:
    """Writes ``images`` images as a VOC tree under ``root`` (JPEGImages, Annotations,
    ImageSets/Main/{train,val,trainval,test}.txt and per-class lists, classes.txt), replacing what an
    earlier run wrote there (see :func:`~convloc.data.files.fresh_tree`). Returns root."""
    with fresh_tree(root) as tmp:
        out = str(tmp)
        for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
            os.makedirs(os.path.join(out, sub), exist_ok=True)
        ids, present = [], []
        for i in tqdm(range(images), desc="make-shapes", unit="img", leave=False):
            rng = np.random.default_rng([seed, i])
            image, boxes, labels, difficult = render_image(rng, **kw)
            image_id = f"{i:06d}"
            Image.fromarray(image).save(os.path.join(out, "JPEGImages", f"{image_id}.jpg"), quality=95)
            ann = Annotation(
                f"{image_id}.jpg", image.shape[1], image.shape[0], boxes,
                [SHAPE_CLASSES[k] for k in labels], difficult,
            )  # fmt: skip
            write_annotation(os.path.join(out, "Annotations", f"{image_id}.xml"), ann, "shapes")
            ids.append(image_id)
            present.append((labels, difficult))
        n_test = int(round(images * test_fraction))
        trainval, test = ids[: images - n_test], ids[images - n_test :]
        n_val = len(trainval) // 2
        splits = {
            "train": trainval[n_val:],
            "val": trainval[:n_val],
            "trainval": trainval,
            "test": test,
        }
        main = os.path.join(out, "ImageSets", "Main")
        index = {image_id: k for k, image_id in enumerate(ids)}
        for name, members in splits.items():
            with open(os.path.join(main, f"{name}.txt"), "w") as f:
                f.writelines(f"{m}\n" for m in members)
            for c, cls in enumerate(SHAPE_CLASSES):  # VOC's per-class lists: 1 present, 0 only difficult
                with open(os.path.join(main, f"{cls}_{name}.txt"), "w") as f:
                    for m in members:
                        labels, difficult = present[index[m]]
                        flag = 1 if np.any((labels == c) & ~difficult) else 0 if np.any(labels == c) else -1
                        f.write(f"{m} {flag:2d}\n")
        with open(os.path.join(out, "classes.txt"), "w") as f:
            f.writelines(f"{c}\n" for c in SHAPE_CLASSES)
    return root
