"""Framework-agnostic functional API: NumPy in gives NumPy out, torch in gives torch out."""

from convloc.ops.boxes import batched_nms, box_area, box_iou, nms
from convloc.ops.roi import roi_align, roi_pool

__all__ = ["box_area", "box_iou", "nms", "batched_nms", "roi_pool", "roi_align"]
