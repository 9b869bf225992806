"""convloc.ops with arrays of every framework: read without copies, results in the caller's own type,
equal to the NumPy path; and convloc.tf inside tf.function. TensorFlow and the DLPack-only type go
through DLPack; torch and JAX through their own layers (tests/test_torch_contract.py,
tests/test_jax.py test those further).

JAX and TensorFlow are optional here (their tests skip where they are missing); CI installs both.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import pytest

import convloc
import convloc._C as _C
from convloc import ops


class Minimal:
    """An array type of its own that speaks nothing but DLPack (no buffer protocol, no __array__)."""

    def __init__(self, data: np.ndarray, device: tuple[int, int] = (1, 0), versioned: bool = True):
        self._data, self._device, self._versioned = data, device, versioned

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        if not self._versioned:  # a producer of the first protocol, which knows no keywords but stream
            if max_version is not None:
                raise TypeError("__dlpack__() got an unexpected keyword argument 'max_version'")
            return self._data.__dlpack__()
        return self._data.__dlpack__(max_version=max_version)

    def __dlpack_device__(self):
        return self._device


def from_dlpack(x: Any) -> Minimal:
    """Minimal's framework importer: found by convloc through type(x).__module__."""
    return Minimal(np.from_dlpack(x))


@dataclasses.dataclass
class Framework:
    name: str
    make: Callable[[np.ndarray], Any]  # a NumPy array as this framework's array
    pointer: Callable[[Any], int]  # the address of the array's first element, by the framework's own means
    kind: type  # what its arrays are


def _numpy() -> Framework:
    return Framework("numpy", np.ascontiguousarray, lambda x: x.ctypes.data, np.ndarray)


def _torch() -> Framework:
    torch = pytest.importorskip("torch")
    return Framework("torch", torch.from_numpy, lambda x: x.data_ptr(), torch.Tensor)


def _jax() -> Framework:
    jax = pytest.importorskip("jax")
    if not convloc.info()["xla_ffi"]:
        pytest.skip("JAX arrays run through convloc's XLA FFI handlers, which this build lacks")
    jnp = jax.numpy
    return Framework("jax", jnp.asarray, lambda x: x.unsafe_buffer_pointer(), jax.Array)


def _tf() -> Framework:
    tf = pytest.importorskip("tensorflow")
    # TensorFlow has no public address accessor; its __array__ shares a CPU tensor's memory.
    return Framework("tensorflow", tf.constant, lambda x: np.asarray(x).ctypes.data, tf.Tensor)


def _minimal() -> Framework:
    return Framework("minimal", Minimal, lambda x: x._data.ctypes.data, Minimal)


FRAMEWORKS = {f.__name__[1:]: f for f in (_numpy, _torch, _jax, _tf, _minimal)}


@pytest.fixture(params=list(FRAMEWORKS))
def fw(request) -> Framework:
    return FRAMEWORKS[request.param]()


def host(x: Any) -> np.ndarray:
    return np.from_dlpack(x)


def random_boxes(rng, n: int) -> np.ndarray:
    xy = rng.uniform(0, 50, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(1, 30, (n, 2))], 1).astype(np.float32)


def problems(rng) -> dict[str, tuple[Callable[..., Any], list[np.ndarray], dict]]:
    """op name: (function, array arguments, other keyword arguments), one call per op family."""
    boxes = random_boxes(rng, 40)
    feats = rng.standard_normal((2, 3, 12, 10)).astype(np.float32)
    rois = np.concatenate([rng.integers(0, 2, (7, 1)), random_boxes(rng, 7) / 5], 1).astype(np.float32)
    unary = rng.uniform(0.1, 3, (4, 9, 11)).astype(np.float32)
    image = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    values, features = (rng.standard_normal((50, c)).astype(np.float32) for c in (2, 3))
    return {
        "box_iou": (ops.box_iou, [boxes, boxes[:9]], {}),
        "nms": (ops.nms, [boxes, rng.random(40).astype(np.float32)], {"iou_threshold": 0.5}),
        "roi_align": (ops.roi_align, [feats, rois], {"output_size": 3, "spatial_scale": 0.5}),
        "roi_pool": (ops.roi_pool, [feats, rois], {"output_size": 2}),
        "conv_transpose2d": (
            ops.conv_transpose2d,
            [feats, rng.standard_normal((3, 2, 4, 4)).astype(np.float32)],
            {"stride": 2, "padding": 1},
        ),
        "permutohedral_filter": (ops.permutohedral_filter, [values, features], {"normalization": "after"}),
        "dense_crf": (
            lambda u, img, **kw: ops.dense_crf(u, image=img, **kw),
            [unary, image],
            {"iterations": 3, "return_labels": True},
        ),
        "grid_crf": (ops.grid_crf, [unary, image.astype(np.float32)], {"iterations": 2}),
    }


@pytest.mark.parametrize("op", list(problems(np.random.default_rng(0))))
def test_results_come_back_in_the_callers_type_and_equal_numpys(fw, rng, op):
    fn, arrays, kwargs = problems(rng)[op]
    want = fn(*arrays, **kwargs)
    got = fn(*[fw.make(a) for a in arrays], **kwargs)
    for g, w in zip(got, want) if isinstance(want, tuple) else [(got, want)]:
        assert isinstance(g, fw.kind), f"{op} gave {type(g)} for {fw.name} arrays"
        # JAX keeps 64-bit integers as int32 unless jax_enable_x64 is set: its from_dlpack decides.
        np.testing.assert_array_equal(host(g), w)


# (JAX arrays reach the kernels as XLA's own buffers, through the FFI handlers rather than convloc._C.)
@pytest.mark.parametrize("name", [n for n in FRAMEWORKS if n != "jax"])
@pytest.mark.parametrize("op", ["nms", "roi_align", "conv_transpose2d", "dense_crf"])
def test_contiguous_inputs_reach_the_kernels_without_a_copy(name, rng, monkeypatch, op):
    fw = FRAMEWORKS[name]()
    fn, arrays, kwargs = problems(rng)[op]
    inputs = [fw.make(a) for a in arrays]
    kernel = {"nms": "nms", "roi_align": "roi_align_forward", "conv_transpose2d": "deconv2d_forward"}.get(
        op, op
    )
    seen: list[int] = []
    run = getattr(_C, kernel)

    def spy(*args, **kw):
        seen.extend(host(a).ctypes.data for a in args if hasattr(a, "__dlpack__"))
        return run(*args, **kw)

    monkeypatch.setattr(_C, kernel, spy)
    fn(*inputs, **kwargs)
    for name, x in zip(["first", "second"], inputs):
        if not (op == "dense_crf" and name == "second"):  # the image goes in as bilateral features
            assert fw.pointer(x) in seen, f"{op}: the {name} {fw.name} input was copied"


def test_roi_boxes_as_a_list_of_foreign_arrays(rng):
    feats = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    per_image = [random_boxes(rng, 3) / 8, random_boxes(rng, 2) / 8]
    got = ops.roi_align(Minimal(feats), [Minimal(b) for b in per_image], 2)
    assert isinstance(got, Minimal)
    np.testing.assert_array_equal(host(got), ops.roi_align(feats, per_image, 2))


def test_read_only_and_first_protocol_producers(rng):
    boxes, scores = random_boxes(rng, 30), rng.random(30).astype(np.float32)
    want = ops.nms(boxes, scores, 0.4)
    boxes.flags.writeable = scores.flags.writeable = False  # exported only through versioned DLPack
    np.testing.assert_array_equal(host(ops.nms(Minimal(boxes), Minimal(scores), 0.4)), want)
    old = [Minimal(a.copy(), versioned=False) for a in (boxes, scores)]
    np.testing.assert_array_equal(host(ops.nms(*old, 0.4)), want)


def test_the_compiled_module_reads_versioned_capsules_and_their_read_only_flag(rng):
    boxes = random_boxes(rng, 5)
    boxes.flags.writeable = False
    out = np.empty(5, np.float32)
    _C.box_area(Minimal(boxes), out)
    np.testing.assert_array_equal(out, ops.box_area(boxes))
    with pytest.raises(ValueError, match="out: expected a writable array"):
        _C.box_area(boxes, Minimal(boxes))
    # a producer of the first protocol still works
    _C.box_area(Minimal(boxes.copy(), versioned=False), out)


def test_arrays_on_other_devices_are_refused_naming_the_argument(rng):
    boxes = Minimal(random_boxes(rng, 3), device=(4, 0))  # kDLOpenCL
    with pytest.raises(
        TypeError, match=r"boxes: expected a CPU or CUDA array, got one on DLPack device \(4, 0\)"
    ):
        ops.nms(boxes, np.ones(3, np.float32), 0.5)


def test_mixed_frameworks(rng):
    torch = pytest.importorskip("torch")
    boxes = random_boxes(rng, 4)
    with pytest.raises(TypeError, match="scores: expected a numpy array like boxes"):
        ops.nms(Minimal(boxes), torch.ones(4), 0.5)
    # a foreign array and a NumPy one: the first one's type comes back
    assert isinstance(ops.box_iou(Minimal(boxes), boxes), Minimal)
    iou = ops.box_iou(boxes, Minimal(boxes))
    assert isinstance(iou, np.ndarray)
    np.testing.assert_array_equal(iou, ops.box_iou(boxes, boxes))


# ---- TensorFlow graphs: convloc.tf ----


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def test_tf_function_equals_eager_and_numpy(tf, rng):
    import convloc.tf as ctf

    cases = problems(rng)
    boxes, scores = cases["nms"][1]
    feats, rois = cases["roi_align"][1]
    weight = cases["conv_transpose2d"][1][1]
    unary, image = cases["dense_crf"][1]
    values, features = cases["permutohedral_filter"][1]
    crf_features = rng.standard_normal((2, 99)).astype(np.float32)

    @tf.function
    def graph(boxes, scores, feats, rois, weight, unary, image, values, features, crf_features):
        per_image = [rois[:3, 1:], rois[3:, 1:]]
        return {
            "nms": ctf.nms(boxes, scores, 0.5),
            "batched_nms": ctf.batched_nms(boxes, scores, tf.range(40) % 3, 0.5),
            "box_iou": ctf.box_iou(boxes, boxes[:9]),
            "box_area": ctf.box_area(boxes),
            "box_area_int": ctf.box_area(tf.cast(boxes, tf.int32)),
            "box_iou_int": ctf.box_iou(tf.cast(boxes, tf.int64), tf.cast(boxes[:9], tf.int64)),
            "roi_align": ctf.roi_align(feats, rois, 3, 0.5, 2, True),
            "roi_align_list": ctf.roi_align(feats, per_image, 3, 0.5),
            "roi_pool": ctf.roi_pool(feats, rois, (2, 3)),
            "conv_transpose2d": ctf.conv_transpose2d(feats, weight, stride=2, padding=1),
            "dense_crf": ctf.dense_crf(
                unary, image=image, iterations=3, return_labels=True, return_energy=True
            ),
            "features_crf": ctf.dense_crf(unary, kernels=[ops.Features(crf_features, 3.0)]),
            "grid_crf": ctf.grid_crf(unary, tf.cast(image, tf.float32), iterations=2),
            "permutohedral_filter": ctf.permutohedral_filter(values, features, normalization="symmetric"),
            "bilateral_filter": ctf.bilateral_filter(image, 3.0, 20.0),
        }

    xyxy = [rois[:3, 1:], rois[3:, 1:]]
    want = {
        "nms": ops.nms(boxes, scores, 0.5),
        "batched_nms": ops.batched_nms(boxes, scores, np.arange(40) % 3, 0.5),
        "box_iou": ops.box_iou(boxes, boxes[:9]),
        "box_area": ops.box_area(boxes),
        "box_area_int": ops.box_area(boxes.astype(np.int32)),
        "box_iou_int": ops.box_iou(boxes.astype(np.int64), boxes[:9].astype(np.int64)),
        "roi_align": ops.roi_align(feats, rois, 3, 0.5, 2, True),
        "roi_align_list": ops.roi_align(feats, xyxy, 3, 0.5),
        "roi_pool": ops.roi_pool(feats, rois, (2, 3)),
        "conv_transpose2d": ops.conv_transpose2d(feats, weight, stride=2, padding=1),
        "dense_crf": ops.dense_crf(unary, image=image, iterations=3, return_labels=True, return_energy=True),
        "features_crf": ops.dense_crf(unary, kernels=[ops.Features(crf_features, 3.0)]),
        "grid_crf": ops.grid_crf(unary, image.astype(np.float32), iterations=2),
        "permutohedral_filter": ops.permutohedral_filter(values, features, normalization="symmetric"),
        "bilateral_filter": ops.bilateral_filter(image, 3.0, 20.0),
    }
    got = graph(boxes, scores, feats, rois, weight, unary, image, values, features, crf_features)
    for name, w in want.items():
        g = got[name]
        for gi, wi in zip(g, w) if isinstance(w, tuple) else [(g, w)]:
            assert isinstance(gi, tf.Tensor) and gi.dtype.as_numpy_dtype == wi.dtype, name
            np.testing.assert_array_equal(gi.numpy(), wi, err_msg=name)
    # eager calls of the same functions are convloc.ops with tf.Tensor in and out
    eager = ctf.nms(tf.constant(boxes), tf.constant(scores), 0.5)
    assert isinstance(eager, tf.Tensor)
    np.testing.assert_array_equal(eager.numpy(), want["nms"])


def test_tf_graph_shapes(tf, rng):
    import convloc.tf as ctf

    spec = tf.TensorSpec
    shapes = {}

    @tf.function(
        input_signature=[
            spec([None, 4]), spec([None]), spec([2, 3, 12, 10]), spec([7, 5]), spec([3, 2, 4, 4]),
            spec([4, 9, 11]), spec([9, 11, 3], tf.uint8),
        ]
    )  # fmt: skip
    def graph(boxes, scores, feats, rois, weight, unary, image):
        shapes["nms"] = ctf.nms(boxes, scores, 0.5).shape.as_list()
        shapes["box_iou"] = ctf.box_iou(boxes, boxes[:9]).shape.as_list()
        shapes["roi_align"] = ctf.roi_align(feats, rois, (3, 2)).shape.as_list()
        shapes["deconv"] = ctf.conv_transpose2d(feats, weight, stride=2, padding=1).shape.as_list()
        q, labels = ctf.dense_crf(unary, image=image, return_labels=True)
        shapes["crf"] = [q.shape.as_list(), labels.shape.as_list()]
        return q

    graph.get_concrete_function()
    assert shapes == {
        "nms": [None],
        "box_iou": [None, None],
        "roi_align": [7, 3, 3, 2],
        "deconv": [2, 2, 24, 20],
        "crf": [[4, 9, 11], [9, 11]],
    }


def test_tf_graph_errors_name_the_argument(tf, rng):
    import convloc.tf as ctf

    boxes = random_boxes(rng, 3)

    @tf.function
    def graph(boxes, scores):
        return ctf.nms(boxes, scores, 1.5)

    with pytest.raises(tf.errors.InvalidArgumentError, match="iou_threshold: expected a number in"):
        graph(boxes, np.ones(3, np.float32))
