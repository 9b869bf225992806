"""Concurrency and memory: kernels release the GIL, are safe to call from many Python threads,
and do not leak."""

import os
import resource
import threading

import numpy as np
import pytest

import convloc
from convloc import ops


def _box_calls(rng):
    xy = rng.uniform(0, 100, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 50, (200, 2))], 1).astype(np.float32)
    scores = rng.random(200).astype(np.float32)
    idxs = rng.integers(0, 3, 200)
    return [
        lambda: ops.nms(boxes, scores, 0.5),
        lambda: ops.batched_nms(boxes, scores, idxs, 0.5),
        lambda: ops.box_iou(boxes, boxes[:50]),
        lambda: ops.box_area(boxes),
    ]


def _family_calls(rng):
    """One small call of every other family (roi, deconv, lattice, crf, proposals)."""
    fmap = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    xy = rng.uniform(0, 6, (8, 2))
    rois = np.concatenate([rng.integers(0, 2, (8, 1)), xy, xy + 5], 1).astype(np.float32)
    weight = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    values = rng.standard_normal((64, 2)).astype(np.float32)
    feats = rng.standard_normal((64, 3)).astype(np.float32)
    image = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    unary = rng.random((3, 10, 10)).astype(np.float32)
    return [
        lambda: ops.roi_pool(fmap, rois, 2, 1.0),
        lambda: ops.roi_align(fmap, rois, 2, 1.0, 2, True),
        lambda: ops.conv_transpose2d(fmap, weight, stride=2, padding=1),
        lambda: ops.permutohedral_filter(values, feats, normalization="symmetric"),
        lambda: ops.bilateral_filter(image, 2.0, 20.0),
        lambda: ops.dense_crf(unary, image=image, iterations=2),
        lambda: ops.grid_crf(unary, image, iterations=2),
        lambda: ops.felzenszwalb(image, 1.0, 0.8, 5),
        lambda: ops.selective_search(image[:8, :8], "single"),
        lambda: ops.sliding_windows((20, 20), [4, (6, 8)], 3),
    ]


def _all_calls(rng):
    return _box_calls(rng) + _family_calls(rng)


def test_eight_python_threads_get_the_single_threaded_results(rng):
    calls = _all_calls(rng)
    expected = [f() for f in calls]
    errors = []

    def worker():
        try:
            for _ in range(5):
                for f, want in zip(calls, expected):
                    np.testing.assert_array_equal(f(), want)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a kernel call hung"
    assert not errors, errors[0]


@pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""), reason="ASan's quarantine holds freed memory on purpose"
)
def test_repeated_calls_do_not_grow_memory(rng):
    calls = _all_calls(rng)
    for f in calls:  # warm up allocator pools
        for _ in range(50):
            f()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for f in calls:
        for _ in range(10_000 // len(calls)):
            f()
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 20_000, f"peak RSS grew by {grown_kib} KiB over 10,000 calls"


def test_every_family_gives_identical_results_on_one_and_two_threads(rng, threads):
    calls = _all_calls(rng)
    convloc.set_num_threads(1)
    one = [f() for f in calls]
    convloc.set_num_threads(2)
    for f, want in zip(calls, one):
        np.testing.assert_array_equal(f(), want)


def test_errors_inside_the_pool_do_not_poison_it(rng):
    calls = _box_calls(rng)
    with pytest.raises(ValueError):
        ops.nms(np.full((3, 4), np.nan, np.float32), np.ones(3, np.float32), 0.5)
    assert len(calls[0]()) > 0
    assert convloc.get_num_threads() >= 1


def test_kernels_work_in_a_forked_child(rng):
    # DataLoader workers fork: the child must not wait on the parent's pool threads.
    xy = rng.uniform(0, 100, (1000, 2))
    boxes = np.concatenate([xy, xy + 10], 1).astype(np.float32)
    want = ops.box_iou(boxes, boxes)  # large enough to start the thread pool in the parent
    pid = os.fork()
    if pid == 0:
        ok = np.array_equal(ops.box_iou(boxes, boxes), want)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
