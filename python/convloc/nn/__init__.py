"""PyTorch layer: ops registered with ``torch.library`` (schema, fake kernel, autograd) and
``nn.Module`` wrappers. Importing this module registers every convloc op with torch."""

from convloc.nn import boxes, crfrnn, deconv, lattice, roi  # noqa: F401 - registers the ops
from convloc.nn.crfrnn import CRFasRNN
from convloc.nn.deconv import BilinearUpsample, ConvTranspose2d
from convloc.nn.lattice import PermutohedralFilter
from convloc.nn.permutohedral_conv import PermutohedralConv
from convloc.nn.roi import RoIAlign, RoIPool

__all__ = [
    "CRFasRNN",
    "PermutohedralConv",
    "ConvTranspose2d",
    "BilinearUpsample",
    "PermutohedralFilter",
    "RoIPool",
    "RoIAlign",
]
