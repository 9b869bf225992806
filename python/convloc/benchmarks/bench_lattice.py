"""Permutohedral lattice build and 21-channel filtering against pydensecrf's lattice.

Workload: a 512x512 image (skimage's astronaut, else a generated one), dense-CRF features d=2 (x, y)
/ 3 and d=5 (x, y) / 80, (r, g, b) / 13, float32; 21 channels of random values.

pydensecrf exposes no lattice directly, so its times are differences of things it does expose:
- build: ``DenseCRF2D(512, 512, 21)`` + ``addPairwiseGaussian`` / ``addPairwiseBilateral`` (which
  build the lattice and filter a ones vector for the normaliser) minus ``DenseCRF2D`` alone;
- one 21-channel filtering: ``stepInference`` of a CRF holding that one kernel minus
  ``stepInference`` of a CRF with no pairwise kernel (the unary copy and the softmax cancel).
Ours: ``convloc.PermutohedralLattice(features)`` and ``lattice.filter(values)`` (raw, [N, 21]
float32).
"""

from __future__ import annotations

import argparse

import numpy as np

from convloc.benchmarks import harness

LABELS = 21


def test_image(size: int = 512) -> np.ndarray:
    try:
        from skimage import data

        return np.ascontiguousarray(data.astronaut()[:size, :size])
    except ImportError:
        yy, xx = np.mgrid[0:size, 0:size]
        img = np.stack([xx * 255 // size, yy * 255 // size, ((xx // 32 + yy // 32) % 2) * 200], -1)
        return img.astype(np.uint8)


def features(image: np.ndarray, sigma_xy: float, sigma_rgb: float | None) -> np.ndarray:
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    parts = [xx[..., None] / sigma_xy, yy[..., None] / sigma_xy]
    if sigma_rgb is not None:
        parts.append(image.astype(np.float32) / sigma_rgb)
    return np.ascontiguousarray(np.concatenate(parts, -1).reshape(h * w, -1), dtype=np.float32)


def _difference(a: harness.Timing, b: harness.Timing) -> harness.Timing:
    """a − b (medians; min/max are the medians too: a derived time has no spread of its own)."""
    ms = max(a.median_ms - b.median_ms, 1e-6)
    return harness.Timing(ms, ms, ms, min(a.repeats, b.repeats))


def bench_case(report, args, image, values, name, sxy, srgb, dcrf, matrixXf) -> None:
    import convloc

    h, w = image.shape[:2]
    n = h * w
    f = features(image, sxy, srgb)
    lattice = convloc.PermutohedralLattice(f)

    def add_kernel(crf):
        if srgb is None:
            crf.addPairwiseGaussian(sxy=sxy, compat=3)
        else:
            crf.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=image, compat=10)

    peer_build = None
    if dcrf:
        create_add, create = harness.compare(
            lambda: add_kernel(dcrf.DenseCRF2D(w, h, LABELS)),
            lambda: dcrf.DenseCRF2D(w, h, LABELS),
            budget_s=args.budget,
        )
        peer_build = _difference(create_add, create)
    ours, _ = harness.compare(lambda: convloc.PermutohedralLattice(f), budget_s=args.budget)
    lattice.filter(values)  # the bytes below include the splat tables the first filter builds
    report.add(
        f"build {name}",
        ours,
        "pydensecrf",
        peer_build,
        vertices=lattice.num_vertices,
        bytes_per_pixel=round(lattice.memory_bytes / n, 1),
    )

    peer_filter = None
    if dcrf:
        unary = np.zeros((LABELS, n), np.float32)
        q = np.ascontiguousarray(values.T)

        def stepper(with_kernel: bool):
            crf = dcrf.DenseCRF2D(w, h, LABELS)
            crf.setUnaryEnergy(unary)
            if with_kernel:
                add_kernel(crf)
            mq, t1, t2 = (
                matrixXf(q.copy()),
                matrixXf(np.zeros_like(q)),
                matrixXf(np.zeros_like(q)),
            )
            return lambda: crf.stepInference(mq, t1, t2)

        with_k, without = harness.compare(stepper(True), stepper(False), budget_s=args.budget)
        peer_filter = _difference(with_k, without)
    # The kernel into a preallocated output, as pydensecrf's stepInference and the dense CRF use it.
    out = np.empty_like(values)
    ours, _ = harness.compare(lambda: lattice._lattice.filter(values, out), budget_s=args.budget)
    report.add(f"filter 21 ch {name}", ours, "pydensecrf", peer_filter)
    ours_t, _ = harness.compare(
        lambda: lattice._lattice.filter(values, out, transpose=True), budget_s=args.budget
    )
    report.add(f"filter 21 ch transposed {name}", ours_t)


def run(args: argparse.Namespace) -> harness.Report:
    report = harness.start("lattice: build and 21-channel filtering vs pydensecrf", args)
    dcrf = harness.import_peer(report, "pydensecrf.densecrf")
    matrixXf = dcrf and harness.import_peer(report, "pydensecrf.eigen").matrixXf
    image = test_image()
    n = image.shape[0] * image.shape[1]
    values = np.random.default_rng(0).random((n, LABELS), dtype=np.float32)
    for name, sxy, srgb in (("d=2 xy/3", 3.0, None), ("d=5 xy/80 rgb/13", 80.0, 13.0)):
        bench_case(report, args, image, values, name, sxy, srgb, dcrf, matrixXf)
    report.note("pydensecrf times are differences (see the module docstring)")
    return harness.finish(report, args)


if __name__ == "__main__":
    harness.main_for(run, __doc__)
