"""Datasets: a PASCAL VOC-format detection loader and synthetic datasets written in VOC format."""

from convloc.data.voc import VOCDetection, read_annotation, write_annotation

__all__ = ["VOCDetection", "read_annotation", "write_annotation"]
