"""Framework-agnostic functional API: NumPy in gives NumPy out, torch in gives torch out."""

from convloc.ops.boxes import batched_nms, box_area, box_iou, nms
from convloc.ops.deconv import bilinear_kernel, conv_transpose2d, crop_like
from convloc.ops.crf import (
    Bilateral,
    Features,
    Gaussian,
    create_pairwise_bilateral,
    create_pairwise_gaussian,
    dense_crf,
    grid_crf,
    unary_from_labels,
    unary_from_softmax,
)
from convloc.ops.lattice import PermutohedralLattice, bilateral_filter, permutohedral_filter

__all__ = [
    "box_area",
    "box_iou",
    "nms",
    "batched_nms",
    "conv_transpose2d",
    "bilinear_kernel",
    "crop_like",
    "dense_crf",
    "grid_crf",
    "Gaussian",
    "Bilateral",
    "Features",
    "unary_from_softmax",
    "unary_from_labels",
    "create_pairwise_gaussian",
    "create_pairwise_bilateral",
    "PermutohedralLattice",
    "permutohedral_filter",
    "bilateral_filter",
]
