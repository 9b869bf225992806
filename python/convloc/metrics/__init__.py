"""Evaluation metrics: detection (VOC AP), segmentation (pixel accuracy, mean IU) and face
verification (k-fold accuracy, ROC, EER)."""
