"""The JAX layer: convloc's kernels as XLA FFI targets, so that ``jax.jit`` compiles calls to them
(no host callback), with ``jax.custom_vjp`` gradients from convloc's backward kernels and
``vmap`` rules. JAX-only, imported on demand: :mod:`convloc.ops` sends JAX arrays and tracers here.

Importing this package registers the targets (``convloc_<op>``, CPU, and CUDA in a CUDA build) with
``jax.ffi.register_ffi_target``; it raises ImportError, saying how to get them, where JAX or the
handlers are missing. Every call is ``jax.ffi.ffi_call(..., vmap_method="expand_dims")``: under
``vmap`` the handler receives the batch in front of each operand (size 1 for an unbatched one) and
runs the kernel once per item, with no copies of the unbatched operands.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("convloc's JAX support needs JAX: pip install jax") from e

from convloc._kernels import runtime

if not runtime.xla_ffi_version():
    raise ImportError(
        "this build of convloc has no XLA FFI handlers for JAX (jaxlib was not importable when it was "
        "built). Rebuild it with jaxlib present: pip install jax scikit-build-core pybind11, then, in "
        "convloc's source directory, pip install --no-build-isolation --force-reinstall --no-deps ."
    )

for _name, _platform, _capsule in runtime.ffi_targets():
    jax.ffi.register_ffi_target(_name, _capsule, platform=_platform)


_BAD_INPUT = "INVALID_ARGUMENT: "  # how XLA prefixes the message of a kernel's ValueError or TypeError


def call(op: str, results: Any, *args: Any, **attributes: Any):
    """``jax.ffi.ffi_call`` of the target ``convloc_<op>``; results: a ``jax.ShapeDtypeStruct`` or a
    tuple of them; attributes: NumPy scalars and 1-D arrays. A call run right away (outside jit)
    raises ValueError for bad input, with the kernel's message; a compiled one raises
    ``jax.errors.JaxRuntimeError`` with that message when it runs."""
    try:
        return jax.ffi.ffi_call(f"convloc_{op}", results, vmap_method="expand_dims")(*args, **attributes)
    except jax.errors.JaxRuntimeError as e:
        if not str(e).startswith(_BAD_INPUT):
            raise
        raise ValueError(str(e)[len(_BAD_INPUT) :]) from None


def result(shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(int(s) for s in shape), np.dtype(dtype))


def index_dtype() -> np.dtype:
    """JAX's default integer: int32, or int64 with ``jax_enable_x64``."""
    return jnp.zeros((), int).dtype


def as_float_array(x: Any, name: str) -> jax.Array:
    """x as a JAX array (NumPy arrays and lists are converted)."""
    try:
        return jnp.asarray(x)
    except TypeError as e:
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}") from e


def concrete_count(count: jax.Array, fix: str) -> int:
    """count as a Python int, or TypeError saying how to get the fixed-size form that ``jax.jit``
    and ``vmap`` need."""
    try:
        return int(count)
    except TypeError as e:  # jax.errors.ConcretizationTypeError under jit, a batch under vmap
        raise TypeError(
            f"the number of results depends on the data, which jax.jit and vmap cannot trace: {fix}"
        ) from e
