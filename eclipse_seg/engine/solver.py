"""The optimiser and learning-rate schedule of a training step, rule for rule as the official ECLIPSE
/ Mask2Former `build_optimizer` and detectron2's `build_lr_scheduler` make them.

Optimiser: AdamW (betas 0.9 / 0.999, eps 1e-8) with one parameter group per trainable tensor, in
module order, each with its own lr and weight decay:
  * lr = base lr x `solver.backbone_multiplier` for tensors of a module whose name contains
    "backbone", else the base lr;
  * weight decay = `solver.weight_decay`, except `solver.weight_decay_norm` for the parameters of
    every norm layer (batch / sync-batch / group / instance / layer / local-response norm; FrozenBN
    has none), `solver.weight_decay_embed` for every `nn.Embedding` (queries, prompts, the decoder's
    level embedding) and 0 for Swin's `relative_position_bias_table` / `absolute_pos_embed`. Biases,
    and the pixel decoder's `transformer.level_embed` (a bare Parameter, not an Embedding), are
    decayed.
Schedule (`solver.schedule`): "poly" lr x (1 - it / iterations) ** `solver.poly_power` without
warm-up (ADE20K); "constant" lr (COCO: its step milestones lie beyond the last iteration and its
warm-up factor is 1, so the official lr never changes). Iteration `it` counts from 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from eclipse_seg.config import SolverConfig
from eclipse_seg.errors import ConfigError

NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
SWIN_UNDECAYED = ("relative_position_bias_table", "absolute_pos_embed")
SCHEDULES = ("poly", "constant")


@dataclass(frozen=True)
class ParamRule:
    """How one trainable tensor is optimised. `kind` says which rule set its weight decay:
    "decayed", "norm", "embedding" or "swin position"."""

    name: str
    param: nn.Parameter
    lr_multiplier: float
    weight_decay: float
    kind: str


def param_rules(model: nn.Module, solver: SolverConfig) -> list[ParamRule]:
    """One rule per trainable tensor, in `named_modules` order (shared tensors once)."""
    rules: list[ParamRule] = []
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            lr_mult = solver.backbone_multiplier if "backbone" in mod_name else 1.0
            wd, kind = solver.weight_decay, "decayed"
            # the official code applies these in this order; a later match wins
            if any(s in p_name for s in SWIN_UNDECAYED):
                wd, kind = 0.0, "swin position"
            if isinstance(module, NORM_TYPES):
                wd, kind = solver.weight_decay_norm, "norm"
            if isinstance(module, nn.Embedding):
                wd, kind = solver.weight_decay_embed, "embedding"
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            rules.append(ParamRule(name, p, lr_mult, wd, kind))
    return rules


def build_adamw(model: nn.Module, lr: float, solver: SolverConfig) -> torch.optim.AdamW:
    """AdamW over `param_rules`: one group per tensor with its lr (`initial_lr`, scaled by the
    schedule) and weight decay. Multi-tensor (foreach) updates, as torch uses on CUDA by default."""
    rules = param_rules(model, solver)
    if not rules:
        raise ConfigError("nothing to optimise: no parameter of the model is trainable")
    groups = [
        {
            "params": [r.param],
            "lr": lr * r.lr_multiplier,
            "initial_lr": lr * r.lr_multiplier,
            "weight_decay": r.weight_decay,
        }
        for r in rules
    ]
    return torch.optim.AdamW(
        groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=solver.weight_decay, foreach=True
    )


def lr_factor(solver: SolverConfig, iteration: int, iterations: int) -> float:
    """The schedule's multiplier of every group's initial lr at 0-based `iteration` of `iterations`."""
    if solver.schedule == "constant":
        return 1.0
    if solver.schedule == "poly":
        return (1.0 - iteration / iterations) ** solver.poly_power
    raise ConfigError(
        f"solver.schedule: expected one of {', '.join(SCHEDULES)}, got {solver.schedule!r}"
    )
