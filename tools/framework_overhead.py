"""What a convloc call costs from each framework, beyond the NumPy path: ops.nms on 10 boxes (the kernel
itself takes well under a microsecond), timed per framework in rounds, interleaved, in one process; and
whether the kernel read each framework's input memory in place (no copy).

    python tools/framework_overhead.py [--calls 2000] [--rounds 15]

Frameworks that are not installed are left out. Times are the process's CPU time (all its threads), so
that other load on the machine does not count. Prints a Markdown table: the median per call, and the
median over rounds of each round's difference to NumPy's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import convloc._C as _C  # noqa: E402
from convloc import ops  # noqa: E402


class Minimal:
    """An array type that speaks nothing but DLPack (results come back as NumPy: it has no from_dlpack)."""

    def __init__(self, data):
        self._data = data

    def __dlpack__(self, **kwargs):
        return self._data.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._data.__dlpack_device__()


def frameworks(boxes: np.ndarray, scores: np.ndarray) -> dict:
    """name: (call, the input boxes' address by the framework's own means, or None where the kernel
    does not get them through convloc._C: JAX hands XLA's own buffers to the FFI handlers)."""
    out = {"NumPy": (lambda: ops.nms(boxes, scores, 0.5), boxes.ctypes.data)}
    try:
        import torch

        b, s = torch.from_numpy(boxes.copy()), torch.from_numpy(scores.copy())
        out["torch (registered op)"] = (lambda: ops.nms(b, s, 0.5), b.data_ptr())
    except ImportError:
        pass
    try:
        import jax.numpy as jnp

        jb, js = jnp.asarray(boxes), jnp.asarray(scores)
        out["JAX (eager, XLA FFI)"] = (lambda: ops.nms(jb, js, 0.5), None)
    except ImportError:
        pass
    try:
        import tensorflow as tf

        import convloc.tf as ctf

        tb, ts = tf.constant(boxes), tf.constant(scores)
        out["TensorFlow (eager)"] = (lambda: ops.nms(tb, ts, 0.5), np.asarray(tb).ctypes.data)
        graph = tf.function(lambda b, s: ctf.nms(b, s, 0.5))
        graph(tb, ts)
        out["TensorFlow (tf.function, convloc.tf)"] = (lambda: graph(tb, ts), np.asarray(tb).ctypes.data)
    except ImportError:
        pass
    mb, ms = Minimal(boxes.copy()), Minimal(scores.copy())
    out["DLPack-only type"] = (lambda: ops.nms(mb, ms, 0.5), mb._data.ctypes.data)
    return out


def read_in_place(call, address: int | None) -> str:
    """Whether the kernel saw the input boxes at their own address."""
    if address is None:
        return "its own buffers"
    seen = []
    run = _C.nms

    def spy(boxes, *args, **kwargs):
        seen.append(np.from_dlpack(boxes).ctypes.data)
        return run(boxes, *args, **kwargs)

    _C.nms = spy
    try:
        call()
    finally:
        _C.nms = run
    return "yes" if seen == [address] else "no (copied)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per timing (default 2000)")
    parser.add_argument(
        "--rounds", type=int, default=15, help="timings per framework, interleaved (default 15)"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (10, 2))
    boxes = np.concatenate([xy, xy + 20], 1).astype(np.float32)
    scores = rng.random(10).astype(np.float32)
    calls = frameworks(boxes, scores)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call, _ in calls.values():
        call()
    for _ in range(args.rounds):
        for name, (call, _) in calls.items():
            start = time.process_time()
            for _ in range(args.calls):
                call()
            times[name].append((time.process_time() - start) / args.calls * 1e6)
    print("| framework | CPU µs per call | over NumPy | input read in place |")
    print("|---|---|---|---|")
    for name, (call, address) in calls.items():
        over = statistics.median(t - n for t, n in zip(times[name], times["NumPy"]))
        in_place = read_in_place(call, address)
        print(f"| {name} | {statistics.median(times[name]):.1f} | {over:+.1f} | {in_place} |")


if __name__ == "__main__":
    main()
