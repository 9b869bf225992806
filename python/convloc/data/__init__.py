"""Datasets: PASCAL VOC-format detection (``voc``) and segmentation (``voc_seg``) loaders, an
LFW-format face verification loader (``lfw``), and synthetic datasets written in those formats
(``shapes`` for detection; ``voc_seg`` and ``lfw`` make their own)."""

from convloc.data.voc import VOCDetection, read_annotation, write_annotation

__all__ = ["VOCDetection", "read_annotation", "write_annotation"]
