"""Where one class's panoptic quality goes, on a finished run: matched segments (true positives,
IoU > 0.5, same class), missed ground-truth segments with what their pixels were predicted as, and
false-positive segments with the ground-truth class they overlap most, plus the scores of both.

    python -m benchmarks.class_errors RUN_DIR --step 1 --class-id 10 [--method eclipse]

RUN_DIR is a demo or `train` output folder (its `data/` holds the synthetic world; `--data-root`
points elsewhere). The TP / FN / FP counts and SQ x RQ reproduce the evaluator's PQ of that class
when no ground truth is void or crowd (the synthetic data has none). Used to diagnose the demo's
weakest new classes (docs/demo.md).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from eclipse_seg.data.coco_panoptic import CocoPanopticDataset
from eclipse_seg.engine.predictor import Predictor


def class_errors(predictor: Predictor, dataset: CocoPanopticDataset, class_id: int) -> dict:
    tp_iou, tp_scores, fp_scores = [], [], []
    missed_as: Counter = Counter()  # predicted category covering most of a missed segment (0: none)
    fp_on: Counter = Counter()  # ground-truth category a false positive overlaps most (0: none)
    for i in range(len(dataset)):
        sample = dataset[i]
        image = sample.image.numpy().transpose(1, 2, 0).astype(np.uint8)
        pred = predictor([image])[0]
        truths = list(zip(sample.masks.numpy(), sample.category_ids.tolist()))
        segments = {s["id"]: (pred.panoptic == s["id"], s) for s in pred.segments}
        matched = set()
        for mask, category in truths:
            if category != class_id:
                continue
            best_iou, best_id = 0.0, None
            for sid, (pmask, _) in segments.items():
                iou = (pmask & mask).sum() / max((pmask | mask).sum(), 1)
                if iou > best_iou:
                    best_iou, best_id = iou, sid
            if best_iou > 0.5 and segments[best_id][1]["category_id"] == class_id:
                matched.add(best_id)
                tp_iou.append(best_iou)
                tp_scores.append(segments[best_id][1]["score"])
            else:
                values, counts = np.unique(pred.semantic[mask], return_counts=True)
                missed_as[int(values[counts.argmax()])] += 1
        for sid, (pmask, seg) in segments.items():
            if seg["category_id"] != class_id or sid in matched:
                continue
            fp_scores.append(seg["score"])
            overlaps = [((pmask & m).sum() / max((pmask | m).sum(), 1), c) for m, c in truths]
            iou, category = max(overlaps, default=(0.0, 0))
            fp_on[category if iou > 0 else 0] += 1
    tp, fn, fp = len(tp_iou), sum(missed_as.values()), len(fp_scores)
    sq = float(np.mean(tp_iou)) if tp else 0.0
    rq = tp / (tp + 0.5 * fp + 0.5 * fn) if tp + fp + fn else 0.0
    return {
        "tp": tp,
        "fn": fn,
        "fp": fp,
        "sq": sq,
        "rq": rq,
        "pq": 100 * sq * rq,
        "missed_predicted_as": dict(missed_as),
        "false_positives_on": dict(fp_on),
        "tp_scores": sorted(tp_scores),
        "fp_scores": sorted(fp_scores),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("run", type=Path)
    ap.add_argument("--step", type=int, required=True)
    ap.add_argument("--class-id", type=int, required=True, help="dataset category id")
    ap.add_argument("--method", default="eclipse")
    ap.add_argument("--data-root", type=Path, help="default: RUN/data")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    predictor = Predictor.from_checkpoint(a.run / a.method / f"step_{a.step}" / "final.pt")
    val = (a.data_root or a.run / "data") / "val"
    dataset = CocoPanopticDataset(val / "panoptic.json", val / "panoptic", val / "images")
    names = {c["id"]: c["name"] for c in dataset.categories} | {0: "nothing"}
    r = class_errors(predictor, dataset, a.class_id)
    print(
        f"{names[a.class_id]} ({a.method}, step {a.step}): TP {r['tp']} FN {r['fn']} FP {r['fp']} "
        f"SQ {r['sq']:.2f} RQ {r['rq']:.2f} PQ {r['pq']:.1f}"
    )
    print(
        "missed segments, predicted as:", {names[k]: v for k, v in r["missed_predicted_as"].items()}
    )
    print("false positives, on:", {names[k]: v for k, v in r["false_positives_on"].items()})

    def spread(scores):
        return (
            "-"
            if not scores
            else f"{min(scores):.2f}-{max(scores):.2f}, median {np.median(scores):.2f}"
        )

    print(
        f"scores: true positives {spread(r['tp_scores'])}; false positives {spread(r['fp_scores'])}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
