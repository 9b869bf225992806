"""pydensecrf.utils for :mod:`convloc.densecrf`: the same functions, signatures and layouts::

    from convloc.densecrf.utils import unary_from_softmax, create_pairwise_bilateral

Unaries come out as pydensecrf's ``[n_labels, N]`` float32 and features as ``[d, N]`` float32, ready
for ``setUnaryEnergy`` / ``addPairwiseEnergy``; :mod:`convloc.ops` has the same helpers keeping the
input's shape, for :func:`convloc.ops.dense_crf`. Beyond pydensecrf, bad input raises ValueError
or TypeError naming the argument: probabilities that are NaN, negative or do not sum to one over
axis 0 (logits, or a ``[H, W, L]`` array), label values out of range, ``sdims`` / ``schan`` with a
wrong number of values.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from convloc import ops
from convloc._kernels import crf as kernels

__all__ = [
    "unary_from_labels",
    "compute_unary",
    "unary_from_softmax",
    "softmax_to_unary",
    "create_pairwise_gaussian",
    "create_pairwise_bilateral",
]


def unary_from_labels(labels: Any, n_labels: int, gt_prob: float, zero_unsure: bool = True) -> np.ndarray:
    """Unary [n_labels, N] (float32) from a label map trusted with probability ``gt_prob``, the
    other labels sharing the rest; with ``zero_unsure`` the value 0 means "unknown" (uniform) and
    1..n_labels are the labels, otherwise 0..n_labels-1 are."""
    return ops.unary_from_labels(labels, n_labels, gt_prob, zero_unsure).reshape(n_labels, -1)


def compute_unary(labels: Any, M: int, GT_PROB: float = 0.5) -> np.ndarray:  # noqa: N803 - pydensecrf's names
    """Deprecated in pydensecrf: :func:`unary_from_labels` (labels, M, GT_PROB)."""
    warnings.warn("compute_unary is deprecated, use unary_from_labels", DeprecationWarning, stacklevel=2)
    return unary_from_labels(labels, M, GT_PROB)


def unary_from_softmax(sm: Any, scale: float | None = None, clip: float | None = 1e-5) -> np.ndarray:
    """Unary [n_labels, N] (float32) ``-log(clip(P, clip, 1))`` of probabilities ``sm`` [n_labels,
    ...]; ``scale`` in (0, 1] first mixes P with the uniform distribution (P = 1 then becomes
    ``scale``), ``clip=None`` leaves zeros infinite (their labels are never taken)."""
    return kernels.unary_from_probabilities(sm, 0, scale, clip, 1.0, "sm")


def softmax_to_unary(sm: Any, GT_PROB: float = 1) -> np.ndarray:  # noqa: N803
    """Deprecated in pydensecrf: :func:`unary_from_softmax` with ``scale=GT_PROB`` (none for 1)
    and no clipping."""
    warnings.warn("softmax_to_unary is deprecated, use unary_from_softmax", DeprecationWarning, stacklevel=2)
    return unary_from_softmax(sm, None if GT_PROB == 1 else GT_PROB, clip=None)


def create_pairwise_gaussian(sdims: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """Position features [len(shape), N] (float32), each axis's index / its sdim, for
    ``addPairwiseEnergy`` (in 2-D the features of ``DenseCRF2D.addPairwiseGaussian``)."""
    return ops.create_pairwise_gaussian(sdims, shape)


def create_pairwise_bilateral(
    sdims: Sequence[float], schan: float | Sequence[float], img: Any, chdim: int = -1
) -> np.ndarray:
    """Position and channel features [len(sdims) + C, N] (float32) of an image of any number of
    dimensions and channels: ``chdim`` is its channel axis, -1 for an image without one."""
    return ops.create_pairwise_bilateral(sdims, schan, img, chdim)
