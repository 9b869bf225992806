"""The C API (include/convloc/convloc.h, libconvloc): a C program compiled against the installed header
and library, and every function through ctypes, against the Python results; its errors; its symbols."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import convloc
from convloc import ops

HERE = Path(__file__).resolve().parent
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF (Linux) only")


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class Params(ctypes.Structure):  # convloc_conv_transpose2d_params
    _fields_ = [(f, ctypes.c_int64 * 2) for f in ("stride", "padding", "output_padding", "dilation")] + [
        ("groups", ctypes.c_int64)
    ]


class CrfKernel(ctypes.Structure):  # convloc_crf_kernel
    _fields_ = [
        ("kind", ctypes.c_int),
        ("weight", ctypes.c_double),
        ("sxy", ctypes.c_double),
        ("srgb", ctypes.c_double),
        ("features", ctypes.POINTER(DLTensor)),
    ]


GAUSSIAN, BILATERAL, FEATURES = 0, 1, 2
OK, VALUE, TYPE = 0, 1, 2
CODES = {"f": 2, "i": 0, "u": 1, "b": 6}


def tensor(a: np.ndarray | None):
    """A DLTensor over a (which must outlive it), or NULL for None."""
    if a is None:
        return None
    t = DLTensor()
    t.data = a.ctypes.data
    t.device = DLDevice(1, 0)
    t.ndim = a.ndim
    t.dtype = DLDataType(CODES[a.dtype.kind], a.dtype.itemsize * 8, 1)
    t._shape = (ctypes.c_int64 * max(a.ndim, 1))(*a.shape)
    t.shape = t._shape
    return ctypes.pointer(t)


@pytest.fixture(scope="module")
def lib():
    lib = ctypes.CDLL(convloc.get_library())
    lib.convloc_last_error.restype = ctypes.c_char_p
    lib.convloc_version.restype = ctypes.c_char_p
    lib.convloc_nms.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_double] + [ctypes.c_void_p] * 3
    for name in ("roi_pool", "roi_pool_backward"):
        getattr(lib, f"convloc_{name}").argtypes = (
            [ctypes.c_void_p] * (2 + (name != "roi_pool")) + [ctypes.c_double] + [ctypes.c_void_p] * 2
        )
    lib.convloc_roi_align.argtypes = (
        [ctypes.c_void_p] * 2 + [ctypes.c_double, ctypes.c_int, ctypes.c_int] + [ctypes.c_void_p] * 2
    )
    lib.convloc_roi_align_backward.argtypes = lib.convloc_roi_align.argtypes
    return lib


def error(lib) -> str:
    return lib.convloc_last_error().decode()


def random_boxes(rng, n, dtype=np.float32, size=100.0):
    xy = rng.uniform(0, size, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(0, size / 2, (n, 2))], 1).astype(dtype)


def random_rois(rng, k, batch, size, dtype=np.float32):
    return np.concatenate([rng.integers(0, batch, (k, 1)), random_boxes(rng, k, np.float64, size)], 1).astype(
        dtype
    )


# ---- a C program ----


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")
def test_a_c_program_gives_pythons_results(rng, tmp_path):
    program = tmp_path / "capi_check"
    library = Path(convloc.get_library())
    compile_ = ["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{convloc.get_include()}"]
    compile_ += [
        str(HERE / "capi" / "capi_check.c"),
        str(library),
        f"-Wl,-rpath,{library.parent}",
        "-o",
        str(program),
    ]
    subprocess.run(compile_, check=True)

    n, b, c, h, w, k, labels, hh, ww = 300, 2, 16, 20, 24, 50, 5, 48, 64
    inputs = {
        "boxes": random_boxes(rng, n),
        "scores": rng.random(n).astype(np.float32),
        "features": rng.standard_normal((b, c, h, w)).astype(np.float32),
        "rois": random_rois(rng, k, b, 16 * min(h, w)),
        "unary": rng.uniform(0.1, 4, (1, labels, hh, ww)).astype(np.float32),
        "image": rng.integers(0, 256, (1, hh, ww, 3), dtype=np.uint8),
    }
    for name, a in inputs.items():
        a.tofile(tmp_path / name)
    (tmp_path / "sizes.txt").write_text(f"{n} {b} {c} {h} {w} {k} {labels} {hh} {ww}")
    run = subprocess.run([str(program), str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("iou_threshold: expected a number in [0, 1], got 1.5")

    keep = np.fromfile(tmp_path / "keep", np.int64)
    np.testing.assert_array_equal(keep, ops.nms(inputs["boxes"], inputs["scores"], 0.5))
    pooled = np.fromfile(tmp_path / "pooled", np.float32).reshape(k, c, 7, 7)
    np.testing.assert_array_equal(pooled, ops.roi_align(inputs["features"], inputs["rois"], 7, 1 / 16, 2))
    q, lab = ops.dense_crf(
        inputs["unary"][0],
        image=inputs["image"][0],
        kernels=[ops.Gaussian(3, 3), ops.Bilateral(80, 13, 10)],
        iterations=5,
        return_labels=True,
    )
    np.testing.assert_array_equal(np.fromfile(tmp_path / "q", np.float32).reshape(q.shape), q)
    np.testing.assert_array_equal(np.fromfile(tmp_path / "labels", np.int64).reshape(lab.shape), lab)


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")
@pytest.mark.parametrize("page", ["README.md", "docs/frameworks.md"])
def test_the_documented_c_example_runs(tmp_path, page):
    (example,) = re.findall(r"```c\n(.*?)```", (HERE.parent / page).read_text(), re.S)
    (tmp_path / "app.c").write_text(example)
    library = Path(convloc.get_library())
    compile_ = [
        "cc",
        "-std=c99",
        "-Wall",
        "-Werror",
        "-pedantic",
        f"-I{convloc.get_include()}",
        str(tmp_path / "app.c"),
    ]
    subprocess.run(
        [*compile_, str(library), f"-Wl,-rpath,{library.parent}", "-o", str(tmp_path / "app")], check=True
    )
    out = subprocess.run([str(tmp_path / "app")], capture_output=True, text=True, check=True).stdout
    assert re.search(r"kept 2\b.*\b0\b", out), out


@pytest.mark.skipif(shutil.which("c++") is None, reason="needs a C++ compiler (c++)")
def test_the_header_compiles_as_cpp_and_after_dlpack_h(tmp_path):
    source = tmp_path / "use.cpp"
    # A program with its own copy of DLPack's declarations (as <dlpack/dlpack.h> makes them) includes it first.
    dlpack = tmp_path / "dlpack" / "dlpack.h"
    dlpack.parent.mkdir()
    header = (Path(convloc.get_include()) / "convloc" / "convloc.h").read_text()
    start, end = header.index("#ifndef DLPACK_DLPACK_H_"), header.index("#endif", header.index("} DLTensor;"))
    dlpack.write_text("#define DLPACK_DLPACK_H_\n#include <stdint.h>\n" + header[start + 24 : end])
    source.write_text(
        "#include <dlpack/dlpack.h>\n#include <convloc/convloc.h>\n"
        "int main() { DLTensor t{}; return convloc_box_area(&t, &t, nullptr) == CONVLOC_OK; }\n"
    )
    cmd = [
        "c++",
        "-std=c++11",
        "-Wall",
        "-Werror",
        "-fsyntax-only",
        f"-I{tmp_path}",
        f"-I{convloc.get_include()}",
    ]
    subprocess.run([*cmd, str(source)], check=True)


# ---- the library ----


def test_the_library_says_its_version(lib):
    assert lib.convloc_version().decode() == convloc.__version__


@linux
@pytest.mark.skipif(shutil.which("nm") is None, reason="needs nm")
def test_only_the_c_api_is_exported():
    listing = subprocess.run(
        ["nm", "-D", "--defined-only", convloc.get_library()], capture_output=True, text=True, check=True
    )
    names = [line.split()[-1] for line in listing.stdout.splitlines() if line.strip()]
    assert names and all(n.startswith("convloc_") for n in names), [
        n for n in names if not n.startswith("convloc_")
    ]


@linux
def test_the_library_has_its_own_name_and_no_rpath():
    out = subprocess.run(["readelf", "-d", convloc.get_library()], capture_output=True, text=True)
    if out.returncode:
        pytest.skip("needs readelf")
    assert "Library soname: [libconvloc.so]" in out.stdout
    assert "RPATH" not in out.stdout and "RUNPATH" not in out.stdout


# ---- every function, against Python ----


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 200])
def test_boxes(lib, rng, n, dtype):
    boxes, scores = random_boxes(rng, n, dtype), rng.random(n).astype(dtype)
    other = random_boxes(rng, 5, dtype)
    area, iou = np.empty(n, dtype), np.empty((n, 5), dtype)
    assert lib.convloc_box_area(tensor(boxes), tensor(area), None) == OK
    np.testing.assert_array_equal(area, ops.box_area(boxes))
    assert lib.convloc_box_iou(tensor(boxes), tensor(other), tensor(iou), None) == OK
    np.testing.assert_array_equal(iou, ops.box_iou(boxes, other))
    keep, count = np.empty(n, np.int64), ctypes.c_int64(-1)
    assert (
        lib.convloc_nms(tensor(boxes), tensor(scores), None, 0.3, tensor(keep), ctypes.byref(count), None)
        == OK
    )
    np.testing.assert_array_equal(keep[: count.value], ops.nms(boxes, scores, 0.3))
    idxs = rng.integers(0, 3, n).astype(np.int64)
    assert (
        lib.convloc_nms(
            tensor(boxes), tensor(scores), tensor(idxs), 0.3, tensor(keep), ctypes.byref(count), None
        )
        == OK
    )
    np.testing.assert_array_equal(keep[: count.value], ops.batched_nms(boxes, scores, idxs, 0.3))


def test_float16_box_and_roi_functions_equal_python(lib, rng):
    boxes, other = random_boxes(rng, 9, np.float16), random_boxes(rng, 5, np.float16)
    area, iou = np.empty(9, np.float16), np.empty((9, 5), np.float16)
    assert lib.convloc_box_area(tensor(boxes), tensor(area), None) == OK, error(lib)
    np.testing.assert_array_equal(area, ops.box_area(boxes))
    assert lib.convloc_box_iou(tensor(boxes), tensor(other), tensor(iou), None) == OK, error(lib)
    np.testing.assert_array_equal(iou, ops.box_iou(boxes, other))
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float16)
    rois = random_rois(rng, 4, 2, 40, np.float16)
    out = np.empty((4, 3, 2, 3), np.float16)
    assert lib.convloc_roi_align(tensor(x), tensor(rois), 0.25, 2, 1, tensor(out), None) == OK, error(lib)
    np.testing.assert_array_equal(out, ops.roi_align(x, rois, (2, 3), 0.25, 2, True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [0, 1, 13])
def test_roi_pool_and_align_forward_and_backward(lib, rng, k, dtype):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 9, 11)).astype(dtype)
    rois = random_rois(rng, k, 2, 40, dtype)
    for name, call in (
        ("roi_pool", lambda i, r: ops.roi_pool(i, r, (2, 3), 0.25)),
        ("roi_align", lambda i, r: ops.roi_align(i, r, (2, 3), 0.25, 2, True)),
    ):
        extra = () if name == "roi_pool" else (2, 1)
        out = np.empty((k, 3, 2, 3), dtype)
        fn = getattr(lib, f"convloc_{name}")
        assert fn(tensor(x), tensor(rois), 0.25, *extra, tensor(out), None) == OK, error(lib)
        np.testing.assert_array_equal(out, call(x, rois))
        xt = torch.from_numpy(x).requires_grad_()
        grad = rng.standard_normal((k, 3, 2, 3)).astype(dtype)
        call(xt, torch.from_numpy(rois)).backward(torch.from_numpy(grad))
        grad_input = np.empty_like(x)
        backward = getattr(lib, f"convloc_{name}_backward")
        args = (tensor(x),) if name == "roi_pool" else ()
        assert backward(tensor(grad), tensor(rois), *args, 0.25, *extra, tensor(grad_input), None) == OK, (
            error(lib)
        )
        np.testing.assert_array_equal(grad_input, xt.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_transpose2d_forward_and_backward(lib, rng, dtype):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 4, 5, 7)).astype(dtype)
    weight = rng.standard_normal((4, 3, 3, 4)).astype(dtype)
    bias = rng.standard_normal(6).astype(dtype)
    p = Params((2, 1), (1, 0), (1, 0), (1, 2), 2)
    geometry = dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=2, dilation=(1, 2))
    shape = (ctypes.c_int64 * 4)()
    assert (
        lib.convloc_conv_transpose2d_output_shape(
            (ctypes.c_int64 * 4)(*x.shape), (ctypes.c_int64 * 4)(*weight.shape), ctypes.byref(p), shape
        )
        == OK
    )
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, weight, bias))
    want = ops.conv_transpose2d(xt, wt, bt, **geometry)
    assert list(shape) == list(want.shape)
    out = np.empty(tuple(shape), dtype)
    assert (
        lib.convloc_conv_transpose2d(
            tensor(x), tensor(weight), tensor(bias), ctypes.byref(p), tensor(out), None
        )
        == OK
    )
    np.testing.assert_array_equal(out, want.detach().numpy())
    grad = rng.standard_normal(out.shape).astype(dtype)
    want.backward(torch.from_numpy(grad))
    gi, gw, gb = np.empty_like(x), np.empty_like(weight), np.empty_like(bias)
    assert (
        lib.convloc_conv_transpose2d_backward(
            tensor(grad), tensor(x), tensor(weight), ctypes.byref(p), tensor(gi), tensor(gw), tensor(gb), None
        )
        == OK
    ), error(lib)
    for got, t in ((gi, xt), (gw, wt), (gb, bt)):
        np.testing.assert_array_equal(got, t.grad.numpy())
    bad = Params((0, 1), (0, 0), (0, 0), (1, 1), 1)
    assert (
        lib.convloc_conv_transpose2d_output_shape(
            (ctypes.c_int64 * 4)(*x.shape), (ctypes.c_int64 * 4)(*weight.shape), ctypes.byref(bad), shape
        )
        == VALUE
    )
    assert error(lib).startswith("stride: expected positive values")


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_permutohedral_filter(lib, rng, batched, dtype):
    lead = (2,) if batched else ()
    values = rng.standard_normal(lead + (300, 3)).astype(dtype)
    features = rng.standard_normal(lead + (300, 4)).astype(dtype)
    for transpose in (0, 1):
        for exclude in (0, 1):
            out = np.empty_like(values)
            assert (
                lib.convloc_permutohedral_filter(
                    tensor(values), tensor(features), transpose, exclude, tensor(out), None
                )
                == OK
            )
            want = ops.permutohedral_filter(
                values, features, transpose=bool(transpose), exclude_self=bool(exclude)
            )
            np.testing.assert_array_equal(out, want)


def crf(lib, unary, image, kernels, iterations=4, labels=True):
    """(status, Q, labels) of convloc_dense_crf; kernels as (kind, weight, sxy, srgb, features)."""
    q = np.empty_like(unary)
    lab = np.empty((unary.shape[0],) + unary.shape[2:], np.int64) if labels else None
    keep = [tensor(k[4]) for k in kernels]  # (alive for the call)
    array = (CrfKernel * len(kernels))(*(CrfKernel(*k[:4], f) for k, f in zip(kernels, keep)))
    status = lib.convloc_dense_crf(
        tensor(unary), tensor(image), array, len(kernels), iterations, tensor(q), tensor(lab)
    )
    return status, q, lab


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_crf_equals_python(lib, rng, dtype):
    unary = rng.uniform(0.1, 3, (2, 4, 19, 23)).astype(dtype)
    image = rng.integers(0, 256, (2, 19, 23, 3), dtype=np.uint8)
    kernels = [(GAUSSIAN, 3.0, 3.0, 0.0, None), (BILATERAL, 10.0, 50.0, 13.0, None)]
    status, q, lab = crf(lib, unary, image, kernels)
    assert status == OK, error(lib)
    want_q, want_lab = ops.dense_crf(
        unary,
        image=image,
        kernels=[ops.Gaussian(3, 3), ops.Bilateral(50, 13, 10)],
        iterations=4,
        return_labels=True,
    )
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(lab, want_lab)
    # a float image, and no labels
    status, q, lab = crf(lib, unary, image.astype(dtype), kernels[1:], labels=False)
    assert status == OK and lab is None
    np.testing.assert_array_equal(
        q, ops.dense_crf(unary, image=image.astype(dtype), kernels=[ops.Bilateral(50, 13, 10)], iterations=4)
    )


def test_dense_crf_every_way_of_filtering_a_gaussian(lib, rng):
    # 2-D: the coarse grid (sxy >= 2) and the exact grid; 3-D: the exact grid (sxy <= 6) and the lattice
    for shape, sxy in (
        ((1, 3, 20, 30), 4.5),
        ((1, 3, 20, 30), 1.5),
        ((1, 2, 6, 7, 8), 2.0),
        ((1, 2, 6, 7, 8), 7.0),
        ((1, 3, 20, 30), 1e12),  # wider than 1000 images: filtered as that wide, as in Python
    ):
        unary = rng.uniform(0.1, 3, shape).astype(np.float32)
        status, q, _ = crf(lib, unary, None, [(GAUSSIAN, 2.5, sxy, 0.0, None)], iterations=3)
        assert status == OK, error(lib)
        want = ops.dense_crf(unary[0], kernels=[ops.Gaussian(sxy, 2.5)], iterations=3, ndim=len(shape) - 2)
        np.testing.assert_array_equal(q[0], want)
    # features of the caller's
    unary = rng.uniform(0.1, 3, (1, 3, 10, 12)).astype(np.float32)
    features = rng.standard_normal((1, 120, 3)).astype(np.float32)
    status, q, _ = crf(lib, unary, None, [(FEATURES, 2.0, 0.0, 0.0, features)])
    assert status == OK, error(lib)
    want = ops.dense_crf(unary[0], kernels=[ops.Features(features[0].T, 2.0)], iterations=4)
    np.testing.assert_array_equal(q[0], want)


def test_dense_crf_errors(lib, rng):
    unary = rng.uniform(0.1, 3, (1, 3, 8, 9)).astype(np.float32)
    image = rng.integers(0, 256, (1, 8, 9, 3), dtype=np.uint8)
    cases = [
        (
            dict(image=None, kernels=[(BILATERAL, 1.0, 5.0, 5.0, None)]),
            VALUE,
            "image: a bilateral kernel needs the image",
        ),
        (
            dict(kernels=[(GAUSSIAN, 1.0, -1.0, 0.0, None)]),
            VALUE,
            "kernels[0].sxy: expected a positive finite number",
        ),
        (
            dict(kernels=[(BILATERAL, 1.0, 5.0, 0.0, None)]),
            VALUE,
            "kernels[0].srgb: expected a positive finite",
        ),
        (dict(kernels=[(7, 1.0, 5.0, 0.0, None)]), VALUE, "kernels[0].kind: expected CONVLOC_CRF_GAUSSIAN"),
        (
            dict(kernels=[(FEATURES, 1.0, 0.0, 0.0, None)]),
            VALUE,
            "kernels[0].features: expected a DLTensor, got NULL",
        ),
        (dict(kernels=[]), VALUE, "kernels: expected at least one pairwise kernel"),
        (
            dict(kernels=[(BILATERAL, 1.0, 5.0, 1e-30, None)]),
            VALUE,
            "kernels[0]: sxy or srgb too small for this image",
        ),
        (dict(image=image[:, :4]), VALUE, "image: expected shape [B, *spatial, C]"),
        (dict(unary=unary.astype(np.int32)), TYPE, "unary: expected float32 or float64, got int32"),
        (dict(unary=unary[:, :1]), VALUE, "unary: expected at least 2 labels"),
        (dict(iterations=-1), VALUE, "iterations: expected a number >= 0"),
        (
            dict(kernels=[(GAUSSIAN, 1e36, 3.0, 0.0, None)]),
            VALUE,
            "kernels: the pairwise energy could reach 7.2e+37",
        ),
    ]
    q = np.empty_like(unary)
    assert lib.convloc_dense_crf(tensor(unary), None, None, -1, 2, tensor(q), None) == VALUE
    assert error(lib) == "kernels: expected at least one pairwise kernel, got -1"
    for change, code, message in cases:
        args = dict(unary=unary, image=image, kernels=[(GAUSSIAN, 3.0, 3.0, 0.0, None)], iterations=2)
        args.update(change)
        status, _, _ = crf(lib, args["unary"], args["image"], args["kernels"], args["iterations"])
        assert (status, error(lib)[: len(message)]) == (code, message)


def test_errors_name_the_argument_and_stay_with_their_thread(lib, rng):
    boxes, scores = random_boxes(rng, 4), rng.random(4).astype(np.float32)
    keep, count = np.empty(4, np.int64), ctypes.c_int64()
    boxes[1, 2] = np.nan
    assert (
        lib.convloc_nms(tensor(boxes), tensor(scores), None, 0.5, tensor(keep), ctypes.byref(count), None)
        == VALUE
    )
    assert error(lib).startswith("boxes: expected finite boxes")
    seen = []
    worker = threading.Thread(target=lambda: seen.append(error(lib)))
    worker.start()
    worker.join()
    assert seen == [""]  # another thread's calls have not failed
    assert error(lib).startswith("boxes:")
    area = np.empty(4, np.float32)
    assert lib.convloc_box_area(tensor(random_boxes(rng, 4)), tensor(area), None) == OK
    assert error(lib) == ""  # a success clears it
    cases = [
        (
            lambda: lib.convloc_box_area(None, tensor(area), None),
            VALUE,
            "boxes: expected a DLTensor, got NULL",
        ),
        (
            lambda: lib.convloc_box_area(
                tensor(scores[:, None].repeat(4, 1).astype(np.int32)), tensor(area), None
            ),
            TYPE,
            "boxes: expected float32",
        ),
        (
            lambda: lib.convloc_box_area(tensor(boxes[:, :3].copy()), tensor(area), None),
            VALUE,
            "boxes: expected shape [N, 4]",
        ),
        (
            lambda: lib.convloc_nms(tensor(boxes), tensor(scores), None, 0.5, tensor(keep), None, None),
            VALUE,
            "count: expected a pointer",
        ),
    ]
    for call, code, message in cases:
        assert (call(), error(lib)[: len(message)]) == (code, message)
    # a strided DLTensor is refused: the C API does not copy
    t = tensor(random_boxes(rng, 4))
    t.contents.strides = (ctypes.c_int64 * 2)(1, 4)
    assert lib.convloc_box_area(t, tensor(area), None) == VALUE
    assert error(lib) == "boxes: expected a C-contiguous array"


def test_threads(lib):
    before, python_before = lib.convloc_get_num_threads(), convloc.get_num_threads()
    convloc.set_num_threads(2)
    try:
        lib.convloc_set_num_threads(1)
        # each library its own pool
        assert lib.convloc_get_num_threads() == 1 and convloc.get_num_threads() == 2
        lib.convloc_set_num_threads(10**6)  # capped, as in Python
        assert lib.convloc_get_num_threads() == convloc.max_threads()
        lib.convloc_set_num_threads(0)
        assert lib.convloc_get_num_threads() == before
    finally:
        convloc.set_num_threads(python_before)
