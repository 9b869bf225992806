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
    return np.asarray(x, dtype=dtype, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)


def prepare_feature_map(x: Array) -> Array:
    """``prepare(x)`` for kernels that read an [N, C, H, W] CPU array laid out channels-last as
    readily as a C-contiguous one: such an array (torch's ``channels_last``, an NHWC array's
    transposed view) is passed as it is, without a copy."""
    if on_cpu(x) and is_channels_last(x):
        return x.detach() if is_torch(x) else x
    return prepare(x)


def _dense_in_order(x: Array, order: tuple[int, ...]) -> bool:
    """Whether a NumPy / CuPy array holds its axes nested in ``order`` (outermost first) without
    gaps; sizes of 1 may have any stride."""
    strides, expected = [s // x.itemsize for s in x.strides], 1
    for i in reversed(order):
        if x.shape[i] != 1 and strides[i] != expected:
            return False
        expected *= x.shape[i]
    return True


def is_channels_last(x: Array) -> bool:
    """A 4-D [N, C, H, W] array laid out as [N, H, W, C]."""
    if x.ndim != 4:
        return False
    if is_torch(x):
        import torch

        return x.is_contiguous(memory_format=torch.channels_last)
    return _dense_in_order(x, (0, 2, 3, 1))


def suggests_channels_last(x: Array) -> bool:
    """Whether torch would take the 4-D x for channels-last (``suggest_memory_format``): by its exact
    strides, so that a size of 1 (where both layouts fit) goes by how x was made."""
    if x.ndim != 4:
        return False
    strides = tuple(x.stride()) if is_torch(x) else tuple(s // x.itemsize for s in x.strides)
    if strides[1] == 0:
        return False
    least = 0
    for d in (1, 3, 2, 0):
        if x.shape[d] == 0 or strides[d] < least or (d == 0 and least == strides[1]):
            return False
        least = strides[d] * (x.shape[d] if x.shape[d] > 1 else 1)
    return True


def to_channels_last(x: Array) -> Array:
    """[N, C, H, W] x laid out channels-last (a copy unless it is)."""
    if is_torch(x):
        import torch

        return x.contiguous(memory_format=torch.channels_last)
    xp = namespace(x)
    return xp.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def dtype_name(x: Array) -> str:
    """'float32', 'int64', ... for any framework."""
    return str(x.dtype).replace("torch.", "")


def astype(x: Array, dtype: str) -> Array:
    """x in dtype, same framework, device and memory layout (x itself when it has that dtype)."""
    if dtype_name(x) == dtype:
        return x
    if is_torch(x):
        import torch

        return x.to(getattr(torch, dtype))  # differentiable: the ops convert autograd's tensors too
    return x.astype(dtype)


HALF = ("float16", "bfloat16")


def float32_for_half(*named: tuple[str, Array | None], cpu_has_half: bool = False) -> tuple[str | None, list]:
    """The boundary conversion for kernels that compute float16 / bfloat16 in float32 but have no
    version for them (``cpu_has_half``: the CPU kernel has, so only CUDA arrays are converted).

    When the first array is float16 / bfloat16, every other floating array must have its dtype
    (TypeError naming the first that has not, as the kernels' checks do), and those come back as
    float32 copies in their own layout (other arrays as given). Returns (the half dtype to give the
    results, or None: the arrays unchanged; the arrays).
    """
    (first_name, first), arrays = named[0], [x for _, x in named]
    half = dtype_name(first)
    if half not in HALF or (cpu_has_half and on_cpu(first)):
        return None, arrays
    for name, x in named[1:]:
        kind = None if x is None else dtype_name(x)
        if kind is not None and kind != half and kind.startswith(("float", "bfloat")):
            raise TypeError(f"{name}: expected the dtype of {first_name} ({half}), got {kind}")
    return half, [astype(x, "float32") if x is not None and dtype_name(x) == half else x for x in arrays]


def restore_half(x: Array | None, half: str | None) -> Array | None:
    """A float32 result of a kernel run by :func:`float32_for_half` in the callers' half dtype."""
    return x if x is None or half is None else astype(x, half)


def empty(
    like: Array, shape: tuple[int, ...], dtype: str | None = None, channels_last: bool = False
) -> Array:
    """An uninitialised array of like's framework and device (channels_last: [N, C, H, W] laid out
    as [N, H, W, C])."""
    dtype = dtype or dtype_name(like)
    if channels_last:
        n, c, h, w = shape
        nhwc = empty(like, (n, h, w, c), dtype)
        return nhwc.permute(0, 3, 1, 2) if is_torch(like) else nhwc.transpose(0, 3, 1, 2)
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
