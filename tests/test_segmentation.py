import dataclasses

import numpy as np
import pytest
import torch

import convloc.nn
from convloc.data import voc_seg
from convloc.metrics import segmentation as seg
from convloc.models import fcn
from reference import segface as ref

# ---- metrics --------------------------------------------------------------------------------


def test_scores_hand_made():
    # 2 classes; 255 = void must not count.
    label = np.array([[0, 0, 1, 1], [0, 1, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 1]])
    hist = seg.confusion_histogram(label, pred, 2)
    np.testing.assert_array_equal(hist, [[2, 1], [1, 3]])
    s = seg.scores_from_histogram(hist)
    assert s.pixel_acc == pytest.approx(5 / 7)
    assert s.mean_acc == pytest.approx((2 / 3 + 3 / 4) / 2)
    # IU: class 0: 2 / (3 + 3 - 2) = 1/2; class 1: 3 / (4 + 4 - 3) = 3/5
    assert s.mean_iu == pytest.approx((1 / 2 + 3 / 5) / 2)
    assert s.fw_iu == pytest.approx((3 * 1 / 2 + 4 * 3 / 5) / 7)


def test_scores_perfect_and_absent_classes():
    label = np.array([0, 0, 2, 2, 255])
    s = seg.segmentation_scores(label, np.array([0, 0, 2, 2, 1]), 4)
    # Classes 1 and 3 are neither labelled nor predicted (the void pixel's prediction is dropped).
    assert s.pixel_acc == s.mean_acc == s.mean_iu == s.fw_iu == 1.0
    assert np.isnan(s.iu[1]) and np.isnan(s.iu[3])
    # A class predicted but never labelled counts in the mean IU (IU 0), not in the mean accuracy.
    s = seg.segmentation_scores(np.array([0, 0]), np.array([0, 1]), 2)
    assert s.mean_iu == pytest.approx((1 / 2 + 0) / 2)
    assert s.mean_acc == pytest.approx(1 / 2)


@pytest.mark.parametrize("shape", [(0,), (7,), (5, 9), (2, 3, 4)])
def test_scores_against_reference(rng, shape):
    n = 5
    label = rng.integers(0, n, size=shape)
    label[rng.random(shape) < 0.2] = 255
    pred = rng.integers(0, n, size=shape)
    hist = seg.confusion_histogram(label, pred, n)
    np.testing.assert_array_equal(hist, ref.confusion(label, pred, n))
    if hist.sum():
        got = seg.scores_from_histogram(hist).as_dict()
        for k, v in ref.scores(hist).items():
            assert got[k] == pytest.approx(v)


def test_meter_accumulates_like_one_histogram(rng):
    labels = rng.integers(0, 3, size=(4, 6, 6))
    preds = rng.integers(0, 3, size=(4, 6, 6))
    meter = seg.SegmentationMeter(3)
    for lab, p in zip(labels, torch.from_numpy(preds)):
        meter.update(lab, p)
    np.testing.assert_array_equal(meter.hist, seg.confusion_histogram(labels, preds, 3))


def test_metric_bad_inputs():
    with pytest.raises(ValueError, match="pred"):
        seg.confusion_histogram(np.zeros(3), np.zeros(4), 2)
    with pytest.raises(ValueError, match="pred"):
        seg.confusion_histogram(np.zeros(3), np.array([0, 2, 1]), 2)
    with pytest.raises(ValueError, match="num_classes"):
        seg.confusion_histogram(np.zeros(3), np.zeros(3), 0)
    with pytest.raises(ValueError, match="hist"):
        seg.scores_from_histogram(np.zeros((2, 3)))


# ---- data -----------------------------------------------------------------------------------


def test_palette_roundtrip(tmp_path, rng):
    assert voc_seg.voc_palette()[:3].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    assert voc_seg.voc_palette()[255].tolist() == [224, 224, 192]
    label = rng.integers(0, 21, size=(9, 13)).astype(np.uint8)
    label[0, :] = 255
    voc_seg.write_label(tmp_path / "a.png", label)
    np.testing.assert_array_equal(voc_seg.read_label(tmp_path / "a.png"), label)
    # Some tools save the labels as RGB colours: decoded through the palette.
    from PIL import Image

    Image.fromarray(voc_seg.colorize(label)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(voc_seg.read_label(tmp_path / "rgb.png"), label)


def test_write_label_refuses_labels_a_palette_png_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="label: a palette PNG holds class indices 0-255, got 0..300"):
        voc_seg.write_label(tmp_path / "a.png", np.array([[0, 300]]))


def test_overlay_blends_the_palette_colours():
    image = np.full((2, 2, 4), 200, np.uint8)  # RGBA: the alpha channel is dropped
    label = np.array([[0, 1], [2, 255]])
    expected = (0.5 * 200 + 0.5 * voc_seg.voc_palette()[label]).astype(np.uint8)
    np.testing.assert_array_equal(voc_seg.overlay(image, label), expected)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return voc_seg.make_synthetic_segmentation(tmp_path_factory.mktemp("seg"), 24, 8, size=32, seed=3)


def test_synthetic_set_is_voc_and_deterministic(synth, tmp_path):
    train = voc_seg.VOCSegmentation(synth, "train")
    assert len(train) == 24 and len(voc_seg.VOCSegmentation(synth, "val")) == 8
    assert train.classes == voc_seg.SYNTHETIC_CLASSES
    image, label = train[0]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and label.shape == (32, 32)
    images, labels = train.arrays()
    for a, b in zip(train.arrays(workers=3), (images, labels)):  # read by threads: the same arrays
        np.testing.assert_array_equal(a, b)
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4, 255}
    assert (labels == 255).any() and (labels > 0).any() and (labels < 5).any()
    again = voc_seg.make_synthetic_segmentation(tmp_path / "b", 24, 8, size=32, seed=3)
    for i in (0, 5):
        np.testing.assert_array_equal(voc_seg.VOCSegmentation(again)[i][1], train[i][1])
        np.testing.assert_array_equal(voc_seg.VOCSegmentation(again)[i][0], train[i][0])


def test_voc_loader_errors(tmp_path, synth):
    with pytest.raises(FileNotFoundError, match="split"):
        voc_seg.VOCSegmentation(synth, "test")
    # A real VOC root has no classes.txt: the 21 VOC classes.
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("")
    assert voc_seg.VOCSegmentation(tmp_path, "val").num_classes == 21


# ---- FCN ------------------------------------------------------------------------------------


def test_convolutionize_same_outputs_then_dense():
    torch.manual_seed(0)
    clf = fcn.vgg_classifier(fcn.SMALL, 7, 64).double().eval()
    conv = fcn.convolutionize(clf, (64, 64)).eval()
    assert not any(isinstance(m, torch.nn.Linear) for m in conv.modules())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    torch.testing.assert_close(conv(x)[..., 0, 0], clf(x))
    assert conv(torch.randn(1, 3, 128, 96, dtype=torch.float64)).shape == (1, 7, 3, 2)


def test_convolutionize_dense_output_is_the_classifier_on_each_window():
    # Without padding, each dense output is exactly the classifier on its stride-2 window.
    torch.manual_seed(0)
    nn = torch.nn
    clf = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Flatten(), nn.Linear(4 * 5 * 5, 6), nn.ReLU(), nn.Dropout(), nn.Linear(6, 3),
    ).double().eval()  # fmt: skip
    conv = fcn.convolutionize(clf, (12, 12)).eval()
    big = torch.randn(1, 3, 20, 17, dtype=torch.float64)
    dense = conv(big)
    assert dense.shape == (1, 3, 5, 3)
    for i in range(5):
        for j in range(3):
            window = big[..., 2 * i : 2 * i + 12, 2 * j : 2 * j + 12]
            torch.testing.assert_close(dense[0, :, i, j], clf(window)[0])


def test_convolutionize_drops_identity_adaptive_pool_and_checks_size():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.AdaptiveAvgPool2d(6),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 36, 5),
    ).eval()
    conv = fcn.convolutionize(model, (8, 8))
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(conv(x)[..., 0, 0], model(x))
    with pytest.raises(ValueError, match="input_size"):
        fcn.convolutionize(model, (10, 10))


def test_vgg16_crop_offsets_match_the_paper():
    # The offsets of the reference FCN prototxts (pad 100): 19; 5 and 27; 5, 9 and 31. They depend
    # on the geometry only: VGG16's layers at one channel each, to keep the test light.
    vgg = dataclasses.replace(fcn.VGG16, stages=tuple((1,) * len(s) for s in fcn.VGG16.stages), fc=1)
    assert fcn.FCN(21, "32s", vgg).crop_offsets == {"out": 19}
    assert fcn.FCN(21, "16s", vgg).crop_offsets == {"pool4": 5, "out": 27}
    assert fcn.FCN(21, "8s", vgg).crop_offsets == {"pool4": 5, "pool3": 9, "out": 31}
    assert fcn.FCN(21, "8s", vgg)(torch.zeros(1, 3, 50, 70)).shape == (1, 21, 50, 70)


TINY = fcn.Layout(((4,), (4,), (6,), (6,), (8,)), 8, 5, 68)


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_fcn_output_covers_any_input_size(variant):
    torch.manual_seed(0)
    model = fcn.FCN(3, variant, TINY).eval()
    for h, w in [(1, 1), (17, 40), (32, 32), (63, 65), (100, 7)]:
        assert model(torch.randn(1, 3, h, w)).shape == (1, 3, h, w)


def test_fcn_alignment_is_exact():
    """Pass one bright pixel through identity convs and the pool3 skip only: the output must peak
    exactly at the centre of the stride-8 cell that holds the pixel, i.e. no shift anywhere."""
    model = fcn.FCN(1, "8s", TINY).eval()
    with torch.no_grad():
        for mod in (model.pool3, model.pool4, model.pool5, model.fc):
            for p in mod.parameters():
                p.zero_()
            for m in mod.modules():
                if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3):
                    m.weight[0, 0, 1, 1] = 1.0
        model.score_pool3.weight[0, 0] = 1.0
    for py, px in [(37, 21), (8, 8), (20, 50)]:
        x = torch.zeros(1, 3, 64, 64)
        x[0, 0, py, px] = 1.0
        out = model(x)[0, 0]
        ys, xs = torch.nonzero(out >= out.max() - 1e-6, as_tuple=True)
        # Conv1 (3x3, pad 68) puts image pixel p at padded position p + 67; three 2x2 pools put
        # it in cell (p + 67) // 8, whose centre is at 8 * cell + 3.5 in padded coordinates.
        for got, p in ((ys, py), (xs, px)):
            centre = 8 * ((p + 67) // 8) + 3.5 - 67
            assert got.double().mean().item() == pytest.approx(centre)


def test_fcn_init_and_stagewise_copy():
    torch.manual_seed(0)
    m32 = fcn.FCN(3, "32s", TINY)
    m16 = fcn.FCN(3, "16s", TINY).init_from(m32)
    for name in ("score_fr.weight", "score_pool4.weight"):
        assert not m16.state_dict()[name].any()  # zero-initialised score layers
    torch.testing.assert_close(m16.state_dict()["fc.0.weight"], m32.state_dict()["fc.0.weight"])
    up = m16.upscore2.weight
    # convloc's BilinearUpsample: per channel (depthwise), separable triangle [.25 .75 .75 .25].
    assert isinstance(m16.upscore2, convloc.nn.BilinearUpsample) and up.shape == (3, 1, 4, 4)
    t = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(up[1, 0].detach(), t[:, None] * t[None, :])
    assert up.requires_grad
    assert not m16.upscore.weight.requires_grad  # the final upsampling stays bilinear (the paper's)
    with pytest.raises(ValueError, match="variant"):
        fcn.FCN(3, "4s")


def _torchvision_style_vgg(layout, input_size):
    """A VGG classifier named like torchvision's (flat ``features``; ``classifier.0/3/6``)."""
    tv = torch.nn.Module()
    tv.features = torch.nn.Sequential(*fcn._leaves(fcn.vgg_features(layout)))
    tail = fcn.vgg_classifier(layout, 10, input_size)
    tv.classifier = torch.nn.Sequential(*list(tail)[2:])
    return tv


def test_fcn_loads_a_vgg_classifier_like_convolutionize(tmp_path):
    torch.manual_seed(0)
    layout = dataclasses.replace(fcn.SMALL, batch_norm=False)
    side = 32 * layout.fc_kernel  # the classifier's input size: fc6 sees a fc_kernel² map
    tv = _torchvision_style_vgg(layout, side)
    path = str(tmp_path / "vgg.pth")
    torch.save(tv.state_dict(), path)
    model = fcn.FCN(4, "8s", layout).load_classifier(path)
    dense = fcn.convolutionize(
        torch.nn.Sequential(tv.features, torch.nn.Flatten(), tv.classifier), (side, side)
    )
    expected = [m for m in dense if isinstance(m, torch.nn.Conv2d)][:-1]  # the 10-way layer is dropped
    got = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][: len(expected)]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)
        torch.testing.assert_close(a.bias, b.bias, rtol=0, atol=0)
    assert not model.score_fr.weight.any() and not model.score_pool3.weight.any()
    bad = dict(tv.state_dict())
    bad["classifier.0.weight"] = bad["classifier.0.weight"][:, :-1]
    with pytest.raises(ValueError, match="classifier.0"):
        fcn.FCN(4, "8s", layout).load_classifier(bad)
    with pytest.raises(ValueError, match="batch normalisation"):
        fcn.FCN(4, "8s", fcn.SMALL).load_classifier(tv.state_dict())


def test_fcn_train_eval_smoke(synth, one_thread):
    """A tiny FCN-8s learns the synthetic shapes far above chance in a few seconds."""
    from convloc.models.segmentation import evaluate, fit, predict_scores

    torch.manual_seed(0)
    ds = voc_seg.VOCSegmentation(synth, "train")
    x, y = (torch.from_numpy(a) for a in ds.arrays())
    # pad 26 with a 3x3 fc6 fits 32 x 32 inputs exactly (cheaper than SMALL's any-size pad 68).
    layout = fcn.Layout(((8,), (16,), (16,), (16,), (16,)), 32, 3, 26, batch_norm=True)
    model = fcn.FCN(ds.num_classes, "8s", layout)
    losses = fit(model, x, y, epochs=40, batch_size=8, lr=1e-2)
    assert losses[-1] < 0.4 * losses[0]
    s = evaluate(predict_scores(model, x), y, ds.num_classes)
    # Always predicting the majority (background) class scores a mean IU of 0.17.
    assert s.mean_iu > 0.3, s


def test_cli_train_fcn_crfrnn_and_segment(synth, tmp_path, capsys, one_thread):
    from convloc.cli import main

    common = ["--data", str(synth), "--threads", "1", "--batch-size", "8"]
    fcn_ckpt = str(tmp_path / "fcn.pt")
    args = ["train", "fcn", *common, "--variant", "8s", "--pad", "26", "--fc-kernel", "3"]
    args += ["--epochs", "1"]
    args += ["-o", fcn_ckpt]
    assert main(args) == 0
    crf_ckpt = str(tmp_path / "crf.pt")
    args = ["train", "crfrnn", *common, "--fcn", fcn_ckpt, "--epochs", "1", "--iterations", "2"]
    assert main([*args, "-o", crf_ckpt]) == 0
    out = capsys.readouterr().out
    assert "FCN + dense CRF" in out and "CRF-as-RNN (end to end)" in out
    image = synth / "JPEGImages" / "synth_00000.jpg"
    for ckpt in (fcn_ckpt, crf_ckpt):
        png = tmp_path / "overlay.png"
        labels = str(tmp_path / "l.png")
        assert main(["segment", ckpt, str(image), "-o", str(png), "--labels", labels]) == 0
        assert voc_seg.read_label(tmp_path / "l.png").shape == (32, 32)
        assert png.is_file()


def test_fit_epochs_refuses_batches_too_small_for_every_rank():
    # A batch must give every rank its items (two identities for triplets), or the loop would skip
    # every batch and return an untrained model.
    from convloc.models.common import fit_epochs

    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="batch_size"):
        fit_epochs(lambda batch, part: (w**2).sum(), opt, 10, 1, 1, gen, min_per_rank=2)
    losses = fit_epochs(lambda batch, part: ((w - 1) ** 2).sum(), opt, 10, 2, 2, gen, min_per_rank=2)
    assert len(losses) == 2 and float(w) > 0  # it trained
