"""Concurrency and memory: kernels release the GIL, are safe to call from many Python threads,
and do not leak."""

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


def test_eight_python_threads_get_the_single_threaded_results(rng):
    calls = _box_calls(rng)
    expected = [f() for f in calls]
    errors = []

    def worker():
        try:
            for _ in range(20):
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


def test_repeated_calls_do_not_grow_memory(rng):
    calls = _box_calls(rng)
    for f in calls:  # warm up allocator pools
        for _ in range(200):
            f()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for f in calls:
        for _ in range(10_000 // len(calls)):
            f()
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 20_000, f"peak RSS grew by {grown_kib} KiB over 10,000 calls"


def test_errors_inside_the_pool_do_not_poison_it(rng):
    calls = _box_calls(rng)
    with pytest.raises(ValueError):
        ops.nms(np.full((3, 4), np.nan, np.float32), np.ones(3, np.float32), 0.5)
    assert len(calls[0]()) > 0
    assert convloc.get_num_threads() >= 1


def test_kernels_work_in_a_forked_child(rng):
    # DataLoader workers fork: the child must not wait on the parent's pool threads.
    import os

    xy = rng.uniform(0, 100, (1000, 2))
    boxes = np.concatenate([xy, xy + 10], 1).astype(np.float32)
    want = ops.box_iou(boxes, boxes)  # large enough to start the thread pool in the parent
    pid = os.fork()
    if pid == 0:
        ok = np.array_equal(ops.box_iou(boxes, boxes), want)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
