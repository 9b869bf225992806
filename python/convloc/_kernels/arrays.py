"""Arrays of any framework, as the kernels take them.

The kernels layer computes with NumPy (host memory), CuPy (CUDA memory), torch (whose tensors go
through the registered torch ops) and JAX (whose arrays and tracers :mod:`convloc.ops` sends to
:mod:`convloc._jax`, which calls the kernels through XLA); NumPy, torch and CuPy arrays reach
``convloc._C`` as buffers or DLPack capsules without copies, and outputs are allocated with the
caller's library on the caller's device, so a NumPy call returns NumPy and a torch call returns torch.

Arrays of any other framework are recognised by the DLPack protocol (``__dlpack__`` and
``__dlpack_device__``: TensorFlow, PaddlePaddle, ...): :func:`native` views them as NumPy (host) or
CuPy (GPU) arrays without a copy, through the consumer side of DLPack (versioned capsules and their
read-only flag where the producer offers them), and :func:`accepts_any_framework` hands the results
back to the caller's framework through its ``from_dlpack``.
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Any, Callable, TypeVar

import numpy as np

Array = Any  # numpy.ndarray | torch.Tensor | cupy.ndarray | jax.Array
F = TypeVar("F", bound=Callable[..., Any])

# DLPack device types (DLDeviceType) that convloc reads: host memory, and CUDA device memory.
_HOST_DEVICES = (1, 3)  # kDLCPU, kDLCUDAHost
_CUDA_DEVICES = (2, 13)  # kDLCUDA, kDLCUDAManaged


def _module_of(x: Any) -> str:
    return type(x).__module__.split(".", 1)[0]


def is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_cupy(x: Any) -> bool:
    return _module_of(x) == "cupy"


def is_jax(*xs: Any) -> bool:
    """Whether any of xs is a JAX array or tracer (without importing JAX)."""
    jax = sys.modules.get("jax")
    return jax is not None and any(isinstance(x, jax.Array) for x in xs)


def is_traced(x: Any) -> bool:
    """Whether x is a JAX tracer (inside ``jax.jit``, ``grad`` or ``vmap``): its values are not known
    until the compiled call runs, so checks of them are left to the kernels."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.core.Tracer)


def framework(x: Any) -> str:
    if is_torch(x):
        return "torch"
    if is_cupy(x):
        return "cupy"
    if is_jax(x):
        return "jax"
    return "numpy"


def is_foreign(x: Any, jax: bool = False) -> bool:
    """Whether x is an array of a framework other than NumPy, torch, CuPy and (unless ``jax``) JAX
    that speaks DLPack."""
    kind = type(x)
    return (
        kind is not np.ndarray
        and hasattr(kind, "__dlpack__")
        and hasattr(kind, "__dlpack_device__")
        and not isinstance(x, np.ndarray)
        and not is_torch(x)
        and not is_cupy(x)
        and (jax or not is_jax(x))
    )


def native(x: Any, name: str) -> Array:
    """A foreign array (:func:`is_foreign`) as a NumPy (host) or CuPy (CUDA) view of its memory."""
    device = x.__dlpack_device__()
    try:
        if int(device[0]) in _HOST_DEVICES:
            return np.from_dlpack(x)
        if int(device[0]) in _CUDA_DEVICES:
            try:
                import cupy
            except ImportError:
                raise TypeError(
                    f"{name}: convloc takes CUDA arrays of {_module_of(x)} through CuPy, which is not "
                    "installed (pip install cupy-cuda12x)"
                ) from None
            with cupy.cuda.Device(int(device[1])):
                return cupy.from_dlpack(x)
    except BufferError as e:  # e.g. a dtype NumPy has no name for
        raise TypeError(f"{name}: {type(x).__name__} could not be read through DLPack: {e}") from e
    raise TypeError(f"{name}: expected a CPU or CUDA array, got one on DLPack device {tuple(device)}")


def _from_dlpack_of(x: Any) -> Callable[[Array], Any] | None:
    """How results go back to x's framework: the ``from_dlpack`` of its array namespace (the Array
    API), else of its module or a package above it (PaddlePaddle, user types),
    else ``experimental.dlpack.from_dlpack`` of its top package, which takes a DLPack capsule
    (TensorFlow). None: no such function, the results stay NumPy / CuPy."""
    space = getattr(x, "__array_namespace__", None)
    if space is not None:
        return space().from_dlpack
    module = type(x).__module__
    while module:
        load = getattr(sys.modules.get(module), "from_dlpack", None)
        if callable(load):
            return load
        module = module.rpartition(".")[0]
    dlpack = getattr(getattr(sys.modules.get(_module_of(x)), "experimental", None), "dlpack", None)
    load = getattr(dlpack, "from_dlpack", None)
    if callable(load):
        return lambda result: load(result.__dlpack__())
    return None


_IMPORTERS: dict[type, Callable[[Array], Any] | None] = {}


def _back(result: Any, load: Callable[[Array], Any]) -> Any:
    """result with its NumPy / CuPy arrays (at the top, or in a tuple or list) passed through load."""
    if isinstance(result, (tuple, list)):
        return type(result)(_back(r, load) for r in result)
    if isinstance(result, np.ndarray) or is_cupy(result):
        return load(result)
    return result


def _natives(values, names, found: list, jax: bool) -> list:
    """values (named by names) with each foreign array, at the top or in a tuple or list, as its
    native view; the first foreign array is appended to found."""
    out = []
    for v, name in zip(values, names):
        if isinstance(v, (tuple, list)):
            v = type(v)(_natives(v, (f"{name}[{i}]" for i in range(len(v))), found, jax))
        elif is_foreign(v, jax):
            if not found:
                found.append(v)
            v = native(v, name)
        out.append(v)
    return out


# Argument types that are never foreign arrays: the check of a NumPy call stops at a set lookup each.
_PLAIN = frozenset({np.ndarray, float, int, bool, str, type(None)})


def _has_foreign(values, jax: bool) -> bool:
    for v in values:
        kind = type(v)
        if kind in _PLAIN:
            continue
        if kind is tuple or kind is list:
            if _has_foreign(v, jax):
                return True
        elif is_foreign(v, jax):
            return True
    return False


def accepts_any_framework(fn: F | None = None, *, jax: bool = False):
    """fn (a function of :mod:`convloc.ops`) for arrays of any DLPack producer: foreign arrays
    among its arguments (or in a list or tuple argument) reach it as zero-copy NumPy / CuPy views,
    and its NumPy / CuPy results go back to the framework of the first of them, on its device; a
    call whose first argument is a NumPy array returns NumPy.
    ``jax=True`` (``@accepts_any_framework(jax=True)``): JAX arrays too, for a function that has no
    XLA target and so takes concrete JAX arrays through DLPack."""
    if fn is None:
        return functools.partial(accepts_any_framework, jax=jax)
    params = list(inspect.signature(fn).parameters)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        # A NumPy array first: a NumPy call (other DLPack arrays are read as NumPy by as_array).
        if (args and type(args[0]) is np.ndarray) or not (
            _has_foreign(args, jax) or (kwargs and _has_foreign(kwargs.values(), jax))
        ):
            return fn(*args, **kwargs)
        found: list = []
        args = _natives(args, params + [f"args[{i}]" for i in range(len(params), len(args))], found, jax)
        kwargs = dict(zip(kwargs, _natives(kwargs.values(), kwargs, found, jax)))
        kind = type(found[0])
        if kind not in _IMPORTERS:
            _IMPORTERS[kind] = _from_dlpack_of(found[0])
        load = _IMPORTERS[kind]
        result = fn(*args, **kwargs)
        return result if load is None else _back(result, load)

    return call  # type: ignore[return-value]


def as_array(x: Any, name: str) -> Array:
    """x as an array the kernels take: NumPy, torch, CuPy and JAX arrays as they are (byte-swapped
    NumPy arrays, such as ``'>f4'`` on a little-endian machine, converted to this machine's byte
    order), other DLPack producers as zero-copy views (:func:`native`), other objects (lists,
    scalars) as NumPy."""
    if isinstance(x, np.ndarray):
        return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))
    if is_torch(x) or is_cupy(x) or is_jax(x):
        if not (hasattr(x, "shape") and hasattr(x, "dtype")):  # named like one, but not an array
            raise TypeError(f"{name}: expected an array, got {type(x).__module__}.{type(x).__name__} "
                            "without a shape and dtype")  # fmt: skip
        return x
    if is_foreign(x):
        return native(x, name)
    try:
        arr = np.asarray(x)
    except Exception as e:  # noqa: BLE001 - any failure means "not array-like"
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}") from e
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a numeric array, got {type(x).__name__} of dtype {arr.dtype}")
    return arr


def same_framework(reference: tuple[str, Any], *others: tuple[str, Any]) -> None:
    """Raises TypeError unless every array comes from the reference's framework (NumPy arrays may
    come with JAX ones, which JAX takes as constants)."""
    ref_name, ref = reference
    want = framework(ref)
    for name, x in others:
        if x is not None and framework(x) != want and {want, framework(x)} != {"jax", "numpy"}:
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
    if is_jax(x):  # always contiguous; float64 and int64 only with jax_enable_x64
        import jax

        return x if dtype is None else x.astype(jax.dtypes.canonicalize_dtype(dtype))
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
    """The array module of x's framework (numpy, torch, cupy or jax.numpy), for framework-generic
    math."""
    if is_torch(x):
        import torch

        return torch
    if is_cupy(x):
        import cupy

        return cupy
    if is_jax(x):
        import jax.numpy as jnp

        return jnp
    return np


def on_cpu(x: Array) -> bool:
    return not is_cupy(x) and not (is_torch(x) and x.is_cuda)
