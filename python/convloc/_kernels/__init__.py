"""The kernels layer: the only Python that calls ``convloc._C``.

One module per kernel family, each a set of thin calls: arrays made contiguous, outputs
allocated with the caller's framework, the kernel run on the caller's stream. Arguments are
validated by the kernels themselves (``csrc/core/check.h``). Nothing here imports torch at
module level or knows about autograd; :mod:`convloc._torch` and :mod:`convloc.ops` build on it.
"""
