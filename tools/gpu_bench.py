"""GPU timings of convloc's CUDA kernels against torch / torchvision on the same device.

Usage (a machine with a GPU and a CUDA build of convloc): python tools/gpu_bench.py
"""

import numpy as np
import torch

import convloc
from convloc.benchmarks.bench_boxes import uniform_boxes


def timed(fn, repeats=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def row(name, ours, peer=None):
    t = timed(ours)
    p = timed(peer) if peer else None
    ratio = f"{p / t:7.2f}x" if p else ""
    print(f"{name:<48} {t:9.3f} ms {'' if p is None else f'{p:9.3f} ms'} {ratio}", flush=True)


def main():
    import torchvision.ops as tv

    print(torch.cuda.get_device_name(), convloc.info()["cuda_architectures"])
    rng = np.random.default_rng(0)
    dev = "cuda"
    boxes = torch.from_numpy(uniform_boxes(12000, rng)).to(dev)
    scores = torch.rand(12000, device=dev)
    row(
        "nms 12000 uniform iou 0.7 (vs torchvision)",
        lambda: convloc.ops.nms(boxes, scores, 0.7),
        lambda: tv.nms(boxes, scores, 0.7),
    )
    x = torch.randn(1, 512, 38, 50, device=dev, requires_grad=True)
    xy = torch.from_numpy(rng.uniform(0, 584, (2000, 2))).float()
    wh = torch.from_numpy(rng.uniform(16, 200, (2000, 2))).float()
    rois = torch.cat([torch.zeros(2000, 1), xy, xy + wh], 1).to(dev)

    def fb(op):
        return lambda: op(x, rois, 7, 1 / 16).sum().backward()

    row("roi_pool fwd+bwd 2000 rois (vs torchvision)", fb(convloc.ops.roi_pool), fb(tv.roi_pool))
    ca = lambda x, r, o, s: convloc.ops.roi_align(x, r, o, s, sampling_ratio=2, aligned=True)  # noqa: E731
    ta = lambda x, r, o, s: tv.roi_align(x, r, o, s, sampling_ratio=2, aligned=True)  # noqa: E731
    row("roi_align fwd+bwd 2000 rois (vs torchvision)", fb(ca), fb(ta))
    inp = torch.randn(8, 256, 32, 32, device=dev, requires_grad=True)
    w = torch.randn(256, 128, 4, 4, device=dev, requires_grad=True)
    row(
        "conv_transpose2d 8x256x32x32->128 k4s2p1 fwd+bwd (vs torch)",
        lambda: convloc.ops.conv_transpose2d(inp, w, stride=2, padding=1).sum().backward(),
        lambda: torch.nn.functional.conv_transpose2d(inp, w, stride=2, padding=1).sum().backward(),
    )
    f = torch.randn(512 * 512, 5, device=dev)
    v = torch.rand(512 * 512, 21, device=dev)
    row(
        "permutohedral_filter 512x512 d=5 21 ch (build+filter)",
        lambda: convloc.ops.permutohedral_filter(v, f),
    )


if __name__ == "__main__":
    main()
