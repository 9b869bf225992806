"""convloc: C++/CUDA kernels for localising objects with convnets.

Boxes (NMS, IoU), RoI pooling, deconvolution, the permutohedral lattice and dense CRFs,
region proposals, and the R-CNN / FCN / CRF-as-RNN / face-verification pipelines built on
them. Functions in :mod:`convloc.ops` accept NumPy, PyTorch and CuPy arrays and those of any
other framework that speaks DLPack; C programs link the library that :func:`get_library` names.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from typing import Any

from convloc import ops
from convloc._kernels import runtime
from convloc.ops.lattice import PermutohedralLattice

__version__: str = runtime.info()["version"]


def info() -> dict[str, Any]:
    """What this build carries and what this machine can use.

    Keys: version, compiled_with_cuda, cuda_architectures, cuda_runtime_version,
    cuda_device_count (0 without a driver or GPU), num_threads, compiler, simd.
    """
    return runtime.info()


def cuda_available() -> bool:
    """Whether torch's CUDA tensors can run convloc's CUDA kernels here: a CUDA build of convloc,
    torch, and a GPU that torch sees."""
    if not runtime.compiled_with_cuda():
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def get_num_threads() -> int:
    """Number of CPU threads the kernels use."""
    return runtime.get_num_threads()


def set_num_threads(n: int) -> None:
    """Sets the CPU threads the kernels use (n <= 0: all cores). Results do not depend on it.

    At most :func:`max_threads` (4 per hardware thread): a larger ``n`` gives that many. Where the
    system refuses to start that many threads, the kernels run on those it started.
    """
    runtime.set_num_threads(n)


def max_threads() -> int:
    """The most CPU threads :func:`set_num_threads` gives: 4 per hardware thread."""
    return runtime.max_threads()


def cached_bytes() -> int:
    """Bytes of CPU scratch memory kept for reuse between calls (at most 512 MiB).

    The large buffers of a dense-CRF or lattice call are kept after it returns, so that the next
    call finds their pages already mapped (first-touching fresh memory costs about as much as a
    mean-field iteration on a 512×512 image).
    """
    return runtime.cached_bytes()


def empty_cache() -> int:
    """Gives the cached scratch memory (see :func:`cached_bytes`) back to the system; returns bytes freed."""
    return runtime.empty_cache()


def get_include() -> str:
    """The folder of convloc's C header: ``#include <convloc/convloc.h>`` with ``-I`` this folder."""
    return os.path.join(os.path.dirname(__file__), "include")


def get_library() -> str:
    """The shared library with convloc's C API, to link against: ``libconvloc.so`` (Linux),
    ``libconvloc.dylib`` (macOS), or the import library ``convloc.lib`` beside ``convloc.dll``
    (Windows). A program finds it at run time through its rpath or the loader's search path."""
    name = {"win32": "convloc.lib", "darwin": "libconvloc.dylib"}.get(sys.platform, "libconvloc.so")
    return os.path.join(os.path.dirname(__file__), "lib", name)


__all__ = [
    "__version__",
    "get_include",
    "get_library",
    "info",
    "cuda_available",
    "get_num_threads",
    "set_num_threads",
    "max_threads",
    "cached_bytes",
    "empty_cache",
    "ops",
    "PermutohedralLattice",
]


class _RegisterWithTorch(importlib.abc.MetaPathFinder):
    """Registers convloc's ops with torch as soon as torch has been imported, so that a program
    exported with ``torch.export`` loads after ``import convloc``, without convloc importing torch."""

    def find_spec(self, name, path, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torch")
        if spec is not None and spec.loader is not None:
            run_torch = spec.loader.exec_module

            def run_then_register(module):
                run_torch(module)
                import convloc._torch  # noqa: F401

            spec.loader.exec_module = run_then_register
        return spec


if "torch" in sys.modules:
    import convloc._torch  # noqa: F401
elif importlib.util.find_spec("torch") is not None:
    sys.meta_path.insert(0, _RegisterWithTorch())
