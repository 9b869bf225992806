"""The ``convloc`` command line: help texts, argument errors, ``data`` commands."""

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

from convloc.cli import build_parser, main
from convloc.data import lfw, voc, voc_seg
from convloc.data.shapes import make_shapes


def _parsers(parser, path=("convloc",)):
    """(command path, parser) for ``convloc`` and every subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


PARSERS = list(_parsers(build_parser()))


def _arguments(parser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


@pytest.mark.parametrize("path, parser", PARSERS, ids=[" ".join(p) for p, _ in PARSERS])
def test_every_argument_has_help_and_shows_its_default(path, parser):
    formatter = parser.formatter_class(prog=parser.prog)
    for action in _arguments(parser):
        name = "/".join(action.option_strings) or action.dest
        if isinstance(action, argparse._SubParsersAction):
            assert all(c.help for c in action._choices_actions), (
                f"{' '.join(path)}: a subcommand without help"
            )
            continue
        assert action.help and action.help.strip(), f"{' '.join(path)} {name}: no help"
        if action.option_strings and action.default not in (None, False):
            assert "(default" in formatter._get_help_string(action), (
                f"{' '.join(path)} {name}: default not shown"
            )
    if len(path) > 1 and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
        assert parser.description, f"{' '.join(path)}: no description for -h"


def test_the_tree_holds_every_command():
    commands = {" ".join(p[1:]) for p, _ in PARSERS}
    assert {
        "train rcnn",
        "train fast-rcnn",
        "train fcn",
        "train crfrnn",
        "train face",
        "eval",
        "detect",
        "segment",
        "verify",
        "crf",
        "demo",
        "bench",
        "info",
        "data inspect",
        "data make-shapes",
        "data make-segmentation",
        "data make-faces",
    } <= commands


# ---- bad arguments: exit status 2 and a message naming the argument ----------------------------


def _fails(argv, capsys, names):
    """Runs ``convloc argv``: it must exit with status 2, printing the usage and an error that
    names the argument."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: convloc"), err
    assert "error: " in err and names in err.splitlines()[-1], err
    return err


def test_make_faces_bad_argument_exits_2_naming_it(tmp_path):
    # through the installed entry point: no traceback, nothing written
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "convloc.cli",
            "data",
            "make-faces",
            str(tmp_path / "f"),
            "--test-identities",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "argument --test-identities: expected an integer >= 20, got '5'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "f").exists()


@pytest.mark.parametrize(
    "argv, names",
    [
        (["data", "make-faces", "{tmp}/f", "--images", "1"], "--images"),
        (["data", "make-faces", "{tmp}/f", "--size", "x"], "--size"),
        (["data", "make-faces", "{tmp}/f", "--seed", "-1"], "--seed"),
        (["data", "make-faces", "{tmp}/f", "--pairs-per-fold", "0"], "--pairs-per-fold"),
        (["data", "make-shapes", "{tmp}/s", "--images", "0"], "--images"),
        (["data", "make-shapes", "{tmp}/s", "--test-fraction", "1"], "--test-fraction"),
        (["data", "make-shapes", "{tmp}/s", "--image-size", "100", "50"], "--image-size"),
        (["data", "make-segmentation", "{tmp}/g", "--train", "-3"], "--train"),
        (["data", "make-segmentation", "{tmp}/a_file"], "root"),
        (["data", "inspect", "{tmp}/missing"], "path"),
        (["data", "inspect", "{tmp}"], "path"),
        (["train", "fcn", "--data", "{tmp}/missing", "-o", "{tmp}/c.pt"], "--data"),
        (["train", "crfrnn", "--data", "{tmp}", "--fcn", "{tmp}/a_file", "-o", "{tmp}"], "--output"),
        (["train", "rcnn", "--data", "{tmp}", "--out", "{tmp}"], "--out"),
        (["train", "fast-rcnn", "--data", "{tmp}", "--out", "{tmp}/c.pt", "--lr", "0"], "--lr"),
        (["train", "rcnn", "--data", "{tmp}", "--out", "{tmp}/c.pt", "--dropout", "1"], "--dropout"),
        (["train", "face", "--data", "{tmp}", "-o", "{tmp}/c.pt", "--mining", "easy"], "--mining"),
        (["eval", "{tmp}/missing.pt", "--data", "{tmp}"], "checkpoint"),
        (["eval", "{tmp}/a_file", "--data", "{tmp}", "--svd", "8,x"], "--svd"),
        (["detect", "{tmp}/a_file", "{tmp}/a_file", "-o", "{tmp}/no/out.png"], "--output"),
        (["segment", "{tmp}/a_file", "{tmp}/a_file", "-o", "{tmp}/out.gif"], "--output"),
        (["verify", "{tmp}/a_file", "{tmp}/a_file", "{tmp}/missing.jpg"], "IMAGE_B"),
        (["crf", "{tmp}/a_file", "{tmp}/a_file", "-o", "{tmp}/o.png", "--gt-prob", "1"], "--gt-prob"),
        (["demo", "--iterations", "-1"], "--iterations"),
        (["bench", "roi", "--budget", "0"], "--budget"),
    ],
)
def test_bad_arguments_exit_2_naming_them(tmp_path, capsys, argv, names):
    (tmp_path / "a_file").write_text("not a checkpoint")
    _fails([a.format(tmp=tmp_path) for a in argv], capsys, names)
    assert sorted(os.listdir(tmp_path)) == ["a_file"]  # nothing written


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    shapes = make_shapes(str(root / "shapes"), 8, seed=1, size=(48, 64), min_size=12, max_size=28)
    seg = voc_seg.make_synthetic_segmentation(root / "seg", 4, 2, size=16, seed=1)
    faces = lfw.make_synthetic_faces(root / "faces", 3, 20, 2, pairs_per_fold=1, size=8, seed=1)
    return {"shapes": shapes, "seg": str(seg), "faces": str(faces)}


def test_files_the_commands_read_are_checked_before_any_work(datasets, tmp_path, capsys):
    shapes, seg, faces = datasets["shapes"], datasets["seg"], datasets["faces"]
    ckpt = str(tmp_path / "x.pt")  # never written: every command stops before training
    err = _fails(["eval", _fake_checkpoint(tmp_path, "fcn"), "--data", shapes], capsys, "checkpoint")
    assert "expected a checkpoint of `convloc train fast-rcnn|rcnn`, got one of 'fcn'" in err
    image, out = os.path.join(shapes, "JPEGImages", "000001.jpg"), str(tmp_path / "o.png")
    _fails(["segment", _fake_checkpoint(tmp_path, "face"), image, "-o", out], capsys, "checkpoint")
    err = _fails(["segment", image, image, "-o", out], capsys, "checkpoint")
    assert f"checkpoint: {image!r} is not a checkpoint" in err
    err = _fails(["train", "fast-rcnn", "--data", shapes, "--split", "tst", "--out", ckpt], capsys, "--split")
    assert "this tree's splits: test, train, trainval, val" in err
    err = _fails(["train", "fcn", "--data", seg, "--val-split", "test", "-o", ckpt], capsys, "--val-split")
    assert "this set's splits: train, val" in err
    _fails(
        ["train", "crfrnn", "--data", seg, "--fcn", _fake_checkpoint(tmp_path, "crfrnn"), "-o", ckpt],
        capsys,
        "--fcn",
    )
    _fails(["train", "face", "--data", faces, "--pairs", "none.txt", "-o", ckpt], capsys, "--pairs")
    _fails(["train", "face", "--data", faces, "--train-dir", "lfw2", "-o", ckpt], capsys, "--train-dir")
    (tmp_path / "pairs.txt").write_text("1\t1\nNo_Body\t1\t2\nNo_Body\t1\tSome_One\t1\n")
    err = _fails(
        ["train", "face", "--data", faces, "--pairs", str(tmp_path / "pairs.txt"), "-o", ckpt],
        capsys,
        "--test-dir",
    )
    assert "4 of the images" in err
    assert not os.path.exists(ckpt)


def _fake_checkpoint(tmp_path, kind):
    path = str(tmp_path / f"{kind}.pt")
    torch.save({"kind": kind}, path)
    return path


# ---- data commands ---------------------------------------------------------------------------


def test_make_segmentation_and_make_faces_say_what_they_wrote(tmp_path, capsys):
    assert (
        main(
            ["data", "make-segmentation", str(tmp_path / "seg"), "--train", "3", "--val", "2", "--size", "16"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"wrote 3 train and 2 val images (16x16) with their labels to {tmp_path / 'seg'}" in out
    argv = [
        "data",
        "make-faces",
        str(tmp_path / "f"),
        "--train-identities",
        "2",
        "--test-identities",
        "20",
        "--images",
        "2",
        "--pairs-per-fold",
        "1",
        "--size",
        "8",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"wrote 2 people to {tmp_path / 'f' / 'train'} and 20 to {tmp_path / 'f' / 'lfw'}" in out
    assert f"10 folds of 1 matched and 1 mismatched pairs to {tmp_path / 'f' / 'pairs.txt'}" in out


def test_inspect_detection_tree(datasets, tmp_path, capsys):
    shapes = datasets["shapes"]
    assert main(["data", "inspect", shapes, "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert list(summary) == ["detection"]
    det = summary["detection"]
    assert det["classes"] == ["circle", "square", "triangle", "cross"]
    assert list(det["splits"]) == ["test", "train", "trainval", "val"]  # not the per-class lists
    for split, s in det["splits"].items():
        ds = voc.VOCDetection(shapes, split)
        targets = [ds.target(i) for i in range(len(ds))]
        assert s["images"] == len(ds)
        for c, name in enumerate(ds.classes):
            assert s["objects"][name] == sum(
                int(((t["labels"] == c) & ~t["difficult"]).sum()) for t in targets
            )
            assert s["difficult"][name] == sum(
                int(((t["labels"] == c) & t["difficult"]).sum()) for t in targets
            )
    assert out.startswith(f"VOC detection tree {shapes}: 4 classes")
    images = out.splitlines()[2].split()
    assert images == ["images", *(str(s["images"]) for s in det["splits"].values())]


def test_inspect_segmentation_set_and_faces(datasets, tmp_path, capsys):
    assert main(["data", "inspect", datasets["seg"], "--json", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out
    seg = json.loads((tmp_path / "g.json").read_text())["segmentation"]
    assert seg["classes"] == list(voc_seg.SYNTHETIC_CLASSES) and seg["splits"] == {"train": 4, "val": 2}
    assert "5 classes (background, disk, square, triangle, ring)" in out
    assert main(["data", "inspect", datasets["faces"], "--json", str(tmp_path / "f.json")]) == 0
    out = capsys.readouterr().out
    faces = json.loads((tmp_path / "f.json").read_text())["faces"]
    assert faces["identity_folders"] == {
        "lfw": {"identities": 20, "images": 40, "identities_with_2_images": 20},
        "train": {"identities": 3, "images": 6, "identities_with_2_images": 3},
    }
    assert faces["pairs"] == {"pairs.txt": {"folds": 10, "matched": 10, "mismatched": 10}}
    assert out.splitlines()[1].split() == [
        "identity",
        "folders",
        "people",
        "images",
        "people",
        "with",
        "2+",
        "images",
    ]


def test_voc_split_errors_name_the_splits_there_are(datasets):
    with pytest.raises(
        FileNotFoundError, match="split: no .*tst.txt; this tree's splits: test, train, trainval, val"
    ):
        voc.VOCDetection(datasets["shapes"], "tst")
    with pytest.raises(FileNotFoundError, match="split: no .*test.txt; this set's splits: train, val"):
        voc_seg.VOCSegmentation(datasets["seg"], "test")


def test_faces_summary_counts_identity_folders_and_reports_unreadable_pairs(tmp_path):
    for name, n in (("Ann_Lee", 2), ("Bo_Ray", 1)):
        (tmp_path / name).mkdir()
        for i in range(1, n + 1):
            (tmp_path / name / f"{name}_{i:04d}.jpg").touch()
    (tmp_path / "pairs.txt").write_text("1\nAnn_Lee\t1\t2\nAnn_Lee\t1\tBo_Ray\t1\n")
    (tmp_path / "pairsDevTest.txt").write_text("2\t1\nAnn_Lee\t1\t2\n")
    s = lfw.summary(tmp_path)
    assert s["identity_folders"] == {".": {"identities": 2, "images": 3, "identities_with_2_images": 1}}
    assert s["pairs"]["pairs.txt"] == {"folds": 1, "matched": 1, "mismatched": 1}
    assert s["pairs"]["pairsDevTest.txt"]["error"].startswith("pairs_file: header says 2 folds")


# ---- bad checkpoints and empty splits: one line, exit status 2 -----------------------------------


def _bad_checkpoints(tmp_path) -> dict[str, str]:
    """Files that are no usable checkpoint, by what is wrong with them."""
    good = tmp_path / "good.pt"
    torch.save({"kind": "fcn", "state_dict": {"w": torch.zeros(1000)}}, good)
    data = good.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "corrupt": data[:100] + bytes(b ^ 0x5A for b in data[100:300]) + data[300:],
        "empty": b"",
    }
    paths = {}
    for name, content in files.items():
        (tmp_path / f"{name}.pt").write_bytes(content)
        paths[name] = str(tmp_path / f"{name}.pt")
    for name, state in (
        ("a list", [1, 2]),
        ("no kind", {"model": {}}),
        ("fields missing", {"kind": "fast-rcnn"}),
        ("unfinished", {"kind": "fast-rcnn", "complete": False}),
    ):
        torch.save(state, tmp_path / f"{name}.pt")
        paths[name] = str(tmp_path / f"{name}.pt")
    return paths


@pytest.mark.parametrize(
    "command",
    ["eval", "detect", "segment", "verify", "crfrnn --fcn", "fcn --init"],
)
def test_bad_checkpoints_fail_in_one_line(datasets, tmp_path, capsys, command):
    shapes, seg = datasets["shapes"], datasets["seg"]
    image = os.path.join(shapes, "JPEGImages", "000001.jpg")
    out = str(tmp_path / "o.png")
    argv = {
        "eval": lambda c: ["eval", c, "--data", shapes],
        "detect": lambda c: ["detect", c, image, "-o", out],
        "segment": lambda c: ["segment", c, image, "-o", out],
        "verify": lambda c: ["verify", c, image, image],
        "crfrnn --fcn": lambda c: [
            "train",
            "crfrnn",
            "--data",
            seg,
            "--fcn",
            c,
            "-o",
            str(tmp_path / "x.pt"),
        ],
        "fcn --init": lambda c: ["train", "fcn", "--data", seg, "--init", c, "-o", str(tmp_path / "x.pt")],
    }[command]
    option = command.split()[-1] if command.startswith(("crfrnn", "fcn")) else "checkpoint"
    for what, path in _bad_checkpoints(tmp_path).items():
        with pytest.raises(SystemExit) as e:
            main(argv(path))
        err = capsys.readouterr().err
        assert e.value.code == 2, (what, err)
        lines = err.splitlines()
        assert lines[0].startswith("usage: convloc") and "Traceback" not in err, (what, err)
        assert lines[-1].split(": error: ")[1].startswith(f"{option}: "), (what, err)


def test_empty_splits_fail_in_one_line(datasets, tmp_path, capsys):
    import shutil

    shapes, seg = str(tmp_path / "shapes"), str(tmp_path / "seg")
    shutil.copytree(datasets["shapes"], shapes)
    shutil.copytree(datasets["seg"], seg)
    open(os.path.join(shapes, "ImageSets", "Main", "none.txt"), "w").close()
    open(os.path.join(seg, "ImageSets", "Segmentation", "none.txt"), "w").close()
    ckpt = str(tmp_path / "c.pt")
    torch.save({"kind": "fast-rcnn"}, ckpt)
    for argv, option in (
        (["train", "fast-rcnn", "--data", shapes, "--split", "none", "--out", ckpt], "--split"),
        (["train", "rcnn", "--data", shapes, "--split", "none", "--out", ckpt], "--split"),
        (["train", "fcn", "--data", seg, "--train-split", "none", "-o", ckpt], "--train-split"),
        (["train", "fcn", "--data", seg, "--val-split", "none", "-o", ckpt], "--val-split"),
    ):
        err = _fails(argv, capsys, option)
        assert "lists no images" in err.splitlines()[-1]


# ---- hostile inputs to `convloc crf`: one line, status 2, nothing written -----------------------


def _crf_inputs(root):
    """An image and probability / label files of every kind the command must refuse."""
    import zlib

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(root / "img.png")
    for name, labels in (("p1", 1), ("p3", 3), ("p300", 300)):
        p = rng.random((labels, 20, 30))
        np.save(root / f"{name}.npy", (p / p.sum(0)).astype(np.float32))
    np.save(root / "complex.npy", np.load(root / "p3.npy").astype(np.complex64))
    Image.fromarray(np.full((20, 30), 60000, np.uint16)).save(root / "label16.png")  # 60001 labels?

    # PNGs whose headers say 30000 x 30000 (beyond PIL's own limit) and 9000 x 9000 pixels (within
    # it), in a few kB: decoding them would take 900 and 81 MB
    def chunk(tag, data):
        return len(data).to_bytes(4, "big") + tag + data + zlib.crc32(tag + data).to_bytes(4, "big")

    for name, side in (("bomb", 30000), ("bomb9k", 9000)):
        raw = zlib.compress(b"".join(b"\0" * (side + 1) for _ in range(64)), 9)
        header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
        (root / f"{name}.png").write_bytes(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
        )
    (root / "a_file").write_text("not a directory")


@pytest.mark.parametrize(
    "image, probs, out, message",
    [
        ("img.png", "p1.npy", "o.png", "expected 2 to 256 labels"),
        ("img.png", "p300.npy", "o.png", "expected 2 to 256 labels"),
        ("img.png", "complex.npy", "o.png", "expected real probabilities"),
        ("img.png", "label16.png", "o.png", "at most 256"),
        ("bomb.png", "p3.npy", "o.png", "refused before decoding"),
        ("img.png", "bomb.png", "o.png", "refused before decoding"),
        ("bomb9k.png", "p3.npy", "o.png", "refused before decoding"),
        ("img.png", "p3.npy", "a_file/o.png", "a_file"),
        ("img.png", "p3.npy", "out.jpg", "-o: expected a .png file or an existing directory"),
    ],
)
def test_crf_refuses_hostile_inputs_in_one_line(tmp_path, image, probs, out, message):
    _crf_inputs(tmp_path)
    before = sorted(os.listdir(tmp_path))
    r = subprocess.run(
        [sys.executable, "-m", "convloc.cli", "crf", image, probs, "-o", out],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and message in r.stderr.splitlines()[-1], r.stderr
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, no directory made


def test_crf_writes_its_outputs_whole(tmp_path, capsys):
    _crf_inputs(tmp_path)
    out = tmp_path / "o.png"
    assert main(["crf", str(tmp_path / "img.png"), str(tmp_path / "p3.npy"), "-o", str(out)]) == 0
    assert out.exists() and (tmp_path / "o_overlay.png").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary files left


def test_atomic_files_leave_the_old_file_when_writing_fails(tmp_path):
    from convloc.data.files import atomic_file

    path = tmp_path / "x.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the writer failed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["x.txt"]


def test_making_a_data_set_again_leaves_nothing_of_the_last_one(tmp_path):
    root = tmp_path / "shapes"
    tiny = {"size": (48, 64), "min_size": 12, "max_size": 28}
    make_shapes(str(root), 6, seed=1, **tiny)
    (root / "notes.txt").write_text("mine")
    make_shapes(str(root), 3, seed=2, **tiny)
    assert sorted(os.listdir(root / "Annotations")) == ["000000.xml", "000001.xml", "000002.xml"]
    assert len(os.listdir(root / "JPEGImages")) == 3 and (root / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["shapes"]  # the temporary tree is gone
    voc_seg.make_synthetic_segmentation(tmp_path / "seg", n_train=4, n_val=2, size=32)
    voc_seg.make_synthetic_segmentation(tmp_path / "seg", n_train=2, n_val=1, size=32)
    assert len(os.listdir(tmp_path / "seg" / "SegmentationClass")) == 3
