"""Pipelines and backbones built from convloc's kernels: R-CNN, Fast R-CNN, FCN, CRF-as-RNN,
face verification."""
