"""A drop-in replacement for pydensecrf: change the package name in the imports, keep your code::

    import convloc.densecrf as dcrf          # was: import pydensecrf.densecrf as dcrf
    from convloc.densecrf.utils import unary_from_softmax   # was: from pydensecrf.utils import ...

    d = dcrf.DenseCRF2D(W, H, n_labels)
    d.setUnaryEnergy(unary_from_softmax(probs))                        # probs [n_labels, H, W]
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=10)   # image [H, W, 3] uint8
    Q = d.inference(5)                       # [n_labels, H*W] float32
    labels = np.argmax(Q, axis=0)            # one pass in C++ (Q is an eigen.MatrixXf)

Same classes, methods, constants, array layouts and results (up to the lattice's rounding) as
pydensecrf; :mod:`convloc.densecrf.utils` and :mod:`convloc.densecrf.eigen` stand for
``pydensecrf.utils`` and ``pydensecrf.eigen``. ``inference`` returns a NumPy float32 array
(:class:`~convloc.densecrf.eigen.MatrixXf`, whose argmax over the labels takes one pass; ``np.array(Q)``
still works). An infinite energy (``-log 0``) keeps its label's probability at zero, as in
pydensecrf. Where pydensecrf silently computes garbage or fails obscurely — image W and H swapped, a
float, grey or non-contiguous image, NaN in the unary, features with the wrong number of points,
inference before ``setUnaryEnergy`` — this module raises ``ValueError`` / ``TypeError`` saying what
is wrong.
"""

from __future__ import annotations

from numbers import Number

import numpy as np

from convloc._kernels import crf as kernels
from convloc._kernels.args import integer
from convloc.densecrf.eigen import MatrixXf

__all__ = [
    "DenseCRF",
    "DenseCRF2D",
    "CONST_KERNEL",
    "DIAG_KERNEL",
    "FULL_KERNEL",
    "NO_NORMALIZATION",
    "NORMALIZE_BEFORE",
    "NORMALIZE_AFTER",
    "NORMALIZE_SYMMETRIC",
]

# pydensecrf's KernelType (all three are the same Gaussian at inference) and NormalizationType.
CONST_KERNEL, DIAG_KERNEL, FULL_KERNEL = 0, 1, 2
NO_NORMALIZATION, NORMALIZE_BEFORE, NORMALIZE_AFTER, NORMALIZE_SYMMETRIC = 0, 1, 2, 3


class DenseCRF:
    """A fully connected CRF over ``nvar`` points with ``nlabels`` labels (pydensecrf.DenseCRF)."""

    def __init__(self, nvar: int, nlabels: int, *_args, **_kwargs):
        self._n, self._labels = integer(nvar, "nvar", 1), integer(nlabels, "nlabels", 2)
        self._unary: np.ndarray | None = None
        # per pairwise term: [1, N, d] float32 lattice features, a Gaussian over the pixel grid
        # (kernels.grid_kernel) or a bilateral kernel over self._image (kernels.bilateral)
        self._kernels: list = []
        self._compat: list[np.ndarray] = []  # [L, L] apply form
        self._norm: list[int] = []
        self._shape: tuple[int, ...] = ()  # the pixel grid of grid and bilateral kernels
        self._image: np.ndarray | None = None  # [1, N, C] uint8

    def setUnaryEnergy(self, u, f=None) -> None:  # noqa: N802 - pydensecrf's name
        """Sets the unary: -log P as [nlabels, nvar] (float32; other shapes with that many values
        and float64 are accepted). +inf (P = 0) keeps the label's probability at zero."""
        if f is not None:
            raise NotImplementedError("setUnaryEnergy: learned unaries (the f argument) are not supported")
        u = _real(u, "u")
        if u.ndim < 2 or u.shape[0] != self._labels or u.size != self._labels * self._n:
            raise ValueError(
                f"u: expected shape ({self._labels}, {self._n}) [nlabels, nvar], got {u.shape}"
                + (" (transposed?)" if u.shape == (self._n, self._labels) else "")
            )
        u = np.array(u.reshape(self._labels, self._n), np.float32, order="C")  # (a copy, as pydensecrf's)
        finite = np.isfinite(u)
        if not finite.all():
            if np.isnan(u).any() or np.isneginf(u).any():
                raise ValueError("u: expected energies (-log P), got NaN or -inf")
            if not finite.any(axis=0).all():
                raise ValueError(
                    "u: expected a finite energy for some label of every point, got +inf for all"
                )
            u = np.minimum(u, -np.log(np.float32(kernels.SMALLEST_PROBABILITY)))
        self._unary = u

    def setUnary(self, u) -> None:  # noqa: N802
        raise NotImplementedError("setUnary: pass the energies to setUnaryEnergy instead")

    def _add(self, kernel, compat, kernel_type: int, normalization: int) -> None:
        if kernel_type not in (CONST_KERNEL, DIAG_KERNEL, FULL_KERNEL):
            raise ValueError(f"kernel: expected CONST_KERNEL, DIAG_KERNEL or FULL_KERNEL, got {kernel_type}")
        if normalization not in (NO_NORMALIZATION, NORMALIZE_BEFORE, NORMALIZE_AFTER, NORMALIZE_SYMMETRIC):
            raise ValueError(f"normalization: expected a pydensecrf NormalizationType, got {normalization}")
        c = compat if isinstance(compat, Number) else np.asarray(compat, np.float64)
        self._compat.append(kernels.compat_matrix(c, self._labels, 1.0, "compat").astype(np.float32))
        self._kernels.append(kernel)
        self._norm.append(int(normalization))

    def addPairwiseEnergy(  # noqa: N802
        self, features, compat, kernel: int = DIAG_KERNEL, normalization: int = NORMALIZE_SYMMETRIC
    ) -> None:
        """Adds a Gaussian kernel over features [d, nvar] (already divided by their standard
        deviations). compat: a number (Potts), [nlabels] (diagonal) or [nlabels, nlabels]."""
        f = np.asarray(features)
        if f.ndim != 2 or f.shape[1] != self._n:
            raise ValueError(f"features: expected shape (d, {self._n}) [feature dim, nvar], got {f.shape}")
        if not np.issubdtype(f.dtype, np.floating):
            raise TypeError(f"features: expected float32 features, got {f.dtype}")
        if not np.all(np.isfinite(f)):
            raise ValueError("features: expected finite values, got NaN or inf")
        self._add(np.ascontiguousarray(f.T, dtype=np.float32)[None], compat, kernel, normalization)

    def _run(self, iterations: int, init: np.ndarray | None = None, energy: bool = False):
        if self._unary is None:
            raise ValueError("setUnaryEnergy must be called before inference")
        u = self._unary[None]
        if not self._kernels:  # no pairwise term: Q = softmax(-U), as pydensecrf
            q = np.exp(-(u[0] - u[0].min(0)))
            q = (q / q.sum(0)) if init is None else init.copy()
            return q, None
        q, _, e = kernels.dense_crf(
            u,
            self._kernels,
            np.stack(self._compat),
            self._norm,
            iterations,
            False,
            self._shape,
            energy=energy,
            init=None if init is None else np.ascontiguousarray(init, np.float32)[None],
            image=self._image,
        )
        return q[0], e

    def inference(self, niter: int) -> MatrixXf:
        """Marginals Q [nlabels, nvar] (float32) after niter mean-field iterations."""
        return self._run(integer(niter, "niter", 0))[0].view(MatrixXf)

    def startInference(self):  # noqa: N802
        """(Q, tmp1, tmp2) to pass to stepInference; Q = softmax(-U)."""
        q = self.inference(0)
        return q, np.zeros_like(q), np.zeros_like(q)

    def stepInference(self, Q, tmp1=None, tmp2=None) -> None:  # noqa: N802, N803
        """One mean-field iteration, updating Q [nlabels, nvar] in place (rebuilds the lattices)."""
        if not isinstance(Q, np.ndarray) or Q.shape != (self._labels, self._n) or Q.dtype != np.float32:
            raise TypeError(f"Q: expected the float32 [{self._labels}, {self._n}] array from startInference")
        Q[...] = self._run(1, init=Q)[0]

    def klDivergence(self, Q) -> float:  # noqa: N802, N803
        """pydensecrf's KL value: sum Q log Q + sum U Q + sum Q * message(Q).

        (No 1/2 on the pairwise term, as in pydensecrf.)
        """
        q = np.ascontiguousarray(_real(Q, "Q"), dtype=np.float32)
        if q.shape != (self._labels, self._n):
            raise ValueError(f"Q: expected shape ({self._labels}, {self._n}), got {q.shape}")
        if self._unary is None:
            raise ValueError("setUnaryEnergy must be called before klDivergence")
        q64, u64 = q.astype(np.float64), self._unary.astype(np.float64)
        base = float((q64 * np.log(np.maximum(q64, 1e-20))).sum() + (u64 * q64).sum())
        if not self._kernels:
            return base
        # energy = base + 1/2 sum Q·message, so the full pairwise term is 2 (energy - base).
        energy = float(self._run(0, init=q, energy=True)[1][0, 0])
        return base + 2.0 * (energy - base)


class DenseCRF2D(DenseCRF):
    """A dense CRF over the pixels of a W×H image (pydensecrf.DenseCRF2D: note W first)."""

    def __init__(self, w: int, h: int, nlabels: int, *_args, **_kwargs):
        self._w, self._h = integer(w, "w", 1), integer(h, "h", 1)
        super().__init__(self._w * self._h, nlabels)
        self._shape = (self._h, self._w)

    @staticmethod
    def _stds(value, count: int, name: str) -> np.ndarray:
        """pydensecrf's standard deviations: a number for all, or one per axis or channel."""
        v = np.full(count, value, np.float64) if isinstance(value, Number) else np.asarray(value, np.float64)
        if v.shape != (count,) or not np.all(np.isfinite(v) & (v > 0)):
            raise ValueError(f"{name}: expected a positive number or {count} positive numbers, got {value!r}")
        return v

    def addPairwiseGaussian(  # noqa: N802
        self, sxy, compat, kernel: int = DIAG_KERNEL, normalization: int = NORMALIZE_SYMMETRIC
    ) -> None:
        """Smoothness kernel over pixel positions (x/sx, y/sy)."""
        sx, sy = self._stds(sxy, 2, "sxy")
        grid = kernels.grid_kernel(np.array([sy, sx]), self._shape)
        if grid is None:  # wide: a lattice over the positions
            grid = kernels.positions(self._shape, [1 / sy, 1 / sx], np.float32)[None, :, ::-1].copy()
        self._add(grid, compat, kernel, normalization)

    def addPairwiseBilateral(  # noqa: N802
        self,
        sxy,
        srgb,
        rgbim,
        compat,
        kernel: int = DIAG_KERNEL,
        normalization: int = NORMALIZE_SYMMETRIC,
    ) -> None:
        """Appearance kernel over (x/sx, y/sy, r/sr, g/sg, b/sb).

        rgbim: [H, W, 3] uint8, C-contiguous.
        """
        im = rgbim
        if not isinstance(im, np.ndarray):
            raise TypeError(f"rgbim: expected a NumPy array, got {type(im).__name__}")
        if im.dtype != np.uint8:
            raise TypeError(
                f"rgbim: expected a uint8 image (0..255), got {im.dtype}; convert with "
                "(img * 255).astype(np.uint8) if it is a float image in [0, 1]"
            )
        if im.ndim != 3 or im.shape[2] != 3 or im.shape[:2] != (self._h, self._w):
            swapped = im.ndim == 3 and im.shape[:2] == (self._w, self._h) and self._w != self._h
            raise ValueError(
                f"rgbim: expected shape ({self._h}, {self._w}, 3) [H, W, 3] for "
                f"DenseCRF2D(w={self._w}, h={self._h}), got {im.shape}"
                + (" (DenseCRF2D takes W first, then H: W and H swapped?)" if swapped else "")
            )
        if not im.flags.c_contiguous:
            raise ValueError("rgbim: expected a C-contiguous image; pass np.ascontiguousarray(rgbim)")
        sx, sy = self._stds(sxy, 2, "sxy")
        scale, sr = np.array([1 / sy, 1 / sx]), self._stds(srgb, 3, "srgb")
        pixels = im.reshape(1, -1, 3)
        if self._image is None:
            self._image = pixels.copy()  # (pydensecrf reads the image here, not at inference)
        if np.array_equal(pixels, self._image):  # the kernel builds the features from the call's image
            self._add(kernels.bilateral(scale, sr), compat, kernel, normalization)
        else:  # another image: its features, for a lattice
            features = kernels.bilateral_features(pixels, self._shape, scale, sr, np.float32)
            self._add(features, compat, kernel, normalization)


def _real(x, name: str) -> np.ndarray:
    """x as a NumPy array of real numbers: complex (whose imaginary part a cast would drop), bool
    and object arrays are refused."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected real numbers, got dtype {a.dtype}")
    return a
