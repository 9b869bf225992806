"""Slow, obvious box operations (torchvision's definitions) for the tests."""

import numpy as np


def box_area(b: np.ndarray) -> np.ndarray:
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty((len(a), len(b)), dtype=a.dtype)
    for i in range(len(a)):
        for j in range(len(b)):
            w = max(min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]), 0)
            h = max(min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]), 0)
            inter = a.dtype.type(w * h)
            union = a.dtype.type(box_area(a[i : i + 1])[0] + box_area(b[j : j + 1])[0] - inter)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[i, j] = inter / union
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, thr: float, idxs=None) -> np.ndarray:
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        ok = True
        for k in keep:
            if idxs is not None and idxs[k] != idxs[i]:
                continue
            if box_iou(boxes[[k]], boxes[[i]])[0, 0] > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return np.array(keep, dtype=np.int64)
