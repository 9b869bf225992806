"""RoI pool and RoI align against torchvision.ops (CPU).

Workloads: feature map randn 1x512x38x50 with 2000 RoIs, and 2x512x38x50 with 2x128 RoIs
(x1 ~ U[0, 784), y1 ~ U[0, 584), width and height >= 16 px inside 800x600, seed 0); 7x7 output,
spatial_scale 1/16; roi_align with sampling_ratio=2, aligned=True. Forward, and forward +
backward (``out.sum().backward()``). Aims on two CPU cores: roi_pool >= 3x torchvision forward
and forward+backward; roi_align >= 2x forward and >= 8x forward+backward.
"""

from __future__ import annotations

import argparse
import functools

import numpy as np

from convloc.benchmarks import harness


def make_rois(n: int, batch: int, rng: np.random.Generator) -> np.ndarray:
    """[n, 5] float32 rois: corners uniform, sides >= 16 px, inside 800x600."""
    x1 = rng.uniform(0, 784, n)
    y1 = rng.uniform(0, 584, n)
    x2 = rng.uniform(x1 + 16, 800)
    y2 = rng.uniform(y1 + 16, 600)
    idx = np.repeat(np.arange(batch), n // batch)
    return np.stack([idx, x1, y1, x2, y2], 1).astype(np.float32)


def _forward(op, x):
    import torch

    with torch.no_grad():
        return op(x)


def _forward_backward(op, x):
    x = x.detach().requires_grad_()
    op(x).sum().backward()
    return x.grad


def run(args: argparse.Namespace) -> harness.Report:
    import torch

    import convloc

    report = harness.start("roi: RoI pool / RoI align vs torchvision.ops", args)
    tv = harness.import_peer(report, "torchvision.ops")
    rng = np.random.default_rng(0)
    for batch, n in ((1, 2000), (2, 256)):
        x = torch.from_numpy(rng.standard_normal((batch, 512, 38, 50)).astype(np.float32))
        rois = torch.from_numpy(make_rois(n, batch, rng))
        for name, kwargs in (("roi_pool", {}), ("roi_align", dict(sampling_ratio=2, aligned=True))):
            ours = functools.partial(
                getattr(convloc.ops, name),
                boxes=rois,
                output_size=7,
                spatial_scale=1 / 16,
                **kwargs,
            )
            peer = (
                functools.partial(
                    getattr(tv, name), boxes=rois, output_size=7, spatial_scale=1 / 16, **kwargs
                )
                if tv
                else None
            )
            tag = f"{name} {batch}x512x38x50 {n} rois"
            timings = harness.compare(
                functools.partial(_forward, ours, x),
                peer and functools.partial(_forward, peer, x),
                budget_s=args.budget,
            )
            report.add(f"{tag} fwd", timings[0], "torchvision", timings[1])
            timings = harness.compare(
                functools.partial(_forward_backward, ours, x),
                peer and functools.partial(_forward_backward, peer, x),
                budget_s=args.budget,
            )
            report.add(f"{tag} fwd+bwd", timings[0], "torchvision", timings[1])
    return harness.finish(report, args)


if __name__ == "__main__":
    harness.main_for(run, __doc__)
