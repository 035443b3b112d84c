"""eclipse-seg: ECLIPSE continual panoptic and semantic segmentation in pure PyTorch."""

__version__ = "0.1.0"
