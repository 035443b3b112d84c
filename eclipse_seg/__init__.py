"""eclipse-seg: ECLIPSE continual panoptic and semantic segmentation in pure PyTorch."""

__version__ = "0.1.0"


def load_official(weights, config, opts=None, thing_classes=None):
    """Load an official ECLIPSE / Mask2Former checkpoint (see `eclipse_seg.compat`)."""
    from eclipse_seg.compat.official_checkpoint import load_official as _load

    return _load(weights, config, opts=opts, thing_classes=thing_classes)
