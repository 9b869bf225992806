"""Framework-agnostic functional API: NumPy in gives NumPy out, torch in gives torch out."""

from convloc.ops.boxes import batched_nms, box_area, box_iou, nms
from convloc.ops.deconv import bilinear_kernel, conv_transpose2d, crop_like

__all__ = [
    "box_area",
    "box_iou",
    "nms",
    "batched_nms",
    "conv_transpose2d",
    "bilinear_kernel",
    "crop_like",
]
