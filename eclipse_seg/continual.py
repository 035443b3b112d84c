"""ECLIPSE's continual layer: adding a step (a new query group), its initialisation, freezing, and
the per-group logit-manipulation deltas.

Initialisation of step t (official, docs/design.md §4): prompt features / per-layer embeddings = mean of the
base queries' features / embeddings, repeated (all prompts start equal); the group's mask MLP = copy
of the base mask MLP; the new class head = copy of the no-object head with its last layer repeated
to the new class count. Everything else is frozen, except (official quirk, on by default) the shared
no-object head `cls.0`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from eclipse_seg.model.heads import MLP
from eclipse_seg.model.mask2former import Mask2Former


def _repeat_last_layer(head: nn.Module, num_outputs: int) -> nn.Module:
    """Copy of the 1-output no-object head whose last layer is repeated to `num_outputs` rows."""
    new = copy.deepcopy(head)
    last = new.layers[-1] if isinstance(new, MLP) else new
    weight = last.weight.data.repeat(num_outputs, 1)
    bias = last.bias.data.repeat(num_outputs) if last.bias is not None else None
    repl = nn.Linear(last.in_features, num_outputs, bias=bias is not None)
    with torch.no_grad():
        repl.weight.copy_(weight)
        if bias is not None:
            repl.bias.copy_(bias)
    if isinstance(new, MLP):
        new.layers[-1] = repl
        return new
    return repl


def add_step(
    model: Mask2Former,
    num_classes: int,
    num_prompts: int,
    *,
    thing_flags: Sequence[bool] | None = None,
) -> int:
    """Grow `model` by one query group for `num_classes` new classes; returns the new group index.
    Does not change any existing parameter (old groups' outputs stay bitwise identical)."""
    dec = model.decoder
    c = dec.cfg.hidden_dim
    with torch.no_grad():
        feat = nn.Embedding(num_prompts, c)
        feat.weight.copy_(dec.query_feat.weight.mean(0, keepdim=True).repeat(num_prompts, 1))
        pos_mean = dec.query_embed.weight.mean(0, keepdim=True).repeat(num_prompts, 1)
        if dec.cfg.prompt_deep:
            embed = nn.ModuleList(nn.Embedding(num_prompts, c) for _ in range(dec.cfg.num_layers))
            for e in embed:
                e.weight.copy_(pos_mean)
        else:
            embed = nn.Embedding(num_prompts, c)
            embed.weight.copy_(pos_mean)
    dec.prompt_feat.append(feat.to(model.device))
    dec.prompt_embed.append(embed.to(model.device))
    if dec.cfg.prompt_mask_mlp:
        dec.prompt_mask_embed.append(copy.deepcopy(dec.mask_embed))
    add_class_head(model, num_classes, thing_flags=thing_flags)
    return dec.num_groups - 1


def add_class_head(
    model: Mask2Former, num_classes: int, *, thing_flags: Sequence[bool] | None = None
) -> None:
    """Append a class head for `num_classes` new classes (initialised from the no-object head) and
    their thing flags. Used alone by the fine-tuning baseline, which adds no query group."""
    dec = model.decoder
    dec.class_embed.cls.append(
        _repeat_last_layer(dec.class_embed.cls[0], num_classes).to(model.device)
    )
    flags = torch.tensor(
        list(thing_flags) if thing_flags is not None else [False] * num_classes,
        dtype=torch.bool,
        device=model.device,
    )
    model.thing_mask = torch.cat([model.thing_mask, flags])
    dec.invalidate_cache()


def grow_for_step(
    model: Mask2Former,
    new_classes: Sequence[int],
    thing_ids: set[int],
    method: str,
    num_prompts: int,
) -> None:
    """The structure of a step for `new_classes` (category ids): ECLIPSE adds a prompt group of
    `num_prompts`; the fine-tuning baseline only adds a class head."""
    flags = [c in thing_ids for c in new_classes]
    if method == "eclipse":
        add_step(model, len(new_classes), num_prompts, thing_flags=flags)
    else:
        add_class_head(model, len(new_classes), thing_flags=flags)


def group_parameters(
    model: Mask2Former, group: int, train_no_object_head: bool = True
) -> list[tuple[str, nn.Parameter]]:
    """The parameters prompt tuning of `group` trains: its prompts, mask MLP and class head (and the
    shared no-object head when the official quirk is on)."""
    dec = model.decoder
    modules: list[tuple[str, nn.Module]] = [
        (f"prompt_feat.{group - 1}", dec.prompt_feat[group - 1]),
        (f"prompt_embed.{group - 1}", dec.prompt_embed[group - 1]),
        (f"class_embed.cls.{group + 1}", dec.class_embed.cls[group + 1]),
    ]
    if dec.cfg.prompt_mask_mlp:
        modules.append((f"prompt_mask_embed.{group - 1}", dec.prompt_mask_embed[group - 1]))
    if train_no_object_head:
        modules.append(("class_embed.cls.0", dec.class_embed.cls[0]))
    return [
        (f"sem_seg_head.predictor.{prefix}.{n}", p)
        for prefix, m in modules
        for n, p in m.named_parameters()
    ]


def freeze_for_step(
    model: Mask2Former, group: int, train_no_object_head: bool = True
) -> list[nn.Parameter]:
    """requires_grad only on `group_parameters`; returns them."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for _, p in group_parameters(model, group, train_no_object_head)]
    for p in params:
        p.requires_grad_(True)
    return params


def set_deltas(model: Mask2Former, deltas: Sequence[float]) -> None:
    """Logit-manipulation deltas, one per group (g = 0: base); padded/truncated at use."""
    if len(deltas) == 0:
        deltas = [0.0]
    model.decoder.deltas = torch.tensor([float(d) for d in deltas], device=model.device)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
