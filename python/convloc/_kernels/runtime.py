"""What the compiled module carries, and its process-wide settings (threads, scratch cache)."""

from __future__ import annotations

import math
from typing import Any

import convloc._C as _C
from convloc._kernels.args import integer


def info() -> dict[str, Any]:
    return dict(_C.info())


def compiled_with_cuda() -> bool:
    return bool(_C.info()["compiled_with_cuda"])


def xla_ffi_version() -> str:
    """The jaxlib whose XLA FFI headers the handlers were compiled with; "" for a build without them."""
    return str(_C.info()["xla_ffi"])


def ffi_targets() -> list[tuple[str, str, Any]]:
    """(target name, platform, handler capsule) of every XLA FFI target, for
    ``jax.ffi.register_ffi_target``."""
    return list(_C.ffi_targets())


def get_num_threads() -> int:
    return _C.get_num_threads()


def set_num_threads(n: int) -> None:
    # Any integer: the kernels cap it at max_threads().
    _C.set_num_threads(max(min(integer(n, "n", -math.inf, math.inf), 2**31), -1))


def max_threads() -> int:
    return _C.max_threads()


def cached_bytes() -> int:
    return _C.cached_bytes()


def empty_cache() -> int:
    return _C.empty_cache()
