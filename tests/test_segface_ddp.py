"""torchrun DDP for ``convloc train fcn|face``: two gloo ranks on the CPU end with one model (the
same parameters and buffers on both) that has learned, and only rank 0 reports and writes.

Run as a script under torchrun, this file is the worker of the first test."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convloc.data import lfw, voc_seg

# Exact-fit padding for 32 x 32 inputs (as in test_segmentation): cheap enough for CI.
FCN_ARGS = ["--variant", "8s", "--pad", "26", "--fc-kernel", "3"]


def _torchrun(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    seg = voc_seg.make_synthetic_segmentation(root / "seg", 16, 4, size=32, seed=3)
    faces = lfw.make_synthetic_faces(root / "faces", 12, 20, 4, pairs_per_fold=6, size=16, seed=1)
    return seg, faces


def test_ranks_end_with_one_model_that_learned(data, tmp_path, one_thread):
    r = _torchrun(__file__, *map(str, data), str(tmp_path))
    assert r.returncode == 0, r.stderr
    for name in ("fcn", "face"):
        s0, s1 = (torch.load(tmp_path / f"{name}{rank}.pt") for rank in (0, 1))
        assert s0["state"].keys() == s1["state"].keys()
        for k, v in s0["state"].items():
            torch.testing.assert_close(s1["state"][k], v, rtol=0, atol=0, msg=f"{name}: {k}")
        assert s0["losses"] == s1["losses"]  # averaged over the ranks
        assert s0["losses"][-1] < 0.7 * s0["losses"][0], s0["losses"]
    assert s0["triplet"][-1] < s0["triplet"][0], s0["triplet"]
    # One process on the whole of each batch follows the two ranks' loss curve, each rank having
    # half the batch: the same gradients but for batch norm's statistics, over half the images
    # (8 % apart at most on this data).
    alone = _fcn(data[0], rank=0)[1]
    ranks = torch.load(tmp_path / "fcn0.pt")["losses"]
    assert all(abs(a - b) <= 0.15 * b for a, b in zip(alone, ranks)), (alone, ranks)


def test_cli_train_fcn_under_torchrun(data, tmp_path):
    from convloc.commands.segface import load_checkpoint

    seg, _ = data
    ckpt = tmp_path / "fcn.pt"
    common = ["--threads", "1", "-o", str(ckpt)]
    r = _torchrun(
        "-m", "convloc.cli", "train", "fcn", "--data", str(seg), *FCN_ARGS, "--epochs", "2", *common
    )
    assert r.returncode == 0, r.stderr
    reports = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [rep["model"] for rep in reports] == ["FCN-8s"]  # rank 0 alone evaluates and prints
    model, _ = load_checkpoint(ckpt)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 5, 32, 32)
    assert not list(tmp_path.glob("*.tmp"))


def test_cli_train_face_under_torchrun(data, tmp_path):
    from convloc.commands.segface import load_checkpoint

    _, faces = data
    ckpt = tmp_path / "face.pt"
    args = ["train", "face", "--data", str(faces), "--pretrain-epochs", "2", "--triplet-epochs", "1"]
    r = _torchrun("-m", "convloc.cli", *args, "--threads", "1", "-o", str(ckpt))
    assert r.returncode == 0, r.stderr
    reports = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [rep["stage"] for rep in reports] == ["descriptor", "projected"]
    assert load_checkpoint(ckpt)[1]["kind"] == "face"
    assert not list(tmp_path.glob("*.tmp"))


def _fcn(seg: Path, rank: int):
    """A small FCN-8s trained on ``seg`` (seeded by ``rank``) → (model, each epoch's loss)."""
    from convloc.models import fcn
    from convloc.models.segmentation import fit

    torch.manual_seed(rank)
    ds = voc_seg.VOCSegmentation(seg, "train")
    x, y = (torch.from_numpy(a) for a in ds.arrays())
    layout = fcn.Layout(((8,), (16,), (16,), (16,), (16,)), 32, 3, 26, batch_norm=True)
    model = fcn.FCN(ds.num_classes, "8s", layout)
    return model, fit(model, x, y, epochs=6, batch_size=8, lr=1e-2)


def _worker(seg: Path, faces: Path, out: Path) -> None:
    from convloc.models import face
    from convloc.models.common import close_distributed, init_distributed

    rank, world = init_distributed()
    assert world == 2
    torch.set_num_threads(1)
    model, losses = _fcn(seg, rank)  # different initial weights: DDP must start both ranks from rank 0's
    torch.save({"state": model.state_dict(), "losses": losses}, out / f"fcn{rank}.pt")

    paths, labels, names = lfw.read_identities(faces / "train")
    x, y = torch.from_numpy(lfw.load_images(paths)), torch.from_numpy(labels)
    model = face.FaceVerifier(len(names), feature_dim=16, dim=8, width=8)
    losses = face.pretrain_classifier(model, x, y, epochs=15, batch_size=16, lr=1e-2)
    triplet = face.train_projection(model, x, y, 4, "semihard", identities_per_batch=6, images_per_identity=4)
    torch.save({"state": model.state_dict(), "losses": losses, "triplet": triplet}, out / f"face{rank}.pt")
    close_distributed()


if __name__ == "__main__":
    _worker(*map(Path, sys.argv[1:4]))
