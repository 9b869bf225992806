"""Metrics: segmentation (pixel accuracy, mean IU), face verification (k-fold accuracy, ROC)."""
