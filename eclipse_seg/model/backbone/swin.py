"""Swin Transformer backbone in Mask2Former's layout (its `D2SwinTransformer`).

Parameter names follow the official Swin / Mask2Former modules (`patch_embed.proj`,
`layers.<i>.blocks.<j>.attn.qkv`, `layers.<i>.downsample.reduction`, `norm0`..`norm3`, ...), so
both an ImageNet Swin checkpoint (`load_swin_weights`) and an official Mask2Former Swin model's
`backbone.*` keys fit without renaming. Behaviour mirrors the official backbone:

* every stage pads its feature map bottom/right to a multiple of the window size after `norm1`
  (the zero tokens take part in the attention of their window, as in the official code);
* odd blocks of a stage use windows shifted by `window_size // 2` (cyclic roll) with an additive
  -100 mask between tokens that come from different regions of the padded map;
* the output of stage i (before patch merging) goes through `norm{i}` and becomes `res{i+2}`.

Pure PyTorch: no timm, no detectron2.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from eclipse_seg.errors import ConfigError
from eclipse_seg.model.backbone.base import Backbone
from eclipse_seg.model.backbone.weights import (
    LoadReport,
    as_tensor,
    load_matching,
    open_weight_file,
)

# Additive attention mask between tokens of different shifted-window regions (official value).
MASK_VALUE = -100.0


@dataclass
class SwinConfig:
    """Swin-T by default with Mask2Former's settings (drop path 0.3, no absolute position
    embedding, patch norm). See `SWIN_PRESETS` / `swin_preset` for S, B (384) and L (384)."""

    embed_dim: int = 96
    depths: list[int] = field(default_factory=lambda: [2, 2, 6, 2])
    num_heads: list[int] = field(default_factory=lambda: [3, 6, 12, 24])
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.3
    patch_size: int = 4
    ape: bool = False  # absolute position embedding (interpolated to the input size)
    patch_norm: bool = True
    pretrain_img_size: int = 224  # only sizes the absolute position embedding
    out_indices: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    frozen_stages: int = -1  # official semantics; -1 trains everything (Mask2Former's setting)
    use_checkpoint: bool = False  # activation checkpointing per block (saves memory)
    # ImageNet weights for step 0 (Mask2Former's Swin `.pth` / `.pkl`): a file (relative: under
    # $ECLIPSE_WEIGHTS, else the working directory) or "none" (random initialisation, on purpose)
    weights: str = "none"
    allow_partial_weights: bool = False  # load what fits from a file that lacks keys


SWIN_PRESETS: dict[str, SwinConfig] = {
    "tiny": SwinConfig(),
    "small": SwinConfig(depths=[2, 2, 18, 2]),
    "base": SwinConfig(
        embed_dim=128,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        window_size=12,
        pretrain_img_size=384,
    ),
    "large": SwinConfig(
        embed_dim=192,
        depths=[2, 2, 18, 2],
        num_heads=[6, 12, 24, 48],
        window_size=12,
        pretrain_img_size=384,
    ),
}


def swin_preset(name: str, **overrides) -> SwinConfig:
    """A fresh copy of a preset ("tiny", "small", "base", "large"), with fields overridden."""
    if name not in SWIN_PRESETS:
        raise ConfigError(f"unknown Swin preset {name!r}; known: {', '.join(SWIN_PRESETS)}")
    cfg = copy.deepcopy(SWIN_PRESETS[name])
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise ConfigError(f"SwinConfig has no field {key!r}")
        setattr(cfg, key, value)
    return cfg


# ----------------------------------------------------------------------------------------------
# window helpers


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of `ws` -> (B * nW, ws*ws, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // ws, ws, w // ws, ws, c).transpose(2, 3)
    return x.reshape(-1, ws * ws, c)


def window_merge(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nW, ws*ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // ws, w // ws, ws, ws, c).transpose(2, 3)
    return x.reshape(-1, h, w, c)


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws*ws, ws*ws) index into the (2ws-1)^2 bias table: row offset major, column offset minor."""
    rows = torch.arange(ws).repeat_interleave(ws)  # token t = r * ws + c
    cols = torch.arange(ws).repeat(ws)
    d_row = rows[:, None] - rows[None, :] + (ws - 1)
    d_col = cols[:, None] - cols[None, :] + (ws - 1)
    return d_row * (2 * ws - 1) + d_col


def shifted_window_mask(
    hp: int, wp: int, ws: int, shift: int, device: torch.device | None = None
) -> torch.Tensor:
    """(nW, ws*ws, ws*ws) additive mask for the rolled, padded (hp, wp) map: 0 between tokens of the
    same region, MASK_VALUE otherwise. Along each axis the regions are [0, L-ws), [L-ws, L-shift)
    and [L-shift, L) (the last `shift` positions are the ones wrapped around by the roll)."""

    def region(length: int) -> torch.Tensor:
        pos = torch.arange(length, device=device)
        return (pos >= length - ws).long() + (pos >= length - shift).long()

    label = region(hp)[:, None] * 3 + region(wp)[None, :]  # (hp, wp), 9 regions
    windows = window_partition(label[None, :, :, None].float(), ws).squeeze(-1)  # (nW, ws*ws)
    same = windows[:, :, None] == windows[:, None, :]
    zero = torch.zeros((), device=device)
    return torch.where(same, zero, torch.full((), MASK_VALUE, device=device))


# ----------------------------------------------------------------------------------------------
# modules


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with probability `p` during
    training and rescales the kept ones by 1 / (1 - p)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        noise = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * noise / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside (ws x ws) windows with a learned relative position bias.

    `use_sdpa` switches to F.scaled_dot_product_attention (equal within float rounding); the default
    explicit path follows the official arithmetic (scale q, add bias and mask, softmax)."""

    def __init__(
        self,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"Swin: channels {dim} not divisible by {num_heads} heads")
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        # persistent, as in the official module (its checkpoints carry it)
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.use_sdpa = False
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N) bias, N = ws*ws."""
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * nW, N, C); mask: (nW, N, N) additive, or None."""
        bw, n, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).reshape(bw, n, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.position_bias().unsqueeze(0)  # (1, h, N, N)
        if mask is not None:
            nw = mask.shape[0]
            bias = bias + mask.unsqueeze(1).to(bias.dtype)  # (nW, h, N, N)
            q, k, v = (t.reshape(bw // nw, nw, h, n, -1) for t in (q, k, v))
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=bias.to(q.dtype),
                dropout_p=self.attn_drop.p if self.training else 0.0,
            )
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1) + bias
            attn = self.attn_drop(attn.softmax(dim=-1))
            out = attn @ v
        out = out.reshape(bw, h, n, c // h).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class SwinBlock(nn.Module):
    """LN -> (shifted) window attention -> residual; LN -> MLP -> residual (drop path on both)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
        drop_path: float,
    ):
        super().__init__()
        if not 0 <= shift < window_size:
            raise ConfigError(f"Swin: shift {shift} must lie in [0, window_size={window_size})")
        self.window_size, self.shift = window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, h*w, C); `mask`: the stage's shifted-window mask (used only if shift > 0)."""
        b, length, c = x.shape
        ws, s = self.window_size, self.shift
        y = self.norm1(x).reshape(b, h, w, c)
        pad_h, pad_w = (-h) % ws, (-w) % ws
        if pad_h or pad_w:
            y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        y = self.attn(window_partition(y, ws), mask if s else None)
        y = window_merge(y, ws, hp, wp)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        y = y[:, :h, :w, :].reshape(b, length, c)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood -> concat (4C, order (0,0),(1,0),(0,1),(1,1)) -> LN -> linear to 2C.
    Odd sizes are zero-padded bottom/right first."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = x.reshape(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # (row offset, column offset): (0,0), (1,0), (0,1), (1,1)
        parts = [x[:, i::2, j::2, :] for j in (0, 1) for i in (0, 1)]
        x = torch.cat(parts, dim=-1).reshape(b, -1, 4 * c)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """`blocks` (alternating regular / shifted windows) then optional `downsample`."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
        drop_path: list[float],
        downsample: bool,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.window_size, self.shift = window_size, window_size // 2
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                num_heads,
                window_size,
                0 if i % 2 == 0 else self.shift,
                mlp_ratio,
                qkv_bias,
                drop,
                attn_drop,
                drop_path[i],
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, h: int, w: int):
        """-> (stage output (B, h*w, C), merged (B, h'*w', 2C) or the same output, h', w')."""
        ws = self.window_size
        mask = None
        if len(self.blocks) > 1:  # some block is shifted
            hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
            mask = shifted_window_mask(hp, wp, ws, self.shift, device=x.device)
        for blk in self.blocks:
            if self.use_checkpoint and x.requires_grad:
                x = checkpoint(blk, x, h, w, mask, use_reentrant=False)
            else:
                x = blk(x, h, w, mask)
        if self.downsample is None:
            return x, x, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    """Non-overlapping (p x p) patches -> linear projection (conv) -> optional LN. The image is
    zero-padded bottom/right to a multiple of p."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, norm: bool):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        pad_h, pad_w = (-x.shape[-2]) % p, (-x.shape[-1]) % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        if self.norm is not None:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x


class SwinTransformer(Backbone):
    """(B, 3, H, W) -> {"res{i+2}": (B, embed_dim * 2**i, ~H/2**(i+2), ~W/2**(i+2))} for i in
    `out_indices` (sizes are ceil-divided at every stage, so any H, W works)."""

    def __init__(self, cfg: SwinConfig | None = None):
        super().__init__()
        cfg = cfg if cfg is not None else SwinConfig()
        self.cfg = cfg
        depths, heads = list(cfg.depths), list(cfg.num_heads)
        if len(depths) != len(heads) or not depths:
            raise ConfigError(
                f"Swin: depths {depths} and num_heads {heads} must be non-empty lists "
                "of the same length"
            )
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in depths + heads):
            raise ConfigError(f"Swin: depths {depths} and num_heads {heads} must be positive ints")
        if cfg.window_size < 1 or cfg.patch_size < 1 or cfg.embed_dim < 1:
            raise ConfigError("Swin: window_size, patch_size and embed_dim must be positive")
        n = len(depths)
        out_indices = sorted(set(cfg.out_indices))
        if not out_indices or any(not 0 <= i < n for i in out_indices):
            raise ConfigError(
                f"Swin: out_indices {cfg.out_indices} must be stage indices 0..{n - 1}"
            )
        self.num_layers = n
        self.out_indices = out_indices
        self.num_features = [cfg.embed_dim * 2**i for i in range(n)]

        self.patch_embed = PatchEmbed(cfg.patch_size, 3, cfg.embed_dim, cfg.patch_norm)
        if cfg.ape:
            side = cfg.pretrain_img_size // cfg.patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, side, side))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        rates = torch.linspace(0, cfg.drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i in range(n):
            start = sum(depths[:i])
            self.layers.append(
                SwinStage(
                    self.num_features[i],
                    depths[i],
                    heads[i],
                    cfg.window_size,
                    cfg.mlp_ratio,
                    cfg.qkv_bias,
                    cfg.drop_rate,
                    cfg.attn_drop_rate,
                    rates[start : start + depths[i]],
                    downsample=i < n - 1,
                    use_checkpoint=cfg.use_checkpoint,
                )
            )
        for i in out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))

        self.out_channels: dict[str, int] = {
            f"res{i + 2}": self.num_features[i] for i in out_indices
        }
        self.strides: dict[str, int] = {f"res{i + 2}": cfg.patch_size * 2**i for i in out_indices}
        self.freeze()

    def frozen_modules(self) -> list[nn.Module]:
        """Official `frozen_stages` k: >= 0 freezes patch_embed, k >= 2 also layers[0 .. k-2]."""
        k = self.cfg.frozen_stages
        mods: list[nn.Module] = [self.patch_embed] if k >= 0 else []
        if k >= 2:
            mods.extend(self.layers[: k - 1])
        return mods

    def freeze(self) -> SwinTransformer:
        """`frozen_modules()` fixed and in eval mode; k >= 1 also fixes the absolute position
        embedding (official)."""
        super().freeze()
        if self.cfg.frozen_stages >= 1 and self.cfg.ape:
            self.absolute_pos_embed.requires_grad_(False)
        return self

    def load_weights(self, path: str | Path, *, allow_partial: bool = False) -> LoadReport:
        return load_swin_weights(self, path, allow_partial=allow_partial)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"SwinTransformer expects (B, C, H, W), got shape {tuple(x.shape)}")
        x = self.patch_embed(x)
        b, _, h, w = x.shape
        if self.cfg.ape:
            x = x + F.interpolate(self.absolute_pos_embed, size=(h, w), mode="bicubic")
        x = self.pos_drop(x.flatten(2).transpose(1, 2))
        outs = {}
        for i, layer in enumerate(self.layers):
            y, x, h2, w2 = layer(x, h, w)
            if i in self.out_indices:
                y = getattr(self, f"norm{i}")(y)
                outs[f"res{i + 2}"] = y.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
            h, w = h2, w2
        return outs


# ----------------------------------------------------------------------------------------------
# ImageNet weights


def _is_ignored_key(k: str) -> bool:
    """Classifier head and final norm of the ImageNet model; buffers rebuilt from the config."""
    return (
        k.startswith(("head.", "norm."))
        or k.endswith((".relative_position_index", ".attn_mask"))
        or k in ("relative_position_index", "attn_mask")
    )


def load_swin_weights(
    model: SwinTransformer, path: str | Path, *, allow_partial: bool = False
) -> LoadReport:
    """Load an official Swin ImageNet checkpoint (`swin_tiny_patch4_window7_224.pth`: {"model":
    state dict}) or its detectron2 conversion (`.pkl`) into `model`.

    The classifier (`head.*`, the final `norm.*`) and the `relative_position_index` / `attn_mask`
    buffers of the file are dropped. The output norms `norm0..norm3` (absent from ImageNet models)
    keep their initialisation (the report's `initialised`); every other missing, unexpected or
    mis-shaped key is a CheckpointError listing them, unless `allow_partial`."""
    weights = open_weight_file(path)
    state: dict[str, torch.Tensor] = {}
    for k, v in weights.state.items():
        k = str(k).removeprefix("backbone.")
        if not _is_ignored_key(k):
            state[k] = as_tensor(v)
    own = model.state_dict()
    rebuilt = {k for k in own if k.endswith("relative_position_index")}  # fixed by the config
    out_norms = {k for k in own if k.split(".")[0] in {f"norm{i}" for i in model.out_indices}}
    ape = state.get("absolute_pos_embed")
    if ape is not None and "absolute_pos_embed" in own and ape.dim() == 3:
        # classification layout (1, L, C) -> detection layout (1, C, H, W)
        target = own["absolute_pos_embed"].shape
        if ape.shape[1] == target[2] * target[3] and ape.shape[2] == target[1]:
            state["absolute_pos_embed"] = ape.transpose(1, 2).reshape(target)
    return load_matching(
        model,
        weights,
        state,
        what="Swin backbone",
        optional=out_norms,
        skip=rebuilt,
        allow_partial=allow_partial,
    )
