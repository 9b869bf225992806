"""How much mean IU FCN-32s / 16s / 8s (the default small layout) can reach on a segmentation
set, whatever the network computes before its last score map.

The last score map of each variant goes through a fixed bilinear upsampling and a crop. Two maps
are scored after that same upsampling and crop:

- calibrated: each cell holds the log of the true class frequencies around it, weighted by the
  bilinear kernel's triangle, i.e. what a perfectly calibrated cross-entropy predictor at that
  stride outputs;
- per-image fit: any map, fitted to each image's labels by cross-entropy (a loose upper bound).

Usage: python tools/fcn_stride_bound.py ROOT [--split val] [--fit-steps 300]   (ROOT from
`convloc data make-segmentation`; --fit-steps 0 leaves the per-image fit out)
"""

import argparse

import torch
import torch.nn.functional as F

from convloc.data.voc_seg import VOCSegmentation
from convloc.metrics.segmentation import IGNORE_LABEL, segmentation_scores
from convloc.models import fcn


def mean_iu(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    return segmentation_scores(labels.numpy(), pred.numpy(), num_classes).mean_iu


def bounds(variant: str, labels: torch.Tensor, num_classes: int, fit_steps: int = 300) -> dict:
    size = labels.shape[-1]
    model = fcn.FCN(num_classes, variant).eval()
    seen = {}
    hook = model.upscore.register_forward_hook(lambda m, inp, out: seen.update(shape=inp[0].shape))
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    hook.remove()
    n, stride, off = seen["shape"][-1], model.upscore.stride[0], model.crop_offsets["out"]

    def upsample(z):
        return model.upscore(z)[..., off : off + size, off : off + size]

    # Cell j of the map lands on image coordinate stride * j + stride - 1/2 - off.
    centres = torch.arange(n) * stride + stride - 0.5 - off
    tri = (1 - (torch.arange(size)[None, :] - centres[:, None]).abs() / stride).clamp_min(0)
    valid = labels != IGNORE_LABEL
    onehot = F.one_hot(torch.where(valid, labels, 0), num_classes).permute(0, 3, 1, 2).float()
    mass = tri @ (onehot * valid[:, None]) @ tri.T  # [B, L, n, n]
    frac = mass / mass.sum(1, keepdim=True).clamp_min(1e-9)
    with torch.no_grad():
        calibrated = mean_iu(upsample(torch.log(frac + 1e-4)).argmax(1), labels, num_classes)
    if not fit_steps:
        return {"map": n, "stride": stride, "calibrated": calibrated, "per_image_fit": None}
    z = torch.zeros(len(labels), num_classes, n, n, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.3)
    for _ in range(fit_steps):
        loss = F.cross_entropy(upsample(z), labels, ignore_index=IGNORE_LABEL)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        fitted = mean_iu(upsample(z).argmax(1), labels, num_classes)
    return {"map": n, "stride": stride, "calibrated": calibrated, "per_image_fit": fitted}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--split", default="val")
    ap.add_argument("--fit-steps", type=int, default=300, help="Adam steps of the per-image fit (0: none)")
    args = ap.parse_args()
    ds = VOCSegmentation(args.root, args.split)
    labels = torch.from_numpy(ds.arrays()[1]).long()
    background = mean_iu(torch.zeros_like(labels), labels, ds.num_classes)
    print(f"all background: mean IU {background:.3f}")
    for variant in ("32s", "16s", "8s"):
        b = bounds(variant, labels, ds.num_classes, args.fit_steps)
        fit = "" if b["per_image_fit"] is None else f", per-image fit {b['per_image_fit']:.3f}"
        print(
            f"FCN-{variant}: {b['map']}x{b['map']} map at stride {b['stride']}: calibrated {b['calibrated']:.3f}{fit}"
        )


if __name__ == "__main__":
    main()
