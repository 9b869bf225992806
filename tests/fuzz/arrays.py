"""Hypothesis strategies for hostile arrays, and the contract every op must keep with them."""

from __future__ import annotations

import math
import re
import time

import numpy as np
from hypothesis import strategies as st

# Scalars from the whole range, not only the sensible one: tiny, huge, inf, NaN, float32's
# overflow, integers past int32 and int64. Sizes derived from them must be checked before use.
EXTREME_FLOATS = [
    0.0, -0.0, 5e-324, 1e-300, 1e-30, 1e-6, 6e8, 7e8, 3e9, 1e38, 3.5e38, 1e300,
    math.inf, -math.inf, math.nan,
]  # fmt: skip
EXTREME_INTS = [2**31, -(2**31) - 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30]


def any_float(lo: float, hi: float):
    """Floats mostly in [lo, hi], else from EXTREME_FLOATS or anywhere in the float range."""
    return st.one_of(st.floats(lo, hi), st.floats(lo, hi), st.sampled_from(EXTREME_FLOATS), st.floats())


def any_int(lo: int, hi: int):
    """Integers mostly in [lo, hi], else from EXTREME_INTS."""
    return st.one_of(st.integers(lo, hi), st.integers(lo, hi), st.sampled_from(EXTREME_INTS))


def counts(lo: int, hi: int):
    """Integers in [lo, hi], or past int64 (which must be refused): for counts of work such as
    iterations, where a huge valid value is legitimately slow."""
    return st.integers(lo, hi) | st.sampled_from([v for v in EXTREME_INTS if not -(2**63) <= v < 2**63])


DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_, np.complex64]


@st.composite
def hostile_arrays(draw, shape=None, dtypes=DTYPES, finite_only=False):
    """Arrays of random dtype and shape, sometimes non-contiguous, reversed, NaN or inf."""
    if shape is None:
        shape = tuple(draw(st.lists(st.integers(0, 6), min_size=0, max_size=4)))
    elif isinstance(shape, st.SearchStrategy):
        shape = draw(shape)
    dtype = draw(st.sampled_from(dtypes))
    n = int(np.prod(shape)) if shape else 1
    raw = draw(st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=n, max_size=n))
    a = np.array(raw, dtype=np.float64).reshape(shape).astype(dtype)
    if a.dtype.kind == "f" and a.size and not finite_only and draw(st.booleans()):
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    layout = draw(st.sampled_from(["c", "fortran", "reversed", "strided"]))
    if layout == "fortran":
        a = np.asfortranarray(a)
    elif layout == "reversed" and a.ndim:
        a = a[::-1]
    elif layout == "strided" and a.ndim:
        a = np.repeat(a, 2, axis=0)[::2]
    return a


def shapes(*dims, max_side: int = 6):
    """Mostly shapes of the expected rank (an int fixes a side, None draws 0..max_side), sometimes
    any shape: the ops must refuse those by name."""
    side = st.integers(0, max_side)
    right = st.tuples(*(st.just(d) if isinstance(d, int) else side for d in dims))
    anything = st.lists(side, min_size=0, max_size=5).map(tuple)
    return st.one_of(right, right, right, anything)


def names_argument(err: Exception, arguments: list[str]) -> bool:
    msg = str(err)
    if "incompatible function arguments" in msg:  # pybind11's dump of the signature names them all
        return False
    return any(re.search(rf"\b{re.escape(a)}\b", msg) for a in arguments)


# No hostile call may take longer than this (the inputs are a few pixels: only a size derived from a
# parameter, unchecked, makes one slow).
CALL_SECONDS = 10.0
calls_made = [0]  # hostile calls made by this run (reported at the end of the run)


def check_call(fn, arguments: list[str], *args, **kwargs):
    """Calls fn; it must return within CALL_SECONDS, or raise ValueError/TypeError whose message
    names one of the arguments."""
    calls_made[0] += 1
    start = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as e:
        assert names_argument(e, arguments), f"error does not name any of {arguments}: {e!r}"
        return None
    finally:
        took = time.perf_counter() - start
        assert took < CALL_SECONDS, f"the call took {took:.1f} s"
