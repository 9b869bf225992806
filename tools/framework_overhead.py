"""What a convloc call costs from each framework, beyond the NumPy path: ops.nms on 10 boxes (the kernel
itself takes well under a microsecond), and whether the kernel read the framework's input memory in
place (no copy).

    python tools/framework_overhead.py [--calls 2000] [--rounds 15]

Each framework runs in a process of its own (its threads and caches do not touch the others'), in rounds
interleaved with the NumPy call in that process; the fastest round (the least disturbed by other load on
the machine) gives the time per call. Frameworks that are not installed are left out. Prints a Markdown
table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import convloc._C as _C  # noqa: E402
from convloc import ops  # noqa: E402

FRAMEWORKS = [
    "torch (registered op)",
    "JAX (eager, XLA FFI)",
    "TensorFlow (eager)",
    "TensorFlow (tf.function, convloc.tf)",
    "DLPack-only type",
]


class Minimal:
    """An array type that speaks nothing but DLPack (results come back as NumPy: it has no from_dlpack)."""

    def __init__(self, data):
        self._data = data

    def __dlpack__(self, **kwargs):
        return self._data.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._data.__dlpack_device__()


def setup(name: str, boxes: np.ndarray, scores: np.ndarray):
    """(call, the input boxes' address by the framework's own means, or None where the kernel does
    not get them through convloc._C: JAX hands XLA's own buffers to the FFI handlers)."""
    if name.startswith("torch"):
        import torch

        b, s = torch.from_numpy(boxes.copy()), torch.from_numpy(scores.copy())
        return lambda: ops.nms(b, s, 0.5), b.data_ptr()
    if name.startswith("JAX"):
        import jax.numpy as jnp

        jb, js = jnp.asarray(boxes), jnp.asarray(scores)
        return lambda: ops.nms(jb, js, 0.5), None
    if name.startswith("TensorFlow"):
        import tensorflow as tf

        import convloc.tf as ctf

        tb, ts = tf.constant(boxes), tf.constant(scores)
        address = np.asarray(tb).ctypes.data  # (its __array__ shares a CPU tensor's memory)
        if "tf.function" not in name:
            return lambda: ops.nms(tb, ts, 0.5), address
        graph = tf.function(lambda b, s: ctf.nms(b, s, 0.5))
        return lambda: graph(tb, ts), address
    mb, ms = Minimal(boxes.copy()), Minimal(scores.copy())
    return lambda: ops.nms(mb, ms, 0.5), mb._data.ctypes.data


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


def measure(name: str, calls: int, rounds: int) -> str:
    """The table row of one framework, and NumPy's time in the same process, tab-separated."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (10, 2))
    boxes = np.concatenate([xy, xy + 20], 1).astype(np.float32)
    scores = rng.random(10).astype(np.float32)
    call, address = setup(name, boxes, scores)
    pair = {"NumPy": lambda: ops.nms(boxes, scores, 0.5), name: call}
    best = dict.fromkeys(pair, float("inf"))
    for f in pair.values():
        f()
    for _ in range(rounds):
        for key, f in pair.items():
            start = time.perf_counter()
            for _ in range(calls):
                f()
            best[key] = min(best[key], (time.perf_counter() - start) / calls * 1e6)
    over = best[name] - best["NumPy"]
    return (
        f"| {name} | {best[name]:.1f} | {over:+.1f} | {read_in_place(call, address)} |\t{best['NumPy']:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per timing (default 2000)")
    parser.add_argument("--rounds", type=int, default=15, help="timings of each, interleaved (default 15)")
    parser.add_argument(
        "--framework", choices=FRAMEWORKS, help="measure this one here (else each in a process)"
    )
    args = parser.parse_args()
    if args.framework:
        print(measure(args.framework, args.calls, args.rounds))
        return
    rows, numpy = [], []
    for name in FRAMEWORKS:
        cmd = [
            sys.executable,
            __file__,
            "--framework",
            name,
            "--calls",
            str(args.calls),
            "--rounds",
            str(args.rounds),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:  # not installed
            continue
        row, base = done.stdout.strip().splitlines()[-1].split("\t")
        rows.append(row)
        numpy.append(float(base))
    print("| framework | µs per call | over NumPy | input read in place |")
    print("|---|---|---|---|")
    print(f"| NumPy | {min(numpy):.1f}–{max(numpy):.1f} | +0.0 | yes |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
