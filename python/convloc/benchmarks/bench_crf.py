"""Dense CRF against pydensecrf and SimpleCRF, on fixed inputs.

skimage's astronaut (512×512 RGB); 21 labels from seeded Gaussian noise smoothed with σ=16 px,
logits 3·z/std(z), P = softmax, unary -log(clip(P, 0.01, 0.99)) float32. Kernels: Gaussian sxy=3
w=3, bilateral sxy=80 srgb=13 w=10, Potts, symmetric normalisation; also the crop rows 40:253,
cols 120:440. Each call is the full job: build the lattices, infer, take the argmax. The same job
through the pydensecrf drop-in (DenseCRF2D, inference, np.argmax) and through SimpleCRF's 2-D call
(P labels last); and SimpleCRF's 3-D call on a synthetic 64×96×64 volume, 2 modalities, 3 labels.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import sys
import time

import numpy as np

from convloc.benchmarks import harness

LABELS = 21
CROP = (slice(40, 253), slice(120, 440))


def benchmark_probabilities(labels: int = LABELS) -> tuple[np.ndarray, np.ndarray]:
    """(image [512, 512, 3] uint8, P [L, 512, 512] float64), the softmax the module docstring describes."""
    from scipy.ndimage import gaussian_filter
    from skimage.data import astronaut

    image = np.ascontiguousarray(astronaut())
    z = np.random.default_rng(0).standard_normal((labels,) + image.shape[:2])
    z = gaussian_filter(z, sigma=(0, 16, 16), mode="reflect")
    logits = 3 * z / z.std()
    p = np.exp(logits - logits.max(0))
    return image, p / p.sum(0)


def benchmark_input(labels: int = LABELS) -> tuple[np.ndarray, np.ndarray]:
    """(image [512, 512, 3] uint8, unary [L, 512, 512] float32), the input the module docstring describes."""
    image, p = benchmark_probabilities(labels)
    return image, unary_of(p)


def unary_of(p: np.ndarray) -> np.ndarray:
    return (-np.log(np.clip(p, 0.01, 0.99))).astype(np.float32)


def volume_input(shape: tuple[int, int, int] = (64, 96, 64), labels: int = 3, seed: int = 0):
    """(I [D, H, W, 2] uint8, P [D, H, W, L] float32): blobs of ``labels`` classes (smoothed noise,
    σ = 6 voxels), two modalities whose means differ by class plus noise, and probabilities that
    favour the true class at 60 % with noise (σ = 1 voxel) in their logits."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    fields = gaussian_filter(rng.standard_normal((labels,) + shape), sigma=(0, 6, 6, 6), mode="reflect")
    truth = fields.argmax(0)
    means = rng.uniform(40, 215, (labels, 2))
    image = np.clip(means[truth] + rng.normal(0, 12, shape + (2,)), 0, 255).astype(np.uint8)
    noise = gaussian_filter(rng.standard_normal((labels,) + shape), sigma=(0, 1, 1, 1), mode="reflect")
    logits = np.moveaxis(np.eye(labels)[truth], -1, 0) * 0.8 + noise * 1.2 / noise.std()
    p = np.exp(logits - logits.max(0))
    return image, np.ascontiguousarray(np.moveaxis(p / p.sum(0), 0, -1), dtype=np.float32)


# SimpleCRF's 3-D parameters for the volume: its examples' (Gaussian 5 voxels w=2, bilateral 5 voxels
# and 5 levels w=3), 5 iterations.
VOLUME_PARAM = {
    "MaxIterations": 5,
    "PosW": 2.0,
    "PosRStd": 5,
    "PosCStd": 5,
    "PosZStd": 5,
    "BilateralW": 3.0,
    "BilateralRStd": 5.0,
    "BilateralCStd": 5.0,
    "BilateralZStd": 5.0,
    "ModalityNum": 2,
    "BilateralModsStds": (5.0, 5.0),
}


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


def dropin_labels(image: np.ndarray, unary: np.ndarray, iterations: int) -> np.ndarray:
    """The job through the pydensecrf drop-in, as its users write it."""
    import convloc.densecrf as dcrf

    labels, h, w = unary.shape
    d = dcrf.DenseCRF2D(w, h, labels)
    d.setUnaryEnergy(unary.reshape(labels, -1))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=10)
    q = d.inference(iterations)
    return np.argmax(q, axis=0).reshape(h, w)


@contextlib.contextmanager
def _quiet_stdout():
    """The process's stdout (fd 1) sent to /dev/null: SimpleCRF's 3-D call prints its parameters."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        with contextlib.suppress(OSError, TypeError):  # (no C library handle on Windows)
            ctypes.CDLL(None).fflush(None)  # what C++ left in the C library's buffer goes to /dev/null too
        os.dup2(saved, 1)
        os.close(saved)


def _simplecrf_rows(
    report: harness.Report, args: argparse.Namespace, image: np.ndarray, p: np.ndarray
) -> None:
    """SimpleCRF's 2-D call on the benchmark input and its 3-D call on the volume, through both."""
    from convloc.simplecrf import denseCRF as ours_2d
    from convloc.simplecrf import denseCRF3D as ours_3d

    peer_2d = harness.import_peer(report, "denseCRF")
    peer_3d = harness.import_peer(report, "denseCRF3D")
    probs = np.ascontiguousarray(p.transpose(1, 2, 0), dtype=np.float32)  # SimpleCRF's layout, labels last
    param = (10.0, 80, 13, 3.0, 3, 10)

    def peer_call_3d(volume, probs):
        with _quiet_stdout():
            return peer_3d.densecrf3d(volume, probs, VOLUME_PARAM)

    t_ours, t_peer = harness.compare(
        lambda: ours_2d.densecrf(image, probs, param),
        (lambda: peer_2d.densecrf(image, probs, param)) if peer_2d else None,
        budget_s=args.budget,
    )
    extra = {}
    if peer_2d:
        same = ours_2d.densecrf(image, probs, param) == peer_2d.densecrf(image, probs, param)
        extra["agreement"] = f"{same.mean():.4f}"
    report.add("simplecrf denseCRF 512x512 L=21 it=10", t_ours, "SimpleCRF", t_peer, **extra)
    volume, probs = volume_input()
    t_ours, t_peer = harness.compare(
        lambda: ours_3d.densecrf3d(volume, probs, VOLUME_PARAM),
        (lambda: peer_call_3d(volume, probs)) if peer_3d else None,
        warmup=1,
        budget_s=args.budget,
    )
    extra = {}
    if peer_3d:
        same = ours_3d.densecrf3d(volume, probs, VOLUME_PARAM) == peer_call_3d(volume, probs)
        extra["agreement"] = f"{same.mean():.4f}"
    report.add("simplecrf denseCRF3D 64x96x64 M=2 L=3 it=5", t_ours, "SimpleCRF", t_peer, **extra)


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

    report = harness.start("crf: dense CRF (build + inference + argmax) vs pydensecrf and SimpleCRF", args)
    have_peer = harness.import_peer(report, "pydensecrf.densecrf") is not None
    image, p = benchmark_probabilities()
    unary = unary_of(p)
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
    t_drop, t_peer = harness.compare(
        lambda: dropin_labels(image, unary, 10),
        (lambda: pydensecrf_labels(image, unary, 10)) if have_peer else None,
        budget_s=args.budget,
    )
    report.add("densecrf drop-in 512x512 L=21 it=10", t_drop, "pydensecrf", t_peer)
    # (peer time / drop-in time: >= 0.91 is the drop-in within 10 % of the native call)
    t_drop, t_native = harness.compare(
        lambda: dropin_labels(image, unary, 10), lambda: ours(image, unary, 10), budget_s=args.budget
    )
    report.add("densecrf drop-in vs native 512x512 it=10", t_drop, "ops.dense_crf", t_native)
    _simplecrf_rows(report, args, image, p)
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
