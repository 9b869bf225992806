"""PASCAL VOC-format detection data: ``Annotations/*.xml``, ``JPEGImages/*.jpg``,
``ImageSets/Main/<split>.txt``.

Boxes are returned in continuous pixel coordinates ``(x1, y1, x2, y2)`` with widths ``x2 - x1``
(torchvision's convention): VOC's 1-based inclusive ``(xmin, ymin, xmax, ymax)`` becomes
``(xmin - 1, ymin - 1, xmax, ymax)``. The IoU of two boxes in this form equals the devkit's
``+1``-width IoU of the original integer boxes, so :mod:`convloc.metrics.detection` needs no
``+1`` for boxes that came from here.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from convloc.data.files import open_image, read_image

__all__ = [
    "VOC_CLASSES",
    "Annotation",
    "VOCDetection",
    "image_sets",
    "read_annotation",
    "summary",
    "write_annotation",
]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


@dataclass
class Annotation:
    """One image's objects: ``boxes`` float32 [N, 4] continuous, ``names`` [N],
    ``difficult`` bool [N]."""

    filename: str
    width: int
    height: int
    boxes: np.ndarray
    names: list[str]
    difficult: np.ndarray


def read_annotation(path: str) -> Annotation:
    """Parses one VOC XML file (boxes converted to continuous coordinates, see module docstring)."""
    root = ET.parse(path).getroot()
    size = root.find("size")
    boxes, names, difficult = [], [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((xmin - 1, ymin - 1, xmax, ymax))
        names.append(obj.find("name").text.strip())
        d = obj.find("difficult")
        difficult.append(d is not None and int(d.text) == 1)
    return Annotation(
        filename=root.find("filename").text.strip(),
        width=int(size.find("width").text) if size is not None else 0,
        height=int(size.find("height").text) if size is not None else 0,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        names=names,
        difficult=np.asarray(difficult, bool),
    )


def write_annotation(path: str, ann: Annotation, folder: str = "VOC") -> None:
    """Writes ``ann`` as VOC XML; boxes must be integral in continuous coordinates."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = ann.filename
    size = ET.SubElement(root, "size")
    for k, v in (("width", ann.width), ("height", ann.height), ("depth", 3)):
        ET.SubElement(size, k).text = str(v)
    ET.SubElement(root, "segmented").text = "0"
    for box, name, diff in zip(ann.boxes, ann.names, ann.difficult):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(diff))
        bb = ET.SubElement(obj, "bndbox")
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        for k, v in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bb, k).text = str(v)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8")


class VOCDetection:
    """A VOC-format split: ``ds[i]`` → dict(image uint8 [H, W, 3] RGB, boxes float32 [N, 4],
    labels int64 [N] (0-based index into ``classes``), difficult bool [N], id str).

    Args:
        root: the year folder (``.../VOCdevkit/VOC2007``) or a folder holding ``VOCdevkit/VOC2007``
            or ``VOC2007``.
        split: a name in ``ImageSets/Main`` (``train``, ``val``, ``trainval``, ``test``).
        classes: class names; default ``classes.txt`` in ``root`` when present, else the 20 VOC
            classes.
        use_difficult: keep objects marked difficult (flagged; the metrics ignore them).
    """

    def __init__(self, root: str, split: str = "trainval", classes=None, use_difficult: bool = True):
        self.root = _find_year_dir(root)
        self.split = split
        self.classes = tuple(_read_classes(self.root) if classes is None else classes)
        self._index = {c: i for i, c in enumerate(self.classes)}
        self.use_difficult = use_difficult
        path = os.path.join(self.root, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"split: no {path}; this tree's splits: {', '.join(image_sets(self.root)) or 'none'}"
            )
        with open(path) as f:
            self.ids = [line.split()[0] for line in f if line.strip()]
        self._annotations: dict[str, Annotation] = {}
        self._digests: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def annotation(self, i: int) -> Annotation:
        image_id = self.ids[i]
        if image_id not in self._annotations:
            path = os.path.join(self.root, "Annotations", f"{image_id}.xml")
            self._annotations[image_id] = read_annotation(path)
        return self._annotations[image_id]

    def target(self, i: int) -> dict:
        """Boxes, labels and difficult flags of image ``i`` without reading its pixels."""
        ann = self.annotation(i)
        keep = [
            k
            for k, n in enumerate(ann.names)
            if n in self._index and (self.use_difficult or not ann.difficult[k])
        ]
        return {
            "id": self.ids[i],
            "boxes": ann.boxes[keep].reshape(-1, 4),
            "labels": np.asarray([self._index[ann.names[k]] for k in keep], np.int64),
            "difficult": ann.difficult[keep],
        }

    def image_path(self, i: int) -> str:
        return os.path.join(self.root, "JPEGImages", f"{self.ids[i]}.jpg")

    def image_digest(self, i: int) -> str:
        """SHA-1 of image ``i``'s file: the key of what is computed from its pixels, which stays
        right when the file under the same name is rewritten."""
        image_id = self.ids[i]
        if image_id not in self._digests:
            with open(self.image_path(i), "rb") as f:
                self._digests[image_id] = hashlib.sha1(f.read()).hexdigest()
        return self._digests[image_id]

    def digest(self) -> str:
        """SHA-1 of the split's content: its images, in order, and their annotations as read."""
        h = hashlib.sha1(repr(self.classes).encode())
        for i in range(len(self)):
            t = self.target(i)
            h.update(self.image_digest(i).encode())
            for key in ("boxes", "labels", "difficult"):
                h.update(t[key].tobytes())
        return h.hexdigest()

    def image(self, i: int) -> np.ndarray:
        """Image ``i``'s pixels, uint8 [H, W, 3] RGB (:func:`~convloc.data.files.read_image`: its
        size checked before it is decoded)."""
        return read_image(self.image_path(i), "RGB")

    def image_size(self, i: int) -> tuple[int, int]:
        """Image ``i``'s (height, width), from its file's header (no decoding)."""
        with open_image(self.image_path(i)) as im:
            return im.height, im.width

    def __getitem__(self, i: int) -> dict:
        return {"image": self.image(i), **self.target(i)}


def image_sets(root: str) -> list[str]:
    """The splits of the VOC tree at ``root`` (as for :class:`VOCDetection`): the lists in
    ``ImageSets/Main`` other than the per-class ones (``<class>_<split>.txt``), sorted."""
    folder = os.path.join(_find_year_dir(root), "ImageSets", "Main")
    if not os.path.isdir(folder):
        return []
    names = {f[: -len(".txt")] for f in os.listdir(folder) if f.endswith(".txt")}
    per_class = {n for n in names if "_" in n and n.rpartition("_")[2] in names}
    return sorted(names - per_class)


def summary(root: str) -> dict:
    """What the VOC tree at ``root`` holds: its year folder, classes and, per split, the number of
    images and of objects of each class (``difficult`` ones counted apart; objects of classes
    outside ``classes`` are not counted)."""
    year = _find_year_dir(root)
    classes = _read_classes(year)
    splits = {}
    for split in image_sets(year):
        ds = VOCDetection(year, split, classes)
        objects, difficult = np.zeros(len(ds.classes), np.int64), np.zeros(len(ds.classes), np.int64)
        for i in range(len(ds)):
            t = ds.target(i)
            np.add.at(objects, t["labels"][~t["difficult"]], 1)
            np.add.at(difficult, t["labels"][t["difficult"]], 1)
        splits[split] = {
            "images": len(ds),
            "objects": dict(zip(ds.classes, objects.tolist())),
            "difficult": dict(zip(ds.classes, difficult.tolist())),
        }
    return {"root": year, "classes": list(classes), "splits": splits}


def _read_classes(year_dir: str) -> tuple[str, ...]:
    """``classes.txt`` of a VOC year folder when present (one name a line), else the 20 VOC classes."""
    listed = os.path.join(year_dir, "classes.txt")
    if not os.path.exists(listed):
        return VOC_CLASSES
    with open(listed) as f:
        return tuple(line.strip() for line in f if line.strip())


def _find_year_dir(root: str) -> str:
    for cand in (root, os.path.join(root, "VOC2007"), os.path.join(root, "VOCdevkit", "VOC2007")):
        if os.path.isdir(os.path.join(cand, "Annotations")):
            return cand
    raise FileNotFoundError(f"root: no VOC tree (Annotations/, JPEGImages/) under {root!r}")
