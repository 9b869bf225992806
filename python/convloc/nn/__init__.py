"""PyTorch layer: ops registered with ``torch.library`` (schema, fake kernel, autograd) and
``nn.Module`` wrappers. Importing this module registers every convloc op with torch."""

from convloc.nn import (
    boxes,  # noqa: F401 - registers convloc::box_area, box_iou, nms, batched_nms
    roi,  # noqa: F401 - registers convloc::roi_pool, roi_align and their backwards
)
from convloc.nn.roi import RoIAlign, RoIPool

__all__ = ["RoIPool", "RoIAlign"]
