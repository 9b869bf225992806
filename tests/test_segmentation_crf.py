import numpy as np
import pytest
import torch

from convloc.nn import PermutohedralConv, crfrnn
from convloc.nn.crfrnn import CRFasRNN, crf_mean_field


def _inputs(rng, b=1, labels=3, h=4, w=5, dtype=torch.float64):
    unary = torch.from_numpy(rng.normal(size=(b, labels, h, w))).to(dtype)
    image = torch.from_numpy(rng.uniform(0, 255, size=(b, 3, h, w))).to(dtype)
    return unary, image


def test_exact_filter_against_loops(rng):
    v = torch.from_numpy(rng.normal(size=(6, 2)))
    f = torch.from_numpy(rng.normal(size=(6, 3)))
    want = torch.zeros_like(v)
    for i in range(6):
        for j in range(6):
            if i != j:
                want[i] += torch.exp(-0.5 * ((f[i] - f[j]) ** 2).sum()) * v[j]
    torch.testing.assert_close(crfrnn.gaussian_filter_exact(v, f), want)


def test_mean_field_matches_hand_written_step(rng):
    unary, image = _inputs(rng, labels=2, h=2, w=3)
    crf = CRFasRNN(2, iterations=1, filter="exact").double()
    got = crf(unary, image)
    # One step by hand over the 6 pixels.
    theta_a, theta_b, theta_g = 10.0, 20.0, 3.0
    pos = torch.tensor([[y, x] for y in range(2) for x in range(3)], dtype=torch.float64)
    rgb = image[0].reshape(3, -1).T
    u = unary[0].reshape(2, -1).T
    q = torch.softmax(u, 1)
    want = torch.zeros_like(u)
    for i in range(6):
        for j in range(6):
            if i == j:
                continue
            ks = torch.exp(-0.5 * (((pos[i] - pos[j]) / theta_g) ** 2).sum())
            kb = torch.exp(
                -0.5 * (((pos[i] - pos[j]) / theta_a) ** 2).sum()
                - 0.5 * (((rgb[i] - rgb[j]) / theta_b) ** 2).sum()
            )
            msg = 3.0 * ks * q[j] + 5.0 * kb * q[j]
            want[i] -= msg.flip(0)  # Potts: label l pays for the other label's mass
    want += u
    torch.testing.assert_close(got[0], want.T.reshape(2, 2, 3))


def test_potts_smooths_an_isolated_pixel():
    # A uniform image, label 0 everywhere but one weakly-labelled pixel: the CRF relabels it.
    unary = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    unary[0, 0] = 2.0
    unary[0, :, 2, 2] = torch.tensor([0.0, 0.5], dtype=torch.float64)
    image = torch.full((1, 3, 5, 5), 100.0, dtype=torch.float64)
    out = CRFasRNN(2, filter="exact").double()(unary, image)
    assert unary[0, :, 2, 2].argmax() == 1 and out[0, :, 2, 2].argmax() == 0
    # ... but not across a strong colour edge when only the bilateral kernel is on.
    unary = torch.zeros(1, 2, 4, 6, dtype=torch.float64)
    unary[0, 0, :, :3] = 1.0
    unary[0, 1, :, 3:] = 1.0
    image = torch.zeros(1, 3, 4, 6, dtype=torch.float64)
    image[..., 3:] = 255.0
    crf = CRFasRNN(2, spatial_weight=0.0, filter="exact").double()
    assert (crf(unary, image).argmax(1) == unary.argmax(1)).all()


def test_gradcheck_all_inputs_and_parameters(rng):
    unary, image = _inputs(rng, b=1, labels=2, h=2, w=3)
    crf = CRFasRNN(2, iterations=2, learn_widths=True, filter="exact").double()
    params = [
        unary,
        image,
        crf.spatial_weight,
        crf.bilateral_weight,
        crf.compatibility,
        crf.log_widths,
    ]
    params = [p.detach().clone().requires_grad_() for p in params]
    # Scale the widths so the kernels are far from 0 and 1 and every input matters.
    params[5].data = torch.log(torch.tensor([2.0, 60.0, 1.5], dtype=torch.float64))

    def fn(*args):
        return crf_mean_field(*args, iterations=2, filter="exact")

    assert torch.autograd.gradcheck(fn, params)
    # Gradients reach the module's parameters through a loss.
    loss = crf(unary, image).logsumexp(1).sum()
    loss.backward()
    for name, p in crf.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_batched_equals_one_by_one(rng):
    unary, image = _inputs(rng, b=3, dtype=torch.float32)
    crf = CRFasRNN(3, filter="exact")
    whole = crf(unary, image)
    for k in range(3):
        torch.testing.assert_close(whole[k : k + 1], crf(unary[k : k + 1], image[k : k + 1]))


@pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(), reason="torch.compile unsupported here")
def test_torch_compile_matches_eager(rng):
    """fullgraph: the lattice op traces through its fake and autograd registrations without a
    graph break; forward and every gradient equal eager's. aot_eager does the same tracing as
    the default inductor backend without its C++ code generation (over a minute on a busy CI
    core)."""
    unary, image = _inputs(rng, b=2, labels=3, h=6, w=7)
    crf = CRFasRNN(3, iterations=2, learn_widths=True, filter="lattice").double()
    results = []
    torch._dynamo.reset()
    for fn in (crf, torch.compile(crf, backend="aot_eager", fullgraph=True)):
        u, im = unary.clone().requires_grad_(), image.clone().requires_grad_()
        out = fn(u, im)
        weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
        grads = torch.autograd.grad((out * weights).sum(), (u, im, *crf.parameters()))
        results.append((out.detach(), *grads))
    torch._dynamo.reset()
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager)


def test_crf_bad_inputs(rng):
    unary, image = _inputs(rng)
    with pytest.raises(ValueError, match="filter"):
        CRFasRNN(3, filter="box")
    with pytest.raises(ValueError, match="num_labels"):
        CRFasRNN(1)
    crf = CRFasRNN(3, filter="exact").double()
    with pytest.raises(ValueError, match="image"):
        crf(unary, image[:, :2])
    with pytest.raises(ValueError, match="image"):
        crf(unary, image[..., :3])


def test_lattice_mean_field_close_to_exact(rng):
    """The lattice path approximates exact filtering: same labels almost everywhere, and its
    gradients w.r.t. the unary and the image point the same way."""
    unary, image = _inputs(rng, b=2, labels=3, h=12, w=10)
    image = image.clone().requires_grad_()
    unary = unary.clone().requires_grad_()
    results = []
    for filt in ("exact", "lattice"):
        out = CRFasRNN(3, filter=filt).double()(unary, image)
        gu, gi = torch.autograd.grad(
            (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape).double()).sum(),
            (unary, image),
        )
        results.append((out.detach(), gu, gi))
    (e, eu, ei), (lat, lu, li) = results
    assert (e.argmax(1) == lat.argmax(1)).double().mean() > 0.9
    assert np.corrcoef(e.ravel(), lat.ravel())[0, 1] > 0.95
    assert torch.nn.functional.cosine_similarity(eu.ravel(), lu.ravel(), 0) > 0.9
    assert torch.nn.functional.cosine_similarity(ei.ravel(), li.ravel(), 0) > 0.5


def test_learned_filters_start_as_the_lattice_crf(rng):
    unary, image = _inputs(rng, b=2, labels=3, h=9, w=7)
    want = CRFasRNN(3, filter="lattice").double()(unary, image)
    learned = CRFasRNN(3, filter="learned", filter_radius=2).double()
    torch.testing.assert_close(learned(unary, image), want, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="learn_widths"):
        CRFasRNN(3, filter="learned", learn_widths=True)
    with pytest.raises(ValueError, match="filter"):
        crf_mean_field(unary, image, *list(learned.parameters())[:4], filter="learned")


def test_learned_filters_batched_backward_and_training(rng, one_thread):
    # Tiny synthetic task: two flat regions split by a colour edge, noisy unaries favouring the
    # right label at about 60 % of the pixels; filters, weights and compatibility are trained
    # (weak kernels at the start, so that the CRF is not already saturated).
    torch.manual_seed(0)
    b, h, w = 4, 8, 10
    truth = torch.zeros(b, h, w, dtype=torch.long)
    truth[..., w // 2 :] = 1
    image = truth[:, None].double().expand(b, 3, h, w) * 200 + 20
    noise = torch.from_numpy(rng.normal(size=(b, 2, h, w))) * 1.5
    unary = torch.nn.functional.one_hot(truth, 2).permute(0, 3, 1, 2).double() * 0.5 + noise
    crf = CRFasRNN(2, iterations=3, spatial_weight=0.1, bilateral_weight=0.1, filter="learned").double()
    out = crf(unary.requires_grad_(), image)
    for k in range(b):
        torch.testing.assert_close(out[k : k + 1], crf(unary[k : k + 1], image[k : k + 1]))
    loss_fn = torch.nn.CrossEntropyLoss()
    loss_fn(out, truth).backward()
    assert unary.grad.abs().sum() > 0
    for name, p in crf.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name

    def accuracy():
        return (crf(unary.detach(), image).argmax(1) == truth).double().mean()

    before = accuracy()
    opt = torch.optim.Adam(crf.parameters(), lr=0.01)
    losses = []
    for _ in range(20):
        loss = loss_fn(crf(unary.detach(), image), truth)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert accuracy() > before, (before, accuracy())


def test_cli_train_crfrnn_with_learned_filters(tmp_path, capsys, one_thread):
    from convloc.cli import main
    from convloc.commands.segface import load_checkpoint
    from convloc.data import voc_seg

    data = voc_seg.make_synthetic_segmentation(tmp_path / "seg", 8, 4, size=32, seed=5)
    common = ["--data", str(data), "--threads", "1", "--batch-size", "4"]
    fcn_ckpt, crf_ckpt = str(tmp_path / "fcn.pt"), str(tmp_path / "crf.pt")
    args = ["train", "fcn", *common, "--pad", "26", "--fc-kernel", "3", "--epochs", "1", "-o", fcn_ckpt]
    assert main(args) == 0
    args = ["train", "crfrnn", *common, "--fcn", fcn_ckpt, "--epochs", "1", "--iterations", "2"]
    assert main([*args, "--filter", "learned", "--freeze-fcn", "-o", crf_ckpt]) == 0
    assert "CRF-as-RNN (end to end)" in capsys.readouterr().out
    model, _ = load_checkpoint(crf_ckpt)
    # Training moved the taps away from the Gaussian init, and the checkpoint keeps them.
    taps = model.crf.bilateral_filter.taps
    init = PermutohedralConv(taps.shape[-1], taps.shape[-1], 5).taps
    assert taps.shape == init.shape and (taps - init).abs().max() > 1e-3
