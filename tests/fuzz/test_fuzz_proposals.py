import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from convloc import ops

from .arrays import any_float, any_int, check_call, hostile_arrays, shapes

PROPOSAL_ARGS = [
    "image", "scale", "sigma", "min_size", "mode", "seed", "max_boxes",
    "image_size", "window_sizes", "strides",
]  # fmt: skip

tiny_images = hostile_arrays(
    shape=shapes(None, None) | shapes(None, None, 3),
    dtypes=[np.uint8, np.float32, np.float64, np.int64, np.bool_, np.complex64, np.float16],
)


@given(tiny_images, any_float(-1, 500), any_float(-1, 3), any_int(-2, 30))
def test_felzenszwalb_never_crashes_and_labels_every_pixel(image, scale, sigma, min_size):
    labels = check_call(ops.felzenszwalb, PROPOSAL_ARGS, image, scale, sigma, min_size)
    if labels is not None:
        assert labels.shape == image.shape[:2] and labels.dtype == np.int32
        if labels.size:
            assert labels.min() == 0 and set(np.unique(labels)) == set(range(labels.max() + 1))


@settings(max_examples=min(settings().max_examples, 60))
@given(
    tiny_images,
    st.sampled_from(["fast", "single", "quality", "nope"]),
    st.none() | any_int(-1, 5),
    st.none() | any_int(-2, 30),
    st.none() | any_int(-2, 30),
    any_float(-1, 3),
)
def test_selective_search_never_crashes_and_boxes_lie_inside(image, mode, max_boxes, min_size, seed, sigma):
    boxes = check_call(
        ops.selective_search,
        PROPOSAL_ARGS,
        image,
        mode,
        max_boxes=max_boxes,
        min_size=min_size,
        seed=seed,
        sigma=sigma,
    )
    if boxes is not None:
        assert boxes.ndim == 2 and boxes.shape[1] == 4
        if max_boxes is not None:
            assert len(boxes) <= max_boxes
        h, w = image.shape[:2]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= h).all()


sizes = any_int(-2, 12) | st.tuples(any_int(-2, 12), any_int(-2, 12)) | st.sampled_from([1.5, "4", None])


@given(
    st.tuples(any_int(-2, 40), any_int(-2, 40)),
    st.lists(sizes, max_size=3),
    sizes | st.lists(sizes, max_size=3),
)
def test_sliding_windows_never_crash_and_fit_inside(image_size, window_sizes, strides):
    assume(not 10**6 < _windows(image_size, window_sizes, strides) < 10**12)  # legitimately large
    boxes = check_call(ops.sliding_windows, PROPOSAL_ARGS, image_size, window_sizes, strides)
    if boxes is not None:
        h, w = image_size
        assert boxes.dtype == np.float32 and boxes.shape[1:] == (4,)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()


def _windows(image_size, window_sizes, strides) -> int:
    """How many windows a valid call makes (0 where the call is invalid)."""

    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    try:
        steps = strides if isinstance(strides, list) else [strides] * len(window_sizes)
        total = 0
        for size, step in zip(window_sizes, steps):
            (wh, ww), (sy, sx) = pair(size), pair(step)
            if min(wh, ww, sy, sx) > 0:
                total += max(0, (image_size[0] - wh) // sy + 1) * max(0, (image_size[1] - ww) // sx + 1)
        return total
    except (TypeError, ValueError):
        return 0


def test_smoothing_wider_than_100_pixels_is_refused_by_name():
    # The taps and each row's padding are sized from sigma: 6e8 once crashed, 1e6 took 15 s.
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    for sigma in (6e8, float("inf"), 1e6, 100.5, -1e-9, float("nan")):
        with pytest.raises(ValueError, match=r"^sigma: expected a number in \[0, 100\]"):
            ops.felzenszwalb(image, sigma=sigma)
        with pytest.raises(ValueError, match=r"^sigma: expected a number in \[0, 100\]"):
            ops.selective_search(image, sigma=sigma)
    assert ops.felzenszwalb(image, sigma=100).shape == (40, 50)


def test_window_counts_beyond_memory_are_refused_before_allocation():
    with pytest.raises(ValueError, match="^strides: 999994000009 windows"):
        ops.sliding_windows((10**6, 10**6), [4], 1)
