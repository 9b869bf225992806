"""Datasets: VOC-format segmentation and LFW-format face verification, real trees and synthetic ones."""
