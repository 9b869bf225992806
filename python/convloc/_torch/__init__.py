"""The torch layer: every convloc op registered with ``torch.library`` (schema, fake kernel for
``torch.compile`` / ``torch.export``, autograd through convloc's backward kernels).

Torch-only and private: :mod:`convloc.ops` sends torch tensors here, and everything here runs
the kernels of :mod:`convloc._kernels`. Importing this package registers the ops.
"""

from convloc._torch import boxes, crf, deconv, lattice, proposals, roi  # noqa: F401 - registers the ops
