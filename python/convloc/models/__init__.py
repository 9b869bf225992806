"""Pipelines and backbones built from convloc's kernels."""
