"""Which kept queries become panoptic segments: the official rule, in plain Python so that the
torch post-processing (`eclipse_seg.inference`) and the torch-free runtime
(`eclipse_seg.runtime.postprocess`) share one copy of it.

A query is dropped when it owns no pixel, has no pixel of probability >= 0.5, is assigned none, or
owns less than `overlap_threshold` of its >= 0.5 area; a stuff query of a class already placed
joins that class's segment; every other query opens a new segment (ids 1, 2, ... in query order).
"""

from __future__ import annotations

from collections.abc import Sequence


def place_segments(
    owned_area: Sequence[int],
    confident_area: Sequence[int],
    assigned_area: Sequence[int],
    labels: Sequence[int],
    scores: Sequence[float],
    thing_flags: Sequence[bool],
    overlap_threshold: float,
) -> tuple[list[dict], list[int]]:
    """Per kept query k (plain Python numbers) -> (segments [{"id", "category_id" (= label + 1,
    official), "label", "isthing", "score"}], the segment id of every query, 0 = dropped)."""
    segments: list[dict] = []
    seg_of_query = [0] * len(labels)
    stuff_segment: dict[int, int] = {}
    rows = zip(owned_area, confident_area, assigned_area, labels, scores)
    for q, (owned, conf, area, label, score) in enumerate(rows):
        isthing = bool(thing_flags[label]) if label < len(thing_flags) else False
        if owned == 0 or conf == 0 or area == 0 or owned / conf < overlap_threshold:
            continue
        if not isthing and label in stuff_segment:
            seg_of_query[q] = stuff_segment[label]
            continue
        seg_of_query[q] = len(segments) + 1
        if not isthing:
            stuff_segment[label] = seg_of_query[q]
        segments.append(
            {
                "id": seg_of_query[q],
                "category_id": label + 1,
                "label": label,
                "isthing": isthing,
                "score": score,
            }
        )
    return segments, seg_of_query
