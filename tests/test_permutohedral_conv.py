import numpy as np
import pytest

from convloc import ops
from reference import segface as ref

# A torch module's tests: a Python without torch skips them.
torch = pytest.importorskip("torch")
PermutohedralConv = pytest.importorskip("convloc.nn").PermutohedralConv
LatticeTables = pytest.importorskip("convloc.nn.permutohedral_conv").LatticeTables


def _points(rng, n=120, d=3, c=3, b=None, dtype=torch.float64):
    shape = (n,) if b is None else (b, n)
    values = torch.from_numpy(rng.normal(size=shape + (c,))).to(dtype)
    features = torch.from_numpy(rng.normal(size=shape + (d,)) * 1.5).to(dtype)
    return values, features


def _perturb(layer, rng):
    """Random taps, mixing and bias: tests of the general filter, not only of its init."""
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.from_numpy(rng.normal(size=p.shape)))
    return layer


@pytest.mark.parametrize("d", [1, 3, 5])
@pytest.mark.parametrize("normalization", [None, "none", "after"])
@pytest.mark.parametrize("radius", [1, 2])
def test_init_equals_the_lattice_gaussian(rng, d, normalization, radius):
    values, features = _points(rng, d=d)
    layer = PermutohedralConv(3, 3, d, radius=radius, normalization=normalization).double()
    want = ops.PermutohedralLattice(features).filter(values, normalization=normalization)
    torch.testing.assert_close(layer(values, features), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d,radius", [(1, 1), (2, 2), (4, 1)])
def test_learned_taps_and_mixing_match_the_reference(rng, d, radius):
    values, features = _points(rng, n=40, d=d)
    layer = _perturb(PermutohedralConv(3, 2, d, radius=radius, bias=True).double(), rng)
    structure = ops.PermutohedralLattice(features).structure()
    taps, mixing, bias = (p.detach().numpy() for p in (layer.taps, layer.mixing, layer.bias))
    want = ref.lattice_conv(values.numpy(), structure, taps, mixing) + bias
    np.testing.assert_allclose(layer(values, features).detach().numpy(), want, rtol=1e-10, atol=1e-10)


def test_gradcheck_values_and_all_parameters(rng):
    values, features = _points(rng, n=10, d=2, c=2)
    layer = _perturb(PermutohedralConv(2, 3, 2, radius=2, normalization="after", bias=True).double(), rng)
    lattice = PermutohedralConv.build(features)
    params = [values.requires_grad_(), layer.taps, layer.mixing, layer.bias]

    def fn(v, taps, mixing, bias):
        return torch.func.functional_call(
            layer, {"taps": taps, "mixing": mixing, "bias": bias}, (v,), {"lattice": lattice}
        )

    assert torch.autograd.gradcheck(fn, params)
    features.requires_grad_()
    layer(values, features).sum().backward()
    assert features.grad is None  # documented: the lattice is built from detached features


def test_batched_and_image_layouts_equal_per_item(rng):
    values, features = _points(rng, n=48, d=4, c=3, b=3)
    layer = _perturb(PermutohedralConv(3, 2, 4, radius=2, normalization="after").double(), rng)
    whole = layer(values, features)
    assert whole.shape == (3, 48, 2)
    for k in range(3):
        torch.testing.assert_close(whole[k], layer(values[k], features[k]), rtol=1e-12, atol=1e-12)
    lattice = PermutohedralConv.build(features)
    torch.testing.assert_close(layer(values, lattice=lattice), whole, rtol=0, atol=0)
    # [B, C, H, W] values with [B, d, H, W] features: the same points, channels first.
    image = layer(
        values.transpose(1, 2).reshape(3, 3, 6, 8), features=features.transpose(1, 2).reshape(3, 4, 6, 8)
    )
    torch.testing.assert_close(image, whole.transpose(1, 2).reshape(3, 2, 6, 8), rtol=1e-12, atol=1e-12)


def test_float32_close_to_float64(rng):
    values, features = _points(rng, n=200, d=5)
    layer = _perturb(PermutohedralConv(3, 4, 5, normalization="after"), rng)
    out32 = layer(values.float(), features.float())
    assert out32.dtype == torch.float32
    out64 = layer.double()(values, features)
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-4)


def test_empty(rng):
    layer = PermutohedralConv(2, 3, 2, normalization="after")
    assert layer(torch.zeros(0, 2), torch.zeros(0, 2)).shape == (0, 3)
    assert layer(torch.zeros(2, 0, 2), torch.zeros(2, 0, 2)).shape == (2, 0, 3)
    assert layer(torch.zeros(0, 5, 2), torch.zeros(0, 5, 2)).shape == (0, 5, 3)
    out = layer(torch.zeros(0, 2, 4, 4, requires_grad=True), torch.zeros(0, 2, 4, 4))
    assert out.shape == (0, 3, 4, 4)
    out.sum().backward()


def test_bad_inputs(rng):
    values, features = _points(rng, n=20, d=2, c=3)
    layer = PermutohedralConv(3, 3, 2).double()
    for kwargs, name in (
        ({"in_channels": 0}, "in_channels"),
        ({"feature_dim": 2.0}, "feature_dim"),
        ({"radius": 0}, "radius"),
        ({"normalization": "symmetric"}, "normalization"),
    ):
        with pytest.raises(ValueError, match=name):
            PermutohedralConv(**{"in_channels": 3, "out_channels": 3, "feature_dim": 2, **kwargs})
    with pytest.raises(TypeError, match="values"):
        layer(values.float(), features)
    with pytest.raises(TypeError, match="values"):
        layer(values.numpy(), features)
    with pytest.raises(TypeError, match="features"):
        layer(values, features.long())
    with pytest.raises(ValueError, match="values"):
        layer(values[:, :2], features)
    with pytest.raises(ValueError, match="values"):
        layer(values[0], features)
    with pytest.raises(ValueError, match="features"):
        layer(values, features[:10])
    with pytest.raises(ValueError, match="features"):
        layer(values, torch.cat([features, features], 1))  # d = 4, the layer's is 2
    with pytest.raises(ValueError, match="features"):
        layer(values[None], features)
    with pytest.raises(ValueError, match="features"):
        layer(values)
    with pytest.raises(ValueError, match="features"):
        layer(values, features, lattice=LatticeTables(features))
    with pytest.raises(ValueError, match="features"):
        layer(torch.zeros(1, 3, 4, 5, dtype=torch.float64), torch.zeros(1, 2, 4, 4, dtype=torch.float64))


def _fit(layer, values, features, target, steps, lr):
    lattice = PermutohedralConv.build(features)
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = ((layer(values, lattice=lattice) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_learns_a_wider_gaussian(rng):
    # Target: the lattice Gaussian of twice the standard deviation, normalised. The layer starts
    # as the narrow one and fits its taps (radius 2) on a 2-D grid of points.
    yy, xx = np.meshgrid(np.arange(16.0), np.arange(16.0), indexing="ij")
    features = torch.from_numpy(np.stack([yy.ravel(), xx.ravel()], 1) / 1.5)
    values = torch.from_numpy(rng.normal(size=(256, 2)))
    target = ops.PermutohedralLattice(features / 2).filter(values, normalization="after")
    layer = PermutohedralConv(2, 2, 2, radius=2, normalization="after").double()
    losses = _fit(layer, values, features, target, steps=150, lr=0.05)
    assert losses[-1] < losses[0] / 20, (losses[0], losses[-1])


def test_deterministic_given_a_seed(rng):
    values, features = _points(rng, n=60, d=3, c=3)
    target = torch.from_numpy(rng.normal(size=(60, 2)))
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        layer = PermutohedralConv(3, 2, 3, radius=2, bias=True).double()
        _fit(layer, values, features, target, steps=5, lr=0.01)
        runs.append([p.detach().clone() for p in layer.parameters()])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
