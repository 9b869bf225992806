"""convloc's ops as torch sees them: registered on import, under autocast, in FX graphs, in
torch.compile graphs without breaks, exported and loaded, with autograd where they have it."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import convloc
import convloc.nn
from convloc import ops
from convloc.models.fast_rcnn import FastRCNN, FastRCNNConfig, fast_rcnn_loss


def run_fresh(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_convloc_registers_the_ops_once_torch_is_imported():
    out = run_fresh(
        """
        import sys
        import convloc
        assert "torch" not in sys.modules
        import torch
        print(sorted(n for n in ("dense_crf", "roi_align", "nms", "felzenszwalb") if hasattr(torch.ops.convloc, n)))
        """
    )
    assert out.strip() == "['dense_crf', 'felzenszwalb', 'nms', 'roi_align']"


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = convloc.nn.RoIAlign(3, 0.5, 2)
        self.up = convloc.nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)

    def forward(self, x, rois, boxes):
        return self.pool(x, rois).sum((2, 3)), self.up(x), ops.box_iou(boxes, boxes)


def head_inputs(rng):
    x = torch.from_numpy(rng.standard_normal((2, 4, 12, 12)).astype(np.float32))
    rois = torch.tensor([[0, 1, 1, 10, 10], [1, 2, 2, 20, 20.0]])
    boxes = torch.tensor([[0, 0, 5, 5], [1, 1, 6, 6], [9, 9, 12, 12.0]])
    return x, rois, boxes


def test_exported_program_loads_after_import_convloc(tmp_path, rng):
    torch.manual_seed(0)
    model, inputs = Head(), head_inputs(rng)
    path = tmp_path / "head.pt2"
    torch.export.save(torch.export.export(model, inputs), path)
    torch.save(inputs, tmp_path / "inputs.pt")
    torch.save(model(*inputs), tmp_path / "expected.pt")
    out = run_fresh(
        f"""
        import convloc, torch
        program = torch.export.load({str(path)!r})
        got = program.module()(*torch.load({str(tmp_path / "inputs.pt")!r}))
        want = torch.load({str(tmp_path / "expected.pt")!r})
        print(all(torch.equal(g, w) for g, w in zip(got, want)))
        """
    )
    assert out.strip() == "True"


def test_fx_traces_convloc_calls_as_leaves(rng):
    class Model(Head):
        def forward(self, x, rois, boxes):
            scores = torch.linspace(1, 0, boxes.shape[0])
            u = x[0, :3].softmax(0).log().neg()
            q = ops.dense_crf(u, kernels=[ops.Gaussian(2, 3)], iterations=2)
            return (
                *super().forward(x, rois, boxes),
                ops.nms(boxes, scores, 0.5),
                q,
                ops.roi_pool(x, rois, 2),
            )

    model, inputs = Model(), head_inputs(rng)
    traced = torch.fx.symbolic_trace(model)
    called = {getattr(n.target, "__name__", "") for n in traced.graph.nodes if n.op == "call_function"}
    assert {"roi_align", "conv_transpose2d", "box_iou", "nms", "dense_crf", "roi_pool"} <= called
    for got, want in zip(traced(*inputs), model(*inputs)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def compiled_cases(rng):
    u = torch.from_numpy(rng.random((3, 20, 24), dtype=np.float32))
    img = torch.from_numpy(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
    x, rois, boxes = head_inputs(rng)
    w = torch.from_numpy(rng.standard_normal((4, 2, 4, 4)).astype(np.float32))
    scores = torch.tensor([0.9, 0.8, 0.7])
    v, f = torch.rand(30, 3), torch.randn(30, 2)
    crf_kernels = [ops.Gaussian(3, 3), ops.Bilateral(10, 13, 5)]
    return {
        "dense_crf": (
            lambda u, img: ops.dense_crf(u, image=img, kernels=crf_kernels, iterations=3),
            (u, img),
        ),
        "grid_crf": (lambda u, img: ops.grid_crf(u, img.float()), (u, img)),
        "felzenszwalb": (lambda img: ops.felzenszwalb(img, 1.0, 0.8, 20), (img,)),
        "selective_search": (lambda img: ops.selective_search(img, "single", max_boxes=50).sum(), (img,)),
        "sliding_windows": (lambda x: x + torch.as_tensor(ops.sliding_windows((20, 24), [8], 4)).sum(), (x,)),
        "nms": (lambda b, s: ops.nms(b, s, 0.5).sum(), (boxes, scores)),
        "batched_nms": (
            lambda b, s, i: ops.batched_nms(b, s, i, 0.5).sum(),
            (boxes, scores, torch.tensor([0, 1, 0])),
        ),
        "box_iou": (lambda b: ops.box_iou(b, b) + ops.box_area(b)[:, None], (boxes,)),
        "roi_pool": (lambda x, r: ops.roi_pool(x, r, 3, 1.0), (x, rois)),
        "roi_align": (lambda x, r: ops.roi_align(x, r, 3, 1.0, 2), (x, rois)),
        "conv_transpose2d": (lambda x, w: ops.conv_transpose2d(x, w, None, 2, 1), (x, w)),
        "permutohedral_filter": (lambda v, f: ops.permutohedral_filter(v, f, normalization="after"), (v, f)),
    }


@pytest.mark.parametrize(
    "name",
    [
        "dense_crf",
        "grid_crf",
        "felzenszwalb",
        "selective_search",
        "sliding_windows",
        "nms",
        "batched_nms",
        "box_iou",
        "roi_pool",
        "roi_align",
        "conv_transpose2d",
        "permutohedral_filter",
    ],
)
def test_compiles_to_one_graph(name, rng):
    fn, args = compiled_cases(rng)[name]
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*args)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    torch._dynamo.reset()
    got = torch.compile(fn, fullgraph=True, backend="aot_eager")(*args)
    torch.testing.assert_close(got, fn(*args), rtol=0, atol=0)


def test_new_ops_pass_opcheck(rng):
    u = torch.from_numpy(rng.random((1, 3, 48), dtype=np.float32))
    img = torch.from_numpy(rng.integers(0, 255, (1, 48, 3), dtype=np.uint8))
    f = torch.from_numpy(rng.standard_normal((1, 48, 2)).astype(np.float32))
    # a lattice kernel on user features, a grid Gaussian, a bilateral kernel; Potts, diagonal, matrix
    crf_args = (u, img, [f], [0, 1, 3], [2.0, 2.0, 0.5, 0.5, 10.0, 10.0, 10.0], [1.0, 1.0, 2.0, 3.0] + [0.5] * 9,
                [1, 3, 9], [1.0, 3.0, 5.0], [3, 2, 1], 2, False, [6, 8], True, True)  # fmt: skip
    torch.library.opcheck(torch.ops.convloc.dense_crf.default, crf_args)
    image = torch.from_numpy(rng.random((6, 8, 3), dtype=np.float32))
    grid_args = (u.reshape(1, 3, 6, 8), image[None], 4, 10.0, 1.0, None, 3)
    torch.library.opcheck(torch.ops.convloc.grid_crf.default, grid_args)
    torch.library.opcheck(torch.ops.convloc.felzenszwalb.default, (image, 1.0, 0.8, 5))
    ss_args = (image, "single", 0, None, 20, 0.8)
    torch.library.opcheck(torch.ops.convloc.selective_search.default, ss_args, test_utils=("test_schema",))


def test_dense_crf_refuses_a_unary_that_wants_gradients(rng):
    u = torch.from_numpy(rng.random((3, 8, 8), dtype=np.float32)).requires_grad_()
    with pytest.raises(TypeError, match="unary.*CRFasRNN"):
        ops.dense_crf(u)
    with torch.no_grad():
        ops.dense_crf(u)
    ops.dense_crf(u.detach())


def test_box_iou_and_area_gradients(rng):
    corners = rng.random((5, 2)) * 10
    boxes = torch.from_numpy(np.concatenate([corners, corners + 1 + rng.random((5, 2)) * 5], 1))
    b1, b2 = boxes[:3].clone().requires_grad_(), boxes[2:].clone().requires_grad_()
    assert torch.autograd.gradcheck(ops.box_iou, (b1, b2))
    assert torch.autograd.gradcheck(ops.box_area, (b1,))


def test_integer_boxes(rng):
    corners = rng.integers(0, 50, (6, 2))
    raw = np.concatenate([corners, corners + rng.integers(1, 20, (6, 2))], 1)
    for dtype, area_dtype in (
        (torch.int16, torch.int32),
        (torch.int32, torch.int32),
        (torch.int64, torch.int64),
    ):
        boxes = torch.from_numpy(raw).to(dtype)
        area = ops.box_area(boxes)
        assert area.dtype == area_dtype
        torch.testing.assert_close(
            area.long(), torch.from_numpy((raw[:, 2] - raw[:, 0]) * (raw[:, 3] - raw[:, 1]))
        )
        iou = ops.box_iou(boxes, boxes)
        assert iou.dtype == torch.float32
        torch.testing.assert_close(iou, ops.box_iou(boxes.double(), boxes.double()).float())
    np.testing.assert_array_equal(
        ops.box_area(raw.astype(np.int64)), (raw[:, 2] - raw[:, 0]) * (raw[:, 3] - raw[:, 1])
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_policy(dtype, rng):
    x, rois, boxes = head_inputs(rng)
    scores = torch.tensor([0.9, 0.8, 0.7])
    with torch.autocast("cpu", dtype=dtype):
        features = torch.nn.functional.conv2d(x, torch.ones(4, 4, 1, 1))  # in `dtype` under autocast
        assert features.dtype == dtype
        pooled = ops.roi_align(features, rois, 3, 0.5, 2)
        pooled_max = ops.roi_pool(features, rois, 3, 0.5)
        iou = ops.box_iou(boxes.to(dtype), boxes.to(dtype))
        keep = ops.nms(boxes.to(dtype), scores.to(dtype), 0.5)
    assert pooled.dtype == pooled_max.dtype == dtype  # run in float32, returned in the input's dtype
    assert iou.dtype == torch.float32
    want = ops.roi_align(features.float(), rois, 3, 0.5, 2).to(dtype)
    torch.testing.assert_close(pooled, want, rtol=0, atol=0)
    torch.testing.assert_close(keep, ops.nms(boxes.to(dtype).float(), scores.to(dtype).float(), 0.5))


def test_fast_rcnn_trains_under_bfloat16_autocast(rng):
    torch.manual_seed(0)
    model = FastRCNN(3, FastRCNNConfig(fc_dim=32, dropout=0.0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images = list(torch.from_numpy(rng.standard_normal((2, 3, 64, 64)).astype(np.float32)))
    rois = [
        torch.tensor([[2, 2, 40, 40], [10, 5, 60, 30.0]]),
        torch.tensor([[0, 0, 63, 63], [20, 20, 50, 60.0]]),
    ]
    labels = torch.tensor([1, 0, 2, 3])
    targets = torch.from_numpy(rng.standard_normal((4, 4)).astype(np.float32))
    losses = []
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, deltas = model(images, rois)
            cls, box = fast_rcnn_loss(logits.float(), deltas.float(), labels, targets)
        optimizer.zero_grad()
        (cls + box).backward()
        optimizer.step()
        losses.append(float(cls + box))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad
    )
