"""convloc under ``jax.jit`` (XLA FFI targets) against the same kernels called eagerly from torch and
from NumPy (CPU), in one process: what XLA's custom calls cost or save around the kernels.

Workloads (those of ``convloc bench boxes`` and ``convloc bench roi``): nms on 12000 "uniform" boxes,
IoU 0.7, padded to 12000 under jit; roi_align on 1x512x38x50 with 2000 RoIs, 7x7, spatial_scale
1/16, sampling_ratio 2, aligned, forward and forward + backward (gradient of ``out.sum()``); both in
one function (nms, the 2000 best kept boxes, roi_align of them). Call overhead: nms on 10 boxes, jit
and eager, against the NumPy call.
"""

from __future__ import annotations

import argparse

import numpy as np

from convloc.benchmarks import harness
from convloc.benchmarks.bench_boxes import uniform_boxes


def run(args: argparse.Namespace) -> harness.Report:
    import convloc

    report = harness.start("jax: convloc under jax.jit vs eager torch and NumPy", args)
    jax = harness.import_peer(report, "jax")
    torch = harness.import_peer(report, "torch")
    if jax is None or not convloc.info()["xla_ffi"]:
        report.note("needs jax and a build of convloc with its XLA FFI handlers (docs/jax.md)")
        return harness.finish(report, args)
    import jax.numpy as jnp

    ops = convloc.ops
    rng = np.random.default_rng(0)
    boxes, scores = uniform_boxes(12000, rng), rng.random(12000).astype(np.float32)
    x = rng.standard_normal((1, 512, 38, 50)).astype(np.float32)
    order = np.argsort(-scores)[:2000]
    rois = np.concatenate([np.zeros((2000, 1), np.float32), boxes[order]], 1)
    align = dict(output_size=7, spatial_scale=1 / 16, sampling_ratio=2, aligned=True)

    def timed(fn):  # JAX dispatches asynchronously: wait for the result
        return lambda: jax.block_until_ready(fn())

    def jit_detect(x, boxes, scores):
        keep, count = ops.nms(boxes, scores, 0.7, 2000, padded=True)
        kept = jnp.concatenate([jnp.zeros((2000, 1), boxes.dtype), boxes[jnp.maximum(keep, 0)]], 1)
        return ops.roi_align(x, kept, **align), count

    def torch_detect(x, boxes, scores):
        keep = ops.nms(boxes, scores, 0.7)[:2000]
        kept = torch.cat([torch.zeros((len(keep), 1)), boxes[keep]], 1)
        with torch.no_grad():
            return ops.roi_align(x, kept, **align)

    nms = jax.jit(lambda b, s: ops.nms(b, s, 0.7, 12000, padded=True))
    fwd = jax.jit(lambda x, r: ops.roi_align(x, r, **align))
    grad = jax.jit(jax.grad(lambda x, r: ops.roi_align(x, r, **align).sum()))
    detect = jax.jit(jit_detect)
    jx, jb, js, jr = (jnp.asarray(a) for a in (x, boxes, scores, rois))
    cases = [
        ("nms 12000 uniform iou=0.7", timed(lambda: nms(jb, js))),
        ("roi_align 1x512x38x50 2000 rois fwd", timed(lambda: fwd(jx, jr))),
        ("roi_align 1x512x38x50 2000 rois fwd+bwd", timed(lambda: grad(jx, jr))),
        ("nms + roi_align of the 2000 best kept", timed(lambda: detect(jx, jb, js))),
    ]
    peers = [None] * len(cases)
    if torch is not None:
        tx, tb, ts, tr = (torch.from_numpy(a) for a in (x, boxes, scores, rois))

        def torch_forward():
            with torch.no_grad():
                return ops.roi_align(tx, tr, **align)

        def torch_backward():
            xg = tx.detach().requires_grad_()
            ops.roi_align(xg, tr, **align).sum().backward()
            return xg.grad

        peers = [
            lambda: ops.nms(tb, ts, 0.7),
            torch_forward,
            torch_backward,
            lambda: torch_detect(tx, tb, ts),
        ]
    for (case, ours), peer in zip(cases, peers):
        timings = harness.compare(ours, peer, budget_s=args.budget)
        report.add(f"{case}: jit", timings[0], "torch eager", timings[1])

    small_boxes, small_scores = uniform_boxes(10, rng), rng.random(10).astype(np.float32)
    sb, ss = jnp.asarray(small_boxes), jnp.asarray(small_scores)
    small = jax.jit(lambda b, s: ops.nms(b, s, 0.5, 10, padded=True))
    numpy_call = lambda: ops.nms(small_boxes, small_scores, 0.5)  # noqa: E731
    for case, ours in (
        ("nms 10 boxes: jit (padded)", timed(lambda: small(sb, ss))),
        ("nms 10 boxes: eager JAX (exact size)", timed(lambda: ops.nms(sb, ss, 0.5))),
    ):
        timings = harness.compare(ours, numpy_call, budget_s=args.budget)
        report.add(case, timings[0], "NumPy", timings[1])
    return harness.finish(report, args)


if __name__ == "__main__":
    harness.main_for(run, __doc__)
