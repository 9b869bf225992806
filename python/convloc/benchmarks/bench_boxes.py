"""NMS and box IoU against torchvision.ops (CPU).

Workloads: 2000 and 12000 boxes, "uniform" (centres uniform in 800x600, sides U[16, 256],
clamped to the image) and "clustered" (jittered copies of 100 objects: centre jitter 10 % of
the size, log-size jitter 0.1), IoU thresholds 0.7 and 0.3; box_iou 2000 x 2000.
"""

from __future__ import annotations

import argparse

import numpy as np

from convloc.benchmarks import harness


def uniform_boxes(n: int, rng: np.random.Generator) -> np.ndarray:
    cx, cy = rng.uniform(0, 800, n), rng.uniform(0, 600, n)
    w, h = rng.uniform(16, 256, n), rng.uniform(16, 256, n)
    b = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    return np.clip(b, 0, [800, 600, 800, 600]).astype(np.float32)


def clustered_boxes(n: int, rng: np.random.Generator, objects: int = 100) -> np.ndarray:
    base = uniform_boxes(objects, rng).astype(np.float64)
    pick = rng.integers(0, objects, n)
    cx = (base[pick, 0] + base[pick, 2]) / 2
    cy = (base[pick, 1] + base[pick, 3]) / 2
    w = (base[pick, 2] - base[pick, 0]) * np.exp(rng.normal(0, 0.1, n))
    h = (base[pick, 3] - base[pick, 1]) * np.exp(rng.normal(0, 0.1, n))
    cx = cx + rng.normal(0, 0.1, n) * w
    cy = cy + rng.normal(0, 0.1, n) * h
    b = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    return np.clip(b, 0, [800, 600, 800, 600]).astype(np.float32)


def run(args: argparse.Namespace) -> harness.Report:
    import convloc

    try:
        import torch

        as_tensor = torch.from_numpy  # convloc is called the way a torch user calls it
    except ImportError:
        as_tensor = np.asarray
    report = harness.start("boxes: NMS and IoU vs torchvision.ops", args)
    tv = harness.import_peer(report, "torchvision.ops")
    rng = np.random.default_rng(0)
    for n in (2000, 12000):
        for kind, make in (("uniform", uniform_boxes), ("clustered", clustered_boxes)):
            boxes = as_tensor(make(n, rng))
            scores = as_tensor(rng.random(n).astype(np.float32))
            for thr in (0.7, 0.3):
                ours, peer = harness.compare(
                    lambda: convloc.ops.nms(boxes, scores, thr),
                    (lambda: tv.nms(boxes, scores, thr)) if tv else None,
                    budget_s=args.budget,
                )
                kept = len(convloc.ops.nms(boxes, scores, thr))
                report.add(f"nms {kind} n={n} iou={thr}", ours, "torchvision", peer, kept=kept)
    a = as_tensor(uniform_boxes(2000, rng))
    b = as_tensor(uniform_boxes(2000, rng))
    ours, peer = harness.compare(
        lambda: convloc.ops.box_iou(a, b), (lambda: tv.box_iou(a, b)) if tv else None, budget_s=args.budget
    )
    report.add("box_iou 2000x2000", ours, "torchvision", peer)
    return harness.finish(report, args)


if __name__ == "__main__":
    harness.main_for(run, __doc__)
