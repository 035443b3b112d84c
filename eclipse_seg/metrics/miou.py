"""Semantic-segmentation mIoU from a streamed confusion matrix (detectron2 SemSegEvaluator rule).

Why a confusion matrix: it is all the state mIoU needs, it is additive over images, processes
and ranks (``to_state`` / ``merge``), and one ``np.bincount`` per image fills it.

Averaging rule (detectron2 ``SemSegEvaluator``): a class's IoU ``tp / (gt + pred - tp)`` counts
towards the mean only when the class has at least one gt pixel; classes with no gt pixel are
left out (NaN-excluded), even when they were predicted (such wrong pixels still lower the IoU
of their gt class, as misses).  Pixels whose gt is ``ignore_index`` are dropped entirely,
whatever was predicted there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from eclipse_seg.errors import DataError

__all__ = ["SemanticEvaluator"]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class SemanticEvaluator:
    """Streaming mIoU / pixel accuracy over ``num_classes`` labels ``0..num_classes-1``.

    ``conf[g, p]`` (shape (C, C), int64) counts pixels with gt ``g`` and prediction ``p``.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if int(num_classes) <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.conf = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.conf[:] = 0

    def add(self, gt: Any, pred: Any, where: str = "") -> None:
        """Accumulate one image (or a batch): ``gt`` and ``pred`` integer label maps of equal
        shape (numpy arrays or torch tensors, e.g. (H, W) or (B, H, W)).

        ``gt == ignore_index`` pixels are skipped; any other gt label, and every prediction on a
        non-ignored pixel, must lie in ``[0, num_classes)`` (else DataError naming ``where``).
        """
        pre = f"{where}: " if where else ""
        g = _to_numpy(gt)
        p = _to_numpy(pred)
        if g.shape != p.shape:
            raise DataError(f"{pre}gt shape {g.shape} differs from pred shape {p.shape}")
        for name, a in (("gt", g), ("pred", p)):
            if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
                raise DataError(f"{pre}{name} labels must be integers, got dtype {a.dtype}")
        g = g.reshape(-1).astype(np.int64, copy=False)
        p = p.reshape(-1).astype(np.int64, copy=False)
        keep = g != self.ignore_index
        g = g[keep]
        p = p[keep]
        c = self.num_classes
        if g.size:
            if g.min() < 0 or g.max() >= c:
                bad = int(g[(g < 0) | (g >= c)][0])
                raise DataError(
                    f"{pre}gt label {bad} outside [0, {c}) and not the ignore index "
                    f"{self.ignore_index}"
                )
            if p.min() < 0 or p.max() >= c:
                bad = int(p[(p < 0) | (p >= c)][0])
                raise DataError(
                    f"{pre}predicted label {bad} outside [0, {c}) on a non-ignored pixel"
                )
        self.conf += np.bincount(g * c + p, minlength=c * c).reshape(c, c)

    def to_state(self) -> dict[str, Any]:
        """Plain-Python state (picklable / JSON-able) for gathering across processes."""
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "conf": self.conf.tolist(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SemanticEvaluator:
        ev = cls(int(state["num_classes"]), int(state["ignore_index"]))
        ev.merge(state)
        return ev

    def merge(self, other: SemanticEvaluator | Mapping[str, Any]) -> None:
        """Add another evaluator's (or a ``to_state()`` dict's) confusion matrix."""
        conf = (
            other.conf
            if isinstance(other, SemanticEvaluator)
            else np.asarray(other["conf"], dtype=np.int64)
        )
        if conf.shape != self.conf.shape:
            raise DataError(f"cannot merge a {conf.shape} confusion matrix into {self.conf.shape}")
        self.conf += conf

    def summarize(self, groups: dict[str, list[int]] | None = None) -> dict[str, Any]:
        """``{"miou", "pixel_acc", "per_class": {"<label>": iou or None}, "groups": {name:
        {"miou", "n"}}}``, fractions in [0, 1].

        ``per_class`` holds None for classes without gt pixels (excluded from every mean); a
        mean over zero classes is 0.0.  ``n`` counts the classes a group mean is taken over;
        group ids outside ``[0, num_classes)`` are ignored.
        """
        tp = np.diag(self.conf).astype(np.float64)
        pos_gt = self.conf.sum(axis=1).astype(np.float64)
        pos_pred = self.conf.sum(axis=0).astype(np.float64)
        valid = pos_gt > 0
        iou = np.full(self.num_classes, np.nan)
        iou[valid] = tp[valid] / (pos_gt[valid] + pos_pred[valid] - tp[valid])

        def mean(ids: np.ndarray) -> tuple[float, int]:
            v = iou[ids][valid[ids]]
            return (float(v.mean()) if v.size else 0.0), int(v.size)

        miou, _ = mean(np.arange(self.num_classes))
        total = pos_gt.sum()
        out_groups: dict[str, dict[str, Any]] = {}
        for name, ids in (groups or {}).items():
            sel = np.array(
                sorted({int(i) for i in ids if 0 <= int(i) < self.num_classes}), dtype=np.int64
            )
            m, n = mean(sel)
            out_groups[name] = {"miou": m, "n": n}
        return {
            "miou": miou,
            "pixel_acc": float(tp.sum() / total) if total > 0 else 0.0,
            "per_class": {
                str(c): (float(iou[c]) if valid[c] else None) for c in range(self.num_classes)
            },
            "groups": out_groups,
        }
