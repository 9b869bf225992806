import numpy as np
import pytest
import torch

from convloc.data import lfw
from convloc.metrics import verification as ver
from convloc.models import face
from reference import segface as ref

# ---- LFW format -----------------------------------------------------------------------------


def test_read_pairs_lfw_format(tmp_path):
    (tmp_path / "pairs.txt").write_text(
        "2\t1\nAbel_Ann\t1\t3\nBo_Cid\t2\tDee_Eve\t1\nFay_Gus\t4\t5\nHal_Ivy\t1\tJo_Kim\t12\n"
    )
    p = lfw.read_pairs(tmp_path / "pairs.txt", tmp_path / "lfw")
    assert len(p) == 4
    assert p.same.tolist() == [True, False, True, False]
    assert p.fold.tolist() == [0, 0, 1, 1]
    assert p.a[0] == tmp_path / "lfw" / "Abel_Ann" / "Abel_Ann_0001.jpg"
    assert p.b[3] == tmp_path / "lfw" / "Jo_Kim" / "Jo_Kim_0012.jpg"
    # pairsDevTrain.txt: a single count, one fold.
    (tmp_path / "dev.txt").write_text("1\nAbel_Ann\t1\t2\nBo_Cid\t1\tDee_Eve\t1\n")
    assert lfw.read_pairs(tmp_path / "dev.txt", tmp_path).fold.tolist() == [0, 0]
    (tmp_path / "bad.txt").write_text("1\t2\nAbel_Ann\t1\t2\n")
    with pytest.raises(ValueError, match="pairs_file"):
        lfw.read_pairs(tmp_path / "bad.txt", tmp_path)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    return lfw.make_synthetic_faces(root, 16, 20, 5, pairs_per_fold=6, size=16, seed=1)


def test_synthetic_faces_layout_and_determinism(faces, tmp_path):
    paths, labels, names = lfw.read_identities(faces / "train")
    assert len(names) == 16 and len(paths) == 80 and np.bincount(labels).tolist() == [5] * 16
    pairs = lfw.read_pairs(faces / "pairs.txt", faces / "lfw")
    assert len(pairs) == 120 and pairs.same.sum() == 60 and np.bincount(pairs.fold).tolist() == [12] * 10
    assert all(p.is_file() for p in pairs.a + pairs.b)
    # Folds are identity-disjoint, as in LFW.
    ids = [
        {p.parent.name for k, p in enumerate(pairs.a + pairs.b) if pairs.fold[k % 120] == f}
        for f in range(10)
    ]
    assert all(not (ids[i] & ids[j]) for i in range(10) for j in range(i))
    images = lfw.load_images(paths[:3])
    assert images.shape == (3, 3, 16, 16) and images.min() >= -1 and images.max() <= 1
    again = lfw.make_synthetic_faces(tmp_path, 16, 20, 5, pairs_per_fold=6, size=16, seed=1)
    assert (again / "pairs.txt").read_text() == (faces / "pairs.txt").read_text()
    np.testing.assert_array_equal(lfw.load_images(lfw.read_identities(again / "train")[0][:3]), images)
    # Read by threads: the same array, in the same order.
    np.testing.assert_array_equal(lfw.load_images(paths, workers=3), lfw.load_images(paths))


# ---- verification metrics -------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 9, 50])
def test_best_threshold_against_reference(rng, n):
    scores = np.round(rng.normal(size=n), 1)  # ties on purpose
    same = rng.random(n) < 0.5
    t, acc = ver.best_threshold(scores, same)
    assert acc == pytest.approx(ref.best_accuracy(scores, same))
    assert np.mean((scores >= t) == same) == pytest.approx(acc)


def test_kfold_accuracy_hand_made():
    # Fold 1's best threshold (from fold 0) is 0.5: one of fold 1's pairs is on the wrong side.
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.9, 0.4, 0.1, 0.6])
    same = np.array([1, 1, 0, 0, 1, 1, 0, 0], dtype=bool)
    fold = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    r = ver.kfold_accuracy(scores, same, fold)
    assert r.accuracies.tolist() == [1.0, 0.5]
    assert r.mean == 0.75 and r.std == 0.25
    with pytest.raises(ValueError, match="folds"):
        ver.kfold_accuracy(scores, same, np.zeros(8))


def test_roc_auc_eer_hand_made(tmp_path):
    scores = np.array([4.0, 3.0, 2.0, 1.0])
    same = np.array([True, False, True, False])
    fpr, tpr, th = ver.roc_curve(scores, same)
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1] and tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert th[1:].tolist() == [4, 3, 2, 1]
    assert ver.auc(fpr, tpr) == 0.75
    assert ver.equal_error_rate(fpr, tpr) == 0.5
    fpr, tpr, _ = ver.roc_curve(np.array([3.0, 2.0, 1.0, 0.0]), np.array([True, True, False, False]))
    assert ver.auc(fpr, tpr) == 1.0 and ver.equal_error_rate(fpr, tpr) == 0.0
    ver.save_roc_png(tmp_path / "roc.png", fpr, tpr, "test")
    from PIL import Image

    assert Image.open(tmp_path / "roc.png").size == (400, 400)
    with pytest.raises(ValueError, match="same"):
        ver.roc_curve(scores, np.ones(4, dtype=bool))


# ---- triplet loss ---------------------------------------------------------------------------


@pytest.mark.parametrize("mining", face.MINING)
@pytest.mark.parametrize("n", [2, 5, 12])
def test_triplet_loss_against_reference(rng, mining, n):
    x = rng.normal(size=(n, 3)) * 0.3
    labels = rng.integers(0, 3, size=n)
    got = face.triplet_loss(torch.from_numpy(x), torch.from_numpy(labels), 0.2, mining)
    want = {"all": ref.triplet_all, "hard": ref.triplet_hard, "semihard": ref.triplet_semihard}[mining]
    assert got.item() == pytest.approx(want(x, labels, 0.2), abs=1e-12)


def test_triplet_loss_gradients_and_edge_cases():
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.05, 0.0]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    loss = face.triplet_loss(x, labels, 1.0, "all")
    loss.backward()
    assert loss.item() > 0 and x.grad.abs().sum() > 0
    torch.autograd.gradcheck(
        lambda v: face.triplet_loss(v, labels, 1.0, "hard"), (x.detach().requires_grad_(),)
    )
    single = face.triplet_loss(x, torch.tensor([0, 1, 2]), 1.0, "semihard")
    assert single.item() == 0 and single.requires_grad
    with pytest.raises(ValueError, match="mining"):
        face.triplet_loss(x, labels, 1.0, "easy")


def test_face_train_eval_smoke(faces, one_thread):
    """Classification pre-training + triplet W' on 16 synthetic people: verification of unseen
    people well above the 50 % of chance (0.82 here)."""
    torch.manual_seed(0)
    paths, labels, names = lfw.read_identities(faces / "train")
    x, y = torch.from_numpy(lfw.load_images(paths)), torch.from_numpy(labels)
    model = face.FaceVerifier(len(names), feature_dim=32, dim=16, width=8)
    losses = face.pretrain_classifier(model, x, y, epochs=25, batch_size=16, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0]
    tl = face.train_projection(model, x, y, 10, "semihard", identities_per_batch=8, images_per_identity=4)
    assert tl[-1] <= tl[0]
    pairs = lfw.read_pairs(faces / "pairs.txt", faces / "lfw")
    scores = face.pair_scores(
        model,
        torch.from_numpy(lfw.load_images(pairs.a)),
        torch.from_numpy(lfw.load_images(pairs.b)),
    )
    result = ver.kfold_accuracy(scores, pairs.same, pairs.fold)
    assert result.mean > 0.7, result


def test_cli_train_face_and_verify(faces, tmp_path, capsys, one_thread):
    from convloc.cli import main

    ckpt = str(tmp_path / "face.pt")
    args = ["train", "face", "--data", str(faces), "--pretrain-epochs", "1"]
    args += ["--triplet-epochs", "1"]
    args += ["--mining", "semihard,all", "--threads", "1", "--roc", str(tmp_path / "roc.png")]
    assert main([*args, "-o", ckpt]) == 0
    out = capsys.readouterr().out
    assert '"mining": "all"' in out and (tmp_path / "roc.png").is_file()
    a = faces / "lfw" / "Synth_Lfw0000" / "Synth_Lfw0000_0001.jpg"
    assert main(["verify", ckpt, str(a), str(a)]) == 0  # an image is always its own match
    assert '"same": true' in capsys.readouterr().out
