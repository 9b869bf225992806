"""Detection pipelines: VOC loader on the synthetic tree, backbones, R-CNN and Fast R-CNN parts,
tiny train → eval runs, and a 2-process torchrun run."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from convloc.data import VOCDetection, read_annotation
from convloc.data.shapes import SHAPE_CLASSES, make_shapes, render_image
from convloc.models import box_coder
from convloc.models.backbones import VGG, load_torchvision_vgg, small_vgg, vgg16
from convloc.models.fast_rcnn import RECIPES, FastRCNNConfig, compress_fc, fast_rcnn_loss, sample_rois
from convloc.models.rcnn import RCNNConfig, train_svm, warp_regions

TINY = dict(size=(64, 88), min_size=16, max_size=36)


def _blocks(image: np.ndarray, k: int = 8) -> np.ndarray:
    h, w = image.shape[0] // k * k, image.shape[1] // k * k
    return image[:h, :w].reshape(h // k, k, w // k, k, 3).mean((1, 3)).ravel()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(str(tmp_path_factory.mktemp("shapes")), 48, seed=3, test_fraction=0.25, **TINY)


def test_shapes_tree_reads_back(shapes):
    ds = VOCDetection(shapes, "trainval")
    assert ds.classes == SHAPE_CLASSES
    test = VOCDetection(shapes, "test")
    assert len(ds) == 36 and len(test) == 12 and not set(ds.ids) & set(test.ids)
    halves = VOCDetection(shapes, "train").ids + VOCDetection(shapes, "val").ids
    assert sorted(halves) == sorted(ds.ids)
    n_objects = n_difficult = 0
    for i in range(len(ds)):
        s = ds[i]
        k = int(s["id"])
        image, boxes, labels, difficult = render_image(np.random.default_rng([3, k]), **TINY)
        assert s["image"].shape == image.shape and s["image"].dtype == np.uint8
        # JPEG (quality 95, 4:2:0) smears the noisy textures' colours, so compare block means
        assert _blocks(s["image"]) == pytest.approx(_blocks(image), abs=24)
        np.testing.assert_array_equal(s["boxes"], boxes)
        np.testing.assert_array_equal(s["labels"], labels)
        np.testing.assert_array_equal(s["difficult"], difficult)
        n_objects += len(labels)
        n_difficult += int(difficult.sum())
    assert n_objects >= 2 * len(ds) and 0 < n_difficult < n_objects / 2
    # per-class image lists agree with the annotations
    lines = open(os.path.join(shapes, "ImageSets", "Main", "circle_trainval.txt")).read().split("\n")
    flags = dict(line.split() for line in lines if line)
    for i in range(len(ds)):
        t = ds.target(i)
        has = np.any((t["labels"] == 0) & ~t["difficult"])
        assert flags[t["id"]] == ("1" if has else "0" if np.any(t["labels"] == 0) else "-1")


def test_shapes_are_deterministic_prefixes(tmp_path):
    a = make_shapes(str(tmp_path / "a"), 3, seed=5, **TINY)
    b = make_shapes(str(tmp_path / "b"), 5, seed=5, **TINY)
    for k in range(3):
        name = f"Annotations/{k:06d}.xml"
        assert open(os.path.join(a, name)).read() == open(os.path.join(b, name)).read()
        jpg = f"JPEGImages/{k:06d}.jpg"
        assert open(os.path.join(a, jpg), "rb").read() == open(os.path.join(b, jpg), "rb").read()


VOC2007_XML = """<annotation>
	<folder>VOC2007</folder>
	<filename>000042.jpg</filename>
	<source><database>The VOC2007 Database</database>
		<annotation>PASCAL VOC2007</annotation></source>
	<owner><name>someone</name></owner>
	<size><width>500</width><height>335</height><depth>3</depth></size>
	<segmented>0</segmented>
	<object><name>train</name><pose>Unspecified</pose><truncated>1</truncated><difficult>0</difficult>
		<bndbox><xmin>263</xmin><ymin>32</ymin><xmax>500</xmax><ymax>295</ymax></bndbox></object>
	<object><name>person</name><pose>Left</pose><truncated>0</truncated><difficult>1</difficult>
		<bndbox><xmin>1</xmin><ymin>36</ymin><xmax>235</xmax><ymax>299</ymax></bndbox></object>
	<object><name>unicorn</name><pose>Left</pose><truncated>0</truncated><difficult>0</difficult>
		<bndbox><xmin>5</xmin><ymin>6</ymin><xmax>7</xmax><ymax>8</ymax></bndbox></object>
</annotation>
"""


def test_voc2007_tree_layout(tmp_path):
    from PIL import Image

    year = tmp_path / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / sub).mkdir(parents=True)
    (year / "Annotations" / "000042.xml").write_text(VOC2007_XML)
    Image.new("RGB", (500, 335), (10, 20, 30)).save(year / "JPEGImages" / "000042.jpg")
    (year / "ImageSets" / "Main" / "test.txt").write_text("000042\n")
    ann = read_annotation(str(year / "Annotations" / "000042.xml"))
    assert ann.names == ["train", "person", "unicorn"] and ann.width == 500
    ds = VOCDetection(str(tmp_path), "test")  # finds VOCdevkit/VOC2007, 20 VOC classes
    s = ds[0]
    assert s["image"].shape == (335, 500, 3)
    # 1-based inclusive → continuous: (xmin - 1, ymin - 1, xmax, ymax); unknown class dropped
    np.testing.assert_array_equal(s["boxes"], [[262, 31, 500, 295], [0, 35, 235, 299]])
    assert [ds.classes[k] for k in s["labels"]] == ["train", "person"]
    assert s["difficult"].tolist() == [False, True]
    assert len(VOCDetection(str(tmp_path), "test", use_difficult=False).target(0)["labels"]) == 1
    with pytest.raises(FileNotFoundError, match="root"):
        VOCDetection(str(tmp_path / "nowhere"))


def test_box_coder_round_trip(rng):
    p = torch.tensor(rng.uniform(0, 50, (20, 2))).float()
    p = torch.cat((p, p + torch.tensor(rng.uniform(2, 40, (20, 2))).float()), 1)
    g = p + torch.tensor(rng.uniform(-3, 3, (20, 4))).float()
    t = box_coder.encode(p, g)
    torch.testing.assert_close(box_coder.decode(p, t), g, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(box_coder.encode(p, p), torch.zeros(20, 4))


def test_hflip_mirrors_boxes_with_the_image():
    image = torch.zeros(6, 10)
    image[1:4, 2:5] = 1  # the box (2, 1, 5, 4)
    x1, y1, x2, y2 = box_coder.hflip(torch.tensor([[2.0, 1, 5, 4]]), 10)[0].int().tolist()
    mirrored = image.flip(1)
    assert mirrored[y1:y2, x1:x2].all() and mirrored.sum() == (x2 - x1) * (y2 - y1)


def test_decode_detections_clips_thresholds_suppresses_and_caps():
    from convloc.models.common import decode_detections

    cfg = FastRCNNConfig(score_threshold=0.1, nms_iou=0.3, max_detections=2)
    props = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [30, 0, 40, 9]])
    scores = torch.tensor([[0.9, 0.05], [0.8, 0.2], [0.5, 0.3], [0.95, 0.0]])
    out = decode_detections(props, torch.zeros(4, 8), scores, 25, 25, cfg)
    # p1 overlaps p0 (IoU 0.68) in class 0, p3 lies outside the 25x25 image, p2 is clipped to it; of the
    # four left ((p0, 0) 0.9, (p2, 0) 0.5, (p2, 1) 0.3, (p1, 1) 0.2) the best two stay.
    np.testing.assert_array_equal(out["boxes"], [[0, 0, 10, 10], [20, 20, 25, 25]])
    np.testing.assert_allclose(out["scores"], [0.9, 0.5])
    np.testing.assert_array_equal(out["labels"], [0, 0])


def test_warp_regions_samples_the_box():
    # A ramp image: a box warped at its own size without context is the box's pixels.
    x = torch.arange(40.0).expand(3, 30, 40).clone()
    crop = warp_regions(x, torch.tensor([[10.0, 5.0, 20.0, 15.0]]), 10, 0)
    torch.testing.assert_close(crop[0, 0], x[0, 5:15, 10:20])
    # With context: the box [10, 20] fills output pixels 2..7 (pad 2 each side), so output pixel
    # centre i + 0.5 samples x = 10 + (i + 0.5 - 2) · 10/6, where the ramp's value is x - 0.5.
    crop = warp_regions(x, torch.tensor([[10.0, 5.0, 20.0, 15.0]]), 10, 2)
    expected = 10 + (torch.arange(10.0) + 0.5 - 2) * 10 / 6 - 0.5
    torch.testing.assert_close(crop[0, 0, 5], expected)
    # Outside the image: zeros (the mean after normalisation).
    crop = warp_regions(x, torch.tensor([[-30.0, -30.0, -20.0, -20.0]]), 8, 0)
    assert crop.abs().max() == 0
    assert warp_regions(x, torch.zeros(0, 4), 8, 1).shape == (0, 3, 8, 8)


def test_svm_with_hard_negative_mining():
    g = torch.Generator().manual_seed(0)
    d = 16
    direction = torch.zeros(d)
    direction[0] = 1
    pos = torch.randn(40, d, generator=g) + 6 * direction
    negs = [torch.randn(200, d, generator=g) - 2 * direction for _ in range(10)]
    cfg = RCNNConfig(svm_c=1.0, retrain_every=300)
    w, b = train_svm(pos, iter(negs), cfg)
    assert ((pos @ w + b) > 0).float().mean() > 0.95
    assert ((torch.cat(negs) @ w + b) < 0).float().mean() > 0.99


def test_sample_rois_follows_the_paper(rng):
    gt = torch.tensor([[10.0, 10, 50, 50], [60, 20, 90, 70]])
    labels = torch.tensor([2, 0])
    xy = torch.tensor(rng.uniform(0, 80, (400, 2))).float()
    props = torch.cat((xy, xy + torch.tensor(rng.uniform(8, 50, (400, 2))).float()), 1)
    cfg = FastRCNNConfig(**RECIPES["paper"])
    rois, lab, targets = sample_rois(props, gt, labels, cfg, torch.Generator().manual_seed(1))
    from convloc.ops import box_iou

    best, arg = box_iou(rois, gt).max(1)
    n_fg = int((lab > 0).sum())
    assert len(rois) == 64 and 0 < n_fg <= 16
    assert (best[:n_fg] >= 0.5).all() and (best[n_fg:] < 0.5).all()
    assert (lab[:n_fg] == labels[arg[:n_fg]] + 1).all() and (lab[n_fg:] == 0).all()
    expected = box_coder.encode(rois[:n_fg], gt[arg[:n_fg]]) / torch.tensor(cfg.bbox_stds)
    torch.testing.assert_close(targets[:n_fg], expected)
    assert (targets[n_fg:] == 0).all()
    # backgrounds come from [0.1, 0.5) while there are enough of them
    all_best = box_iou(props, gt).max(1).values
    available = int(((all_best >= 0.1) & (all_best < 0.5)).sum())
    assert int(((best >= 0.1) & (best < 0.5)).sum()) == min(64 - n_fg, available)


def test_fast_rcnn_loss_by_hand():
    logits = torch.zeros(4, 3)
    deltas = torch.zeros(4, 12)
    deltas[1, 8:12] = torch.tensor([0.5, 2.0, 0.0, 0.0])  # class 2 of RoI 1
    labels = torch.tensor([0, 2, 0, 0])
    targets = torch.zeros(4, 4)
    cls, box = fast_rcnn_loss(logits, deltas, labels, targets)
    assert cls.item() == pytest.approx(np.log(3))
    # smooth L1: 0.5·0.5² + (2 − 0.5), over 4 RoIs
    assert box.item() == pytest.approx((0.125 + 1.5) / 4)


def test_compress_fc_by_truncated_svd():
    torch.manual_seed(0)
    net = small_vgg(fc_dim=64).eval()
    full = compress_fc(net, 64)
    x = torch.randn(5, 3, net.crop_size, net.crop_size)
    torch.testing.assert_close(full(x), net(x), atol=1e-4, rtol=1e-4)
    low = compress_fc(net, (8, 4))
    first, second = low.head[0]
    assert first.weight.shape == (8, net.head[0].in_features) and second.weight.shape == (64, 8)
    assert low.head[3][0].weight.shape == (4, 64)
    # the rank-8 product is the best rank-8 approximation of fc6
    w = net.head[0].weight.detach()
    s = torch.linalg.svdvals(w)
    err = torch.linalg.matrix_norm(second.weight @ first.weight - w)
    assert err.item() == pytest.approx(s[8:].norm().item(), rel=1e-3)
    assert isinstance(net.head[0], torch.nn.Linear)  # the original is untouched
    with pytest.raises(ValueError, match="model"):
        compress_fc(low, 4)


def test_backbone_layouts():
    v = vgg16(fc_dim=32)
    convs = [m for m in v.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and v.stride == 16 and v.crop_size == 224
    assert v.head[0].in_features == 512 * 7 * 7
    s = small_vgg()
    assert s.stride == 4 and s.crop_size == 56
    assert s.pool5(torch.zeros(2, 3, 56, 56)).shape == (2, 64 * 49)


def test_load_torchvision_vgg16_state_dict(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    tv = torchvision.models.vgg16(weights=None).eval()
    path = tmp_path / "vgg16.pth"
    torch.save(tv.state_dict(), path)
    ours = load_torchvision_vgg(vgg16(), str(path)).eval()
    x = torch.randn(1, 3, 48, 48)  # small: the conv layers do not care
    pool5 = torch.randn(2, 512 * 7 * 7)
    with torch.no_grad():
        torch.testing.assert_close(ours.features(x), tv.features[:-1](x))
        torch.testing.assert_close(ours.head(pool5), tv.classifier[:5](pool5), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="state_dict"):
        load_torchvision_vgg(VGG(fc_dim=1024), tv.state_dict())


def _cli(*args, nproc=0):
    """``convloc ARGS`` in a subprocess, under ``torchrun --nproc_per_node nproc`` when nproc."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc else []
    cmd = [sys.executable, *launcher, "-m", "convloc.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _shapes_cli(tmp_path, n=48):
    root = str(tmp_path / "shapes")
    r = _cli("data", "make-shapes", root, "--images", str(n), "--seed", "3",
             "--image-size", "64", "88", "--object-size", "16", "36")  # fmt: skip
    assert r.returncode == 0, r.stderr
    return root


def test_rcnn_train_eval_smoke(tmp_path):
    from convloc.commands.detection import evaluate_detector
    from convloc.models.common import load_proposals
    from convloc.models.rcnn import train_rcnn

    torch.set_num_threads(1)
    root = make_shapes(str(tmp_path / "s"), 32, seed=3, **TINY)
    train, test = VOCDetection(root, "trainval"), VOCDetection(root, "test")
    cache = str(tmp_path / "cache")
    ptrain = load_proposals(train, cache, max_boxes=60)
    ptest = load_proposals(test, cache, max_boxes=60)
    cfg = RCNNConfig(fc_dim=128, finetune_iterations=60, batch_size=32, images_per_batch=4,
                     optimizer="adam", lr=1e-3, dropout=0.0, retrain_every=500)  # fmt: skip
    ckpt = str(tmp_path / "r" / "rcnn.pt")
    model = train_rcnn(train, ptrain, cfg, ckpt)
    assert os.listdir(os.path.join(tmp_path, "r", "features"))  # the on-disk feature cache
    assert (model.svm_weight.abs().sum(1) > 0).all() and (model.bbox_weight.abs().sum((1, 2)) > 0).all()
    result = evaluate_detector(model, test, ptest, progress=False)
    assert result["voc07"]["map"] > 0.15
    # resuming a finished run reloads it and changes nothing
    again = train_rcnn(train, ptrain, cfg, ckpt)
    torch.testing.assert_close(again.svm_weight, model.svm_weight)


# Run under torchrun by the test below: ``convloc train fast-rcnn`` for 6 iterations; with "cut",
# checkpointing every 2 and killed at the 6th optimizer step (after the checkpoint at 4).
_TORCHRUN_WORKER = """
import sys, torch
from convloc.cli import main
from convloc.models import fast_rcnn

mode, *args = sys.argv[1:]
if mode == "cut":
    train = fast_rcnn.train_fast_rcnn
    fast_rcnn.train_fast_rcnn = lambda *a, **k: train(*a, save_every=2, **k)
    step, steps = torch.optim.AdamW.step, [0]

    def killed(self, *a, **k):
        steps[0] += 1
        if steps[0] > 5:
            raise SystemExit(3)
        return step(self, *a, **k)

    torch.optim.AdamW.step = killed
sys.exit(main(args))
"""


def test_torchrun_two_processes_resume_to_the_uninterrupted_weights(tmp_path):
    root = _shapes_cli(tmp_path, 12)
    worker = tmp_path / "worker.py"
    worker.write_text(_TORCHRUN_WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def run(mode, out):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(worker), mode, "train", "fast-rcnn", "--data", root, "--out", str(out), "--scale",
               "64", "--max-size", "96", "--fc-dim", "64", "--threads", "1", "--max-proposals", "50",
               "--iterations", "6"]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)

    cut, whole = tmp_path / "cut.pt", tmp_path / "whole.pt"
    assert run("cut", cut).returncode != 0
    state = torch.load(cut, weights_only=False)
    assert state["iteration"] == 4 and len(state["generators"]) == 2  # each rank's sampler state
    r = run("resume", cut)
    assert r.returncode == 0, r.stderr
    r = run("whole", whole)
    assert r.returncode == 0, r.stderr
    resumed, uninterrupted = (torch.load(p, weights_only=False) for p in (cut, whole))
    assert resumed["iteration"] == uninterrupted["iteration"] == 6
    for k, v in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][k], v), k


def test_rcnn_under_torchrun_shares_one_feature_cache(tmp_path):
    # The ranks' batch-norm statistics follow their own batches: both extract with rank 0's, into
    # one cache keyed by the weights, and rank 0 fits the SVMs on every rank's files.
    root = _shapes_cli(tmp_path, 12)
    ckpt = str(tmp_path / "rcnn.pt")
    r = _cli("train", "rcnn", "--data", root, "--out", ckpt, "--iterations", "3", "--fc-dim", "32",
             "--threads", "1", "--max-proposals", "30", "--workers", "2", nproc=2)  # fmt: skip
    assert r.returncode == 0, r.stderr
    state = torch.load(ckpt, weights_only=False)
    assert state["stage"] == "done" and state["complete"]
    (folder,) = os.listdir(tmp_path / "features")
    assert len(os.listdir(tmp_path / "features" / folder)) == len(VOCDetection(root, "trainval"))
    r = _cli("eval", ckpt, "--data", root, "--threads", "1")
    assert r.returncode == 0, r.stderr
