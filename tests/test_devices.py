"""Where and in what precision the pipelines compute: ``--device`` (a device that cannot be used
is refused in one line), ``--amp`` (bfloat16 autocast trains on the CPU; float16 needs a GPU)."""

import pytest
import torch

import convloc
from convloc.cli import main
from convloc.data import voc_seg
from convloc.data.shapes import make_shapes
from convloc.models.common import Precision, resolve_device

NO_GPU = pytest.mark.skipif(convloc.cuda_available(), reason="this machine has a GPU convloc can use")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    shapes = make_shapes(str(root / "shapes"), 10, seed=3, size=(48, 64), min_size=12, max_size=28)
    seg = voc_seg.make_synthetic_segmentation(root / "seg", 8, 2, size=32, seed=1)
    return shapes, str(seg)


FAST = ["--scale", "48", "--max-size", "64", "--fc-dim", "32", "--max-proposals", "30", "--threads", "1"]
FCN = ["--variant", "8s", "--pad", "26", "--fc-kernel", "3", "--batch-size", "4", "--threads", "1"]


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == (
        torch.device("cuda", 0) if convloc.cuda_available() else torch.device("cpu")
    )
    for bad in ("gpu", "cuda:x", "cuda:-1", "cpu:0"):
        with pytest.raises(ValueError, match=r"^device: expected auto, cpu, cuda or cuda:N"):
            resolve_device(bad)


@NO_GPU
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"], ids=["any", "first", "fourth"])  # not "cuda"
def test_a_gpu_that_cannot_be_used_is_refused(spec):
    why = (
        "torch sees no CUDA GPU" if convloc.info()["compiled_with_cuda"] else "convloc was built without CUDA"
    )
    with pytest.raises(ValueError, match=f"^device: '{spec}' asked for, but {why}"):
        resolve_device(spec)


def test_precision():
    with pytest.raises(ValueError, match="^amp: fp16 needs a CUDA device, got 'cpu'"):
        Precision("fp16", "cpu")
    with pytest.raises(ValueError, match="^amp: expected off, bf16 or fp16"):
        Precision("int8")
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with Precision("bf16").autocast():
        assert (a @ b).dtype == torch.bfloat16
    with Precision("off").autocast():
        assert (a @ b).dtype == torch.float32


@NO_GPU
def test_commands_refuse_an_unusable_device_in_one_line(data, tmp_path, capsys):
    shapes, seg = data
    out = str(tmp_path / "c.pt")
    some_file = str(tmp_path.parent / "some_file")
    open(some_file, "w").close()
    for argv, option in (
        (["train", "fast-rcnn", "--data", shapes, "--out", out, "--device", "cuda"], "--device"),
        (["train", "rcnn", "--data", shapes, "--out", out, "--amp", "fp16"], "--amp"),
        (["train", "fcn", "--data", seg, "-o", out, "--device", "cuda:1"], "--device"),
        (["train", "face", "--data", seg, "-o", out, "--device", "tpu"], "--device"),
        (["eval", some_file, "--data", shapes, "--device", "cuda"], "--device"),
        (["segment", some_file, some_file, "-o", str(tmp_path / "s.png"), "--device", "cuda"], "--device"),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("usage: convloc"), err
        assert f"error: {option}: " in err.splitlines()[-1] and "Traceback" not in err, err
    assert not list(tmp_path.iterdir())  # nothing written


def test_bf16_autocast_trains_on_the_cpu(data, tmp_path, capsys, one_thread):
    shapes, seg = data
    weights = {}
    for amp in ("off", "bf16"):
        fast, fcn = str(tmp_path / f"fast_{amp}.pt"), str(tmp_path / f"fcn_{amp}.pt")
        args = [
            "train",
            "fast-rcnn",
            "--data",
            shapes,
            *FAST,
            "--iterations",
            "4",
            "--amp",
            amp,
            "--out",
            fast,
        ]
        assert main(args) == 0
        assert main(["train", "fcn", "--data", seg, *FCN, "--epochs", "2", "--amp", amp, "-o", fcn]) == 0
        weights[amp] = [torch.load(p, weights_only=False) for p in (fast, fcn)]
    assert "device: cpu, 1 thread(s), autocast bf16" in capsys.readouterr().err
    for (off, bf16), key in zip(zip(weights["off"], weights["bf16"]), ("model", "state_dict")):
        for name, w in bf16[key].items():
            assert w.dtype == off[key][name].dtype and (
                not w.is_floating_point() or torch.isfinite(w).all()
            ), name
        # the forward passes ran in bfloat16: the weights moved otherwise than in float32
        assert any(not torch.equal(w, off[key][name]) for name, w in bf16[key].items())
    assert all(h > 0 for h in weights["bf16"][1]["loop"]["history"])
