"""Datasets: VOC-format segmentation and LFW-format face verification, real and synthetic."""
