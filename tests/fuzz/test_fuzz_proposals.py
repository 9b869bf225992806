import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from convloc import ops

from .arrays import check_call, hostile_arrays, shapes

PROPOSAL_ARGS = [
    "image", "scale", "sigma", "min_size", "mode", "seed", "max_boxes",
    "image_size", "window_sizes", "strides",
]  # fmt: skip

tiny_images = hostile_arrays(
    shape=shapes(None, None) | shapes(None, None, 3),
    dtypes=[np.uint8, np.float32, np.float64, np.int64, np.bool_, np.complex64, np.float16],
)


@given(tiny_images, st.floats(-1, 500) | st.just(float("nan")), st.floats(-1, 3), st.integers(-2, 30))
def test_felzenszwalb_never_crashes_and_labels_every_pixel(image, scale, sigma, min_size):
    labels = check_call(ops.felzenszwalb, PROPOSAL_ARGS, image, scale, sigma, min_size)
    if labels is not None:
        assert labels.shape == image.shape[:2] and labels.dtype == np.int32
        if labels.size:
            assert labels.min() == 0 and set(np.unique(labels)) == set(range(labels.max() + 1))


@settings(max_examples=min(settings().max_examples, 60))
@given(tiny_images, st.sampled_from(["fast", "single", "quality", "nope"]), st.none() | st.integers(-1, 5))
def test_selective_search_never_crashes_and_boxes_lie_inside(image, mode, max_boxes):
    boxes = check_call(ops.selective_search, PROPOSAL_ARGS, image, mode, max_boxes=max_boxes)
    if boxes is not None:
        assert boxes.ndim == 2 and boxes.shape[1] == 4
        if max_boxes is not None:
            assert len(boxes) <= max_boxes
        h, w = image.shape[:2]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= h).all()


sizes = st.integers(-2, 12) | st.tuples(st.integers(-2, 12), st.integers(-2, 12))


@given(
    st.tuples(st.integers(-2, 40), st.integers(-2, 40)),
    st.lists(sizes, max_size=3),
    sizes | st.lists(sizes, max_size=3),
)
def test_sliding_windows_never_crash_and_fit_inside(image_size, window_sizes, strides):
    boxes = check_call(ops.sliding_windows, PROPOSAL_ARGS, image_size, window_sizes, strides)
    if boxes is not None:
        h, w = image_size
        assert boxes.dtype == np.float32 and boxes.shape[1:] == (4,)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
