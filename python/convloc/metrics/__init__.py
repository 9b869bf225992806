"""Evaluation metrics: segmentation (pixel accuracy, mean IU) and face verification (k-fold accuracy, ROC, EER)."""
