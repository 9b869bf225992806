"""Fully convolutional networks for semantic segmentation (Long, Shelhamer & Darrell 2015).

A VGG-style classifier becomes dense by :func:`convolutionize`; FCN-32s/16s/8s add zero-initialised
score layers, skips from pool4 and pool3, learnable 2x upsampling initialised to bilinear
interpolation (the final upsampling stays bilinear), and crops whose offsets are derived from the layers' coordinate maps (first conv
padded by ``pad`` so any input size gives an output covering it, as in the paper's nets).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from convloc.nn import BilinearUpsample


@dataclass(frozen=True)
class Layout:
    """Channels of the conv layers in each of the five pooled stages, fully connected width,
    the kernel that fc6 becomes once convolutionized, the padding of the very first conv, and
    whether convs are followed by batch normalisation (not in VGG; it makes the small variant
    trainable from scratch in a few CPU minutes)."""

    stages: tuple[tuple[int, ...], ...]
    fc: int
    fc_kernel: int
    pad: int
    batch_norm: bool = False


VGG16 = Layout(((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)), 4096, 7, 100)
# CPU-trainable: same five stride-2 stages (strides 8/16/32 at pool3/4/5), narrow, one conv each.
SMALL = Layout(((16,), (32,), (48,), (64,), (96,)), 128, 5, 68, batch_norm=True)


def vgg_features(layout: Layout, first_pad: int = 1) -> nn.Sequential:
    """conv3x3-ReLU stacks each closed by 2x2 max pooling (ceil mode, as in Caffe); named stages."""
    stages, in_ch = [], 3
    for i, widths in enumerate(layout.stages):
        layers: list[nn.Module] = []
        for j, w in enumerate(widths):
            pad = first_pad if i == 0 and j == 0 else 1
            layers.append(nn.Conv2d(in_ch, w, 3, padding=pad))
            if layout.batch_norm:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.ReLU(inplace=True))
            in_ch = w
        layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        stages.append(nn.Sequential(*layers))
    return nn.Sequential(*stages)


def vgg_classifier(layout: Layout, num_classes: int, input_size: int) -> nn.Sequential:
    """A VGG-style image classifier for ``input_size`` x ``input_size`` inputs (features, then
    three fully connected layers)."""
    feat = vgg_features(layout)
    side = input_size
    for _ in layout.stages:
        side = -(-side // 2)
    c = layout.stages[-1][-1]
    return nn.Sequential(
        feat,
        nn.Flatten(),
        nn.Linear(c * side * side, layout.fc),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(layout.fc, layout.fc),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(layout.fc, num_classes),
    )


def convolutionize(model: nn.Module, input_size: tuple[int, int]) -> nn.Sequential:
    """The classifier ``model`` (a sequence of modules, nested Sequentials allowed) with its fully
    connected layers turned into convolutions carrying the same weights.

    The first ``nn.Linear`` after ``nn.Flatten`` becomes a ``k_h x k_w`` convolution over the
    feature map it was flattening at ``input_size`` (H, W); later ones become 1x1 convolutions.
    An adaptive pooling layer that is the identity at ``input_size`` is dropped. On an input of
    ``input_size`` the result outputs ``[N, classes, 1, 1]`` equal to the classifier's scores;
    on larger inputs a dense map of them, one per stride-apart window.
    """
    out: list[nn.Module] = []
    probe = torch.zeros(1, 3, *input_size, dtype=_param_dtype(model))
    flat_shape = None  # the feature map nn.Flatten saw; None while still in the conv part
    first_linear = True
    with torch.no_grad():
        for m in _leaves(model):
            if isinstance(m, nn.Flatten):
                flat_shape = tuple(probe.shape[1:])
            elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and flat_shape is None:
                after = m(probe)
                if after.shape != probe.shape:
                    raise ValueError(
                        f"input_size: {m} changes the {list(probe.shape[2:])} map to "
                        f"{list(after.shape[2:])}; pass the size the classifier was built for"
                    )
            elif isinstance(m, nn.Linear):
                if flat_shape is None:
                    raise ValueError("model: found an nn.Linear before any nn.Flatten")
                c, kh, kw = flat_shape if first_linear else (m.in_features, 1, 1)
                if c * kh * kw != m.in_features:
                    raise ValueError(
                        f"input_size: flattened features {c}x{kh}x{kw} do not match "
                        f"in_features={m.in_features}"
                    )
                conv = nn.Conv2d(c, m.out_features, (kh, kw), bias=m.bias is not None)
                conv = conv.to(m.weight.dtype)
                conv.weight.copy_(m.weight.reshape(m.out_features, c, kh, kw))
                if m.bias is not None:
                    conv.bias.copy_(m.bias)
                out.append(conv)
                first_linear = False
            else:
                out.append(m)
                if flat_shape is None:
                    probe = m(probe)
    return nn.Sequential(*out)


def _leaves(model: nn.Module):
    if not isinstance(model, nn.Sequential):
        yield model
        return
    for c in model.children():
        yield from _leaves(c)


def _param_dtype(model: nn.Module) -> torch.dtype:
    p = next(model.parameters(), None)
    return p.dtype if p is not None else torch.float32


# ---- FCN-32s / 16s / 8s ------------------------------------------------------------------------


def _compose(outer: tuple[float, float], inner: tuple[float, float]) -> tuple[float, float]:
    """Coordinate maps ``x_in = a * x_out + b``: ``outer`` maps a layer's input to the image,
    ``inner`` the layer's output to its input; the result maps the output to the image."""
    return outer[0] * inner[0], outer[0] * inner[1] + outer[1]


def coord_map(module: nn.Module) -> tuple[float, float]:
    """``(a, b)`` with input coordinate = a * output coordinate + b for the pixel centres of one
    layer (or a Sequential of them). Pointwise layers are the identity."""
    if isinstance(module, nn.Sequential):
        m = (1.0, 0.0)
        for child in module:
            m = _compose(m, coord_map(child))
        return m
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
        k, s, p = (_first(getattr(module, n)) for n in ("kernel_size", "stride", "padding"))
        return float(s), (k - 1) / 2 - p
    if hasattr(module, "stride") and hasattr(module, "kernel_size"):  # transposed convolution
        k, s, p = (_first(getattr(module, n)) for n in ("kernel_size", "stride", "padding"))
        return 1.0 / s, (p - (k - 1) / 2) / s
    return 1.0, 0.0


def _first(v) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


def _crop(x: Tensor, offset: int, size: tuple[int, int]) -> Tensor:
    return x[..., offset : offset + size[0], offset : offset + size[1]]


class FCN(nn.Module):
    """FCN-32s, FCN-16s or FCN-8s (``variant``) on a VGG-style backbone (``layout``).

    ``forward(images [N, 3, H, W]) -> scores [N, num_classes, H, W]`` for any H, W.
    """

    def __init__(self, num_classes: int, variant: str = "8s", layout: Layout = SMALL) -> None:
        super().__init__()
        if variant not in ("32s", "16s", "8s"):
            raise ValueError(f"variant: expected '32s', '16s' or '8s', got {variant!r}")
        self.variant, self.layout, self.num_classes = variant, layout, num_classes
        feats = vgg_features(layout, first_pad=layout.pad)
        self.pool3, self.pool4, self.pool5 = feats[:3], feats[3], feats[4]
        c3, c4, c5 = (layout.stages[i][-1] for i in (2, 3, 4))
        self.fc = nn.Sequential(
            nn.Conv2d(c5, layout.fc, layout.fc_kernel),
            nn.ReLU(inplace=True),
            nn.Dropout2d(),
            nn.Conv2d(layout.fc, layout.fc, 1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(),
        )
        self.score_fr = _zero(nn.Conv2d(layout.fc, num_classes, 1))
        # As in the paper, the 2x upsamplings between skips are learned from bilinear and the
        # final one stays fixed bilinear interpolation.
        if variant == "32s":
            self.upscore = BilinearUpsample(num_classes, 32, learnable=False)
        else:
            self.upscore2 = BilinearUpsample(num_classes, 2)
            self.score_pool4 = _zero(nn.Conv2d(c4, num_classes, 1))
        if variant == "16s":
            self.upscore = BilinearUpsample(num_classes, 16, learnable=False)
        if variant == "8s":
            self.upscore_pool4 = BilinearUpsample(num_classes, 2)
            self.score_pool3 = _zero(nn.Conv2d(c3, num_classes, 1))
            self.upscore = BilinearUpsample(num_classes, 8, learnable=False)
        self._offsets = self._crop_offsets()

    def _crop_offsets(self) -> dict[str, int]:
        """Offsets of the crops aligning each fused map with the other, and the output with the
        image, from the composed coordinate maps (all must come out as whole pixels)."""
        m3 = coord_map(self.pool3)
        m4 = _compose(m3, coord_map(self.pool4))
        fr = _compose(_compose(m4, coord_map(self.pool5)), coord_map(nn.Sequential(self.fc, self.score_fr)))
        offsets = {}
        if self.variant == "32s":
            top = fr
        else:
            up = _compose(fr, coord_map(self.upscore2))
            offsets["pool4"] = (up[1] - m4[1]) / m4[0]
            top = up
            if self.variant == "8s":
                up = _compose(top, coord_map(self.upscore_pool4))
                offsets["pool3"] = (up[1] - m3[1]) / m3[0]
                top = up
        out = _compose(top, coord_map(self.upscore))
        if out[0] != 1.0:
            raise ValueError(f"layout: the net's output has stride {out[0]}, not 1")
        offsets["out"] = -out[1]
        for k, v in offsets.items():
            if v != int(v) or v < 0:
                raise ValueError(f"layout: crop offset of {k} is {v}, not a whole non-negative pixel")
        return {k: int(v) for k, v in offsets.items()}

    @property
    def crop_offsets(self) -> dict[str, int]:
        return dict(self._offsets)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        p3 = self.pool3(x)
        p4 = self.pool4(p3)
        score = self.score_fr(self.fc(self.pool5(p4)))
        if self.variant != "32s":
            score = self.upscore2(score)
            score = score + _crop(self.score_pool4(p4), self._offsets["pool4"], score.shape[-2:])
        if self.variant == "8s":
            score = self.upscore_pool4(score)
            score = score + _crop(self.score_pool3(p3), self._offsets["pool3"], score.shape[-2:])
        out = _crop(self.upscore(score), self._offsets["out"], size)
        if out.shape[-2:] != size:
            raise ValueError(f"x: input {list(size)} is too large for the padding of this layout")
        return out

    @torch.no_grad()
    def load_classifier(self, state_dict: dict | str) -> FCN:
        """Loads an ImageNet classifier in torchvision's VGG format (``features.<i>`` convolutions,
        ``classifier.0/3/6`` linear layers; a dict or a path to a ``torch.save`` file such as
        torchvision's ``vgg16`` weights): the convolutions one to one in order, fc6 and fc7
        convolutionized (their weights reshaped to the ``fc_kernel`` and 1x1 convolutions, as
        :func:`convolutionize` does), the 1000-way layer dropped; the score layers stay zero.
        Layouts with batch normalisation have no such classifier. Raises ``ValueError`` naming
        the first weight that does not fit."""
        if isinstance(state_dict, str):
            state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
        if self.layout.batch_norm:
            raise ValueError("state_dict: this layout has batch normalisation; VGG classifiers have none")

        def layers(prefix: str, ndim: int) -> list[str]:
            keys = [k for k, v in state_dict.items() if k.startswith(prefix) and k.endswith(".weight")]
            keys = [k for k in keys if state_dict[k].dim() == ndim]
            return sorted((k[: -len(".weight")] for k in keys), key=lambda k: int(k.split(".")[1]))

        convs = [
            m
            for stage in (self.pool3, self.pool4, self.pool5)
            for m in stage.modules()
            if isinstance(m, nn.Conv2d)
        ]
        src_convs, src_fcs = layers("features.", 4), layers("classifier.", 2)
        if len(src_convs) != len(convs) or len(src_fcs) < 2:
            raise ValueError(
                f"state_dict: expected {len(convs)} convolutions and at least 2 linear layers like this "
                f"layout's classifier, got {len(src_convs)} and {len(src_fcs)}"
            )
        targets = list(zip(src_convs, convs)) + [(src_fcs[0], self.fc[0]), (src_fcs[1], self.fc[3])]
        for name, conv in targets:
            weight, bias = state_dict[name + ".weight"], state_dict[name + ".bias"]
            if weight.numel() != conv.weight.numel() or bias.shape != conv.bias.shape:
                raise ValueError(
                    f"state_dict: {name} has shape {list(weight.shape)}, this layout needs "
                    f"{list(conv.weight.shape)}"
                )
            conv.weight.copy_(weight.reshape(conv.weight.shape))
            conv.bias.copy_(bias)
        return self

    @torch.no_grad()
    def init_from(self, coarser: FCN) -> FCN:
        """Copies every parameter ``coarser`` (an FCN-32s for a 16s, a 16s for an 8s) shares by
        name and shape, the paper's stage-wise training; the new score layers stay zero."""
        own = self.state_dict()
        shared = {k: v for k, v in coarser.state_dict().items() if k in own and own[k].shape == v.shape}
        own.update(shared)
        self.load_state_dict(own)
        return self


def _zero(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class FCNWithCRF(nn.Module):
    """An FCN whose scores are the unaries of a CRF-as-RNN over the same (normalised) images:
    ``forward(images [N, 3, H, W]) -> logits [N, L, H, W]``, trainable end to end."""

    def __init__(self, fcn: FCN, **crf_args) -> None:
        super().__init__()
        from convloc.data.voc_seg import MEAN, STD
        from convloc.nn.crfrnn import CRFasRNN

        self.fcn = fcn
        self.crf = CRFasRNN(fcn.num_classes, **crf_args)
        self.register_buffer("mean", torch.from_numpy(MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.from_numpy(STD).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        rgb = (x * self.std + self.mean) * 255  # back to the colours the bilateral kernel compares
        return self.crf(self.fcn(x), rgb)
