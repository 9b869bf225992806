from __future__ import annotations

import importlib.util
import os
import re
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

# tests/reference holds the slow, obvious implementations the kernels are compared with.
sys.path.insert(0, os.path.dirname(__file__))


# Test modules that import an optional framework (torch, JAX) at the top: without it (a NumPy-only
# install, or a Python that it no longer supports) they are not collected, and the header says so.
_MISSING = {
    name: re.compile(rf"^(import {name}|from {name}\b)", re.M)
    for name in ("torch", "jax")
    if importlib.util.find_spec(name) is None
}
_left_out: dict[str, list[str]] = {}


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    if not _MISSING or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    text = collection_path.read_text()
    for name, imports in _MISSING.items():
        if imports.search(text):
            _left_out.setdefault(name, []).append(collection_path.name)
            return True
    return None


def pytest_report_header(config) -> str | None:
    if not _MISSING:
        return None
    return f"{' and '.join(_MISSING)} not installed: the modules that import them are not collected"


def pytest_terminal_summary(terminalreporter) -> None:
    for name, files in sorted(_left_out.items()):
        terminalreporter.write_line(f"not collected without {name}: {', '.join(sorted(files))}")


def pytest_collection_modifyitems(config, items):
    import convloc

    if convloc.cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and a CUDA build of convloc")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's name: fresh inputs per test, reproducible runs."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def threads():
    """Restores convloc's thread count after a test that changes it."""
    import convloc

    before = convloc.get_num_threads()
    yield
    convloc.set_num_threads(0 if before == os.cpu_count() else before)


@pytest.fixture
def one_thread():
    """Training results depend on torch's thread count (reduction order): pin it, then restore."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=["default", "narrow"])
def vector_width(request):
    """Runs the test with the default kernels, then with the 32-byte-vector ones: where the CPU has
    AVX-512 the default for some kernels are 64-byte ones (elsewhere both runs are the same)."""
    from convloc import _C

    _C._narrow_vectors(request.param == "narrow")
    yield request.param
    _C._narrow_vectors(False)
