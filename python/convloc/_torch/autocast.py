"""How convloc's ops behave under ``torch.autocast`` (CPU and CUDA).

An op registered here runs, inside an autocast region, on float32 copies of its float16 / bfloat16
tensor arguments, with autocast off; with ``same_dtype_out`` its float32 outputs are then cast
back to the dtype of its first argument when that was a half type. That is torchvision's rule for RoI pooling and NMS:
the kernels sum many terms, and half precision would lose what float32 keeps.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

_LIBRARY = torch.library.Library("convloc", "IMPL")
_KEYS = {"cpu": "AutocastCPU", "cuda": "AutocastCUDA"}


_HALF = (torch.float16, torch.bfloat16)


def _float32(x: Any) -> Any:
    """x with its half-precision tensors in float32 (float64 stays, as autocast leaves it)."""
    if isinstance(x, torch.Tensor):
        return x.float() if x.dtype in _HALF else x
    if isinstance(x, (list, tuple)):
        return type(x)(_float32(v) for v in x)
    return x


def _cast(out: Any, dtype: torch.dtype) -> Any:
    """out with its float32 tensors in dtype."""
    if isinstance(out, torch.Tensor):
        return out.to(dtype) if out.dtype == torch.float32 else out
    return type(out)(_cast(v, dtype) for v in out)


def run_in_float32(name: str, op: Callable[..., Any], *, same_dtype_out: bool) -> None:
    """Registers the float32 rule for ``convloc::<name>`` (``op``: the op to call)."""
    for device, key in _KEYS.items():

        def kernel(*args: Any, _device: str = device) -> Any:
            with torch.autocast(_device, enabled=False):
                out = op(*_float32(args))
            first = args[0]
            return _cast(out, first.dtype) if same_dtype_out and first.dtype in _HALF else out

        _LIBRARY.impl(name, kernel, key)
