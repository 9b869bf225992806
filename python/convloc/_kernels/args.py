"""Arguments that are not arrays, as the kernels take them: checked by name, never silently
rounded or cut, and the sizes derived from them checked before anything is allocated.

The compiled kernels take int64 integers; what does not fit (a float where an integer is expected,
``True``, a string, an integer beyond int64) is refused here with the argument's name, what was
expected and what came.
"""

from __future__ import annotations

import operator
import os
from typing import Any

INT64_MAX = 2**63 - 1


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def integer(value: Any, name: str, low: float | None = None, high: float | None = None) -> int:
    """``value`` as a Python int in [low, high]: Python and NumPy integers (anything with
    ``__index__`` but bool); TypeError for other types, ValueError out of range. A bound left None
    is int64's (what the kernels take); ``math.inf`` leaves that side open."""
    is_bool = isinstance(value, bool) or str(getattr(value, "dtype", "")) in ("bool", "torch.bool")
    if is_bool or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name}: expected an integer, got {_describe(value)}")
    v = operator.index(value)
    lo = -INT64_MAX - 1 if low is None else low
    hi = INT64_MAX if high is None else high
    if not lo <= v <= hi:
        if low is not None and high is not None:
            want = f"in [{low}, {high}]"
        else:
            want = f">= {lo}" if v < lo else f"<= {hi}"
        raise ValueError(f"{name}: expected an integer {want}, got {v}")
    return v


def int_pair(value: Any, name: str, low: float | None = None, high: float | None = None) -> tuple[int, int]:
    """An integer (for both) or a pair of integers, each checked as :func:`integer` checks it."""
    if hasattr(type(value), "__index__") and not isinstance(value, bool):
        v = integer(value, name, low, high)
        return v, v
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or not hasattr(value, "__getitem__"):
        raise TypeError(f"{name}: expected an integer or a pair of integers, got {_describe(value)}")
    if len(value) != 2:
        raise ValueError(f"{name}: expected an integer or a pair of integers, got {len(value)} values")
    return integer(value[0], name, low, high), integer(value[1], name, low, high)


def number(value: Any, name: str) -> float:
    """``value`` as a Python float: Python and NumPy reals (not bool, not complex, not strings);
    TypeError otherwise. NaN and inf pass: the caller decides what they mean."""
    dtype = str(getattr(value, "dtype", ""))
    if (
        isinstance(value, (bool, str, bytes, complex))
        or "bool" in dtype
        or "complex" in dtype
        or not hasattr(type(value), "__float__")
    ):
        raise TypeError(f"{name}: expected a real number, got {_describe(value)}")
    try:
        return float(value)
    except (TypeError, ValueError) as e:  # e.g. an array of several values
        raise TypeError(f"{name}: expected a real number, got {_describe(value)}") from e


def _memory_bytes() -> int:
    """This machine's physical memory, or (where the system does not say) 2**47, the x86-64 user
    address space."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 2**47


MEMORY_BYTES = _memory_bytes()  # (read once: a constant to torch.compile)


def check_fits(nbytes: int, name: str, what: str) -> None:
    """ValueError naming ``name`` when ``what`` (an array sized from it) would need more bytes than
    this machine has: refused at once, instead of after minutes of swapping or a MemoryError."""
    if nbytes > MEMORY_BYTES:
        raise ValueError(
            f"{name}: {what} would need {nbytes / 2**30:.3g} GiB, more than this machine's "
            f"{MEMORY_BYTES / 2**30:.3g} GiB"
        )
