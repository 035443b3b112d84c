"""Speed paths keep the maths: SDPA attention, inference_mode, the grouped one-call decoder versus
the per-group loop, and prompt tuning that builds no autograd graph for the frozen trunk."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from eclipse_seg.config import load_config, resolve_config
from eclipse_seg.continual import add_step, grow_for_step, set_deltas
from eclipse_seg.engine.build import build_datasets, build_model, build_scenario, manifest_for
from eclipse_seg.engine.train import plan_step, train_step
from eclipse_seg.model.mask2former import Mask2Former
from tests.conftest import TINY_MODEL


def _tiny_model(groups: int = 3) -> Mask2Former:
    cfg = load_config(resolve_config("synthetic/base"), TINY_MODEL)
    torch.manual_seed(0)
    model = Mask2Former(dataclasses.replace(cfg.model, base_classes=4))
    for _ in range(groups - 1):
        add_step(model, 2, 3)
    # make the groups differ from each other (add_step initialises all prompts equal)
    with torch.no_grad():
        for p in model.decoder.prompt_feat.parameters():
            p.add_(torch.randn_like(p))
        for p in model.decoder.prompt_embed.parameters():
            p.add_(torch.randn_like(p))
    set_deltas(model, [0.4, 0.6, -0.5])
    return model.eval()


def _images():
    g = torch.Generator().manual_seed(5)
    return [
        torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8),
        torch.randint(0, 256, (3, 48, 64), generator=g, dtype=torch.uint8),
    ]


def test_sdpa_equals_explicit_attention():
    model = _tiny_model()  # eval mode: the decoder's default is the fused kernel
    images = _images()
    with torch.no_grad():
        auto = model(images)
        model.set_fast_attention(False)
        ref = model(images)
        model.set_fast_attention(True)
        assert all(m.self_attn.use_sdpa for m in model.decoder.transformer_self_attention_layers)
        fast = model(images)
        model.set_fast_attention(False)
        again = model(images)
    torch.testing.assert_close(fast.pred_logits, ref.pred_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.pred_masks, ref.pred_masks, atol=1e-5, rtol=1e-5)
    for a, b in zip(fast.aux_outputs, ref.aux_outputs):
        torch.testing.assert_close(a.pred_masks, b.pred_masks, atol=1e-5, rtol=1e-5)
    assert torch.equal(auto.pred_masks, fast.pred_masks)
    assert torch.equal(again.pred_logits, ref.pred_logits)  # the switch goes back to bitwise


def test_inference_mode_equals_no_grad():
    model = _tiny_model()
    images = _images()
    with torch.no_grad():
        ref = model(images)
    with torch.inference_mode():
        out = model(images)
        preds = model.predict(images)
    assert torch.equal(out.pred_logits, ref.pred_logits)
    assert torch.equal(out.pred_masks, ref.pred_masks)
    assert len(preds) == 2 and preds[1]["panoptic_seg"].shape == (48, 64)


def test_grouped_decoder_equals_per_group_loop():
    model = _tiny_model()
    dec = model.decoder
    with torch.no_grad():
        batch = model.preprocess(_images())
        trunk = model.features(batch)
        mask_features, multi_scale = trunk.mask_features, trunk.multi_scale_features
        grouped = dec(multi_scale, mask_features, manipulate=False)
        loop = [
            dec(multi_scale, mask_features, groups=(g,), manipulate=False)
            for g in range(dec.num_groups)
        ]
    torch.testing.assert_close(
        grouped.pred_logits, torch.cat([o.pred_logits for o in loop], 1), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        grouped.pred_masks, torch.cat([o.pred_masks for o in loop], 1), atol=1e-5, rtol=1e-5
    )
    for layer, aux in enumerate(grouped.aux_outputs):
        torch.testing.assert_close(
            aux.pred_masks,
            torch.cat([o.aux_outputs[layer].pred_masks for o in loop], 1),
            atol=1e-5,
            rtol=1e-5,
        )


def test_prompt_tuning_builds_no_graph_for_the_frozen_trunk(tiny_cfg):
    cfg = tiny_cfg("solver.iterations=1", "continual.iterations=1", "solver.log_period=1")
    train, _ = build_datasets(cfg)
    scenario = build_scenario(cfg, train)
    things = {c["id"] for c in train.categories if c["isthing"]}
    model = build_model(cfg, scenario, "eclipse", 0, things)
    grow_for_step(model, scenario.classes_of_step(1), things, "eclipse", cfg.continual.num_prompts)
    seen = {}

    def hook(name):
        def fn(module, inputs, output):
            if dataclasses.is_dataclass(output):  # the pixel decoder's typed output
                output = list(vars(output).values())
            tensors = [t for t in torch.utils._pytree.tree_leaves(output) if torch.is_tensor(t)]
            assert tensors
            seen[name] = any(t.requires_grad for t in tensors) or torch.is_grad_enabled()

        return fn

    model.backbone.register_forward_hook(hook("backbone"))
    model.sem_seg_head.pixel_decoder.register_forward_hook(hook("pixel_decoder"))
    plan = plan_step(cfg, scenario, 1, "eclipse")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {}
    for n, p in model.named_parameters():
        p.register_hook(lambda g, n=n: grads.__setitem__(n, g))
    manifest = manifest_for(cfg, scenario, 1, "eclipse", model)
    train_step(model, cfg, scenario, plan, train, cfg_dir(cfg) / "step_1", manifest, progress=False)
    assert seen == {"backbone": False, "pixel_decoder": False}
    group_prefixes = (
        "sem_seg_head.predictor.prompt_feat.0",
        "sem_seg_head.predictor.prompt_embed.0",
        "sem_seg_head.predictor.prompt_mask_embed.0",
        "sem_seg_head.predictor.class_embed.cls.2",
        "sem_seg_head.predictor.class_embed.cls.0",
    )
    assert grads and all(n.startswith(group_prefixes) for n in grads)
    assert any(n.startswith("sem_seg_head.predictor.prompt_feat.0") for n in grads)
    for n, p in model.named_parameters():
        if not n.startswith(group_prefixes):
            assert p.grad is None, n
            assert torch.equal(p, before[n]), n


def cfg_dir(cfg):
    from pathlib import Path

    return Path(cfg.output_dir)


def test_loss_is_fp32_under_autocast():
    """AMP (bf16/fp16 on CUDA; bf16 autocast on CPU here) runs the model in low precision but the
    criterion casts logits and masks to fp32."""
    from eclipse_seg.losses import LossConfig, SetCriterion, Target

    model = _tiny_model(groups=1).train()
    images = _images()[:1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images, groups=(0,))
    assert out.pred_logits.dtype == torch.bfloat16
    masks = torch.zeros(2, 64, 64)
    masks[0, :32] = 1
    masks[1, 32:] = 1
    loss, _ = SetCriterion(LossConfig(num_points=64))(
        out, [Target(torch.tensor([0, 3]), masks)], 2.0
    )
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()


def test_frozen_trunk_precision_switch(tiny_cfg):
    """continual.trunk_amp: float32 outputs without autograd state in every mode; bf16 (CPU
    autocast) stays close to float32; an unknown mode is a config error naming the key."""
    from eclipse_seg.engine.train import frozen_trunk_features
    from eclipse_seg.errors import ConfigError

    model = _tiny_model()
    batch = model.preprocess(_images())
    outs = {}
    for mode in ("auto", "off", "bf16"):
        trunk = frozen_trunk_features(model, batch, tiny_cfg(f"continual.trunk_amp={mode}"))
        tensors = [trunk.mask_features, *trunk.multi_scale_features]
        assert all(t.dtype == torch.float32 and not t.requires_grad for t in tensors)
        outs[mode] = trunk.mask_features
    assert torch.equal(outs["auto"], outs["off"])  # CPU: solver.amp=auto is float32
    rel = (outs["bf16"] - outs["off"]).norm() / outs["off"].norm()
    assert 0 < rel < 0.05
    with pytest.raises(ConfigError, match="continual.trunk_amp"):
        tiny_cfg("continual.trunk_amp=int8")
