"""The wheel matrix agrees with what the package says it supports."""

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def test_wheels_cover_every_supported_python():
    low = re.fullmatch(r">=3\.(\d+)", PYPROJECT["project"]["requires-python"]).group(1)
    built = sorted(int(m) for m in re.findall(r"cp3(\d+)-\*", PYPROJECT["tool"]["cibuildwheel"]["build"]))
    assert built == list(range(int(low), built[-1] + 1)), "a gap in the CPython versions built"
    assert built[-1] >= 14


def test_wheels_for_every_platform():
    cibw = PYPROJECT["tool"]["cibuildwheel"]
    assert set(cibw["linux"]["archs"]) == {"x86_64", "aarch64"}
    assert set(cibw["macos"]["archs"]) == {"arm64", "x86_64"}
    assert cibw["windows"]["archs"] == ["AMD64"]
    # CUDA on the Linux x86-64 wheels only.
    assert cibw["linux"]["environment"]["CONVLOC_CUDA"] == "OFF"
    (cuda,) = [o for o in cibw["overrides"] if o["environment"].get("CONVLOC_CUDA") == "ON"]
    assert cuda["select"] == "*-manylinux_x86_64"
