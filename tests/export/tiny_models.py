"""A tiny continual model of the real structure (ResNet-50 blocks, MSDeformAttn pixel decoder,
grouped decoder) with 3 prompt groups, deep prompts and per-group mask MLPs, saved as an
eclipse-seg checkpoint, for the export tests."""

from __future__ import annotations

from pathlib import Path

import torch

from eclipse_seg.config import load_config
from eclipse_seg.data.synthetic import SYNTHETIC_CATEGORIES
from eclipse_seg.engine.build import build_model, manifest_for
from eclipse_seg.engine.checkpoint import save_checkpoint
from eclipse_seg.scenarios import parse_scenario

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic" / "base.yaml"
TINY = [
    "model.backbone.stem_out_channels=8",
    "model.backbone.res2_out_channels=16",
    "model.backbone.width_per_group=4",
    "model.pixel_decoder.conv_dim=32",
    "model.pixel_decoder.mask_dim=32",
    "model.pixel_decoder.num_layers=1",
    "model.pixel_decoder.ffn_dim=64",
    "model.pixel_decoder.num_heads=2",
    "model.decoder.num_heads=2",
    "model.decoder.hidden_dim=32",
    "model.decoder.ffn_dim=64",
    "model.decoder.num_layers=3",
    "model.decoder.num_queries=8",
    "continual.num_prompts=3",
    "continual.scenario=6-2",
    "continual.deltas=[0.4,0.6,-0.5,0.6]",
    "test.overlap_threshold=0.3",
    "test.object_mask_threshold=0.2",
]
STEP = 3  # base group + 3 prompt groups


def tiny_continual(seed: int = 0, *extra: str):
    """(model, cfg, scenario): step 3 of 6-2 on the synthetic classes, random distinct weights."""
    cfg = load_config(CONFIG, TINY + list(extra))
    order = [c["id"] for c in SYNTHETIC_CATEGORIES]
    scenario = parse_scenario(cfg.continual.scenario, order)
    things = {c["id"] for c in SYNTHETIC_CATEGORIES if c["isthing"]}
    model = build_model(cfg, scenario, "eclipse", STEP, things)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # prompts start equal: make every group and head distinct
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval(), cfg, scenario


def save_tiny_checkpoint(path: Path, seed: int = 0, *extra: str) -> Path:
    model, cfg, scenario = tiny_continual(seed, *extra)
    things = sorted(int(scenario.order[i]) for i, f in enumerate(model.thing_mask.tolist()) if f)
    manifest = {**manifest_for(cfg, scenario, STEP, "eclipse", model), "thing_ids": things}
    save_checkpoint(path, {"model": model.state_dict(), "manifest": manifest})
    return path
