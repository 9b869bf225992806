"""Pipelines and backbones built on convloc's kernels."""
