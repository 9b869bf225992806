"""Smoke test of an installed convloc: one small call of every family, checked, and the C library
loaded. No test deps (NumPy only), so it runs in a fresh venv: `python tools/smoke.py`."""

import ctypes
import os
import sys

import numpy as np

import convloc
from convloc import ops


def main() -> None:
    rng = np.random.default_rng(0)
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    assert ops.nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.5).tolist() == [0, 2]

    fmap = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    rois = np.array([[0, 0, 0, 3, 3]], np.float32)
    assert ops.roi_pool(fmap, rois, 1).item() == 15.0
    assert ops.roi_align(fmap, rois, 1, sampling_ratio=2).shape == (1, 1, 1, 1)

    up = ops.conv_transpose2d(np.ones((1, 1, 2, 2), np.float32), np.ones((1, 1, 2, 2), np.float32), stride=2)
    assert up.shape == (1, 1, 4, 4) and np.all(up == 1)

    values = rng.standard_normal((50, 2)).astype(np.float32)
    out = ops.permutohedral_filter(values, np.zeros((50, 3), np.float32), normalization="after")
    np.testing.assert_allclose(out, np.broadcast_to(values.mean(0), out.shape), rtol=1e-3, atol=1e-4)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert ops.bilateral_filter(image, 2.0, 20.0).shape == image.shape

    unary = rng.random((3, 16, 16)).astype(np.float32)
    for q in (ops.dense_crf(unary, image=image, iterations=3), ops.grid_crf(unary, image, iterations=3)):
        np.testing.assert_allclose(q.sum(0), 1, rtol=1e-4)

    labels = ops.felzenszwalb(image, 1.0, 0.8, 10)
    assert labels.shape == (16, 16) and labels.min() == 0
    proposals = ops.selective_search(image, "fast")
    assert proposals.ndim == 2 and proposals.shape[1] == 4 and len(proposals) > 0
    assert len(ops.sliding_windows((8, 8), [4], 4)) == 4

    library = convloc.get_library()
    if sys.platform == "win32":  # (get_library() names the import library, for linking)
        library = os.path.join(os.path.dirname(library), "convloc.dll")
    capi = ctypes.CDLL(library)
    capi.convloc_version.restype = ctypes.c_char_p
    assert capi.convloc_version().decode() == convloc.__version__
    assert os.path.isfile(os.path.join(convloc.get_include(), "convloc", "convloc.h"))

    print("convloc smoke test passed:", convloc.info())


if __name__ == "__main__":
    main()
