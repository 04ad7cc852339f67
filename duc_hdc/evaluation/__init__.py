"""Evaluation: the confusion-matrix metric, evaluation runs and the official output formats."""
from .metrics import SegmentationMetric

__all__ = ["SegmentationMetric"]
