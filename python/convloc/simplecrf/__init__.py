"""Drop-ins for SimpleCRF's dense CRFs: change the import, keep the calls::

    from convloc.simplecrf import denseCRF, denseCRF3D      # was: import denseCRF, denseCRF3D

    labels = denseCRF.densecrf(I, P, (w1, alpha, beta, w2, gamma, iterations))  # I [H, W, 3] uint8
    labels = denseCRF3D.densecrf3d(I, P, param)   # I [D, H, W, modalities] uint8, param a dict

Both take probabilities ``P`` labels last (``[H, W, L]``, ``[D, H, W, L]``) and return int8 label
maps, as SimpleCRF does, computed by :func:`convloc.ops.dense_crf`. Bad input that SimpleCRF reads
wrongly or crashes on raises ValueError / TypeError naming the argument. SimpleCRF's graph-cut
module (``maxflow``) has no counterpart here.
"""

from convloc.simplecrf import denseCRF, denseCRF3D

__all__ = ["denseCRF", "denseCRF3D"]
