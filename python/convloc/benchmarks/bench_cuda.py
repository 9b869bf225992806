"""The CUDA kernels against the GPU peers a torch user would otherwise call, on the other
families' workloads: torchvision.ops (NMS, box IoU, RoI pool / align), torch's
conv_transpose2d (cuDNN); the lattice and the dense CRF, which have no GPU peer, against
convloc's own CPU path in the same process. Each call is followed by a device synchronisation,
so a time is the whole call. Needs a CUDA build of convloc and a GPU; prints a note otherwise.

Rows with a target (``TARGETS``: a speed-up over the peer to reach, or a time to stay under) say
whether it is met; RoI backward rows also say whether two runs give the same bits.
"""

from __future__ import annotations

import argparse
import functools

import numpy as np

from convloc.benchmarks import harness

# case -> ("speedup", at least) or ("ms", at most)
TARGETS = {
    "nms uniform n=12000 iou=0.7": ("speedup", 1.5),
    "nms clustered n=12000 iou=0.7": ("speedup", 1.5),
    "box_iou 2000x2000": ("speedup", 1.0),
    "roi_pool 1x512x38x50 2000 rois fwd+bwd": ("speedup", 1.0),
    "roi_align 1x512x38x50 2000 rois fwd+bwd": ("speedup", 1.0),
    "dense 8x256x32x32->128 k4 s2 p1 fwd+bwd": ("speedup", 0.8),
    "dense 8x256x32x32->128 k4 s2 p1 fwd+bwd, TF32": ("speedup", 0.8),
    "FCN-32s 1x21x16x16 k64 s32 g21 fwd+bwd": ("speedup", 2.0),
    "FCN-16s 1x21x32x32 k32 s16 g21 fwd+bwd": ("speedup", 2.0),
    "FCN-8s 1x21x64x64 k16 s8 g21 fwd+bwd": ("speedup", 2.0),
    "permutohedral_filter 512x512 d=5 21 channels": ("ms", 0.5),
    "dense_crf 512x512 L=21 10 it": ("ms", 3.0),
}


def target_extra(case: str, ours_ms: float, speedup: float | None) -> dict:
    """The row's target and whether it is met (empty for a case without one)."""
    if case not in TARGETS:
        return {}
    kind, bound = TARGETS[case]
    if kind == "ms":
        return {"target": f"<={bound}ms", "met": "yes" if ours_ms <= bound else "no"}
    met = "?" if speedup is None else "yes" if speedup >= bound else "no"
    return {"target": f">={bound}x", "met": met}


def _same_bits(fn) -> str:
    """Whether two calls of fn (returning a tensor) give the same bits."""
    import torch

    a, b = fn(), fn()
    return "yes" if torch.equal(a.view(torch.int32), b.view(torch.int32)) else "no"


def _synced(fn):
    import torch

    def call():
        out = fn()
        torch.cuda.synchronize()
        return out

    return call


def _forward_backward(op, x):
    x = x.detach().requires_grad_()
    op(x).sum().backward()


def _input_grad(op, x):
    x = x.detach().requires_grad_()
    op(x).square().sum().backward()  # a gradient that differs per output element
    return x.grad


def run(args: argparse.Namespace) -> harness.Report:
    import convloc

    report = harness.start("cuda: the CUDA kernels vs the GPU peers", args)
    if not convloc.cuda_available():
        report.note("needs a CUDA build of convloc, torch and a GPU: nothing timed")
        return harness.finish(report, args)
    import torch

    report.note(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    tv = harness.import_peer(report, "torchvision.ops")
    budget = args.budget

    def compare(case, ours, peer_name, peer, **extra):
        timings = harness.compare(_synced(ours), peer and _synced(peer), budget_s=budget)
        speedup = timings[1].median_ms / timings[0].median_ms if timings[1] else None
        extra.update(target_extra(case, timings[0].median_ms, speedup))
        report.add(case, timings[0], peer_name if peer else None, timings[1], **extra)

    from convloc.benchmarks import bench_boxes, bench_crf, bench_deconv, bench_roi

    rng = np.random.default_rng(0)
    ops = convloc.ops
    for kind, make in (("uniform", bench_boxes.uniform_boxes), ("clustered", bench_boxes.clustered_boxes)):
        boxes = torch.from_numpy(make(12000, rng)).cuda()
        scores = torch.from_numpy(rng.random(12000).astype(np.float32)).cuda()
        compare(
            f"nms {kind} n=12000 iou=0.7",
            lambda b=boxes, s=scores: ops.nms(b, s, 0.7),
            "torchvision",
            tv and (lambda b=boxes, s=scores: tv.nms(b, s, 0.7)),
        )
    a, b = (torch.from_numpy(bench_boxes.uniform_boxes(2000, rng)).cuda() for _ in range(2))
    compare("box_iou 2000x2000", lambda: ops.box_iou(a, b), "torchvision", tv and (lambda: tv.box_iou(a, b)))

    x = torch.from_numpy(rng.standard_normal((1, 512, 38, 50)).astype(np.float32)).cuda()
    rois = torch.from_numpy(bench_roi.make_rois(2000, 1, rng)).cuda()
    for name, kw in (("roi_pool", {}), ("roi_align", dict(sampling_ratio=2, aligned=True))):
        mine = functools.partial(getattr(ops, name), boxes=rois, output_size=7, spatial_scale=1 / 16, **kw)
        peer = tv and functools.partial(
            getattr(tv, name), boxes=rois, output_size=7, spatial_scale=1 / 16, **kw
        )
        with torch.no_grad():
            compare(
                f"{name} 1x512x38x50 2000 rois fwd",
                lambda m=mine: m(x),
                "torchvision",
                peer and (lambda p=peer: p(x)),
            )
        compare(
            f"{name} 1x512x38x50 2000 rois fwd+bwd",
            functools.partial(_forward_backward, mine, x),
            "torchvision",
            peer and functools.partial(_forward_backward, peer, x),
            deterministic=_same_bits(functools.partial(_input_grad, mine, x)),
        )

    # cuDNN in float32 arithmetic as convloc computes (torch allows TF32 in convolutions by default);
    # the dense layer also with TF32 tensor cores allowed.
    tf32_default = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    for name, shape, c_out, k, s, p, g in bench_deconv.CASES:
        xd = torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).cuda()
        w = torch.from_numpy(rng.standard_normal((shape[1], c_out // g, k, k)).astype(np.float32)).cuda()
        kw = dict(stride=s, padding=p, groups=g)
        mine = functools.partial(ops.conv_transpose2d, weight=w, **kw)
        peer = functools.partial(torch.nn.functional.conv_transpose2d, weight=w, **kw)
        with torch.no_grad():
            compare(f"{name} fwd", lambda m=mine: m(xd), "torch cuDNN", lambda p=peer: p(xd))
        for tf32 in (False, True) if g == 1 else (False,):
            torch.backends.cudnn.allow_tf32 = tf32
            compare(
                f"{name} fwd+bwd" + (", TF32" if tf32 else ""),
                functools.partial(_forward_backward, lambda t, m=mine: m(t), xd),
                "torch cuDNN",
                functools.partial(_forward_backward, lambda t, p=peer: p(t), xd),
            )
        torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = tf32_default

    # No GPU peer: convloc's CUDA path against its CPU path ("convloc cpu"), same inputs.
    image, unary = bench_crf.benchmark_input()
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    feats = np.concatenate([np.stack([xx, yy], -1) / 80.0, image / 13.0], -1).reshape(-1, 5)
    values = np.ascontiguousarray(unary.reshape(len(unary), -1).T)
    f_cpu, v_cpu = (torch.from_numpy(a.astype(np.float32)) for a in (feats, values))
    f_gpu, v_gpu = f_cpu.cuda(), v_cpu.cuda()
    compare(
        "permutohedral_filter 512x512 d=5 21 channels",
        lambda: ops.permutohedral_filter(v_gpu, f_gpu),
        "convloc cpu",
        lambda: ops.permutohedral_filter(v_cpu, f_cpu),
    )
    u_cpu = torch.from_numpy(unary)
    u_gpu = u_cpu.cuda()
    for iterations in (10, 5):
        kernels = [ops.Gaussian(3, 3), ops.Bilateral(80, 13, 10)]
        compare(
            f"dense_crf 512x512 L=21 {iterations} it",
            lambda it=iterations: ops.dense_crf(u_gpu, image=image, kernels=kernels, iterations=it),
            "convloc cpu",
            lambda it=iterations: ops.dense_crf(u_cpu, image=image, kernels=kernels, iterations=it),
        )
    return harness.finish(report, args)


if __name__ == "__main__":
    harness.main_for(run, __doc__)
