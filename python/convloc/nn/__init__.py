"""PyTorch modules over :mod:`convloc.ops`. Importing this package also registers every convloc
op with ``torch.library`` (as ``torch.ops.convloc.*``)."""

import convloc._torch  # noqa: F401 - registers the ops
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
