"""`eclipse-seg` command line: a thin layer over the Python API (one sub-command per task)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eclipse_seg.errors import EclipseSegError


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 64x64, got {text!r}") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"size must be at least 32x32, got {text!r}")
    return h, w


def cmd_make_synthetic(args) -> int:
    from eclipse_seg.data.synthetic import make_synthetic

    h, w = args.size
    out = make_synthetic(Path(args.out), seed=args.seed, num_train=args.train, num_val=args.val,
                         height=h, width=w)
    print(f"wrote synthetic COCO-panoptic dataset to {out} ({args.train} train, {args.val} val, {h}x{w})")
    return 0


def _load_cfg(args):
    from eclipse_seg.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "scenario", None):
        overrides.append(f"continual.scenario={args.scenario}")
    if getattr(args, "output", None):
        overrides.append(f"output_dir={args.output}")
    if getattr(args, "device", None):
        overrides.append(f"device={args.device}")
    return load_config(_resolve_config(args.config), overrides)


def _resolve_config(name: str | None) -> Path | None:
    """A path, or the name of a config shipped with the package (e.g. `synthetic/base`)."""
    if name is None:
        return None
    path = Path(name)
    if path.exists():
        return path
    builtin = Path(__file__).parent / "configs" / (name if name.endswith(".yaml") else name + ".yaml")
    return builtin if builtin.exists() else path


def cmd_train(args) -> int:
    from eclipse_seg.engine import distributed as dist
    from eclipse_seg.engine.outputs import claim_output_dir
    from eclipse_seg.engine.runner import format_results_table, plot_results, run

    cfg = _load_cfg(args)
    device = dist.init_from_env()
    if device is not None:
        cfg.device = str(device)
    out = Path(cfg.output_dir)
    with claim_output_dir(out, cfg, overwrite=args.overwrite, resume=args.resume):
        steps = None if args.step is None else [args.step]
        results = run(cfg, args.method, steps, resume=args.resume, progress=not args.no_progress)
        if dist.rank() == 0:
            print(format_results_table(results))
            plot_results(results, out / "pq_over_steps.png")
            print(f"results: {out / 'results.json'}  plot: {out / 'pq_over_steps.png'}")
    return 0


def cmd_evaluate(args) -> int:
    from eclipse_seg.config import apply_overrides, load_config
    from eclipse_seg.engine.check_data import preflight
    from eclipse_seg.engine.evaluate import step_result
    from eclipse_seg.engine.runner import build_datasets, evaluate_step, load_model
    from eclipse_seg.metrics.panoptic_quality import format_pq_table

    if args.config and "=" in args.config:  # an override, not a config path
        args.overrides, args.config = [args.config, *args.overrides], None
    model, cfg, scenario, step, method = load_model(args.weights, args.device or "cpu")
    if args.config or args.overrides:  # data / test settings from a config and/or overrides
        other = (load_config(_resolve_config(args.config), args.overrides) if args.config
                 else apply_overrides(cfg, args.overrides))
        cfg.data, cfg.test = other.data, other.test
    preflight(cfg, splits=("val",), scenario=False)
    _, val = build_datasets(cfg)
    summary = evaluate_step(model, cfg, val, scenario, step, progress=not args.no_progress,
                            predictions_dir=Path(args.predictions) if args.predictions else None)
    row = step_result(summary, step, scenario)
    metric = "miou" if summary.get("metric") == "miou" else "pq"
    if metric == "pq":
        print(format_pq_table(summary))
    name = {"pq": "PQ", "miou": "mIoU"}[metric]
    print(f"{method} step {step}: {name} old {row[f'{metric}_old']}  new {row[f'{metric}_new']}  "
          f"all {row[f'{metric}_all']}")
    if args.output:
        Path(args.output).write_text(json.dumps({"summary": summary, "step": row}, indent=1))
    return 0


def cmd_predict(args) -> int:
    from eclipse_seg.engine.predict import predict_files

    predict_files(args.weights, [Path(p) for p in args.images], Path(args.output),
                  device=args.device or "cpu")
    print(f"predictions written to {args.output}")
    return 0


def cmd_evaluate_panoptic(args) -> int:
    from eclipse_seg.metrics.panoptic_quality import evaluate_panoptic_main

    return evaluate_panoptic_main(args.rest)


def cmd_demo(args) -> int:
    from eclipse_seg.demo import run_demo

    run_demo(Path(args.out), quick=args.quick, progress=not args.no_progress, seed=args.seed)
    return 0


def cmd_check_data(args) -> int:
    from eclipse_seg.engine.check_data import check_data_main

    return check_data_main(args.rest)


def cmd_import_official(args) -> int:
    from eclipse_seg.compat.official_checkpoint import import_official_main

    return import_official_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eclipse-seg", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="synthetic continual demo: ECLIPSE vs fine-tuning vs joint")
    d.add_argument("--out", default="eclipse-demo", help="output folder (default ./eclipse-demo)")
    d.add_argument("--quick", action="store_true", help="sub-minute smoke run")
    d.add_argument("--seed", type=int, default=0,
                   help="draws the synthetic world and the training (default 0)")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser("make-synthetic", help="write the synthetic COCO-panoptic dataset")
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--train", type=int, default=400)
    m.add_argument("--val", type=int, default=100)
    m.add_argument("--size", type=_parse_size, default=(64, 64), help="HxW (default 64x64)")
    m.set_defaults(func=cmd_make_synthetic)

    t = sub.add_parser("train", help="train one step or every step of a scenario")
    t.add_argument("config", help="YAML config path or builtin name (e.g. synthetic/base)")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. solver.lr=1e-3")
    t.add_argument("--scenario", help="e.g. 100-5, 6-2, or 6,3,3")
    t.add_argument("--step", type=int, help="only this step (default: all)")
    t.add_argument("--method", default="eclipse", choices=["eclipse", "finetune", "joint"])
    t.add_argument("--output", help="output directory (overrides output_dir)")
    t.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: auto)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    t.add_argument("--overwrite", action="store_true",
                   help="allow an output directory holding results of another config")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate",
                       help="PQ (or mIoU) old/new/all of a checkpoint on its validation set")
    e.add_argument("config", nargs="?", help="optional config for data paths (default: the checkpoint's)")
    e.add_argument("overrides", nargs="*")
    e.add_argument("--weights", required=True)
    e.add_argument("--device")
    e.add_argument("--output", help="write the summary JSON here")
    e.add_argument("--predictions", help="also write the predictions to this folder (COCO panoptic; "
                                         "semantic data: label PNGs of category ids)")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="panoptic PNG + JSON + overlays for images")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--weights", required=True)
    pr.add_argument("--output", required=True)
    pr.add_argument("--device")
    pr.set_defaults(func=cmd_predict)

    # The pass-through commands below parse their own options. prefix_chars "+": every "--x" is
    # left to them (an argparse REMAINDER cannot start with an option-like token, so "--gt-json F"
    # first would otherwise be refused).
    ep = sub.add_parser("evaluate-panoptic", add_help=False, prefix_chars="+",
                        help="standalone PQ (panopticapi numbers): --gt-json --gt-folder --pred-json --pred-folder")
    ep.add_argument("rest", nargs=argparse.REMAINDER)
    ep.set_defaults(func=cmd_evaluate_panoptic)

    cd = sub.add_parser("check-data", add_help=False, prefix_chars="+",
                        help="check a config's dataset (both splits + scenario), report every "
                             "problem: CONFIG [key=value ...] [--quick]")
    cd.add_argument("rest", nargs=argparse.REMAINDER)
    cd.set_defaults(func=cmd_check_data)

    io = sub.add_parser("import-official", add_help=False, prefix_chars="+",
                        help="convert an official ECLIPSE / Mask2Former checkpoint: --weights W "
                             "--config YAML --output ours.pt [--official-thing-lookup] "
                             "[--opts KEY VALUE ...]")
    io.add_argument("rest", nargs=argparse.REMAINDER)
    io.set_defaults(func=cmd_import_official)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may stand anywhere among the options
    overrides = [x for x in extra if "=" in x and not x.startswith("-")]
    rest = [x for x in extra if x not in overrides]
    if rest or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(rest or overrides)}")
    if overrides:
        args.overrides = list(args.overrides) + overrides
    try:
        return args.func(args)
    except EclipseSegError as e:
        print(f"eclipse-seg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"eclipse-seg: interrupted ({e}); rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
