"""Training that survives interruption and refuses what does not fit: every ``convloc train``
command resumes from its checkpoint to the weights of an uninterrupted run, refuses a checkpoint
of another kind, data or settings in one line, and the caches are keyed by content."""

import os

import numpy as np
import pytest
import torch

from convloc.cli import main
from convloc.data import VOCDetection, lfw, voc_seg
from convloc.data.shapes import make_shapes

TINY = dict(size=(48, 64), min_size=12, max_size=28)


class Interrupted(Exception):
    pass


def _interrupt_after(monkeypatch, steps: int) -> None:
    """Makes the ``steps + 1``-th optimizer step of any Adam or AdamW raise :class:`Interrupted`,
    as a run killed mid-training."""
    count = [0]
    for cls in (torch.optim.Adam, torch.optim.AdamW):
        original = cls.step

        def step(self, *a, _original=original, **k):
            count[0] += 1
            if count[0] > steps:
                raise Interrupted
            return _original(self, *a, **k)

        monkeypatch.setattr(cls, "step", step)


def _same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(str(tmp_path_factory.mktemp("shapes")), 10, seed=3, **TINY)


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    return voc_seg.make_synthetic_segmentation(tmp_path_factory.mktemp("seg"), 8, 2, size=32, seed=1)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    # 16 people make one batch of the triplet stage
    return lfw.make_synthetic_faces(
        tmp_path_factory.mktemp("faces"), 16, 20, 3, pairs_per_fold=2, size=16, seed=1
    )


FAST = ["--scale", "48", "--max-size", "64", "--fc-dim", "32", "--max-proposals", "30", "--threads", "1"]


def test_fast_rcnn_resumes_to_the_uninterrupted_weights(shapes, tmp_path, monkeypatch, one_thread):
    # dropout draws from torch's global generator: the checkpoint must carry it too. The cut run
    # reads its images in two loader processes, which draw ahead of training: the batches are the
    # same, and the checkpoint holds the sampler's state as of the batches trained.
    args = ["train", "fast-rcnn", "--data", shapes, *FAST, "--iterations", "6", "--dropout", "0.5"]
    whole = str(tmp_path / "whole.pt")
    assert main([*args, "--out", whole]) == 0
    from convloc.models import fast_rcnn

    monkeypatch.setattr(fast_rcnn, "train_fast_rcnn", _every(fast_rcnn.train_fast_rcnn, save_every=2))
    cut = str(tmp_path / "cut.pt")
    _interrupt_after(monkeypatch, 5)
    with pytest.raises(Interrupted):
        main([*args, "--workers", "2", "--out", cut])
    assert torch.load(cut, weights_only=False)["iteration"] == 4
    monkeypatch.undo()
    assert main([*args, "--workers", "2", "--out", cut]) == 0
    _same_weights(
        torch.load(whole, weights_only=False)["model"], torch.load(cut, weights_only=False)["model"]
    )


def _every(train, save_every):
    def wrapped(*a, **k):
        return train(*a, save_every=save_every, **k)

    return wrapped


def test_resuming_into_another_run_is_refused_in_one_line(shapes, tmp_path, capsys, one_thread):
    ckpt = str(tmp_path / "f.pt")
    assert main(["train", "fast-rcnn", "--data", shapes, *FAST, "--iterations", "2", "--out", ckpt]) == 0
    other = make_shapes(str(tmp_path / "other"), 10, seed=4, **TINY)
    capsys.readouterr()
    for argv, what in (
        (["--data", other], "was trained on other data"),
        (["--data", shapes, "--lr", "0.5"], "was trained with other settings (lr 0.001 there, 0.5 here)"),
    ):
        with pytest.raises(SystemExit) as e:
            main(["train", "fast-rcnn", *argv, *FAST, "--iterations", "3", "--out", ckpt])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"error: --out: {what}" in err.splitlines()[-1], err
    with pytest.raises(SystemExit) as e:
        main(["train", "rcnn", "--data", shapes, "--out", ckpt, "--threads", "1"])
    assert "--out: holds a 'fast-rcnn' run, not a 'rcnn' one" in capsys.readouterr().err
    # a finished run resumed with its own settings trains nothing and says so
    assert main(["train", "fast-rcnn", "--data", shapes, *FAST, "--iterations", "2", "--out", ckpt]) == 0
    assert "holds the 2 iterations already" in capsys.readouterr().out


def test_proposal_cache_follows_the_images_not_their_names(tmp_path):
    from convloc.models.common import compute_proposals, load_proposals

    root = str(tmp_path / "s")
    make_shapes(root, 4, seed=1, **TINY)
    first = load_proposals(VOCDetection(root, "trainval"), str(tmp_path / "cache"), max_boxes=40)
    make_shapes(root, 4, seed=2, **TINY)  # new images under the same names
    ds = VOCDetection(root, "trainval")
    again = load_proposals(ds, str(tmp_path / "cache"), max_boxes=40)
    for i, boxes in enumerate(again):
        np.testing.assert_array_equal(boxes, compute_proposals(ds[i]["image"], max_boxes=40))
    assert any(a.shape != b.shape or (a != b).any() for a, b in zip(first, again))


def _fcn_args(seg):
    return ["train", "fcn", "--data", str(seg), "--variant", "8s", "--pad", "26", "--fc-kernel", "3",
            "--batch-size", "4", "--threads", "1", "--epochs", "3"]  # fmt: skip


def test_fcn_crfrnn_and_face_resume_to_the_uninterrupted_weights(
    seg, faces, tmp_path, monkeypatch, one_thread
):
    fcn = str(tmp_path / "fcn.pt")
    assert main([*_fcn_args(seg), "-o", fcn]) == 0
    crf = ["train", "crfrnn", "--data", str(seg), "--fcn", fcn, "--iterations", "2", "--batch-size", "4",
           "--epochs", "2", "--threads", "1"]  # fmt: skip
    face = ["train", "face", "--data", str(faces), "--pretrain-epochs", "2", "--triplet-epochs", "2",
            "--mining", "semihard,all", "--threads", "1"]  # fmt: skip
    # interrupted mid-epoch: fcn in its second epoch, crfrnn after its first, face in its
    # second (semi-hard) stage
    for argv, steps in ((_fcn_args(seg), 3), (crf, 2), (face, 3)):
        whole, cut = str(tmp_path / "whole.pt"), str(tmp_path / "cut.pt")
        for path in (whole, cut):
            if os.path.exists(path):
                os.remove(path)
        assert main([*argv, "-o", whole]) == 0
        _interrupt_after(monkeypatch, steps)
        with pytest.raises(Interrupted):
            main([*argv, "-o", cut])
        monkeypatch.undo()
        partial = torch.load(cut, weights_only=False)
        assert not partial["complete"], argv[1]
        assert main([*argv, "-o", cut]) == 0
        a, b = (torch.load(p, weights_only=False) for p in (whole, cut))
        assert a["complete"] and b["complete"]
        _same_weights(a["state_dict"], b["state_dict"])


def test_rerunning_a_finished_fcn_trains_nothing_and_other_data_is_refused(seg, tmp_path, capsys, one_thread):
    out = str(tmp_path / "fcn.pt")
    assert main([*_fcn_args(seg), "-o", out]) == 0
    before = os.path.getmtime(out)
    assert main([*_fcn_args(seg), "-o", out]) == 0
    assert os.path.getmtime(out) == before
    other = voc_seg.make_synthetic_segmentation(tmp_path / "other", 8, 2, size=32, seed=2)
    args = _fcn_args(seg)
    args[3] = str(other)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([*args, "-o", out])
    assert e.value.code == 2
    assert "error: --output: was trained on other data" in capsys.readouterr().err
    assert main([*args, "-o", out, "--no-resume"]) == 0
