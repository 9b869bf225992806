"""Pictures of what the models found, readable at a glance: each class in its own saturated
colour; segments as outlines over a light tint that keeps the image visible, on the image
enlarged to about 384 px, with a legend of the classes; boxes with their class and score."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["class_colour", "segmentation_picture", "detection_picture"]

# Saturated, mutually distinct colours; class k (background excluded) takes entry k mod 12.
_COLOURS = (
    (230, 40, 40), (40, 170, 60), (40, 110, 230), (250, 170, 0), (170, 60, 220), (0, 200, 200),
    (240, 80, 190), (140, 200, 30), (140, 90, 40), (0, 120, 120), (250, 120, 100), (100, 100, 100),
)  # fmt: skip
_SIDE = 384  # the enlarged image's longer side, about: a default font's text stays small beside it
_LINE = 14  # legend line height in pixels


def class_colour(k: int) -> tuple[int, int, int]:
    """The colour of class ``k`` in every picture."""
    return _COLOURS[k % len(_COLOURS)]


def _enlarge(image: np.ndarray) -> tuple[Image.Image, int]:
    h, w = image.shape[:2]
    k = max(1, round(_SIDE / max(h, w)))
    return Image.fromarray(np.ascontiguousarray(image[..., :3])).resize((w * k, h * k), Image.BICUBIC), k


def _text_colour(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    return (0, 0, 0) if 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2] > 140 else (255, 255, 255)


def _legend(canvas: Image.Image, entries: list[tuple[tuple[int, int, int], str]]) -> Image.Image:
    """``canvas`` with a strip below it: a swatch and a text for each entry, as many per line as fit."""
    draw = ImageDraw.Draw(canvas)
    lines, line, x = [], [], 4
    for colour, text in entries:
        width = 16 + int(draw.textlength(text)) + 12
        if line and x + width > canvas.width:
            lines.append(line)
            line, x = [], 4
        line.append((x, colour, text))
        x += width
    if line:
        lines.append(line)
    out = Image.new("RGB", (canvas.width, canvas.height + _LINE * len(lines) + 6), (255, 255, 255))
    out.paste(canvas, (0, 0))
    draw = ImageDraw.Draw(out)
    for row, items in enumerate(lines):
        y = canvas.height + 3 + row * _LINE
        for x, colour, text in items:
            draw.rectangle((x, y + 2, x + 10, y + 12), fill=colour, outline=(0, 0, 0))
            draw.text((x + 14, y + 1), text, fill=(0, 0, 0))
    return out


def _boundary(labels: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another label."""
    edge = np.zeros(labels.shape, bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:-1] |= labels[:-1] != labels[1:]
    return edge


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its 4-neighbours."""
    out = mask.copy()
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    return out


def segmentation_picture(
    image: np.ndarray, labels: np.ndarray, classes, alpha: float = 0.3, ignore: int = 255
) -> np.ndarray:
    """``image`` [H, W, 3] uint8 with the segments of ``labels`` [H, W] (class indices, 0 the
    background, ``ignore`` unlabelled): enlarged, every other class tinted by ``alpha`` and
    outlined in its colour, and a legend of the classes present with their share of the image."""
    canvas, k = _enlarge(image)
    big = np.kron(np.asarray(labels, np.int64), np.ones((k, k), np.int64))
    pixels = np.asarray(canvas, np.float32)
    colours = np.array([(0, 0, 0), *(class_colour(c) for c in range(1, len(classes)))], np.float32)
    shown = (big > 0) & (big < len(classes)) & (big != ignore)
    tint = colours[np.where(shown, big, 0)]
    pixels = np.where(shown[..., None], pixels * (1 - alpha) + tint * alpha, pixels)
    # outlines: the pixels of a segment within two pixels of another label, in its colour
    outline = _grow(_grow(_boundary(big))) & shown
    pixels[outline] = colours[big[outline]]
    counts = np.bincount(np.asarray(labels, np.int64).ravel(), minlength=256)
    entries = [
        (class_colour(c), f"{classes[c]} {100 * counts[c] / labels.size:.0f}%")
        for c in range(1, len(classes))
        if counts[c]
    ]
    picture = Image.fromarray(pixels.astype(np.uint8))
    return np.asarray(_legend(picture, entries or [((255, 255, 255), f"{classes[0]} only")]))


def detection_picture(image: np.ndarray, detections: dict, classes, threshold: float = 0.5) -> np.ndarray:
    """``image`` [H, W, 3] uint8, at its own size, with the ``detections`` (boxes [D, 4] in its
    pixels, scores, labels) scoring at least ``threshold``: each box in its class's colour with
    the class and score on a tab above it, the best boxes drawn last (on top)."""
    canvas = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    draw = ImageDraw.Draw(canvas)
    for box, score, label in sorted(
        zip(detections["boxes"], detections["scores"], detections["labels"]), key=lambda d: d[1]
    ):
        if score < threshold:
            continue
        colour = class_colour(int(label) + 1)  # the colours of segmentation's object classes
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        text = f"{classes[int(label)]} {score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text)
        ty = y1 - (bottom - top) - 3 if y1 >= bottom - top + 3 else y1
        draw.rectangle((x1, ty, x1 + right - left + 3, ty + bottom - top + 3), fill=colour)
        draw.text((x1 + 2, ty + 1 - top), text, fill=_text_colour(colour))
    return np.asarray(canvas)
