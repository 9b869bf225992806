"""Arrays of any framework, as the kernels take them.

Arrays reach ``convloc._C`` as NumPy buffers or DLPack capsules (torch, CuPy) without copies.
Outputs are allocated here with the caller's own framework, on the caller's device, and
handed to the kernel, so a NumPy call returns NumPy and a torch call returns torch.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

Array = Any  # numpy.ndarray | torch.Tensor | cupy.ndarray


def _module_of(x: Any) -> str:
    return type(x).__module__.split(".", 1)[0]


def is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_cupy(x: Any) -> bool:
    return _module_of(x) == "cupy"


def framework(x: Any) -> str:
    if is_torch(x):
        return "torch"
    if is_cupy(x):
        return "cupy"
    return "numpy"


def as_array(x: Any, name: str) -> Array:
    """Returns x as an array of its own framework; other objects (lists, scalars) become NumPy."""
    if is_torch(x) or is_cupy(x) or isinstance(x, np.ndarray):
        return x
    try:
        arr = np.asarray(x)
    except Exception as e:  # noqa: BLE001 - any failure means "not array-like"
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}") from e
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a numeric array, got {type(x).__name__} of dtype {arr.dtype}")
    return arr


def same_framework(reference: tuple[str, Any], *others: tuple[str, Any]) -> None:
    """Raises TypeError unless every array comes from the reference's framework."""
    ref_name, ref = reference
    want = framework(ref)
    for name, x in others:
        if x is not None and framework(x) != want:
            raise TypeError(
                f"{name}: expected a {want} array like {ref_name}, got {type(x).__module__}."
                f"{type(x).__name__}"
            )


def prepare(x: Array, dtype: str | None = None) -> Array:
    """Contiguous (and detached, for torch) array of the given dtype, ready for ``_C``."""
    if is_torch(x):
        import torch

        x = x.detach()
        if dtype is not None and x.dtype != getattr(torch, dtype):
            x = x.to(getattr(torch, dtype))
        return x.contiguous()
    if is_cupy(x):
        import cupy

        return cupy.ascontiguousarray(x, dtype=dtype)
    return np.ascontiguousarray(x, dtype=dtype)


def dtype_name(x: Array) -> str:
    """'float32', 'int64', ... for any framework."""
    return str(x.dtype).replace("torch.", "")


def empty(like: Array, shape: tuple[int, ...], dtype: str | None = None) -> Array:
    """An uninitialised array of like's framework and device."""
    dtype = dtype or dtype_name(like)
    if is_torch(like):
        import torch

        return torch.empty(shape, dtype=getattr(torch, dtype), device=like.device)
    if is_cupy(like):
        import cupy

        with cupy.cuda.Device(like.device.id):
            return cupy.empty(shape, dtype=dtype)
    return np.empty(shape, dtype=dtype)


def stream(x: Array) -> int:
    """The caller's current CUDA stream for x's device (0 for CPU arrays)."""
    if is_torch(x) and x.is_cuda:
        import torch

        return torch.cuda.current_stream(x.device).cuda_stream
    if is_cupy(x):
        import cupy

        return cupy.cuda.get_current_stream().ptr
    return 0


def namespace(x: Array):
    """The array module of x's framework (numpy, torch or cupy), for framework-generic math."""
    if is_torch(x):
        import torch

        return torch
    if is_cupy(x):
        import cupy

        return cupy
    return np


def on_cpu(x: Array) -> bool:
    return not is_cupy(x) and not (is_torch(x) and x.is_cuda)
