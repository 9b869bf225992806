"""Framework-agnostic functional API: NumPy in gives NumPy out, torch in gives torch out."""

from convloc.ops.boxes import batched_nms, box_area, box_iou, nms
from convloc.ops.proposals import felzenszwalb, selective_search, sliding_windows
from convloc.ops.roi import roi_align, roi_pool

__all__ = [
    "box_area",
    "box_iou",
    "nms",
    "batched_nms",
    "sliding_windows",
    "felzenszwalb",
    "selective_search",
    "roi_pool",
    "roi_align",
]
