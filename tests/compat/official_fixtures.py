"""Official-style detectron2 YAML files (the structure of clovaai/ECLIPSE's configs, rewritten as
minimal fixtures) and the official scripts' evaluation settings, for the compat tests."""

from __future__ import annotations

from pathlib import Path

from eclipse_seg.data.catalogs import official_order

_NORM = """  PIXEL_MEAN: [123.675, 116.280, 103.530]
  PIXEL_STD: [58.395, 57.120, 57.375]
"""

_BASE = """MODEL:
  BACKBONE:
    FREEZE_AT: 0
    NAME: "build_resnet_backbone"
{norm}  RESNETS:
    DEPTH: 50
    STEM_TYPE: "basic"
    STEM_OUT_CHANNELS: 64
    STRIDE_IN_1X1: False
    OUT_FEATURES: ["res2", "res3", "res4", "res5"]
DATASETS:
  TRAIN: ("{train}",)
  TEST: ("{test}",)
SOLVER:
  IMS_PER_BATCH: {batch}
  BASE_LR: 0.0001
  MAX_ITER: 160000
INPUT:
  MIN_SIZE_TRAIN: !!python/object/apply:eval ["[int(x * 0.1 * {size}) for x in range(5, 21)]"]
  CROP:
    SIZE: ({size}, {size})
  FORMAT: "RGB"
CONT:
  ORDER: !!python/object/apply:eval ["[x for x in range(1, {n})]"]
"""

_HEAD = """_BASE_: {base}
MODEL:
  META_ARCHITECTURE: "MaskFormer"
  SEM_SEG_HEAD:
    NAME: "MaskFormerHead"
    NUM_CLASSES: {ncls}
    CONVS_DIM: 256
    MASK_DIM: 256
    NORM: "GN"
    PIXEL_DECODER_NAME: "MSDeformAttnPixelDecoder"
    IN_FEATURES: ["res2", "res3", "res4", "res5"]
    DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES: ["res3", "res4", "res5"]
    COMMON_STRIDE: 4
    TRANSFORMER_ENC_LAYERS: 6
  MASK_FORMER:
    TRANSFORMER_DECODER_NAME: "MultiScaleMaskedTransformerDecoder"
    TRANSFORMER_IN_FEATURE: "multi_scale_pixel_decoder"
    CLASS_WEIGHT: 2.0
    MASK_WEIGHT: 5.0
    DICE_WEIGHT: 5.0
    HIDDEN_DIM: 256
    NUM_OBJECT_QUERIES: 100
    NHEADS: 8
    DROPOUT: 0.0
    DIM_FEEDFORWARD: 2048
    PRE_NORM: False
    ENFORCE_INPUT_PROJ: False
    SIZE_DIVISIBILITY: 32
    DEC_LAYERS: 10
    TEST:
      SEMANTIC_ON: {sem}
      INSTANCE_ON: False
      PANOPTIC_ON: {pan}
      MASK_BG: False
      OVERLAP_THRESHOLD: 0.0
      OBJECT_MASK_THRESHOLD: 0.0
"""


def write_official_configs(root: Path) -> dict[str, Path]:
    """The three official config files the scripts use, with their _BASE_ chains."""
    ps = root / "configs/ade20k/panoptic-segmentation"
    ss = root / "configs/ade20k/semantic-segmentation"
    cp = root / "configs/coco/panoptic-segmentation"
    for d in (ps, ss, cp):
        d.mkdir(parents=True, exist_ok=True)
    (ps / "Base-ADE20K-PanopticSegmentation.yaml").write_text(
        _BASE.format(
            norm=_NORM,
            train="myade20k_panoptic_train",
            test="myade20k_panoptic_val",
            batch=8,
            size=640,
            n=151,
        )
    )
    (ps / "maskformer2_R50_bs16_160k.yaml").write_text(
        _HEAD.format(base="Base-ADE20K-PanopticSegmentation.yaml", ncls=151, sem=False, pan=True)
    )
    (ss / "Base-ADE20K-SemanticSegmentation.yaml").write_text(
        _BASE.format(
            norm=_NORM,
            train="myade20k_sem_seg_train",
            test="myade20k_sem_seg_val",
            batch=16,
            size=512,
            n=151,
        )
    )
    (ss / "maskformer2_R50_bs16_160k.yaml").write_text(
        _HEAD.format(base="Base-ADE20K-SemanticSegmentation.yaml", ncls=151, sem=True, pan=False)
    )
    (ss / "maskformer2_R101_bs16_90k.yaml").write_text(
        "_BASE_: maskformer2_R50_bs16_160k.yaml\nMODEL:\n  RESNETS:\n    DEPTH: 101\n"
        '    STRIDE_IN_1X1: False\n    NORM: "SyncBN"\n'
    )
    (cp / "Base-COCO-PanopticSegmentation.yaml").write_text(
        _BASE.format(
            norm=_NORM,
            train="coco_2017_train_panoptic",
            test="coco_2017_val_panoptic_with_sem_seg",
            batch=16,
            size=1024,
            n=134,
        )
    )
    (cp / "maskformer2_R50_bs16_50ep.yaml").write_text(
        _HEAD.format(base="Base-COCO-PanopticSegmentation.yaml", ncls=134, sem=False, pan=True)
    )
    order = ",".join(str(x) for x in official_order("coco"))
    (cp / "continual_c.yaml").write_text(
        f'_BASE_: maskformer2_R50_bs16_50ep.yaml\nCONT:\n  ORDER: [{order}]\n  ORDER_NAME: "c"\n'
    )
    return {
        "ade_ps": ps / "maskformer2_R50_bs16_160k.yaml",
        "ade_ss": ss / "maskformer2_R101_bs16_90k.yaml",
        "coco_ps": cp / "continual_c.yaml",
    }


# (config, base, inc, base queries, prompts, eval task, eval deltas) of the official scripts
OFFICIAL_EVAL = {
    "ade_ps 100-5": ("ade_ps", 100, 5, 100, 10, 10, [0.4] + [0.6] * 10),
    "ade_ps 100-10": ("ade_ps", 100, 10, 100, 10, 5, [0.4] + [0.5] * 5),
    "ade_ps 100-50": ("ade_ps", 100, 50, 100, 50, 1, [-0.4, -0.6]),
    "ade_ps 50-10": ("ade_ps", 50, 10, 50, 10, 10, [0.4] + [0.5] * 10),
    "ade_ps 50-20": ("ade_ps", 50, 20, 50, 20, 5, [0.4] + [0.5] * 5),
    "ade_ps 50-50": ("ade_ps", 50, 50, 50, 50, 2, [0.5, -0.4, -0.4]),
    "ade_ss 100-5": ("ade_ss", 100, 5, 100, 5, 10, [0.1] + [0.8] * 10),
    "ade_ss 100-10": ("ade_ss", 100, 10, 100, 10, 5, [0.1] + [0.7] * 5),
    "ade_ss 100-50": ("ade_ss", 100, 50, 100, 50, 1, [0.0, -0.1]),
    "coco_ps 83-5": ("coco_ps", 83, 5, 100, 10, 10, [0.5] + [0.6] * 10),
    "coco_ps 83-10": ("coco_ps", 83, 10, 100, 10, 5, [0.5] + [0.6] * 5),
}


def _fmt(d: list[float]) -> str:
    return "[" + ",".join(str(x) for x in d) + "]"


def eval_opts(name: str) -> list[str]:
    """The KEY VALUE list of the official script's evaluation command for `name`."""
    _, base, inc, queries, prompts, task, deltas = OFFICIAL_EVAL[name]
    return [
        "OUTPUT_DIR",
        "results/x",
        "MODEL.MASK_FORMER.TEST.MASK_BG",
        "False",
        "MODEL.MASK_FORMER.PER_PIXEL",
        "False",
        "MODEL.MASK_FORMER.FOCAL",
        "True",
        "CONT.BASE_CLS",
        str(base),
        "CONT.INC_CLS",
        str(inc),
        "CONT.MODE",
        "overlap",
        "SEED",
        "42",
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES",
        str(queries),
        "MODEL.MASK_FORMER.DICE_WEIGHT",
        "5.0",
        "MODEL.MASK_FORMER.MASK_WEIGHT",
        "5.0",
        "MODEL.MASK_FORMER.CLASS_WEIGHT",
        "10.0",
        "MODEL.MASK_FORMER.SOFTMASK",
        "False",
        "CONT.SOFTCLS",
        "False",
        "CONT.NUM_PROMPTS",
        str(prompts),
        "CONT.TASK",
        str(task),
        "CONT.WEIGHTS",
        f"results/{name.replace(' ', '_')}_final.pth",
        "CONT.BACKBONE_FREEZE",
        "True",
        "CONT.CLS_HEAD_FREEZE",
        "True",
        "CONT.MASK_HEAD_FREEZE",
        "True",
        "CONT.PIXEL_DECODER_FREEZE",
        "True",
        "CONT.QUERY_EMBED_FREEZE",
        "True",
        "CONT.TRANS_DECODER_FREEZE",
        "True",
        "CONT.PROMPT_MASK_MLP",
        "True",
        "CONT.PROMPT_NO_OBJ_MLP",
        "False",
        "CONT.PROMPT_DEEP",
        "True",
        "CONT.DEEP_CLS",
        "True",
        "CONT.LOGIT_MANI_DELTAS",
        _fmt(deltas),
        "NAME",
        "x",
        "WANDB",
        "False",
    ]


# tiny widths through the official keys (same structure, seconds on a CPU)
TINY_OPTS = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS",
    "8",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "16",
    "MODEL.RESNETS.WIDTH_PER_GROUP",
    "4",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM",
    "32",
    "MODEL.SEM_SEG_HEAD.MASK_DIM",
    "16",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS",
    "1",
    "MODEL.MASK_FORMER.HIDDEN_DIM",
    "32",
    "MODEL.MASK_FORMER.NHEADS",
    "2",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD",
    "32",
    "MODEL.MASK_FORMER.DEC_LAYERS",
    "4",
]


# ---- Swin ---------------------------------------------------------------------------------------
# MODEL.SWIN values of Mask2Former's / ECLIPSE's Swin configs (all: APE False, DROP_PATH_RATE 0.3,
# PATCH_NORM True; e.g. configs/ade20k/panoptic-segmentation/swin/
# maskformer2_swin_large_IN21k_384_bs16_160k.yaml, configs/coco/panoptic-segmentation/swin/
# maskformer2_swin_small_bs16_50ep.yaml): (file stem, EMBED_DIM, DEPTHS, NUM_HEADS, WINDOW_SIZE,
# PRETRAIN_IMG_SIZE or None when the file leaves the default 224, NUM_OBJECT_QUERIES or None)
SWIN_CONFIGS = {
    "tiny": ("maskformer2_swin_tiny", 96, [2, 2, 6, 2], [3, 6, 12, 24], 7, None, None),
    "small": ("maskformer2_swin_small", 96, [2, 2, 18, 2], [3, 6, 12, 24], 7, None, None),
    "base": ("maskformer2_swin_base_IN21k_384", 128, [2, 2, 18, 2], [4, 8, 16, 32], 12, 384, None),
    "large": (
        "maskformer2_swin_large_IN21k_384",
        192,
        [2, 2, 18, 2],
        [6, 12, 24, 48],
        12,
        384,
        200,
    ),
}


def write_swin_configs(root: Path) -> dict[str, Path]:
    """The Swin-T/S/B/L panoptic configs of ADE20K and COCO over the R50 files of
    `write_official_configs(root)` (their `_BASE_`), e.g. {"ade_ps large": path, ...}."""
    paths = {}
    for which, folder, base, suffix in (
        (
            "ade_ps",
            "configs/ade20k/panoptic-segmentation",
            "maskformer2_R50_bs16_160k.yaml",
            "bs16_160k",
        ),
        (
            "coco_ps",
            "configs/coco/panoptic-segmentation",
            "maskformer2_R50_bs16_50ep.yaml",
            "bs16_50ep",
        ),
    ):
        d = root / folder / "swin"
        d.mkdir(parents=True, exist_ok=True)
        for size, (stem, embed, depths, heads, window, pretrain, queries) in SWIN_CONFIGS.items():
            text = (
                f'_BASE_: ../{base}\nMODEL:\n  BACKBONE:\n    NAME: "D2SwinTransformer"\n'
                f"  SWIN:\n    EMBED_DIM: {embed}\n    DEPTHS: {depths}\n    NUM_HEADS: {heads}\n"
                f"    WINDOW_SIZE: {window}\n    APE: False\n    DROP_PATH_RATE: 0.3\n"
                f"    PATCH_NORM: True\n"
            )
            text += f"    PRETRAIN_IMG_SIZE: {pretrain}\n" if pretrain else ""
            text += f'  WEIGHTS: "{stem}.pkl"\n' + _NORM
            text += f"  MASK_FORMER:\n    NUM_OBJECT_QUERIES: {queries}\n" if queries else ""
            path = d / f"{stem}_{suffix}.yaml"
            path.write_text(text)
            paths[f"{which} {size}"] = path
    return paths


# a tiny Swin through the official keys (4 stages, windows of 4 so the maps get padded and shifted)
SWIN_TINY_OPTS = [
    "MODEL.BACKBONE.NAME",
    "D2SwinTransformer",
    "MODEL.SWIN.EMBED_DIM",
    "8",
    "MODEL.SWIN.DEPTHS",
    "[2, 2, 2, 2]",
    "MODEL.SWIN.NUM_HEADS",
    "[1, 2, 2, 4]",
    "MODEL.SWIN.WINDOW_SIZE",
    "4",
]


def official_swin_backbone_state(
    embed: int = 8,
    depths=(2, 2, 2, 2),
    heads=(1, 2, 2, 4),
    window: int = 4,
    mlp_ratio: float = 4.0,
    seed: int = 0,
):
    """Random `backbone.*` tensors named and shaped as Mask2Former's D2SwinTransformer registers
    them (patch norm, no APE, qkv bias, out_indices (0, 1, 2, 3) -> norm0..norm3), including the
    persistent `relative_position_index` buffers. Written from the official module's facts:
    PatchEmbed(proj conv p=4, norm), BasicLayer(blocks of norm1, attn(relative_position_bias_table
    ((2w-1)^2, heads), relative_position_index (w^2, w^2), qkv, proj), norm2, mlp(fc1, fc2)),
    PatchMerging(norm 4C, reduction 4C->2C without bias) after stages 0..2)."""
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    def linear(name, n_out, n_in, bias=True):
        out = {f"{name}.weight": rnd(n_out, n_in)}
        return {**out, f"{name}.bias": rnd(n_out)} if bias else out

    def norm(name, n):
        return {f"{name}.weight": 1 + rnd(n), f"{name}.bias": rnd(n)}

    # token t = (row, col) of a window, row-major; index = (drow + w - 1) * (2w - 1) + dcol + w - 1
    row, col = np.divmod(np.arange(window * window), window)
    index = (
        (row[:, None] - row[None, :] + window - 1) * (2 * window - 1)
        + col[:, None]
        - col[None, :]
        + window
        - 1
    )
    s = {
        "patch_embed.proj.weight": rnd(embed, 3, 4, 4),
        "patch_embed.proj.bias": rnd(embed),
        **norm("patch_embed.norm", embed),
    }
    for i, (depth, h) in enumerate(zip(depths, heads)):
        dim = embed * 2**i
        for j in range(depth):
            b = f"layers.{i}.blocks.{j}."
            s.update(
                {
                    **norm(b + "norm1", dim),
                    **norm(b + "norm2", dim),
                    b + "attn.relative_position_bias_table": rnd((2 * window - 1) ** 2, h),
                    b + "attn.relative_position_index": torch.from_numpy(index).long(),
                    **linear(b + "attn.qkv", 3 * dim, dim),
                    **linear(b + "attn.proj", dim, dim),
                    **linear(b + "mlp.fc1", int(dim * mlp_ratio), dim),
                    **linear(b + "mlp.fc2", dim, int(dim * mlp_ratio)),
                }
            )
        if i < len(depths) - 1:
            s.update(
                {
                    **norm(f"layers.{i}.downsample.norm", 4 * dim),
                    **linear(f"layers.{i}.downsample.reduction", 2 * dim, 4 * dim, bias=False),
                }
            )
        s.update(norm(f"norm{i}", dim))
    return {"backbone." + k: v for k, v in s.items()}
