"""Test time of R-CNN against Fast R-CNN on the same images and proposals, in one process.

Each test image goes through every detector in turn (so a busy machine slows them alike), twice,
and the second pass is timed in CPU time on one thread; each detector's time is split by the
layers it runs (the rest: resizing or warping, box decoding and NMS).

Usage: python tools/detection_profile.py DATA RCNN.pt FAST_RCNN.pt [FAST_RCNN.pt ...]
(checkpoints of `convloc train rcnn|fast-rcnn` trained on DATA, a `convloc data make-shapes` tree)
"""

import argparse
import time
from collections import defaultdict

import numpy as np
import torch

import convloc
from convloc.commands.detection import load_detector
from convloc.data import VOCDetection
from convloc.models.common import keep_freed_memory, load_proposals


def time_layers(layers: dict[str, torch.nn.Module], spent: dict) -> None:
    """Adds each named layer's CPU time per call to ``spent[name]``."""

    def add(name: str, sign: int) -> None:
        spent[name] += sign * time.process_time()

    for name, layer in layers.items():
        layer.register_forward_pre_hook(lambda m, i, name=name: add(name, -1))
        layer.register_forward_hook(lambda m, i, o, name=name: add(name, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("rcnn")
    ap.add_argument("fast_rcnn", nargs="+")
    args = ap.parse_args()
    torch.set_num_threads(1)
    convloc.set_num_threads(1)
    keep_freed_memory()
    detectors, spent = {}, {}
    for path in (args.rcnn, *args.fast_rcnn):
        model, classes, settings = load_detector(path)
        spent[path] = defaultdict(float)
        if hasattr(model, "roi_pool"):
            b = model.backbone
            layers = {"backbone": b.features, "roi pool": model.roi_pool, "fc6/fc7": b.head}
        else:
            layers = {"convs": model.cnn.features, "pool5": model.cnn.pool, "fc6/fc7": model.cnn.head}
        time_layers(layers, spent[path])
        detectors[path] = model
    dataset = VOCDetection(args.data, "test", classes)
    proposals = load_proposals(dataset, f"{dataset.root}/cache", **settings)
    images = [dataset[i]["image"] for i in range(len(dataset))]
    total = defaultdict(float)
    for timed in (False, True):
        for s in spent.values():
            s.clear()
        for image, boxes in zip(images, proposals):
            for path, model in detectors.items():
                start = time.process_time()
                model.detect(image, boxes)
                total[path] += (time.process_time() - start) * timed
    n = len(images)
    print(
        f"{n} images, {np.mean([len(p) for p in proposals]):.1f} proposals each; CPU ms per image, one thread"
    )
    slow = total[args.rcnn]
    for path in detectors:
        layers = {k: round(1000 * v / n, 2) for k, v in spent[path].items()}
        rest = 1000 * (total[path] - sum(spent[path].values())) / n
        print(
            f"{path}: {1000 * total[path] / n:.1f} ms, R-CNN / this {slow / total[path]:.1f}; {layers}, rest {rest:.2f}"
        )


if __name__ == "__main__":
    main()
