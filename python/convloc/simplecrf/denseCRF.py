"""SimpleCRF's ``denseCRF`` module: the 2-D dense CRF of an RGB image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from convloc import ops
from convloc.simplecrf import _inputs

__all__ = ["densecrf"]


def densecrf(I: Any, P: Any, param: Sequence[float]) -> np.ndarray:  # noqa: E741 - SimpleCRF's names
    """Labels [H, W] (int8) of SimpleCRF's 2-D dense CRF.

    Args:
        I: the image, [H, W, 3] uint8.
        P: probabilities [H, W, L] (float32 or float64), a distribution per pixel; clipped to
            [0.01, 0.99] before the unary -log P, as in SimpleCRF.
        param: ``(w1, alpha, beta, w2, gamma, iterations)``: the bilateral kernel's weight, spatial
            and colour standard deviations (pixels, intensity levels), the Gaussian kernel's weight
            and spatial standard deviation, and the number of mean-field iterations.
    """
    values = list(param) if isinstance(param, (Sequence, np.ndarray)) and not isinstance(param, str) else []
    if len(values) != 6:
        raise ValueError(f"param: expected (w1, alpha, beta, w2, gamma, iterations), got {param!r}")
    names = ("w1", "alpha", "beta", "w2", "gamma")
    w1, alpha, beta, w2, gamma = (
        _inputs.number(v, f"param[{i}] ({n})", positive=n in ("alpha", "beta", "gamma"))
        for i, (n, v) in enumerate(zip(names, values))
    )
    iterations = _inputs.count(values[5], "param[5] (iterations)")
    unary = _inputs.unary(P, 2, 0.01, 0.99)
    image = _inputs.image(I, unary.shape[1:], 3)
    _, labels = ops.dense_crf(
        unary,
        image=image,
        kernels=[ops.Gaussian(gamma, w2), ops.Bilateral(alpha, beta, w1)],
        iterations=iterations,
        return_labels=True,
    )
    return _inputs.label_map(labels)
