"""PyTorch layer: ops registered with ``torch.library`` (schema, fake kernel, autograd) and
``nn.Module`` wrappers. Importing this module registers every convloc op with torch."""

from convloc.nn import boxes, deconv  # noqa: F401 - registers the ops
from convloc.nn.deconv import ConvTranspose2d, BilinearUpsample

__all__ = ["ConvTranspose2d", "BilinearUpsample"]
