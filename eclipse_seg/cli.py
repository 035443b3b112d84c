"""`eclipse-seg` command line: a thin layer over the Python API (one sub-command per task).

Every command checks its inputs before it writes anything, reports a user's mistake as one line
(`eclipse-seg: error: ...`, exit 2) and never prints a traceback for one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eclipse_seg import __version__
from eclipse_seg.errors import ConfigError, EclipseSegError


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 64x64, got {text!r}") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"size must be at least 32x32, got {text!r}")
    return h, w


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _threads(args) -> None:
    """Set torch's threads (see `eclipse_seg.engine.threads`) and say so on stderr."""
    from eclipse_seg.engine import distributed as dist
    from eclipse_seg.engine.threads import configure_threads

    n, source = configure_threads(getattr(args, "threads", None))
    if dist.rank() == 0:
        print(
            f"eclipse-seg {__version__}: {n} CPU thread{'s' if n != 1 else ''} ({source})",
            file=sys.stderr,
        )


def _load_cfg(args):
    from eclipse_seg.config import load_config, resolve_config

    overrides = list(args.overrides)
    if getattr(args, "scenario", None):
        overrides.append(f"continual.scenario={args.scenario}")
    if getattr(args, "output", None):
        overrides.append(f"output_dir={args.output}")
    if getattr(args, "device", None):
        overrides.append(f"device={args.device}")
    return load_config(resolve_config(args.config), overrides)


# --------------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------------
def cmd_make_synthetic(args) -> int:
    from eclipse_seg.data.synthetic import make_synthetic

    h, w = args.size
    out = make_synthetic(
        Path(args.out), seed=args.seed, num_train=args.train, num_val=args.val, height=h, width=w
    )
    print(
        f"wrote synthetic COCO-panoptic dataset to {out} ({args.train} train, {args.val} val, {h}x{w})"
    )
    return 0


def cmd_train(args) -> int:
    from eclipse_seg.engine import distributed as dist
    from eclipse_seg.engine.build import resolve_device
    from eclipse_seg.engine.continual_metrics import plot_class_heatmap
    from eclipse_seg.engine.outputs import claim_output_dir
    from eclipse_seg.engine.results import format_results_table, plot_results
    from eclipse_seg.engine.runner import prepare_run, run

    cfg = _load_cfg(args)
    method = args.method or cfg.continual.method
    steps = None if args.step is None else [args.step]
    if args.dry_run:  # the resolved recipe; writes nothing
        from eclipse_seg.engine.recipe import format_recipe, resolve_recipe

        print(format_recipe(resolve_recipe(cfg, method, steps)))
        return 0
    device = dist.init_from_env()
    if device is not None:
        cfg.device = str(device)
    resolve_device(cfg.device)  # an unavailable device fails here, before anything is written
    _threads(args)
    if args.order_seed is not None and args.orders is None:
        raise ConfigError("--order-seed only applies with --orders K")
    if args.orders is not None:
        return _train_orders(args, cfg, method)
    inputs = prepare_run(cfg, method, steps)
    out = Path(cfg.output_dir)
    with claim_output_dir(out, cfg, overwrite=args.overwrite, resume=args.resume):
        results = run(
            cfg, method, steps, resume=args.resume, progress=not args.no_progress, inputs=inputs
        )
        if dist.rank() == 0:
            print(format_results_table(results))
            plot_results(results, out / "pq_over_steps.png")
            plot_class_heatmap(results, out / "class_heatmap.png")
            print(
                f"results: {out / 'results.json'}  plot: {out / 'pq_over_steps.png'}  "
                f"heat map: {out / 'class_heatmap.png'}"
            )
    return 0


def _train_orders(args, cfg, method: str) -> int:
    """`train --orders K`: the configured order and K-1 seeded random ones, one run each."""
    from eclipse_seg.engine import distributed as dist
    from eclipse_seg.engine.orders import (
        ORDERS_JSON,
        ORDERS_PLOT,
        format_orders_table,
        plan_orders,
        run_orders,
    )
    from eclipse_seg.engine.outputs import claim_output_dir

    if args.step is not None:
        raise ConfigError("--step cannot be combined with --orders (each order is a whole run)")
    seed = 0 if args.order_seed is None else args.order_seed
    plan = plan_orders(cfg, args.orders, seed, method)
    with claim_output_dir(plan.out, cfg, overwrite=args.overwrite, resume=args.resume):
        summary = run_orders(plan, resume=args.resume, progress=not args.no_progress)
        if dist.rank() == 0:
            print(format_orders_table(summary))
            print(
                f"summary: {plan.out / ORDERS_JSON}  plot: {plan.out / ORDERS_PLOT}  "
                f"runs: {plan.out}/order_0 .. order_{args.orders - 1}"
            )
    return 0


# what `evaluate` / `predict` may change of a checkpoint's config: where the data is, the test
# settings and the logit-manipulation deltas (everything else is fixed by the trained weights)
_EVAL_KEYS = ("data.", "test.", "continual.deltas=")


def _run_with_overrides(weights: str, device: str, config: str | None, overrides: list[str]):
    """The checkpoint's run, with data / test settings from `config` and/or overrides."""
    from eclipse_seg.config import apply_overrides, load_config, resolve_config
    from eclipse_seg.continual import set_deltas
    from eclipse_seg.engine.build import load_run

    fixed = [o for o in overrides if not o.startswith(_EVAL_KEYS)]
    if fixed:
        raise ConfigError(
            f"{fixed[0]!r}: only data.*, test.* and continual.deltas can be changed "
            "for a trained checkpoint (its model, scenario and method are fixed)"
        )
    run = load_run(weights, device)
    if config is not None:
        other = load_config(resolve_config(config), overrides)
        run.cfg.data, run.cfg.test = other.data, other.test
        if any(o.startswith("continual.deltas=") for o in overrides):
            run.cfg.continual.deltas = other.continual.deltas
    elif overrides:
        run.cfg = apply_overrides(run.cfg, overrides)
    set_deltas(run.model, run.cfg.continual.deltas)
    return run


def cmd_evaluate(args) -> int:
    from eclipse_seg.engine.build import build_datasets
    from eclipse_seg.engine.check_data import preflight
    from eclipse_seg.engine.evaluate import evaluate_model
    from eclipse_seg.engine.predictor import Predictor
    from eclipse_seg.engine.results import step_result
    from eclipse_seg.metrics.panoptic_quality import format_pq_table, in_points

    if args.config and "=" in args.config:  # an override, not a config path
        args.overrides, args.config = [args.config, *args.overrides], None
    if args.device:
        from eclipse_seg.engine.build import resolve_device

        resolve_device(args.device)
    _threads(args)
    run = _run_with_overrides(args.weights, args.device or "cpu", args.config, args.overrides)
    cfg, scenario, step = run.cfg, run.scenario, run.step
    preflight(cfg, splits=("val",), scenario=False)
    _, val = build_datasets(cfg)
    known = {c["id"] for c in val.categories}
    foreign = [c for c in scenario.order if c not in known]
    if foreign:
        raise ConfigError(
            f"classes {foreign[:10]} of the checkpoint (scenario {scenario.name}) are "
            f"not categories of this validation set ({cfg.data.root}): evaluate it "
            "on the dataset it was trained on (or one with the same category ids)"
        )
    summary = evaluate_model(
        Predictor.from_run(run),
        val,
        step,
        max_images=cfg.data.max_val_images,
        progress=not args.no_progress,
        predictions_dir=Path(args.predictions) if args.predictions else None,
    )
    row = step_result(summary, step, scenario)
    metric = "miou" if summary.get("metric") == "miou" else "pq"
    name = {"pq": "PQ", "miou": "mIoU"}[metric]
    print(f"{run.method} step {step} of scenario {scenario.name} ({summary['num_images']} images)")
    if metric == "pq":
        names = {c["id"]: c["name"] for c in val.categories}
        print(format_pq_table(summary, per_class=args.per_class, names=names, overall=False))
    else:
        for group in ("old", "new", "all"):
            value = row[f"miou_{group}"]
            print(f"  mIoU {group:>3}: " + ("-" if value is None else f"{value:.2f}"))
    values = "  ".join(
        f"{g} " + ("-" if row[f"{metric}_{g}"] is None else f"{row[f'{metric}_{g}']:.2f}")
        for g in ("old", "new", "all")
    )
    print(f"{name} (points): {values}")
    if args.output:
        from eclipse_seg.data.files import atomic_write_bytes

        atomic_write_bytes(
            Path(args.output),
            json.dumps(
                {"unit": "points", "summary": in_points(summary), "step": row}, indent=1
            ).encode(),
        )
    return 0


def cmd_predict(args) -> int:
    from eclipse_seg.data.files import expand_images  # torch-free, like the ONNX path below

    # key=value items among the images are overrides (argparse gives every positional to IMAGES)
    overrides = [x for x in args.images if "=" in x and not Path(x).exists()]
    images = [Path(x) for x in args.images if x not in overrides]
    images = expand_images(images)  # bad paths fail before the model loads
    if args.onnx:  # an exported model, run by the torch-free runtime
        from eclipse_seg.runtime.files import predict_files as predict_onnx_files

        annotations = predict_onnx_files(args.onnx, images, Path(args.output), threads=args.threads)
        print(f"{len(annotations)} prediction(s) written to {args.output}")
        return 0
    from eclipse_seg.engine.predict import predict_files
    from eclipse_seg.engine.predictor import Predictor

    _threads(args)
    run = _run_with_overrides(args.weights, args.device or "cpu", None, overrides)
    annotations = predict_files(
        Path(args.weights), images, Path(args.output), predictor=Predictor.from_run(run)
    )
    print(
        f"{len(annotations)} prediction(s) written to {args.output} (predictions.json, panoptic/, "
        "overlays/)"
    )
    return 0


def cmd_evaluate_panoptic(args) -> int:
    from eclipse_seg.data.files import atomic_write_bytes
    from eclipse_seg.metrics.panoptic_quality import (
        format_pq_table,
        in_points,
        parse_class_groups,
        pq_compute,
    )

    groups = parse_class_groups(args.class_groups) if args.class_groups else None
    result = pq_compute(
        args.gt_json,
        args.gt_folder,
        args.pred_json,
        args.pred_folder,
        groups=groups,
        workers=args.workers,
    )
    try:
        with open(args.gt_json, encoding="utf-8") as f:
            names = {int(c["id"]): str(c.get("name", "")) for c in json.load(f)["categories"]}
    except (OSError, ValueError, KeyError, TypeError):  # names are cosmetic only
        names = None
    print(format_pq_table(result, per_class=args.per_class, names=names))
    if args.output is not None:
        atomic_write_bytes(
            args.output, json.dumps({"unit": "points", **in_points(result)}, indent=2).encode()
        )
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    from eclipse_seg.demo import run_demo

    _threads(args)
    run_demo(Path(args.out), quick=args.quick, progress=not args.no_progress, seed=args.seed)
    return 0


def cmd_report(args) -> int:
    from eclipse_seg.engine.build import resolve_device
    from eclipse_seg.engine.report import write_report

    device = args.device or "cpu"
    resolve_device(device)
    _threads(args)
    path = write_report(
        args.run_dir, args.output, images=args.images, device=device, data_root=args.data_root
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained)")
    return 0


def cmd_check_data(args) -> int:
    from eclipse_seg.data.paths import root_note
    from eclipse_seg.engine.check_data import (
        check_config_data,
        format_problems,
        split_paths,
        synthetic_pending,
    )

    cfg = _load_cfg(args)
    if synthetic_pending(cfg):
        print(
            f"synthetic dataset not generated yet under {cfg.data.root}: it is generated on "
            "first use; nothing to check"
        )
        return 0
    problems = check_config_data(cfg, deep=not args.quick)
    print(root_note(cfg.data.root))
    for split in ("train", "val"):
        j, p, i = split_paths(cfg, split)
        print(
            f"{split}: images {i}  labels {p}"
            if cfg.data.dataset == "semantic"
            else f"{split}: json {j}  png {p}  images {i}"
        )
    print(format_problems(problems, args.max_problems or None))
    return 0 if not problems else 1


def cmd_convert_masks(args) -> int:
    from eclipse_seg.data.convert import convert_split

    try:
        void = [int(v) for v in args.void_values.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"--void-values: expected comma-separated integers, got {args.void_values!r}"
        ) from None
    summary = convert_split(
        args.split,
        args.categories,
        images=args.images,
        masks=args.masks,
        labels=args.labels,
        instances=args.instances,
        out_json=args.out_json,
        out_pngs=args.out_pngs,
        overlap=args.overlap,
        void_values=void,
    )
    print(summary.format())
    return 0


def cmd_import_official(args) -> int:
    from eclipse_seg.compat.official_checkpoint import import_official

    things = None
    if args.thing_classes is not None:
        try:
            things = [int(x) for x in args.thing_classes.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(
                f"--thing-classes: expected comma-separated integers, got {args.thing_classes!r}"
            ) from None
    manifest = import_official(
        args.weights,
        args.config,
        args.output,
        args.opts,
        things,
        categories=args.categories,
        allow_pickle=args.allow_pickle,
        official_thing_lookup=args.official_thing_lookup,
    )
    print(
        f"wrote {args.output}: scenario {manifest['scenario']['name']}, step {manifest['step']}, "
        f"method {manifest['method']}, query groups {manifest['groups']}, classes per step "
        f"{manifest['classes_per_step']}"
    )
    return 0


# --------------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------------
def _compute_options(p: argparse.ArgumentParser, device: bool = True) -> None:
    p.add_argument(
        "--threads",
        type=_count(1),
        help="CPU threads for torch (default: "
        "$ECLIPSE_THREADS, else the cores this process may use)",
    )
    if device:
        p.add_argument(
            "--device",
            help="cpu, cuda, cuda:1, mps or auto (train default: auto = "
            "cuda, then mps, then cpu; evaluate / predict / report default: cpu)",
        )


def cmd_export(args) -> int:
    from eclipse_seg.export.command import export_main

    return export_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eclipse-seg", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"eclipse-seg {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="synthetic continual demo: ECLIPSE vs fine-tuning vs joint")
    d.add_argument("--out", default="eclipse-demo", help="output folder (default ./eclipse-demo)")
    d.add_argument("--quick", action="store_true", help="sub-minute smoke run")
    d.add_argument(
        "--seed", type=int, default=0, help="draws the synthetic world and the training (default 0)"
    )
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    _compute_options(d, device=False)
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser("make-synthetic", help="write the synthetic COCO-panoptic dataset")
    m.add_argument("--out", required=True, help="folder to write (train/ and val/ inside)")
    m.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    m.add_argument("--train", type=_count(1), default=400, help="training images (default 400)")
    m.add_argument("--val", type=_count(1), default=100, help="validation images (default 100)")
    m.add_argument("--size", type=_parse_size, default=(64, 64), help="HxW (default 64x64)")
    m.set_defaults(func=cmd_make_synthetic)

    t = sub.add_parser("train", help="train one step or every step of a scenario")
    t.add_argument("config", help="YAML config path or shipped name (e.g. synthetic/base)")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. solver.lr=1e-3")
    t.add_argument("--scenario", help="e.g. 100-5, 9-1, or 6,3,3")
    t.add_argument("--step", type=int, help="only this step (default: all)")
    t.add_argument(
        "--method",
        choices=["eclipse", "finetune", "joint"],
        help="default: the config's continual.method",
    )
    t.add_argument("--output", help="output directory (overrides output_dir)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="allow an output directory holding results of another config",
    )
    t.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar: one log line per solver.log_period instead",
    )
    t.add_argument(
        "--orders",
        type=_count(1),
        metavar="K",
        help="class-order robustness: the configured order plus K-1 seeded random "
        "orders (same step sizes), each a full run in OUTPUT/order_<i>, then "
        "OUTPUT/orders.json (mean ± std over orders) and OUTPUT/orders.png",
    )
    t.add_argument(
        "--order-seed", type=int, help="seed of the random orders of --orders (default 0)"
    )
    t.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved training recipe (parameter groups, schedule, data, "
        "weight file) and exit without writing anything",
    )
    _compute_options(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate", help="PQ (or mIoU) old/new/all of a checkpoint on its validation set"
    )
    e.add_argument(
        "config",
        nargs="?",
        help="optional config for data paths and test settings (default: the checkpoint's)",
    )
    e.add_argument(
        "overrides", nargs="*", help="data.*, test.* or continual.deltas=[...] overrides"
    )
    e.add_argument(
        "--weights", required=True, help="checkpoint (e.g. runs/x/eclipse/step_3/final.pt)"
    )
    e.add_argument("--output", help="write the summary JSON (points) here")
    e.add_argument(
        "--predictions",
        help="also write the predictions to this folder (COCO panoptic; "
        "semantic data: label PNGs of category ids)",
    )
    e.add_argument("--per-class", action="store_true", help="also print one row per class")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    _compute_options(e)
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="panoptic PNG + JSON + overlays for images or folders")
    pr.add_argument(
        "images",
        nargs="+",
        help="image files and/or folders of images (and optional "
        "test.* or continual.deltas=[...] overrides)",
    )
    source = pr.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="eclipse-seg checkpoint to predict with")
    source.add_argument("--onnx", help="ONNX file from `eclipse-seg export` (runs without torch)")
    pr.add_argument("--output", required=True, help="folder to write predictions into")
    _compute_options(pr)
    pr.set_defaults(func=cmd_predict)

    ep = sub.add_parser(
        "evaluate-panoptic", help="standalone PQ with panopticapi's pq_compute numbers"
    )
    ep.add_argument("--gt-json", required=True, type=Path, help="ground-truth panoptic JSON")
    ep.add_argument("--gt-folder", required=True, type=Path, help="ground-truth PNG folder")
    ep.add_argument("--pred-json", required=True, type=Path, help="predicted panoptic JSON")
    ep.add_argument("--pred-folder", required=True, type=Path, help="predicted PNG folder")
    ep.add_argument("--class-groups", help="e.g. 'old:1-100,new:101-150' or 'a:1-3+7+9-10'")
    ep.add_argument("--output", type=Path, help="write the results JSON (points) here")
    ep.add_argument("--workers", type=_count(1), default=1, help="processes (default 1)")
    ep.add_argument("--per-class", action="store_true", help="also print per-class rows")
    ep.set_defaults(func=cmd_evaluate_panoptic)

    rp = sub.add_parser(
        "report",
        help="one self-contained HTML page of a run: results, plots, "
        "heat map and step-by-step predictions on validation images",
    )
    rp.add_argument("run_dir", help="the --output folder of `eclipse-seg train` (or of the demo)")
    rp.add_argument("--output", help="HTML file to write (default RUN_DIR/report.html)")
    rp.add_argument(
        "--images",
        type=_count(0),
        default=3,
        help="validation images shown step by step (default 3; 0 = none)",
    )
    rp.add_argument(
        "--data-root",
        help="where the validation data is, when it moved since "
        "training (default: the run's data.root)",
    )
    _compute_options(rp)
    rp.set_defaults(func=cmd_report)

    cd = sub.add_parser(
        "check-data",
        help="check a config's dataset (both splits + scenario) and "
        "report every problem at once (exit 1 if any)",
    )
    cd.add_argument("config", help="YAML config path or shipped name")
    cd.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=/data/ade")
    cd.add_argument("--scenario", help="check this scenario instead of the config's")
    cd.add_argument(
        "--quick",
        action="store_true",
        help="JSON structure and file existence only (no image decoding)",
    )
    cd.add_argument(
        "--max-problems",
        type=_count(0),
        default=200,
        help="print at most this many problems (default 200; 0 = all)",
    )
    cd.set_defaults(func=cmd_check_data)

    cm = sub.add_parser(
        "convert-masks",
        help="convert one split of your own masks to COCO panoptic (see docs/custom-data.md)",
    )
    cm.add_argument(
        "split",
        help="split folder, e.g. mydata/train, holding images/ and masks/ "
        "(or labels/ [+ instances/])",
    )
    cm.add_argument(
        "--categories",
        required=True,
        help="categories JSON: a list of {id, name, isthing} or a COCO panoptic JSON",
    )
    cm.add_argument("--images", help="image folder (default SPLIT/images)")
    cm.add_argument("--masks", help="mask folders, one per image (default SPLIT/masks if present)")
    cm.add_argument("--labels", help="label PNGs of category ids (default SPLIT/labels if present)")
    cm.add_argument(
        "--instances",
        help="instance-number PNGs (default SPLIT/instances if present; with --labels only)",
    )
    cm.add_argument("--out-json", help="default SPLIT/panoptic.json")
    cm.add_argument("--out-pngs", help="default SPLIT/panoptic")
    cm.add_argument(
        "--overlap",
        choices=("error", "void"),
        default="error",
        help="pixels in two masks: an error (default) or unlabelled",
    )
    cm.add_argument(
        "--void-values",
        default="0",
        help="label values of unlabelled pixels, comma-separated (default 0)",
    )
    cm.set_defaults(func=cmd_convert_masks)

    io = sub.add_parser(
        "import-official",
        help="convert an official ECLIPSE / Mask2Former "
        "checkpoint (+ its yaml and KEY VALUE overrides) to an eclipse-seg checkpoint",
    )
    io.add_argument(
        "--weights", required=True, help="official .pth ({'model': state}) or model-zoo .pkl"
    )
    io.add_argument(
        "--config",
        required=True,
        help="official yaml (e.g. configs/ade20k/panoptic-"
        "segmentation/maskformer2_R50_bs16_160k.yaml, with its _BASE_ files)",
    )
    io.add_argument("--output", required=True, help="our checkpoint to write (e.g. ade_100_5.pt)")
    things_from = io.add_mutually_exclusive_group()
    things_from.add_argument(
        "--thing-classes",
        help="comma-separated 0-based labels that are "
        "things (default: from the ADE20K / COCO catalog, by class id)",
    )
    things_from.add_argument(
        "--official-thing-lookup",
        action="store_true",
        help="decide thing/stuff as the official panoptic inference does (by "
        "position in the class order): its exact outputs, wrong for COCO",
    )
    io.add_argument(
        "--categories",
        help="categories JSON (a list of {id, name, isthing} or a COCO "
        "panoptic JSON) for a dataset other than ADE20K / COCO: the k-th class is "
        "CONT.ORDER value k",
    )
    io.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read a .pth with full unpickling (only for files you trust)",
    )
    io.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="official KEY VALUE overrides, e.g. CONT.TASK 10 CONT.NUM_PROMPTS 10 (last)",
    )
    io.set_defaults(func=cmd_import_official)

    ex = sub.add_parser(
        "export",
        add_help=False,
        prefix_chars="+",
        help="ONNX / torch.export (.pt2) / safetensors with every prompt group: "
        "--weights W --format onnx|exported-program|safetensors --output F "
        "[--height H --width W | --dynamic]",
    )
    ex.add_argument("rest", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_export)
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
