"""Region proposals: sliding windows, Felzenszwalb–Huttenlocher segmentation, selective search.

Images are ``H x W x C`` (or ``H x W`` for grey), channels last in **RGB** order — what NumPy,
PIL (``np.asarray(pil_image)``) and scikit-image give; OpenCV users convert with
``cv2.cvtColor(im, cv2.COLOR_BGR2RGB)`` first. ``uint8`` images are divided by 255; float images
are used as they are and are expected in ``[0, 1]``. NumPy, PyTorch, CuPy, JAX and other DLPack
producers' arrays are accepted and the result comes back in the caller's framework (on the CPU for
torch); JAX calls go through XLA FFI targets, so they work under ``jax.jit`` (selective search there
in its padded form).

Both algorithms run on the CPU only: they are sequential graph algorithms (Kruskal merging of a
pixel graph, greedy hierarchical grouping of a region adjacency graph) with little data
parallelism, so there is no CUDA path. Filtering is split over image rows and selective
search's strategies run in parallel threads; results do not depend on the thread count.

Boxes are ``(x1, y1, x2, y2)`` float32 with exclusive ``x2, y2`` (a one-pixel region at (x, y)
is ``(x, y, x + 1, y + 1)``), like the rest of convloc.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from convloc._kernels import arrays as A
from convloc._kernels import proposals as kernels
from convloc._kernels.args import check_fits, int_pair, integer, number
from convloc._kernels.arrays import Array
from convloc.ops._tracing import fx_leaf

__all__ = ["sliding_windows", "felzenszwalb", "selective_search"]


def sliding_windows(
    image_size: tuple[int, int],
    window_sizes: Sequence[int | tuple[int, int]],
    strides: int | Sequence[int | tuple[int, int]],
) -> np.ndarray:
    """Every window of each size that fits inside the image, on a regular grid.

    Args:
        image_size: (height, width), each at most 2**24 (the boxes are float32, exact up to there).
        window_sizes: window (height, width) pairs, or ints for square windows.
        strides: one int for every size, or one stride per window size (an int or (sy, sx)).

    Returns:
        float32 [K, 4] boxes (x1, y1, x2, y2): for each window size in turn, rows top to bottom,
        left to right, starting at (0, 0) and stepping by the stride while the window fits.
    """
    height, width = int_pair(image_size, "image_size", 0, 2**24)
    if not isinstance(window_sizes, (list, tuple)):
        raise TypeError(f"window_sizes: expected a list of sizes, got {type(window_sizes).__name__}")
    sizes = [int_pair(s, "window_sizes", 1) for s in window_sizes]
    if isinstance(strides, (list, tuple)):
        steps = [int_pair(s, "strides", 1) for s in strides]
        if len(steps) != len(sizes):
            raise ValueError(f"strides: expected an int or {len(sizes)} strides, got {len(steps)}")
    else:
        steps = [int_pair(strides, "strides", 1)] * len(sizes)
    count = sum(
        max(0, (height - wh) // sy + 1) * max(0, (width - ww) // sx + 1)
        for (wh, ww), (sy, sx) in zip(sizes, steps)
    )
    check_fits(64 * count, "strides", f"{count} windows (64 bytes each while they are made)")
    out = [np.zeros((0, 4), np.float32)]
    for (wh, ww), (sy, sx) in zip(sizes, steps):
        ys, xs = np.arange(0, height - wh + 1, sy), np.arange(0, width - ww + 1, sx)
        y, x = np.meshgrid(ys, xs, indexing="ij")
        y, x = y.ravel(), x.ravel()
        out.append(np.stack([x, y, x + ww, y + wh], 1).astype(np.float32))
    return np.concatenate(out)


@fx_leaf
@A.accepts_any_framework
def felzenszwalb(image: Array, scale: float = 1.0, sigma: float = 0.8, min_size: int = 20) -> Array:
    """Felzenszwalb–Huttenlocher graph segmentation (IJCV 2004).

    Each channel is smoothed with a Gaussian (``sigma``, radius ``ceil(4 sigma)``, edge pixels
    replicated); pixels are joined to their 8 neighbours by edges weighted with the Euclidean
    distance of their (smoothed) channel vectors; edges are taken in increasing weight (ties in
    raster order) and two components merge when the edge weight is at most both components'
    ``Int(C) + scale / |C|``; finally components smaller than ``min_size`` are merged along
    the sorted edges. Channel values are in ``[0, 1]`` (uint8 / 255), so ``scale`` is the
    paper's ``k / 255`` — the same convention as ``skimage.segmentation.felzenszwalb``.

    Args:
        image: [H, W] grey, [H, W, 3] RGB or any [H, W, C]; uint8 or float.
        scale: > 0; larger gives larger segments.
        sigma: Gaussian smoothing before segmentation, in [0, 100] (0: none).
        min_size: minimum component size in pixels (after the main pass).

    Returns:
        int32 [H, W] labels 0..K-1, numbered in raster order of first appearance.
    """
    framework_image = A.as_array(image, "image")
    scale, sigma = number(scale, "scale"), number(sigma, "sigma")
    min_size = integer(min_size, "min_size", 0)
    if A.is_jax(framework_image):
        from convloc._jax import proposals as jax_ops

        return jax_ops.felzenszwalb(framework_image, scale, sigma, min_size)
    if A.is_torch(framework_image):
        from convloc._torch import proposals as torch_ops

        return torch_ops.felzenszwalb(framework_image, scale, sigma, min_size)
    labels = kernels.felzenszwalb(kernels.float_image(framework_image), scale, sigma, min_size)
    return _like(labels, framework_image)


@fx_leaf
@A.accepts_any_framework
def selective_search(
    image: Array,
    mode: str = "fast",
    *,
    seed: int | None = 0,
    min_size: int | None = None,
    max_boxes: int | None = None,
    sigma: float = 0.8,
    padded: bool = False,
):
    """Selective search object proposals (Uijlings et al., IJCV 2013).

    The image is over-segmented with Felzenszwalb–Huttenlocher; adjacent regions are then merged
    greedily by similarity until one region remains, and every region of that hierarchy is a
    proposal. Similarity is a sum of colour (25-bin histograms per channel, histogram
    intersection), texture (Gaussian derivatives, sigma 1, in 8 directions, 10 bins each), size
    (``1 - (|a| + |b|) / |image|``) and fill (``1 - (|bbox(a, b)| - |a| - |b|) / |image|``).
    Diversification, as in the paper's Table 5:

    - ``"single"``: HSV, k = 100, colour + texture + size + fill (1 strategy);
    - ``"fast"``: HSV and Lab, k in {50, 100}, C+T+S+F and T+S+F (8 strategies);
    - ``"quality"``: HSV, Lab, rg+I, H and I, k in {50, 100, 150, 300}, C+T+S+F, T+S+F, F and S
      (80 strategies).

    Ranking follows the paper: in each hierarchy the region formed last (the whole image) has
    position 1, the one before it 2, and so on down to the initial regions; each position is
    multiplied by a uniform random number, all strategies' regions are sorted by that value
    (smallest first) and duplicate boxes are dropped, keeping the first.

    Args:
        image: [H, W] grey or [H, W, 3] RGB (a 4th, alpha channel is ignored); uint8, or float
            in [0, 1].
        mode: "single", "fast" or "quality".
        seed: seed of the random ranking (the same seed gives the same boxes); None: fresh.
        min_size: Felzenszwalb's minimum region size; None uses k, as the paper's code does.
        max_boxes: keep at most this many top-ranked boxes.
        sigma: Gaussian smoothing before segmentation, in [0, 100].
        padded: return ``(boxes, count)``: the boxes padded with zeros to ``max_boxes`` rows and
            their number, fixed-size arrays (what ``jax.jit`` needs; with JAX the random numbers of
            ``seed`` are drawn when the call is traced).

    Returns:
        float32 [K, 4] boxes (x1, y1, x2, y2), best ranked first; or, padded, ``(boxes
        [max_boxes, 4], count)``.
    """
    framework_image = A.as_array(image, "image")
    if min_size is not None:
        min_size = integer(min_size, "min_size", 0)
    if max_boxes is not None:
        max_boxes = integer(max_boxes, "max_boxes", 0)
    elif padded:
        raise ValueError("max_boxes: padded=True needs the number of rows to pad to")
    if seed is not None:
        seed = integer(seed, "seed", 0)
    if mode not in kernels.MODES:
        raise ValueError(f"mode: expected one of {sorted(kernels.MODES)}, got {mode!r}")
    args = (mode, seed, min_size, max_boxes, number(sigma, "sigma"))
    if A.is_jax(framework_image):
        from convloc._jax import proposals as jax_ops

        return jax_ops.selective_search(framework_image, *args, bool(padded))
    if A.is_torch(framework_image):
        from convloc._torch import proposals as torch_ops

        boxes = torch_ops.selective_search(framework_image, *args)
    else:
        boxes = _like(
            kernels.selective_search(kernels.float_image(framework_image, rgb=True), *args), framework_image
        )
    if not padded:
        return boxes
    out = A.empty(boxes, (max_boxes, 4))
    out[...] = 0
    out[: boxes.shape[0]] = boxes
    count = A.empty(boxes, (), "int64")
    count[...] = boxes.shape[0]
    return out, count


def _like(result: np.ndarray, like: Array) -> Array:
    """result in like's framework (torch on the CPU, CuPy on its device)."""
    if A.is_torch(like):
        import torch

        return torch.from_numpy(result)
    if A.is_cupy(like):
        import cupy

        return cupy.asarray(result)
    return result
