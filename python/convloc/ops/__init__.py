"""Framework-agnostic functional API: NumPy in gives NumPy out, torch in gives torch out."""

from convloc.ops.boxes import batched_nms, box_area, box_iou, nms
from convloc.ops.lattice import PermutohedralLattice, bilateral_filter, permutohedral_filter

__all__ = [
    "box_area",
    "box_iou",
    "nms",
    "batched_nms",
    "PermutohedralLattice",
    "permutohedral_filter",
    "bilateral_filter",
]
