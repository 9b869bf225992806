import numpy as np
import pytest

import convloc
from convloc._kernels import proposals as KP
from reference import proposals as ref


def canonical(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered by first appearance in raster order: equal iff the partitions are."""
    _, first, inverse = np.unique(labels.ravel(), return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse].reshape(labels.shape)


def blocky(rng, h, w, c, levels=4):
    """Few distinct values: many tied edge weights, which exercises the tie-breaking order."""
    return (rng.integers(0, levels, (h, w, c)) * 60).astype(np.uint8)


def shapes_image(rng, h=48, w=64):
    """Textured rectangles and discs on a noisy background, uint8 RGB."""
    im = rng.integers(90, 130, (h, w, 3)).astype(np.int64)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(4):
        colour = rng.integers(0, 256, 3)
        cy, cx, r = rng.integers(8, h - 8), rng.integers(8, w - 8), rng.integers(4, 10)
        mask = (
            (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            if rng.random() < 0.5
            else ((abs(yy - cy) < r) & (abs(xx - cx) < r + 2))
        )
        im[mask] = colour + rng.integers(-15, 16, (mask.sum(), 3))
    return np.clip(im, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- sliding windows


def test_sliding_windows_grid():
    boxes = convloc.ops.sliding_windows((5, 7), [(2, 3), 4], [(1, 2), 3])
    first = [[x, y, x + 3, y + 2] for y in range(0, 4) for x in range(0, 5, 2)]
    second = [[0, 0, 4, 4], [3, 0, 7, 4]]
    np.testing.assert_array_equal(boxes, np.array(first + second, np.float32))
    assert boxes.dtype == np.float32


def test_sliding_windows_too_large_and_errors():
    assert convloc.ops.sliding_windows((5, 5), [6], 1).shape == (0, 4)
    with pytest.raises(ValueError, match="strides"):
        convloc.ops.sliding_windows((5, 5), [2], 0)
    with pytest.raises(ValueError, match="strides"):
        convloc.ops.sliding_windows((5, 5), [2, 3], [1])
    with pytest.raises(ValueError, match="window_sizes"):
        convloc.ops.sliding_windows((5, 5), [0], 1)


# ---------------------------------------------------------------- Felzenszwalb


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 9, 3), (11, 1, 1), (13, 17, 3), (16, 12, 1), (9, 14, 5)])
@pytest.mark.parametrize("params", [(1.0, 0.8, 5), (0.25, 0.5, 3), (3.0, 0.0, 1), (0.5, 1.3, 0)])
def test_felzenszwalb_matches_reference(rng, shape, params):
    for image in (
        rng.random(shape, dtype=np.float32),
        blocky(rng, *shape).astype(np.float32) / 255,
    ):
        got = convloc.ops.felzenszwalb(image, *params)
        want = ref.felzenszwalb(image, *params)
        assert got.dtype == np.int32 and got.shape == shape[:2]
        np.testing.assert_array_equal(got, canonical(want))  # also: labels numbered in raster order


def test_felzenszwalb_dtypes_and_layouts(rng):
    image = blocky(rng, 20, 23, 3)
    want = convloc.ops.felzenszwalb(image, 0.5, 0.8, 10)
    np.testing.assert_array_equal(
        want, canonical(ref.felzenszwalb(image.astype(np.float32) / 255, 0.5, 0.8, 10))
    )
    as_float = image.astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(convloc.ops.felzenszwalb(as_float.astype(np.float64), 0.5, 0.8, 10), want)
    grey = image[:, :, 0]
    np.testing.assert_array_equal(
        convloc.ops.felzenszwalb(grey, 0.5, 0.8, 10),
        convloc.ops.felzenszwalb(grey[:, :, None], 0.5, 0.8, 10),
    )


def test_felzenszwalb_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    image = rng.random((10, 12, 3), dtype=np.float32)
    got = convloc.ops.felzenszwalb(torch.from_numpy(image), 1.0, 0.8, 4)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int32
    np.testing.assert_array_equal(got.numpy(), convloc.ops.felzenszwalb(image, 1.0, 0.8, 4))


def test_felzenszwalb_min_size_and_scale(rng):
    image = shapes_image(rng, 64, 80)
    labels = convloc.ops.felzenszwalb(image, 0.3, 0.8, 40)
    assert np.bincount(labels.ravel()).min() >= 40
    coarse = convloc.ops.felzenszwalb(image, 5.0, 0.8, 40)
    assert coarse.max() < labels.max()


def test_felzenszwalb_threads(rng, threads):
    image = rng.random((150, 170, 3), dtype=np.float32)
    convloc.set_num_threads(1)
    one = convloc.ops.felzenszwalb(image, 1.0, 0.8, 20)
    convloc.set_num_threads(2)
    np.testing.assert_array_equal(convloc.ops.felzenszwalb(image, 1.0, 0.8, 20), one)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(image=np.zeros((0, 5, 3), np.float32)), ValueError, "image"),
        (dict(image=np.zeros((5, 0), np.uint8)), ValueError, "image"),
        (dict(image=np.full((4, 4, 3), np.nan, np.float32)), ValueError, "image"),
        (dict(image=np.zeros((4, 4, 3, 2), np.float32)), ValueError, "image"),
        (dict(image=np.zeros((4, 4), np.int64)), TypeError, "image"),
        (dict(scale=0.0), ValueError, "scale"),
        (dict(scale=-1.0), ValueError, "scale"),
        (dict(scale=float("nan")), ValueError, "scale"),
        (dict(sigma=-0.5), ValueError, "sigma"),
        (dict(min_size=-1), ValueError, "min_size"),
        (dict(min_size=2.5), TypeError, "min_size"),
    ],
)
def test_felzenszwalb_bad_inputs(kwargs, error, match):
    args = dict(image=np.zeros((4, 4, 3), np.float32), scale=1.0, sigma=0.8, min_size=2) | kwargs
    with pytest.raises(error, match=match):
        convloc.ops.felzenszwalb(**args)


# ---------------------------------------------------------------- selective search


@pytest.mark.parametrize("mode", ["single", "fast", "quality"])
def test_selective_search_hierarchies(rng, mode):
    image = shapes_image(rng)
    h, w = image.shape[:2]
    hierarchies = KP.hierarchies(image.astype(np.float32) / 255, mode, None, 0.8)
    assert len(hierarchies) == {"single": 1, "fast": 8, "quality": 80}[mode]
    boxes = convloc.ops.selective_search(image, mode)
    assert boxes.dtype == np.float32 and boxes.shape[1] == 4
    assert len(np.unique(boxes, axis=0)) == len(boxes)  # duplicates removed
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    found = {tuple(b) for b in boxes.astype(np.int64)}
    for hier, initial in hierarchies:
        assert hier.shape == (2 * initial - 1, 4)  # every merge recorded, down to one region
        np.testing.assert_array_equal(hier[-1], [0, 0, w, h])  # the whole image comes last
        assert {tuple(b) for b in hier.astype(np.int64)} <= found  # every region is a proposal
    assert len(found) == len({tuple(b) for hier, _ in hierarchies for b in hier})


@pytest.mark.parametrize("mode, min_size", [("single", None), ("fast", None), ("fast", 0), ("quality", 30)])
def test_selective_search_ranking_matches_reference(rng, mode, min_size):
    image = shapes_image(rng)
    hierarchies = KP.hierarchies(image.astype(np.float32) / 255, mode, min_size, 0.8)
    want = ref.rank_proposals([b for b, _ in hierarchies], seed=5)
    got = convloc.ops.selective_search(image, mode, seed=5, min_size=min_size)
    np.testing.assert_array_equal(got, want)
    # The kernel's random numbers cover the most boxes such hierarchies can hold.
    chosen, pixels = KP.strategies(mode, min_size), image.shape[0] * image.shape[1]
    bound = sum(2 * max(1, pixels // max(s[2], 1)) - 1 for s in chosen)  # s[2]: the strategy's min_size
    assert sum(len(b) for b, _ in hierarchies) <= bound
    assert len(KP.ranking_randoms(*image.shape[:2], chosen, 0)) == bound


def test_selective_search_padded(rng):
    image = shapes_image(rng)
    want = convloc.ops.selective_search(image, seed=2)
    for size in (0, 5, len(want), len(want) + 9):
        boxes, count = convloc.ops.selective_search(image, seed=2, max_boxes=size, padded=True)
        assert boxes.shape == (size, 4) and boxes.dtype == np.float32 and count == min(size, len(want))
        np.testing.assert_array_equal(boxes[:count], want[:size])
        assert not boxes[count:].any()
    with pytest.raises(ValueError, match="max_boxes"):
        convloc.ops.selective_search(image, padded=True)


def test_selective_search_initial_regions_are_felzenszwalb_regions(rng):
    # A grey image has H = 0 everywhere, so the "h" colour space is flat; rgI's I channel is the
    # grey value. Check the initial boxes against our own Felzenszwalb on a grey test image
    # through the "single" strategy's HSV: V = grey, H = S = 0.
    grey = blocky(rng, 30, 40, 1, levels=3)
    image = np.repeat(grey, 3, axis=2)
    ((hier, initial),) = KP.hierarchies(image.astype(np.float32) / 255, "single", 20, 0.8)
    hsv = np.concatenate([np.zeros((30, 40, 2), np.float32), image[:, :, :1].astype(np.float32) / 255], 2)
    labels = convloc.ops.felzenszwalb(hsv, 100 / 255, 0.8, 20)
    assert initial == labels.max() + 1
    for r in range(initial):
        ys, xs = np.nonzero(labels == r)
        np.testing.assert_array_equal(hier[r], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_selective_search_seed(rng):
    image = shapes_image(rng)
    a = convloc.ops.selective_search(image, seed=3)
    np.testing.assert_array_equal(convloc.ops.selective_search(image, seed=3), a)
    b = convloc.ops.selective_search(image, seed=4)
    assert not np.array_equal(a, b)  # the ranking is randomised...
    assert {tuple(x) for x in a} == {tuple(x) for x in b}  # ...the set of boxes is not
    np.testing.assert_array_equal(convloc.ops.selective_search(image, seed=3, max_boxes=7), a[:7])


def test_selective_search_threads(rng, threads):
    image = shapes_image(rng, 60, 70)
    convloc.set_num_threads(1)
    one = convloc.ops.selective_search(image, "fast")
    convloc.set_num_threads(2)
    np.testing.assert_array_equal(convloc.ops.selective_search(image, "fast"), one)


def test_selective_search_inputs(rng):
    image = shapes_image(rng, 30, 36)
    want = convloc.ops.selective_search(image)
    np.testing.assert_array_equal(convloc.ops.selective_search(image.astype(np.float64) / 255), want)
    rgba = np.concatenate([image, np.full((30, 36, 1), 255, np.uint8)], 2)
    np.testing.assert_array_equal(convloc.ops.selective_search(rgba), want)
    grey = image[:, :, 1]
    np.testing.assert_array_equal(
        convloc.ops.selective_search(grey),
        convloc.ops.selective_search(np.repeat(grey[:, :, None], 3, 2)),
    )
    one_pixel = convloc.ops.selective_search(np.zeros((1, 1, 3), np.uint8))
    np.testing.assert_array_equal(one_pixel, [[0, 0, 1, 1]])


def test_selective_search_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    image = shapes_image(rng, 30, 36)
    got = convloc.ops.selective_search(torch.from_numpy(image))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), convloc.ops.selective_search(image))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(image=np.zeros((0, 4, 3), np.uint8)), ValueError, "image"),
        (dict(image=np.zeros((4, 4, 2), np.uint8)), ValueError, "image"),
        (dict(image=np.zeros((4, 4, 5), np.float32)), ValueError, "image"),
        (dict(image=np.full((4, 4, 3), np.nan, np.float32)), ValueError, "image"),
        (dict(image=np.full((4, 4, 3), 255.0, np.float32)), ValueError, "image"),
        (dict(mode="slow"), ValueError, "mode"),
        (dict(min_size=-3), ValueError, "min_size"),
        (dict(max_boxes=-1), ValueError, "max_boxes"),
        (dict(sigma=-1.0), ValueError, "sigma"),
    ],
)
def test_selective_search_bad_inputs(kwargs, error, match):
    args = dict(image=np.zeros((4, 4, 3), np.uint8)) | kwargs
    with pytest.raises(error, match=match):
        convloc.ops.selective_search(**args)
