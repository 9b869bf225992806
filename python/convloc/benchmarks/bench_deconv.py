"""Transposed convolution against torch.nn.functional.conv_transpose2d (CPU, oneDNN): forward,
and forward + backward (all three gradients), float32.

Cases: the dense decoder layer 8x256x32x32 -> 128 (k4 s2 p1), 1x64x64x64 -> 32 (k4 s2 p1), and
FCN's per-channel bilinear upsampling of 21 class scores: FCN-32s (16x16, kernel 64, stride 32),
FCN-16s (32x32, kernel 32, stride 16) and FCN-8s (64x64, kernel 16, stride 8).
"""

from __future__ import annotations

import argparse

import numpy as np

from convloc.benchmarks import harness

# name, input shape, C_out, kernel, stride, padding, groups
CASES = [
    ("dense 8x256x32x32->128 k4 s2 p1", (8, 256, 32, 32), 128, 4, 2, 1, 1),
    ("dense 1x64x64x64->32 k4 s2 p1", (1, 64, 64, 64), 32, 4, 2, 1, 1),
    ("FCN-32s 1x21x16x16 k64 s32 g21", (1, 21, 16, 16), 21, 64, 32, 0, 21),
    ("FCN-16s 1x21x32x32 k32 s16 g21", (1, 21, 32, 32), 21, 32, 16, 0, 21),
    ("FCN-8s 1x21x64x64 k16 s8 g21", (1, 21, 64, 64), 21, 16, 8, 0, 21),
]


def run(args: argparse.Namespace) -> harness.Report:
    import torch
    import torch.nn.functional as F

    import convloc

    report = harness.start("deconv: conv_transpose2d vs torch (oneDNN)", args)
    torch.set_num_threads(convloc.get_num_threads())
    report.note(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rng = np.random.default_rng(0)
    for name, shape, c_out, k, s, p, g in CASES:
        x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        w = torch.from_numpy(rng.standard_normal((shape[1], c_out // g, k, k)).astype(np.float32))
        b = torch.from_numpy(rng.standard_normal(c_out).astype(np.float32))
        geo = dict(stride=s, padding=p, groups=g)
        args_ = (x, w, b)
        ours, peer = harness.compare(
            lambda a=args_, geo=geo: convloc.ops.conv_transpose2d(*a, **geo),
            lambda a=args_, geo=geo: F.conv_transpose2d(*a, **geo),
            budget_s=args.budget,
        )
        report.add(f"{name} fwd", ours, "torch", peer)
        grad = torch.from_numpy(
            rng.standard_normal(tuple(F.conv_transpose2d(x, w, b, **geo).shape)).astype(np.float32)
        )
        leaves = [a.clone().requires_grad_() for a in (x, w, b)]

        def train_step(fn, leaves=leaves, grad=grad, geo=geo):
            for a in leaves:
                a.grad = None
            fn(*leaves, **geo).backward(grad)

        ours, peer = harness.compare(
            lambda step=train_step: step(convloc.ops.conv_transpose2d),
            lambda step=train_step: step(F.conv_transpose2d),
            budget_s=args.budget,
        )
        report.add(f"{name} fwd+bwd", ours, "torch", peer)
    return harness.finish(report, args)


if __name__ == "__main__":
    harness.main_for(run, __doc__)
