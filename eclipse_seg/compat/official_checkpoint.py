"""Loading official ECLIPSE / Mask2Former detectron2 checkpoints into our model.

:func:`load_official` builds our model for the step an official config describes (base model, then
one query group per incremental step with the config's prompt count and class count, then the
logit-manipulation deltas), loads the weights strictly (every missing, unexpected or mis-shaped key
is listed in a :class:`~eclipse_seg.errors.CheckpointError`) and returns it in eval mode. ResNet and
Swin backbones load alike; Swin's `relative_position_index` buffers may be absent (we rebuild them).

:func:`import_official` (``eclipse-seg import-official``) writes the same as one of our own
checkpoints (loadable by :func:`eclipse_seg.engine.build.load_model` and every command).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eclipse_seg.compat.official_config import (
    OfficialConfig,
    load_official_config,
    to_eclipse_config,
)
from eclipse_seg.data.categories import load_categories
from eclipse_seg.errors import CheckpointError, ConfigError

__all__ = [
    "build_official",
    "import_official",
    "load_official",
    "official_thing_ids",
    "read_official_state",
]

# keys an official checkpoint may hold that are not part of the inference model
_IGNORED_PREFIXES = ("criterion.",)
_IGNORED_SUFFIXES = ("num_batches_tracked",)
_NORMALISATION = ("pixel_mean", "pixel_std")
# Swin's persistent buffer: fixed by WINDOW_SIZE, so optional in a checkpoint (checked when present)
_REBUILT_SUFFIX = "relative_position_index"
Categories = str | Path | list[dict]  # a categories file or its entries


def read_official_state(path: str | Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The model state of an official checkpoint: a `.pth` holding {"model": state} or a bare state
    dict (read with torch.load(weights_only=True) unless `allow_pickle`), or a detectron2 / Mask2Former
    model-zoo `.pkl` ({"model": {name: ndarray}}). Keys lose a DDP "module." prefix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"official checkpoint not found: {path}")
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as f:
                raw = pickle.load(f, encoding="latin1")  # the model-zoo format is a pickle
        else:
            raw = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        hint = (
            ""
            if allow_pickle
            else " If you trust the file, retry with allow_pickle=True "
            "(--allow-pickle), which lets it run code while loading."
        )
        raise CheckpointError(f"cannot read official checkpoint {path}: {e}.{hint}") from e
    except Exception as e:
        raise CheckpointError(
            f"cannot read official checkpoint {path} ({type(e).__name__}: {e})"
        ) from e
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        raw = raw["model"]
    elif isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not raw:
        raise CheckpointError(
            f"{path}: expected a state dict or {{'model': state dict}}, got {type(raw).__name__}"
        )
    state: dict[str, torch.Tensor] = {}
    for k, v in raw.items():
        if not isinstance(k, str):
            raise CheckpointError(f"{path}: non-string key {k!r} in the state dict")
        k = k.removeprefix("module.")
        if isinstance(v, torch.Tensor):
            state[k] = v
        elif isinstance(v, (np.ndarray, np.generic, int, float)):
            state[k] = torch.as_tensor(np.asarray(v))
        else:
            raise CheckpointError(f"{path}: value of '{k}' is a {type(v).__name__}, not an array")
    return state


def official_thing_ids(
    catalog: str,
    order: list[int],
    thing_classes: Iterable[int] | None = None,
    official_thing_lookup: bool = False,
    categories: list[dict] | None = None,
) -> set[int]:
    """Category ids (in the class order's id space) that are things.

    `thing_classes`: 0-based model labels (positions in `order`) that are things; None = the
    catalog's flags, looked up by class id (ADE20K by id, COCO by 1-based contiguous id), or with
    `categories` (a categories file's entries; `order` then holds positions 1..n in it) the file's.
    `official_thing_lookup`: the official panoptic inference's lookup instead (`MaskFormer.
    panoptic_inference`: label l is a thing when l + 1 is among the values of the training set's
    `thing_dataset_id_to_contiguous_id`), i.e. by position in the class order. Identical for ADE20K's
    identity order; for COCO it makes labels 0..78 things whatever classes they are."""
    if official_thing_lookup and thing_classes is not None:
        raise ConfigError("pass either thing_classes or official_thing_lookup, not both")
    if official_thing_lookup:
        values = _official_thing_values(catalog, categories)
        thing_classes = [label for label in range(len(order)) if label + 1 in values]
    if thing_classes is not None:
        labels = [int(x) for x in thing_classes]
        bad = [x for x in labels if not 0 <= x < len(order)]
        if bad:
            raise ConfigError(f"thing_classes: labels {bad[:10]} outside 0..{len(order) - 1}")
        return {order[x] for x in labels}
    if categories is not None:
        return {k + 1 for k, c in enumerate(categories) if c["isthing"]}
    from eclipse_seg.data.catalogs import load_catalog

    key = "contiguous_id" if catalog == "coco" else "id"
    return {c[key] for c in load_catalog(catalog) if c.get("isthing")}


def _official_thing_values(catalog: str, categories: list[dict] | None = None) -> set[int]:
    """The values of the official metadata's `thing_dataset_id_to_contiguous_id`: ADE20K (ECLIPSE's
    register_myade20k_panoptic lists "void" first) gives the 1-based ADE ids of things; COCO
    (detectron2's "coco_panoptic_standard" metadata) gives 0-based contiguous ids, 0..79. A dataset
    of a categories file is taken to be registered as ADE20K is (a "void" entry first, then the
    file's classes): the 1-based positions of its things."""
    if categories is not None:
        return {k + 1 for k, c in enumerate(categories) if c["isthing"]}
    from eclipse_seg.data.catalogs import load_catalog

    if catalog == "coco":
        return {c["contiguous_id"] - 1 for c in load_catalog(catalog) if c.get("isthing")}
    return {c["id"] for c in load_catalog(catalog) if c.get("isthing")}


def _prepare_state(state: dict[str, torch.Tensor], model, path) -> dict[str, torch.Tensor]:
    """Drop known non-model keys (after checking the normalisation), rename old / model-zoo keys."""
    out: dict[str, torch.Tensor] = {}
    own = model.state_dict()
    for k, v in state.items():
        if k.startswith(_IGNORED_PREFIXES) or k.endswith(_IGNORED_SUFFIXES):
            continue
        if k in _NORMALISATION:
            ours = getattr(model, k).detach().cpu().reshape(-1)
            if v.numel() != ours.numel() or not torch.allclose(
                v.float().reshape(-1), ours, atol=1e-3
            ):
                raise CheckpointError(
                    f"{path}: '{k}' = {v.reshape(-1).tolist()} differs from ours "
                    f"{ours.tolist()}; this model expects other input normalisation"
                )
            continue
        if k.endswith(_REBUILT_SUFFIX) and k in own:
            if v.shape != own[k].shape or not torch.equal(v.long(), own[k].long()):
                raise CheckpointError(
                    f"{path}: '{k}' differs from ours: the checkpoint's Swin windows "
                    f"are not MODEL.SWIN.WINDOW_SIZE = {model.cfg.swin.window_size}"
                )
            continue
        out[k.replace("predictor.static_query", "predictor.query_feat")] = v
    # a Mask2Former model-zoo linear classifier: class_embed (C+1, hidden), no-object last
    p = "sem_seg_head.predictor.class_embed."
    one_linear_head = (
        p + "cls.1.weight" in own
        and p + "cls.2.weight" not in own
        and p + "cls.1.layers.0.weight" not in own
    )
    if p + "weight" in out and p + "cls.0.weight" not in out and one_linear_head:
        w = out.pop(p + "weight")
        out[p + "cls.1.weight"], out[p + "cls.0.weight"] = w[:-1], w[-1:]
        if p + "bias" in out:
            b = out.pop(p + "bias")
            out[p + "cls.1.bias"], out[p + "cls.0.bias"] = b[:-1], b[-1:]
    return out


def _load_strict(model, state: dict[str, torch.Tensor], path) -> None:
    own = model.state_dict()
    # ours alone: thing flags (set from the catalog); Swin's index buffers (rebuilt from the config)
    own_keys = {k for k in own if k != "thing_mask" and not k.endswith(_REBUILT_SUFFIX)}
    missing = sorted(own_keys - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in own_keys & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:

        def show(keys, n=20):
            return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")

        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {show(unexpected)}")
        if wrong:
            parts.append(
                "shape mismatches: "
                + ", ".join(
                    f"{k} checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in wrong[:20]
                )
            )
        raise CheckpointError(
            f"official checkpoint {path} does not fit the model its config describes "
            f"(check CONT.TASK, CONT.NUM_PROMPTS, the class counts and widths):\n  "
            + "\n  ".join(parts)
        )
    with torch.no_grad():
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)


def _as_official(config: str | Path | OfficialConfig, opts: list[str] | None) -> OfficialConfig:
    if isinstance(config, OfficialConfig):
        if opts:
            raise ConfigError(
                "opts are applied when loading the YAML; pass the path instead of an "
                "OfficialConfig, or apply them with load_official_config"
            )
        return config
    return load_official_config(config, opts)


def build_official(
    config: str | Path | OfficialConfig,
    opts: list[str] | None = None,
    thing_classes: Iterable[int] | None = None,
    *,
    official_thing_lookup: bool = False,
    categories: Categories | None = None,
):
    """(model with fresh weights, Config, Scenario, info, thing_ids) for an official config.
    `official_thing_lookup`: the official thing/stuff lookup (see `official_thing_ids`). `categories`: a
    categories file (or its entries) naming the training set's classes, required unless
    `DATASETS.TRAIN` is ADE20K or COCO: CONT.ORDER's value k is its k-th entry (1-based), whose
    id, name and thing flag the model label gets. The class order and thing ids are in the
    dataset's id space (panoptic JSON ids: ADE20K 0..149, COCO's own ids, a categories file's ids;
    semantic data: ADE20K 1..150), so `eclipse-seg evaluate` scores the imported model directly."""
    from eclipse_seg.data.catalogs import official_to_json_ids
    from eclipse_seg.engine.build import build_model
    from eclipse_seg.scenarios import parse_scenario

    official = _as_official(config, opts)
    cats = None if categories is None else load_categories(categories)
    cfg, info = to_eclipse_config(official, cats)
    info["categories"] = cats
    thing_ids = official_thing_ids(
        info["catalog"], list(cfg.continual.order), thing_classes, official_thing_lookup, cats
    )
    to_dataset = None
    if cats is not None:  # position k in the file -> the file's id
        to_dataset = {k + 1: c["id"] for k, c in enumerate(cats)}
    elif cfg.data.dataset != "semantic":  # panoptic JSONs number classes their own way
        to_dataset = official_to_json_ids(info["catalog"])
    if to_dataset is not None:
        cfg.continual.order = [to_dataset[c] for c in cfg.continual.order]
        thing_ids = {to_dataset[c] for c in thing_ids}
    scenario = parse_scenario(cfg.continual.scenario, cfg.continual.order)
    model = build_model(cfg, scenario, cfg.continual.method, info["step"], thing_ids)
    got = model.decoder.class_embed.classes_per_step
    if got != info["classes_per_step"]:  # pragma: no cover - a bug, not a user error
        raise ConfigError(f"internal: built class heads {got}, official {info['classes_per_step']}")
    return model, cfg, scenario, info, thing_ids


def _dataset_categories(catalog: str, semantic: bool, thing_ids: set[int]) -> list[dict]:
    """The catalog's categories in the dataset's id space (as `build_official` numbers classes),
    with the thing flags the import decided; the checkpoint keeps them for names and colours."""
    from eclipse_seg.data.catalogs import load_catalog, official_to_json_ids

    key = "contiguous_id" if catalog == "coco" else "id"
    to_json = {} if semantic else official_to_json_ids(catalog)
    out = []
    for c in load_catalog(catalog):
        cid = c[key] if semantic else to_json[c[key]]
        out.append(
            {
                "id": cid,
                "name": c["name"],
                "isthing": int(cid in thing_ids),
                "color": list(c["color"]),
            }
        )
    return out


def load_official(
    weights: str | Path,
    config: str | Path | OfficialConfig,
    opts: list[str] | None = None,
    thing_classes: Iterable[int] | None = None,
    *,
    allow_pickle: bool = False,
    official_thing_lookup: bool = False,
    categories: Categories | None = None,
):
    """Our Mask2Former holding an official checkpoint, in eval mode.

    `config`: the official YAML (its `_BASE_` chain is followed) and `opts` the official KEY VALUE
    overrides, e.g. ["CONT.TASK", "10", "CONT.NUM_PROMPTS", "10", ...]. `thing_classes`: 0-based
    labels that are things (default: from the ADE20K / COCO catalog the config's dataset names, or
    from `categories`). `official_thing_lookup`: decide thing/stuff as the official panoptic inference
    does (by position in the class order; differs for COCO), to reproduce its outputs exactly.
    `categories`: a categories file (path or entries) for a training set other than ADE20K / COCO
    (see `build_official`)."""
    model, _, _, _, _ = build_official(
        config,
        opts,
        thing_classes,
        official_thing_lookup=official_thing_lookup,
        categories=categories,
    )
    state = _prepare_state(read_official_state(weights, allow_pickle=allow_pickle), model, weights)
    _load_strict(model, state, weights)
    model.eval()
    return model


def import_official(
    weights: str | Path,
    config: str | Path,
    output: str | Path,
    opts: list[str] | None = None,
    thing_classes: Iterable[int] | None = None,
    *,
    allow_pickle: bool = False,
    official_thing_lookup: bool = False,
    categories: Categories | None = None,
) -> dict[str, Any]:
    """Write an official checkpoint as one of ours; returns its manifest (with a categories file:
    its entries under "categories", so names travel with the weights)."""
    from eclipse_seg.engine.build import manifest_for
    from eclipse_seg.engine.checkpoint import save_checkpoint

    model, cfg, scenario, info, thing_ids = build_official(
        config,
        opts,
        thing_classes,
        official_thing_lookup=official_thing_lookup,
        categories=categories,
    )
    state = _prepare_state(read_official_state(weights, allow_pickle=allow_pickle), model, weights)
    _load_strict(model, state, weights)
    if info["categories"] is not None:
        categories_of_data = [
            {**c, "isthing": int(c["id"] in thing_ids)} for c in info["categories"]
        ]
    else:
        categories_of_data = _dataset_categories(
            info["catalog"], cfg.data.dataset == "semantic", thing_ids
        )
    manifest = {
        **manifest_for(
            cfg, scenario, info["step"], cfg.continual.method, model, categories_of_data
        ),
        "thing_ids": sorted(thing_ids),
        "complete": True,
        "imported_from": {
            "weights": str(weights),
            "config": str(config),
            "opts": list(opts or []),
            "official_thing_lookup": official_thing_lookup,
        },
    }
    if info["categories"] is not None:
        manifest["imported_from"]["categories"] = (
            str(categories) if isinstance(categories, (str, Path)) else "(entries)"
        )
    save_checkpoint(Path(output), {"model": model.state_dict(), "manifest": manifest})
    return manifest
