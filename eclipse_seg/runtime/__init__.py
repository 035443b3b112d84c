"""Torch-free runtime for exported eclipse-seg models: NumPy, ONNX Runtime and Pillow only.

    from eclipse_seg.runtime import Segmenter, read_image
    seg = Segmenter("ade_100_5.onnx")
    pred = seg.predict(read_image("room.jpg"))  # panoptic_seg, segments_info, sem_seg

Nothing here imports PyTorch (a test runs it with torch blocked); ONNX Runtime is imported when a
`Segmenter` is created (`pip install 'eclipse-seg[runtime]'`).
"""

from eclipse_seg.runtime.metadata import decode_metadata
from eclipse_seg.runtime.postprocess import postprocess
from eclipse_seg.runtime.session import Segmenter, read_image

__all__ = ["Segmenter", "decode_metadata", "postprocess", "read_image"]
