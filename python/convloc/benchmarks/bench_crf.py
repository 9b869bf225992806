"""Dense CRF against pydensecrf, on a fixed 512x512 input.

skimage's astronaut (512×512 RGB); 21 labels from seeded Gaussian noise smoothed with σ=16 px,
logits 3·z/std(z), P = softmax, unary -log(clip(P, 0.01, 0.99)) float32. Kernels: Gaussian sxy=3
w=3, bilateral sxy=80 srgb=13 w=10, Potts, symmetric normalisation; also the crop rows 40:253,
cols 120:440. Each call is the full job: build the lattices, infer, take the argmax.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from convloc.benchmarks import harness

LABELS = 21
CROP = (slice(40, 253), slice(120, 440))


def benchmark_input(labels: int = LABELS) -> tuple[np.ndarray, np.ndarray]:
    """(image [512, 512, 3] uint8, unary [L, 512, 512] float32), the input the module docstring describes."""
    from scipy.ndimage import gaussian_filter
    from skimage.data import astronaut

    image = np.ascontiguousarray(astronaut())
    z = np.random.default_rng(0).standard_normal((labels,) + image.shape[:2])
    z = gaussian_filter(z, sigma=(0, 16, 16), mode="reflect")
    logits = 3 * z / z.std()
    p = np.exp(logits - logits.max(0))
    p /= p.sum(0)
    unary = (-np.log(np.clip(p, 0.01, 0.99))).astype(np.float32)
    return image, unary


def ours(image: np.ndarray, unary: np.ndarray, iterations: int) -> np.ndarray:
    import convloc.ops as ops

    _, labels = ops.dense_crf(
        unary,
        image=image,
        kernels=[ops.Gaussian(3, 3), ops.Bilateral(80, 13, 10)],
        iterations=iterations,
        return_labels=True,
    )
    return labels


def pydensecrf_labels(image: np.ndarray, unary: np.ndarray, iterations: int) -> np.ndarray:
    import pydensecrf.densecrf as dcrf

    labels, h, w = unary.shape
    d = dcrf.DenseCRF2D(w, h, labels)
    d.setUnaryEnergy(np.ascontiguousarray(unary.reshape(labels, -1)))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.ascontiguousarray(image), compat=10)
    q = np.array(d.inference(iterations))
    return q.argmax(0).reshape(h, w)


def _vm_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _peak_rss_child(which: str, inputs: str, threads: int, queue) -> None:
    with np.load(inputs) as data:
        image, unary = data["image"], data["unary"]
    import convloc  # imports are not the call's memory
    import convloc.ops  # noqa: F401

    convloc.set_num_threads(threads)  # a spawned child starts with the defaults

    if which == "pydensecrf":
        import pydensecrf.densecrf  # noqa: F401
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current RSS (ru_maxrss survives fork and exec)
    before = _vm_kb("VmHWM")
    (ours if which == "convloc" else pydensecrf_labels)(image, unary, 10)
    queue.put((_vm_kb("VmHWM") - before) / 1024)


def _peak_rss_delta_mb(which: str, image: np.ndarray, unary: np.ndarray) -> float:
    """Growth of the peak RSS over one 10-iteration call of ``which`` ("convloc" or "pydensecrf") in
    a freshly spawned process that only loaded the inputs (MB; NaN where Linux's /proc is missing)."""
    import multiprocessing as mp
    import tempfile
    from pathlib import Path

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = str(Path(tmp) / "inputs.npz")
        np.savez(inputs, image=image, unary=unary)
        import convloc

        p = ctx.Process(target=_peak_rss_child, args=(which, inputs, convloc.get_num_threads(), q))
        p.start()
        p.join()
    return q.get() if not q.empty() else float("nan")


def run(args: argparse.Namespace) -> harness.Report:
    import convloc

    report = harness.start("crf: dense CRF (build + inference + argmax) vs pydensecrf", args)
    have_peer = harness.import_peer(report, "pydensecrf.densecrf") is not None
    image, unary = benchmark_input()
    cases = [("512x512", image, unary), ("320x213 crop", image[CROP], unary[(slice(None),) + CROP])]
    for name, img, u in cases:
        img, u = np.ascontiguousarray(img), np.ascontiguousarray(u)
        for it in (5, 10):
            t_ours, t_peer = harness.compare(
                lambda img=img, u=u, it=it: ours(img, u, it),
                (lambda img=img, u=u, it=it: pydensecrf_labels(img, u, it)) if have_peer else None,
                budget_s=args.budget,
            )
            extra = {}
            if have_peer:
                extra["agreement"] = f"{(ours(img, u, it) == pydensecrf_labels(img, u, it)).mean():.4f}"
            report.add(f"dense_crf {name} L=21 it={it}", t_ours, "pydensecrf", t_peer, **extra)
    threads = convloc.get_num_threads()
    if threads > 1:
        convloc.set_num_threads(1)
        t1, t_peer = harness.compare(
            lambda: ours(image, unary, 10),
            (lambda: pydensecrf_labels(image, unary, 10)) if have_peer else None,
            budget_s=args.budget,
        )
        convloc.set_num_threads(threads)
        report.add("dense_crf 512x512 it=10, 1 thread", t1, "pydensecrf", t_peer)
    batch_u = np.stack([np.roll(unary, 37 * k, axis=2) for k in range(8)])
    batch_i = np.stack([np.roll(image, 37 * k, axis=1) for k in range(8)])

    def batched():
        import convloc.ops as ops

        return ops.dense_crf(
            batch_u,
            image=batch_i,
            kernels=[ops.Gaussian(3, 3), ops.Bilateral(80, 13, 10)],
            iterations=10,
        )

    t_b, _ = harness.compare(batched, None, warmup=1, min_repeats=3, budget_s=args.budget)
    report.add("dense_crf batch of 8 512x512 it=10", t_b, images_per_s=f"{8000 / t_b.median_ms:.1f}")
    mem = _peak_rss_delta_mb("convloc", image, unary)
    note = f"peak RSS growth of one 512x512 it=10 call: {mem:.0f} MB (convloc)"
    if have_peer:
        peer_mb = _peak_rss_delta_mb("pydensecrf", image, unary)
        note += f", {peer_mb:.0f} MB (pydensecrf)"
    report.note(note)
    t0 = time.perf_counter()
    convloc.ops.dense_crf(unary, image=image, iterations=0)
    report.note(f"build only (iterations=0, incl. softmax): {1e3 * (time.perf_counter() - t0):.1f} ms")
    return harness.finish(report, args)


if __name__ == "__main__":
    harness.main_for(run, __doc__)
