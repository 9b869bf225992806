"""PyTorch layer: ops registered with ``torch.library`` (schema, fake kernel, autograd) and
``nn.Module`` wrappers. Importing this module registers every convloc op with torch."""

from convloc.nn import (
    boxes,  # noqa: F401 - registers convloc::box_area, box_iou, nms, batched_nms
    lattice,  # noqa: F401 - registers convloc::permutohedral_filter (+ backward)
)
from convloc.nn.crfrnn import CRFasRNN  # noqa: F401 - CRF-as-RNN over the lattice filter
from convloc.nn.deconv import BilinearUpsample, ConvTranspose2d  # noqa: F401 - registers conv_transpose2d
from convloc.nn.lattice import PermutohedralFilter  # noqa: F401
