"""SimpleCRF's ``denseCRF3D`` module: the 3-D dense CRF of a multi-modal volume."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from convloc import ops
from convloc._kernels import crf as kernels
from convloc.simplecrf import _inputs

__all__ = ["densecrf3d"]

PARAM_KEYS = (
    "MaxIterations",
    "PosW",
    "PosRStd",
    "PosCStd",
    "PosZStd",
    "BilateralW",
    "BilateralRStd",
    "BilateralCStd",
    "BilateralZStd",
    "ModalityNum",
    "BilateralModsStds",
)


def densecrf3d(I: Any, P: Any, param: Mapping[str, Any]) -> np.ndarray:  # noqa: E741 - SimpleCRF's names
    """Labels [D, H, W] (int8) of SimpleCRF's 3-D dense CRF.

    Args:
        I: the volume, [D, H, W, M] uint8 with M modalities.
        P: probabilities [D, H, W, L] (float32 or float64), a distribution per voxel. A probability
            of 0, whose unary SimpleCRF makes infinite, gets -log(1.2e-38) = 87.3.
        param: a dict of SimpleCRF's keys: ``MaxIterations``; the Gaussian kernel's weight ``PosW``
            and standard deviations (voxels) ``PosZStd``, ``PosCStd``, ``PosRStd`` along axes 0, 1
            and 2 (D, H, W); the bilateral kernel's ``BilateralW``, ``BilateralZStd``,
            ``BilateralCStd``, ``BilateralRStd`` alike, and ``BilateralModsStds``, one standard
            deviation per modality; ``ModalityNum`` = M.

    SimpleCRF places its voxels by their index in memory as if axis 0 varied fastest: where D = W
    that is the grid, with the standard deviations on the axes above; otherwise its position
    features do not follow the voxel grid. Here they always do, so label maps differ from
    SimpleCRF's where D != W. Any number of modalities works (SimpleCRF: 1 to 5).
    """
    if not isinstance(param, Mapping):
        raise TypeError(f"param: expected a dict of {', '.join(PARAM_KEYS)}, got {type(param).__name__}")
    missing = [k for k in PARAM_KEYS if k not in param]
    if missing:
        raise ValueError(f"param: missing {', '.join(missing)}")

    def std(key: str) -> float:
        return _inputs.number(param[key], f"param['{key}']", positive=True)

    iterations = _inputs.count(param["MaxIterations"], "param['MaxIterations']")
    modalities = _inputs.count(param["ModalityNum"], "param['ModalityNum']")
    mods = param["BilateralModsStds"]
    if not isinstance(mods, Sequence) or len(mods) != modalities or modalities < 1:
        raise ValueError(
            f"param['BilateralModsStds']: expected one standard deviation per modality "
            f"(ModalityNum = {param['ModalityNum']!r}), got {mods!r}"
        )
    mod_stds = [
        _inputs.number(s, f"param['BilateralModsStds'][{i}]", positive=True) for i, s in enumerate(mods)
    ]
    unary = _inputs.unary(P, 3, kernels.SMALLEST_PROBABILITY, 1.0)
    image = _inputs.image(I, unary.shape[1:], modalities)
    gaussian = ops.Gaussian(
        [std("PosZStd"), std("PosCStd"), std("PosRStd")], _inputs.number(param["PosW"], "param['PosW']")
    )
    bilateral = ops.Bilateral(
        [std("BilateralZStd"), std("BilateralCStd"), std("BilateralRStd")],
        mod_stds,
        _inputs.number(param["BilateralW"], "param['BilateralW']"),
    )
    _, labels = ops.dense_crf(
        unary, image=image, kernels=[gaussian, bilateral], ndim=3, iterations=iterations, return_labels=True
    )
    return _inputs.label_map(labels)
