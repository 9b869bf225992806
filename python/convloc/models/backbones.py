"""VGG-style backbones split the way the detectors use them.

``VGG.features`` is the convolutional trunk *without* its last max-pool (conv5_3 for VGG-16,
stride 16): Fast R-CNN replaces that pool with RoI pooling, R-CNN applies it (``VGG.pool``) to a
warped crop of ``2 * roi_size * stride`` pixels. ``VGG.head`` is fc6/fc7 on ``C × roi_size²``.
Layer indices inside ``features`` and ``head`` follow torchvision's ``vgg16`` (``features.N``,
``classifier.0`` / ``classifier.3``), so :func:`load_torchvision_vgg` maps its state dict.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["VGG", "vgg16", "small_vgg", "load_torchvision_vgg", "build_backbone"]

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# 3x3 convs at stride 1, 2, 4: fine enough for 16-64 px objects, cheap enough to train on CPU.
SMALL_CFG = (32, "M", 64, "M", 64, 64)


class VGG(nn.Module):
    def __init__(
        self,
        cfg=VGG16_CFG,
        fc_dim: int = 4096,
        roi_size: int = 7,
        batch_norm: bool = False,
        dropout: float = 0.5,
        running_stats: bool = True,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        channels, stride = 3, 1
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                stride *= 2
            else:
                layers.append(nn.Conv2d(channels, v, 3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(v, track_running_stats=running_stats))
                layers.append(nn.ReLU(inplace=True))
                channels = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.MaxPool2d(2, 2)
        self.head = nn.Sequential(
            nn.Linear(channels * roi_size * roi_size, fc_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc_dim, fc_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.stride, self.out_channels, self.roi_size, self.fc_dim = (
            stride,
            channels,
            roi_size,
            fc_dim,
        )

    @property
    def crop_size(self) -> int:
        """R-CNN input side: ``features`` then ``pool`` give ``roi_size × roi_size``."""
        return 2 * self.roi_size * self.stride

    def pool5(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops [N, 3, crop_size, crop_size] → flattened pool5 features [N, C·roi_size²]."""
        return self.pool(self.features(crops)).flatten(1)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops → fc7 features [N, fc_dim]."""
        return self.head(self.pool5(crops))


def vgg16(**kw) -> VGG:
    """VGG-16 (configuration D): 13 convs, fc6/fc7 of 4096."""
    return VGG(VGG16_CFG, **kw)


def small_vgg(fc_dim: int = 512, batch_norm: bool = True, **kw) -> VGG:
    """Four 3×3 convs (32-64-64-64), stride 4, BatchNorm: trains from scratch on CPU in minutes.
    ``running_stats=False`` makes batch norm use the statistics of the batch at test time too."""
    return VGG(SMALL_CFG, fc_dim=fc_dim, batch_norm=batch_norm, **kw)


def build_backbone(name: str, **kw) -> VGG:
    if name == "vgg16":
        return vgg16(**kw)
    if name == "small":
        return small_vgg(**kw)
    raise ValueError(f"backbone: expected 'vgg16' or 'small', got {name!r}")


def load_torchvision_vgg(model: VGG, state_dict: dict | str) -> VGG:
    """Loads a torchvision-style VGG state dict (a dict or a path to a ``torch.save`` file) into
    ``model``: ``features.*`` one to one, ``classifier.0`` → fc6, ``classifier.3`` → fc7; the
    1000-way ``classifier.6`` is dropped. Raises ``ValueError`` naming missing or misshaped keys."""
    if isinstance(state_dict, str):
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    rename = {"classifier.0.": "head.0.", "classifier.3.": "head.3."}
    mapped = {}
    for key, value in state_dict.items():
        if key.startswith("classifier.6."):
            continue
        for old, new in rename.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        mapped[key] = value
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    bad = [k for k in own if k in mapped and own[k].shape != mapped[k].shape]
    if missing or unexpected or bad:
        raise ValueError(
            f"state_dict: does not fit this VGG (missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}, "
            f"shape mismatch {bad[:4]})"
        )
    model.load_state_dict(mapped)
    return model
