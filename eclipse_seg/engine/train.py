"""Training of one continual step: step 0 (the whole Mask2Former), ECLIPSE prompt tuning (t >= 1),
and the fine-tuning / joint baselines, with periodic atomic checkpoints and exact resume.

Reproducibility without hidden state: the data order of epoch e is a permutation seeded by
(seed, step, e); the augmentation of sample j of iteration i is seeded by (seed, step, i, j); torch's
RNG (point sampling) is reseeded every iteration from (seed, step, i). A resumed run therefore
replays exactly what the uninterrupted run would have done, given the restored weights and optimizer.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from eclipse_seg.config import Config
from eclipse_seg.continual import freeze_for_step
from eclipse_seg.data.coco_panoptic import CocoPanopticDataset
from eclipse_seg.data.pipelines import (
    AugmentRecord,
    TrainingPipeline,
    TrainingSample,
    pipeline_spec,
)
from eclipse_seg.data.prefetch import Prefetcher, default_workers
from eclipse_seg.data.sampling import AspectRatioGroupedBatches, stream_offsets
from eclipse_seg.data.transforms import augment
from eclipse_seg.engine import distributed as dist
from eclipse_seg.engine.checkpoint import load_checkpoint, save_checkpoint
from eclipse_seg.engine.solver import build_adamw, lr_factor
from eclipse_seg.errors import CheckpointError, TrainingError
from eclipse_seg.losses import LossConfig, SetCriterion, Target
from eclipse_seg.model.layers import train_keeping_frozen_in_eval
from eclipse_seg.model.mask2former import SIZE_DIVISIBILITY, Mask2Former
from eclipse_seg.model.pixel_decoder import PixelDecoderOutput
from eclipse_seg.scenarios import Scenario, restrict_to_classes, step_training_indices


@dataclass
class StepPlan:
    """What one step trains: which classes supervise, which parameters, how long, how fast."""

    step: int
    method: str
    classes: tuple[int, ...]  # category ids supervised at this step
    iterations: int
    lr: float
    batch_size: int
    class_weight: float
    prompt_tuning: bool


def plan_step(cfg: Config, scenario: Scenario, step: int, method: str) -> StepPlan:
    if method == "joint":
        return StepPlan(
            step,
            method,
            tuple(scenario.order),
            cfg.continual.joint_iterations or cfg.solver.iterations,
            cfg.solver.lr,
            cfg.solver.batch_size,
            cfg.loss.class_weight,
            False,
        )
    if step == 0:
        return StepPlan(
            step,
            method,
            scenario.classes_of_step(0),
            cfg.solver.iterations,
            cfg.solver.lr,
            cfg.solver.batch_size,
            cfg.loss.class_weight,
            False,
        )
    c = cfg.continual
    bs = c.batch_size or cfg.solver.batch_size
    if method == "finetune":
        return StepPlan(
            step,
            method,
            scenario.classes_of_step(step),
            c.finetune_iterations or c.iterations,
            cfg.solver.lr,
            bs,
            cfg.loss.class_weight,
            False,
        )
    return StepPlan(
        step, method, scenario.classes_of_step(step), c.iterations, c.lr, bs, c.class_weight, True
    )


def set_trainable(model: Mask2Former, plan: StepPlan, cfg: Config) -> list[torch.nn.Parameter]:
    """requires_grad for this step; returns the trainable parameters. Prompt tuning trains only the
    step's group (`freeze_for_step`); other steps train everything but the backbone's own frozen
    stages (`freeze_at` / `frozen_stages`)."""
    if plan.prompt_tuning:
        return freeze_for_step(model, plan.step, cfg.continual.train_no_object_head)
    for p in model.parameters():
        p.requires_grad_(True)
    model.backbone.freeze()
    return [p for p in model.parameters() if p.requires_grad]


def build_optimizer(model: Mask2Former, plan: StepPlan, cfg: Config) -> torch.optim.Optimizer:
    """The official AdamW of this step: one group per trainable tensor (see engine.solver)."""
    return build_adamw(model, plan.lr, cfg.solver)


class StepData:
    """Overlap-mode training data of a step: the images with a class of the step, the targets keeping
    only the step's classes (others are neither supervised nor background)."""

    def __init__(
        self, dataset: CocoPanopticDataset, scenario: Scenario, plan: StepPlan, cfg: Config
    ):
        self.dataset, self.scenario, self.cfg = dataset, scenario, cfg
        self.classes = set(plan.classes)
        if plan.method == "joint":
            self.indices = list(range(len(dataset)))
        else:
            self.indices = step_training_indices(dataset, scenario, plan.step)
        if not self.indices:
            raise TrainingError(
                f"step {plan.step}: no training image contains a class of this step "
                f"({sorted(self.classes)}); check the dataset and the scenario"
            )
        d = cfg.data
        # an official pipeline (data.pipeline): its own sample production, aspect-grouped batches
        self.pipeline = (
            None
            if d.pipeline == "synthetic"
            else TrainingPipeline(
                pipeline_spec(
                    d.pipeline,
                    short_sides=d.train_short_sides,
                    max_size=d.train_max_size,
                    crop_size=d.train_crop_size,
                    flip=d.flip,
                ),
                dataset,
            )
        )
        self._grouped: dict[tuple, AspectRatioGroupedBatches] = {}
        self.iterations = plan.iterations
        self._prefetch: Prefetcher | None = None
        self.last_records: list[
            tuple[int, AugmentRecord]
        ] = []  # (dataset index, record) per sample

    def sample_index(self, seed: int, step: int, position: int) -> int:
        return self.indices[int(stream_offsets(seed, step, [position], len(self.indices))[0])]

    def batch(
        self, seed: int, step: int, iteration: int, batch_size: int, rank: int = 0, world: int = 1
    ) -> tuple[list[torch.Tensor], list[Target]]:
        if self.pipeline is not None:
            return self._pipeline_batch(seed, step, iteration, batch_size, rank, world)
        d = self.cfg.data
        images, targets = [], []
        for j in range(batch_size):
            position = (iteration * world + rank) * batch_size + j
            sample = restrict_to_classes(
                self.dataset[self.sample_index(seed, step, position)], self.classes
            )
            rng = np.random.default_rng([seed, step, iteration, rank, j])
            keep_crowd = ~sample.iscrowd
            masks = sample.masks[keep_crowd]
            labels = torch.tensor(
                [self.scenario.label_of(int(c)) for c in sample.category_ids[keep_crowd]],
                dtype=torch.int64,
            )
            img, masks, kept = augment(
                sample.image,
                masks,
                rng,
                base_size=d.base_size,
                min_scale=d.min_scale,
                max_scale=d.max_scale,
                crop_size=d.crop_size,
                flip=d.flip,
                color_jitter=d.color_jitter,
            )
            images.append(img)
            targets.append(Target(labels[kept], masks))
        return images, pad_targets(images, targets)

    def _pipeline_batch(
        self, seed: int, step: int, iteration: int, batch_size: int, rank: int, world: int
    ) -> tuple[list[torch.Tensor], list[Target]]:
        key = (seed, step, batch_size, rank, world)
        if key not in self._grouped:
            self._grouped[key] = AspectRatioGroupedBatches(
                self.pipeline.landscape(self.indices), seed, step, batch_size, rank, world
            )
        if self._prefetch is None:  # samples made by threads, the next batch while this one trains
            self._prefetch = Prefetcher(default_workers(world))

        def jobs(it: int) -> list:
            return [
                partial(self._pipeline_sample, seed, step, it, rank, j, int(p))
                for j, p in enumerate(self._grouped[key].positions(it))
            ]

        ahead = (
            (key + (iteration + 1,), jobs(iteration + 1))
            if iteration + 1 < self.iterations
            else None
        )
        images, targets, self.last_records = [], [], []
        for index, sample in self._prefetch.run(key + (iteration,), jobs(iteration), ahead):
            keep = torch.isin(sample.category_ids, torch.tensor(sorted(self.classes)))
            labels = torch.tensor(
                [self.scenario.label_of(int(c)) for c in sample.category_ids[keep]],
                dtype=torch.int64,
            )
            images.append(sample.image)
            targets.append(Target(labels, sample.masks[keep]))
            self.last_records.append((index, sample.record))
        return images, pad_targets(images, targets)

    def _pipeline_sample(
        self, seed: int, step: int, iteration: int, rank: int, j: int, position: int
    ) -> tuple[int, TrainingSample]:
        """Sample j of a batch: its image from the stream, its draws seeded by (seed, step,
        iteration, rank, j)."""
        index = self.sample_index(seed, step, position)
        return index, self.pipeline.sample(
            index, np.random.default_rng([seed, step, iteration, rank, j])
        )


def pad_targets(images: list[torch.Tensor], targets: list[Target]) -> list[Target]:
    """Pad target masks like the model pads images (batch max, then a multiple of 32)."""
    h = max(im.shape[-2] for im in images)
    w = max(im.shape[-1] for im in images)
    h = math.ceil(h / SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
    w = math.ceil(w / SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
    out = []
    for t in targets:
        m = torch.zeros((t.masks.shape[0], h, w), dtype=torch.float32)
        m[:, : t.masks.shape[1], : t.masks.shape[2]] = t.masks
        out.append(Target(t.labels, m))
    return out


def amp_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `solver.amp` on this device; None = full precision (always on CPU)."""
    mode = cfg.solver.amp
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def autocast_context(cfg: Config, device: torch.device):
    dtype = amp_dtype(cfg, device)
    if dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type="cuda", dtype=dtype)


def frozen_trunk_features(
    model: Mask2Former, batch: torch.Tensor, cfg: Config
) -> PixelDecoderOutput:
    """The frozen trunk's output at a prompt-tuning step: no autograd graph, and the precision of
    `continual.trunk_amp` ("auto": the surrounding autocast of solver.amp; "off": float32; "bf16" /
    "fp16": the backbone under that autocast, on CPU too - the pixel decoder always computes in
    float32, as the official one). Outputs in float32 unless "auto"."""
    mode = cfg.continual.trunk_amp
    with torch.no_grad():
        if mode == "auto":
            return model.features(batch)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
        with torch.autocast(device_type=batch.device.type, dtype=dtype, enabled=dtype is not None):
            return model.features(batch).float()


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop checkpoints and exits at the end of the iteration."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _ckpt_paths(step_dir: Path) -> tuple[Path, Path]:
    return step_dir / "last.pt", step_dir / "prev.pt"


def _rotate_and_save(step_dir: Path, payload: dict) -> Path:
    last, prev = _ckpt_paths(step_dir)
    if last.exists():
        for suffix in ("", ".sha256"):
            src = Path(str(last) + suffix)
            if src.exists():
                src.replace(Path(str(prev) + suffix))
    save_checkpoint(last, payload)
    return last


def latest_good_checkpoint(step_dir: Path) -> tuple[dict | None, Path | None, list[str]]:
    """The newest readable checkpoint of a step (last, else prev) and the problems met on the way."""
    problems = []
    for path in _ckpt_paths(step_dir):
        if path.exists():
            try:
                return load_checkpoint(path), path, problems
            except CheckpointError as e:
                problems.append(str(e))
    return None, None, problems


def train_step(
    model: Mask2Former,
    cfg: Config,
    scenario: Scenario,
    plan: StepPlan,
    dataset: CocoPanopticDataset,
    step_dir: Path,
    manifest: dict,
    *,
    resume: bool = True,
    progress: bool = True,
    max_iterations: int | None = None,
    evaluate_fn: Callable[[], dict] | None = None,
) -> dict:
    """Train `model` (already grown for this step) in place; returns training statistics.

    `manifest`: what the checkpoints record (scenario, step, groups, method, config hash).
    `max_iterations`: stop early after this many iterations of this call (tests of resume).
    `evaluate_fn`: called every `solver.eval_period` iterations (rank 0 logs its result)."""
    device = model.device
    seed = cfg.solver.seed
    params = set_trainable(model, plan, cfg)
    optimizer = build_optimizer(model, plan, cfg)
    # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(cfg, device) == torch.float16)
    ddp_model = model if plan.prompt_tuning else dist.wrap(model)  # prompt tuning: all_reduce below
    forward = dist.maybe_compile(ddp_model, cfg.solver.compile and not plan.prompt_tuning)
    decoder = dist.maybe_compile(model.decoder, cfg.solver.compile and plan.prompt_tuning)
    criterion = SetCriterion(LossConfig(**{**cfg.loss.__dict__, "class_weight": plan.class_weight}))
    data = StepData(dataset, scenario, plan, cfg)
    start_iter, elapsed = 0, 0.0
    step_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        payload, path, problems = latest_good_checkpoint(step_dir)
        for msg in problems:
            dist.log(f"warning: {msg}; falling back to an older checkpoint")
        if payload is not None:
            _check_manifest(payload["manifest"], manifest, path)
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            if payload.get("grad_scaler"):  # empty when written without fp16
                scaler.load_state_dict(payload["grad_scaler"])
            start_iter = payload["manifest"]["iteration"]
            elapsed = payload.get("train_seconds", 0.0)
            dist.log(f"resumed step {plan.step} from {path} at iteration {start_iter}")
    log_path = step_dir / "log.jsonl"
    rank, world = dist.rank(), dist.world_size()
    board = _tensorboard(step_dir) if rank == 0 else None
    bar = tqdm(
        total=plan.iterations,
        initial=start_iter,
        desc=f"step {plan.step} [{plan.method}]",
        disable=not progress or rank != 0,
        dynamic_ncols=True,
        leave=False,
    )
    last_ckpt = None
    train_keeping_frozen_in_eval(model)  # frozen parts run as at inference (no BN statistic drift)
    t0 = time.perf_counter()
    it = start_iter
    stop_at = (
        plan.iterations
        if max_iterations is None
        else min(plan.iterations, start_iter + max_iterations)
    )

    def checkpoint(iteration: int) -> Path | None:
        if rank != 0:
            return None
        return _rotate_and_save(
            step_dir,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "grad_scaler": scaler.state_dict(),
                "manifest": {**manifest, "iteration": iteration, "complete": False},
                "train_seconds": elapsed + time.perf_counter() - t0,
            },
        )

    with _StopRequest() as stop:
        while it < stop_at:
            torch.manual_seed(hash((seed, plan.step, it)) & 0x7FFFFFFF)
            factor = lr_factor(cfg.solver, it, plan.iterations)
            for g in optimizer.param_groups:
                g["lr"] = g["initial_lr"] * factor
            images, targets = data.batch(seed, plan.step, it, plan.batch_size, rank, world)
            targets = [Target(t.labels.to(device), t.masks.to(device)) for t in targets]
            with autocast_context(cfg, device):
                batch = model.preprocess(images)
                if plan.prompt_tuning:
                    trunk = frozen_trunk_features(model, batch, cfg)
                    out = decoder(
                        trunk.multi_scale_features,
                        trunk.mask_features,
                        groups=(plan.step,),
                        aux="first",
                    )
                else:
                    groups = (0,)
                    out = forward(batch, groups=groups, aux="all")
            num_masks = dist.mean_num_masks(targets)
            loss, terms = criterion(out, targets, num_masks)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"step {plan.step}, iteration {it}: non-finite loss {loss.item()} "
                    f"(loss_ce={terms['loss_ce']}, loss_mask={terms['loss_mask']}, "
                    f"loss_dice={terms['loss_dice']}); last good "
                    f"checkpoint: {last_ckpt or 'none written yet'}"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if plan.prompt_tuning:
                dist.average_gradients(params)
            scaler.unscale_(optimizer)  # clip the true gradients
            if cfg.solver.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.solver.clip_grad_norm)
            scaler.step(optimizer)  # skips the step when fp16 gradients overflowed
            scaler.update()
            it += 1
            bar.update(1)
            if it % cfg.solver.log_period == 0 or it == plan.iterations:
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if rank == 0:
                    record = {
                        "iteration": it,
                        "loss": loss.item(),
                        "lr": optimizer.param_groups[0]["lr"],
                        **terms,
                    }
                    _log(log_path, board, record)
                    if not progress:  # no bar: one line per log period instead
                        dist.log(
                            f"step {plan.step} [{plan.method}] iteration {it}/{plan.iterations}"
                            f"  loss {record['loss']:.4f}  lr {record['lr']:.3g}"
                        )
            if (
                evaluate_fn is not None
                and cfg.solver.eval_period > 0
                and it % cfg.solver.eval_period == 0
                and it < plan.iterations
            ):
                result = evaluate_fn()
                train_keeping_frozen_in_eval(model)
                if rank == 0:
                    _log(
                        log_path,
                        board,
                        {"iteration": it, **{f"eval/{k}": v for k, v in result.items()}},
                    )
            if stop.signal is not None:
                checkpoint(it)
                raise KeyboardInterrupt(f"signal {stop.signal}: checkpoint saved at iteration {it}")
            if it % cfg.solver.checkpoint_period == 0 and it < plan.iterations:
                last_ckpt = checkpoint(it)
    bar.close()
    if board is not None:
        board.close()
    seconds = elapsed + time.perf_counter() - t0
    if it >= plan.iterations and rank == 0:
        save_checkpoint(
            step_dir / "final.pt",
            {
                "model": model.state_dict(),
                "manifest": {
                    **manifest,
                    "iteration": it,
                    "complete": True,
                    "trainable_params": sum(p.numel() for p in params),
                },
                "train_seconds": seconds,
            },
        )
    dist.barrier()
    return {
        "iterations": it,
        "train_seconds": seconds,
        "complete": it >= plan.iterations,
        "trainable_params": sum(p.numel() for p in params),
    }


def _tensorboard(step_dir: Path):
    """A TensorBoard writer when the optional `tensorboard` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pip install 'eclipse-seg[tensorboard]'
        return None
    return SummaryWriter(log_dir=str(step_dir / "tensorboard"))


def _log(path: Path, board, record: dict) -> None:
    """One JSON line (and TensorBoard scalars) per record; `record["iteration"]` is the x axis."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    if board is not None:
        for k, v in record.items():
            if k != "iteration" and isinstance(v, (int, float)):
                board.add_scalar(k, v, record["iteration"])


def _check_manifest(found: dict, expected: dict, path: Path) -> None:
    for key in ("config_hash", "scenario", "step", "method"):
        if found.get(key) != expected.get(key):
            raise CheckpointError(
                f"{path} belongs to another run: its {key} is {found.get(key)!r}, this run's is "
                f"{expected.get(key)!r}. Use another output directory or --overwrite."
            )
