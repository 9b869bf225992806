"""Selective search and graph segmentation vs OpenCV (opencv-contrib's ximgproc), speed and recall.

Speed: selective search "fast" and Felzenszwalb (sigma 0.8, k 300, min_size 100) on 500x500
images, timed interleaved with cv2.ximgproc.segmentation's createSelectiveSearchSegmentation
(switchToSelectiveSearchFast) and createGraphSegmentation on the same images.

Recall: recall at IoU 0.5 and 0.7 and average best overlap (ABO) of the top-N proposals on
(a) deterministic synthetic scenes: textured rectangles, ellipses and triangles on a textured
background, each object's box exact (the bounding box of its visible pixels; objects less than
half visible are not counted) and (b) five scikit-image sample images with hand-drawn boxes
(proposals_boxes.json next to this file).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from convloc.benchmarks import harness

SIZE = 500
COUNTS = (100, 300, 500, 1000, 2000, 10**9)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """[h, w, 3] random colour pattern: noisy flat colour, stripes, checks or a blend."""
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    kind = rng.integers(4)
    if kind == 0:
        t = np.zeros((h, w))
    elif kind == 1:
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 30)
        t = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0).astype(float)
    elif kind == 2:
        cell = rng.integers(5, 25)
        t = ((xx // cell + yy // cell) % 2).astype(float)
    else:
        t = (xx / max(w, 1) + yy / max(h, 1)) / 2
    noise = rng.normal(0, rng.uniform(3, 15), (h, w, 3))
    return a + t[..., None] * (b - a) + noise


def synthetic_scene(seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [size, size, 3] RGB scene and its float32 [G, 4] ground-truth boxes."""
    rng = np.random.default_rng(seed)
    image = _texture(rng, size, size)
    owner = np.full((size, size), -1)
    yy, xx = np.mgrid[:size, :size]
    areas = []
    for i in range(int(rng.integers(3, 7))):
        w, h = rng.uniform(0.08, 0.5, 2) * size
        cx, cy = rng.uniform(w / 2, size - w / 2), rng.uniform(h / 2, size - h / 2)
        shape = rng.integers(3)
        u, v = (xx - cx) / (w / 2), (yy - cy) / (h / 2)
        if shape == 0:
            mask = (abs(u) <= 1) & (abs(v) <= 1)
        elif shape == 1:
            mask = u * u + v * v <= 1
        else:
            mask = (v <= 1) & (abs(u) <= (v + 1) / 2)
        image[mask] = _texture(rng, size, size)[mask]
        owner[mask] = i
        areas.append(mask.sum())
    boxes = []
    for i, area in enumerate(areas):
        ys, xs = np.nonzero(owner == i)
        if len(ys) >= area / 2:
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.clip(image, 0, 255).astype(np.uint8), np.array(boxes, np.float32).reshape(-1, 4)


def sample_images() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """scikit-image sample images with the hand-drawn boxes of proposals_boxes.json."""
    import skimage.data

    with open(os.path.join(os.path.dirname(__file__), "proposals_boxes.json")) as f:
        annotations = json.load(f)
    out = []
    for name, objects in annotations.items():
        if name.startswith("_"):
            continue
        image = getattr(skimage.data, name)()
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        out.append((name, image, np.array(list(objects.values()), np.float32)))
    return out


def best_overlaps(proposals: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """[len(COUNTS), G]: best IoU of each ground-truth box with the top-N proposals."""
    import convloc

    if len(proposals) == 0:
        return np.zeros((len(COUNTS), len(gt)))
    iou = convloc.ops.box_iou(gt.astype(np.float32), proposals.astype(np.float32))
    running = np.maximum.accumulate(iou, axis=1)
    return np.stack([running[:, min(n, len(proposals)) - 1] for n in COUNTS])


def opencv_fast(cv2, image: np.ndarray) -> np.ndarray:
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    ss.switchToSelectiveSearchFast()
    r = ss.process().astype(np.float32).reshape(-1, 4)  # (x, y, w, h)
    r[:, 2:] += r[:, :2]
    return r


def _recall_table(
    name: str, overlaps: dict[str, list[np.ndarray]], counts: dict[str, list[int]]
) -> list[str]:
    lines = [
        f"recall on {name}: " + ", ".join(f"{m} {np.mean(c):.0f} boxes/image" for m, c in counts.items())
    ]
    lines.append(f"  {'method':<16} {'top-N':>6} {'recall@0.5':>11} {'recall@0.7':>11} {'ABO':>7}")
    for method, per_image in overlaps.items():
        best = np.concatenate(per_image, axis=1)
        for i, n in enumerate(COUNTS):
            label = "all" if n == COUNTS[-1] else str(n)
            r50, r70, abo = np.mean(best[i] >= 0.5), np.mean(best[i] >= 0.7), np.mean(best[i])
            lines.append(f"  {method:<16} {label:>6} {r50:11.3f} {r70:11.3f} {abo:7.3f}")
    return lines


def _time_image(report: harness.Report, label: str, image: np.ndarray, cv2, budget: float) -> None:
    import convloc

    ours, peer = harness.compare(
        lambda: convloc.ops.selective_search(image, "fast"),
        (lambda: opencv_fast(cv2, image)) if cv2 else None,
        warmup=1,
        min_repeats=3,
        budget_s=budget,
    )
    report.add(
        f"selective search fast 500x500 {label}",
        ours,
        "OpenCV fast",
        peer,
        boxes=len(convloc.ops.selective_search(image, "fast")),
        peer_boxes=len(opencv_fast(cv2, image)) if cv2 else None,
    )
    if cv2:
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        graph_seg = cv2.ximgproc.segmentation.createGraphSegmentation(0.8, 300, 100)
    ours, peer = harness.compare(
        lambda: convloc.ops.felzenszwalb(image, 300 / 255, 0.8, 100),
        (lambda: graph_seg.processImage(bgr)) if cv2 else None,
        budget_s=budget,
    )
    report.add(
        f"felzenszwalb 500x500 {label}",
        ours,
        "OpenCV graphseg",
        peer,
        segments=int(convloc.ops.felzenszwalb(image, 300 / 255, 0.8, 100).max()) + 1,
        peer_segments=int(graph_seg.processImage(bgr).max()) + 1 if cv2 else None,
    )


def run(args: argparse.Namespace) -> harness.Report:
    import convloc

    report = harness.start("proposals: selective search and graph segmentation vs OpenCV", args)
    cv2 = harness.import_peer(report, "cv2")
    if cv2 is not None and not hasattr(cv2, "ximgproc"):
        report.note("OpenCV lacks ximgproc (install opencv-contrib-python-headless): convloc only")
        cv2 = None
    if cv2 is not None:
        report.note(f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads")
    scenes = [synthetic_scene(seed) for seed in range(getattr(args, "scenes", 12))]
    samples = sample_images()

    # Speed on 500x500: a synthetic scene and the astronaut image resized.
    import skimage.transform

    astronaut = next(im for name, im, _ in samples if name == "astronaut")
    astronaut = (skimage.transform.resize(astronaut, (SIZE, SIZE)) * 255).round().astype(np.uint8)
    for label, image in (("synthetic scene 0", scenes[0][0]), ("astronaut", astronaut)):
        _time_image(report, label, image, cv2, args.budget)

    # Recall.
    methods = {"convloc fast": lambda im: convloc.ops.selective_search(im, "fast")}
    if getattr(args, "quality", False):
        methods["convloc quality"] = lambda im: convloc.ops.selective_search(im, "quality")
    if cv2:
        methods["OpenCV fast"] = lambda im: opencv_fast(cv2, im)
    sets = {
        f"{len(scenes)} synthetic scenes ({sum(len(g) for _, g in scenes)} objects)": scenes,
        f"{len(samples)} scikit-image samples ({sum(len(g) for _, _, g in samples)} objects)": [
            (im, g) for _, im, g in samples
        ],
    }
    for set_name, images in sets.items():
        overlaps = {m: [] for m in methods}
        counts = {m: [] for m in methods}
        for image, gt in images:
            for m, f in methods.items():
                boxes = f(image)
                counts[m].append(len(boxes))
                overlaps[m].append(best_overlaps(boxes, gt))
        for line in _recall_table(set_name, overlaps, counts):
            report.note(line)
    return harness.finish(report, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    harness.add_common_args(parser)
    parser.add_argument("--scenes", type=int, default=12, help="synthetic scenes for recall")
    parser.add_argument("--quality", action="store_true", help="also evaluate quality mode")
    run(parser.parse_args())
