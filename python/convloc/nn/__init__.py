"""PyTorch layer: ops registered with ``torch.library`` (schema, fake kernel, autograd) and
``nn.Module`` wrappers. Importing this module registers every convloc op with torch."""

from convloc.nn import boxes, deconv, lattice, roi  # noqa: F401 - registers the ops
from convloc.nn.deconv import ConvTranspose2d, BilinearUpsample
from convloc.nn.lattice import PermutohedralFilter
from convloc.nn.roi import RoIPool, RoIAlign

__all__ = ["ConvTranspose2d", "BilinearUpsample", "PermutohedralFilter", "RoIPool", "RoIAlign"]
