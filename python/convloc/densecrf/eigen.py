"""pydensecrf.eigen's conversions, for code that passes Q or compatibilities through them.

pydensecrf wraps its Eigen matrices (``vectorXf``, ``vectorXs``, ``matrixXf`` copy a NumPy array
into one); :mod:`convloc.densecrf` works on NumPy arrays, so these return NumPy arrays of the same
dtype and shape, which every method of :class:`convloc.densecrf.DenseCRF` accepts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convloc._kernels import crf as kernels

__all__ = ["MatrixXf", "matrixXf", "vectorXf", "vectorXs"]


class MatrixXf(np.ndarray):
    """A float32 NumPy array, as :meth:`~convloc.densecrf.DenseCRF.inference` returns Q [nlabels,
    nvar]: ``np.argmax(Q, axis=0)`` / ``Q.argmax(0)`` of a C-contiguous one take one pass in C++
    (NumPy's own makes a transposed copy first); the result is NumPy's."""

    def argmax(self, axis=None, out=None, *, keepdims=False):
        if (
            axis in (0, -self.ndim)
            and out is None
            and not keepdims
            and self.ndim >= 2
            and self.size > 0
            and self.dtype in (np.float32, np.float64)
            and self.flags.c_contiguous
        ):
            return kernels.argmax_labels(self.view(np.ndarray))
        return self.view(np.ndarray).argmax(axis=axis, out=out, keepdims=keepdims)


def _converted(arr: Any, ndim: int, dtype: type, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {a.shape}")
    integer = np.dtype(dtype).kind == "i"
    if a.dtype.kind not in ("iu" if integer else "fiu"):
        raise TypeError(f"{name}: expected {np.dtype(dtype).name} values, got {a.dtype}")
    if integer and a.size and not (np.iinfo(dtype).min <= a.min() and a.max() <= np.iinfo(dtype).max):
        raise ValueError(
            f"{name}: expected values in {np.dtype(dtype).name}'s range, got {a.min()}..{a.max()}"
        )
    return np.array(a, dtype=dtype, order="C")


def vectorXf(arr: Any) -> np.ndarray:  # noqa: N802 - pydensecrf's name
    """A float32 copy of a 1-D array (pydensecrf's ``VectorXf``)."""
    return _converted(arr, 1, np.float32, "arr")


def vectorXs(arr: Any) -> np.ndarray:  # noqa: N802
    """An int16 copy of a 1-D integer array (pydensecrf's ``VectorXs``, e.g. labels)."""
    return _converted(arr, 1, np.int16, "arr")


def matrixXf(arr: Any) -> MatrixXf:  # noqa: N802
    """A float32 copy of a 2-D array (pydensecrf's ``MatrixXf``, e.g. a Q for ``stepInference``)."""
    return _converted(arr, 2, np.float32, "arr").view(MatrixXf)
