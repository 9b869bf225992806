"""R-CNN / Fast R-CNN box parameterisation: ``(dx, dy, dw, dh)`` of a ground truth relative to a
proposal, centres in proposal widths, sizes in log ratios (widths ``x2 - x1``)."""

from __future__ import annotations

import math

import torch

__all__ = ["encode", "decode", "clip", "hflip"]

_MAX_LOG = math.log(1000.0 / 16)  # clamp on dw, dh so exp() cannot overflow on a wild prediction


def _centres(boxes: torch.Tensor):
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def encode(proposals: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Targets [N, 4] that move ``proposals`` [N, 4] onto ``gt`` [N, 4]."""
    px, py, pw, ph = _centres(proposals)
    gx, gy, gw, gh = _centres(gt)
    return torch.stack(((gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)), 1)


def decode(proposals: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Applies ``deltas`` [N, 4·k] to ``proposals`` [N, 4] → boxes [N, 4·k]."""
    px, py, pw, ph = (t[:, None] for t in _centres(proposals))
    dx, dy = deltas[:, 0::4], deltas[:, 1::4]
    dw, dh = deltas[:, 2::4].clamp(max=_MAX_LOG), deltas[:, 3::4].clamp(max=_MAX_LOG)
    cx, cy, w, h = px + dx * pw, py + dy * ph, pw * torch.exp(dw), ph * torch.exp(dh)
    out = torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), 2)
    return out.reshape(deltas.shape)


def clip(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Clips boxes [N, 4·k] to the image."""
    out = boxes.clone()
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


def hflip(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Boxes [N, 4] of an image ``width`` pixels wide mirrored left-right, as the image is by
    ``flip`` of its last dimension."""
    return torch.stack((width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]), 1)
