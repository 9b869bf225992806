"""Hypothesis strategies for hostile arrays, and the contract every op must keep with them."""

from __future__ import annotations

import re

import numpy as np
from hypothesis import strategies as st

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
    return any(re.search(rf"\b{re.escape(a)}\b", msg) for a in arguments)


def check_call(fn, arguments: list[str], *args, **kwargs):
    """Calls fn; it must return, or raise ValueError/TypeError whose message names one of the arguments."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as e:
        assert names_argument(e, arguments), f"error does not name any of {arguments}: {e!r}"
        return None
