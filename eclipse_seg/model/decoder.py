"""Mask2Former's masked-attention transformer decoder, with query groups as a first-class concept.

Group 0 is the base model's N object queries (`query_feat`, `query_embed`, `mask_embed`); group g >= 1
is the prompt set of continual step g (`prompt_feat.<g-1>`, `prompt_embed.<g-1>[.<layer>]`,
`prompt_mask_embed.<g-1>`). Names match the official ECLIPSE decoder so checkpoints map 1:1.

Every layer: masked cross-attention to one feature level (all queries at once: it is per query),
self-attention restricted to each group by a block-diagonal mask (one batched call), FFN. Prediction
heads after `decoder_norm` on the learnable queries and after every layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from eclipse_seg.model.heads import MLP, IncrementalClassifier, run_stacked, stack_heads
from eclipse_seg.model.position_encoding import sine_position_encoding


@dataclass
class DecoderConfig:
    hidden_dim: int = 256
    num_heads: int = 8
    ffn_dim: int = 2048
    num_layers: int = 9  # the official DEC_LAYERS minus one (the extra prediction on the queries)
    num_queries: int = 100
    pre_norm: bool = False
    enforce_input_project: bool = False
    deep_cls: bool = False  # 3-layer MLP class heads instead of linear
    cls_bias: bool = True  # bias of linear class heads (official CONT.USE_BIAS)
    prompt_deep: bool = True  # prompt position embeddings per layer
    prompt_mask_mlp: bool = True  # each prompt group has its own mask MLP


@dataclass
class Prediction:
    """One layer's prediction: logits (B, Q, C+1) and mask logits (B, Q, H/4, W/4)."""

    pred_logits: torch.Tensor
    pred_masks: torch.Tensor


@dataclass
class DecoderOutput:
    """Final prediction plus the auxiliary ones (deep supervision), oldest first."""

    pred_logits: torch.Tensor
    pred_masks: torch.Tensor
    aux_outputs: list[Prediction] = field(default_factory=list)


class Attention(nn.Module):
    """Multi-head attention with nn.MultiheadAttention's parameter layout (`in_proj_weight`,
    `in_proj_bias`, `out_proj`), computed by one of two paths chosen by `use_sdpa`, never by
    whether parameters require grad (PyTorch's own module switches to a fused kernel when none
    does, which would let freezing change the last bits of a prediction):

    - explicit (`use_sdpa=False`): scores, mask, softmax, product; the bitwise-reproducible
      reference;
    - F.scaled_dot_product_attention (`use_sdpa=True`): the same maths in one fused kernel, within
      ~1e-5 of the explicit path, without materialising the (heads, queries, keys) scores;
    - `use_sdpa=None` (default): as the caller's `fused` says; the decoder asks for the fused
      kernel in eval mode (inference) and the explicit path in training mode, so that training
      (and the figures measured with it) keeps its bits. The decoder's mode decides, not this
      module's: in a prompt-tuning step the frozen attention modules are in eval mode
      (`train_keeping_frozen_in_eval`) inside a decoder that trains."""

    def __init__(self, d_model: int, nhead: int):
        super().__init__()
        self.nhead = nhead
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.zeros_(self.out_proj.bias)
        self.use_sdpa: bool | None = None

    def forward(self, query, key, value, attn_mask=None, fused: bool = False):
        """query (B, L, C), key/value (B, S, C); attn_mask bool, True = blocked: (L, S), (B, L, S)
        shared by all heads, or (B*heads, L, S) per head -> (B, L, C). `fused`: the path when
        `use_sdpa` is None."""
        b, lq, c = query.shape
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        h, d = self.nhead, c // self.nhead
        q = F.linear(query, w_q, b_q).view(b, lq, h, d).transpose(1, 2)
        k = F.linear(key, w_k, b_k).view(b, -1, h, d).transpose(1, 2)
        v = F.linear(value, w_v, b_v).view(b, -1, h, d).transpose(1, 2)
        if attn_mask is not None and attn_mask.dim() == 3:
            # a mask shared by the heads broadcasts over them: never repeated per head
            per_head = attn_mask.shape[0] == b * h
            attn_mask = attn_mask.view(b, h if per_head else 1, lq, -1)
        sdpa = fused if self.use_sdpa is None else self.use_sdpa
        if sdpa:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if attn_mask is None else ~attn_mask
            )
        else:
            scores = (q * d**-0.5) @ k.transpose(-2, -1)
            if attn_mask is not None:  # in place: the product's backward needs q and k only
                scores.masked_fill_(attn_mask, float("-inf"))
            out = scores.softmax(-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, c))


class SelfAttentionLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, pre_norm: bool):
        super().__init__()
        self.self_attn = Attention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)
        self.pre_norm = pre_norm
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x, query_pos, attn_mask=None, fused=False):
        y = self.norm(x) if self.pre_norm else x
        q = y + query_pos
        out = x + self.self_attn(q, q, y, attn_mask=attn_mask, fused=fused)
        return out if self.pre_norm else self.norm(out)


class CrossAttentionLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, pre_norm: bool):
        super().__init__()
        self.multihead_attn = Attention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)
        self.pre_norm = pre_norm
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x, memory, memory_pos, query_pos, attn_mask, fused=False):
        y = self.norm(x) if self.pre_norm else x
        out = x + self.multihead_attn(
            y + query_pos, memory + memory_pos, memory, attn_mask=attn_mask, fused=fused
        )
        return out if self.pre_norm else self.norm(out)


class FFNLayer(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int, pre_norm: bool):
        super().__init__()
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.pre_norm = pre_norm
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x):
        y = self.norm(x) if self.pre_norm else x
        out = x + self.linear2(F.relu(self.linear1(y)))
        return out if self.pre_norm else self.norm(out)


class MaskedAttentionDecoder(nn.Module):
    """multi-scale features [coarsest first] (B, C_in, H_l, W_l) + mask_features (B, mask_dim, H/4, W/4)
    -> DecoderOutput for the requested query groups."""

    num_levels = 3

    def __init__(self, in_channels: int, mask_dim: int, cfg: DecoderConfig, base_classes: int):
        super().__init__()
        self.cfg = cfg
        c = cfg.hidden_dim
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(c, cfg.num_heads, cfg.pre_norm) for _ in range(cfg.num_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(c, cfg.num_heads, cfg.pre_norm) for _ in range(cfg.num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(c, cfg.ffn_dim, cfg.pre_norm) for _ in range(cfg.num_layers)
        )
        self.decoder_norm = nn.LayerNorm(c)
        self.query_feat = nn.Embedding(cfg.num_queries, c)
        self.query_embed = nn.Embedding(cfg.num_queries, c)
        self.level_embed = nn.Embedding(self.num_levels, c)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_levels):
            if in_channels != c or cfg.enforce_input_project:
                conv = nn.Conv2d(in_channels, c, kernel_size=1)
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.zeros_(conv.bias)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Sequential())
        self.class_embed = IncrementalClassifier(c, [base_classes], cfg.deep_cls, cfg.cls_bias)
        self.mask_embed = MLP(c, c, mask_dim, 3)
        self.prompt_feat = nn.ModuleList()
        self.prompt_embed = nn.ModuleList()
        self.prompt_mask_embed = nn.ModuleList()
        # Logit-manipulation deltas per group (g = 0 is the base); set by the continual layer.
        self.register_buffer("deltas", torch.zeros(1), persistent=False)
        self._index_cache: dict = {}

    # ----- groups -------------------------------------------------------------------------------
    @property
    def num_groups(self) -> int:
        return 1 + len(self.prompt_feat)

    def group_size(self, g: int) -> int:
        return self.cfg.num_queries if g == 0 else self.prompt_feat[g - 1].num_embeddings

    def group_features(self, g: int) -> torch.Tensor:
        return self.query_feat.weight if g == 0 else self.prompt_feat[g - 1].weight

    def group_pos(self, g: int, layer: int) -> torch.Tensor:
        if g == 0:
            return self.query_embed.weight
        emb = self.prompt_embed[g - 1]
        return (emb[layer] if self.cfg.prompt_deep else emb).weight

    def group_mask_mlp(self, g: int) -> nn.Module:
        if g == 0 or not self.cfg.prompt_mask_mlp:
            return self.mask_embed
        return self.prompt_mask_embed[g - 1]

    def invalidate_cache(self) -> None:
        self._index_cache.clear()

    def group_indices(self, groups: tuple[int, ...], device) -> dict[str, torch.Tensor]:
        """Index tensors for one set of groups, built once: the group of each query, the group of
        each class column, and the block-diagonal self-attention mask (True = blocked)."""
        key = (groups, str(device))
        if key not in self._index_cache:
            sizes = [self.group_size(g) for g in groups]
            query_group = torch.repeat_interleave(torch.tensor(groups), torch.tensor(sizes)).to(
                device
            )
            col_group = torch.repeat_interleave(
                torch.arange(len(self.class_embed.classes_per_step)),
                torch.tensor(self.class_embed.classes_per_step),
            ).to(device)
            block = query_group[:, None] != query_group[None, :]
            self._index_cache[key] = {
                "query_group": query_group,
                "col_group": col_group,
                "self_attn_mask": block if len(groups) > 1 else None,
            }
        return self._index_cache[key]

    # ----- forward ------------------------------------------------------------------------------
    def forward(
        self,
        multi_scale: list[torch.Tensor],
        mask_features: torch.Tensor,
        groups: tuple[int, ...] | None = None,
        aux: str = "all",
        manipulate: bool | None = None,
    ) -> DecoderOutput:
        """`groups`: which query groups run (default: all). `aux`: "all" = a prediction per layer
        (deep supervision), "first" = only the one on the learnable queries (the official
        prompt-tuning quirk). `manipulate`: apply logit manipulation (default: in eval mode with
        more than one group)."""
        groups = tuple(range(self.num_groups)) if groups is None else tuple(groups)
        idx = self.group_indices(groups, mask_features.device)
        b = mask_features.shape[0]
        srcs, poss, sizes = [], [], []
        for i in range(self.num_levels):
            x = multi_scale[i]
            sizes.append(tuple(x.shape[-2:]))
            poss.append(
                sine_position_encoding(x, self.cfg.hidden_dim // 2).flatten(2).transpose(1, 2)
            )
            srcs.append(
                self.input_proj[i](x).flatten(2).transpose(1, 2) + self.level_embed.weight[i]
            )
        if manipulate is None:
            manipulate = not self.training and len(groups) > 1
        output = torch.cat([self.group_features(g) for g in groups]).unsqueeze(0).repeat(b, 1, 1)
        heads = self.stacked_heads(groups)
        fused = not self.training  # the attention path (see Attention): fused only at inference
        predictions = [
            self.prediction_heads(output, mask_features, groups, idx, sizes[0], manipulate, heads)
        ]
        for i in range(self.cfg.num_layers):
            pos = torch.cat([self.group_pos(g, i) for g in groups]).unsqueeze(0).repeat(b, 1, 1)
            attn_mask = predictions[-1][2]
            level = i % self.num_levels
            output = self.transformer_cross_attention_layers[i](
                output, srcs[level], poss[level], pos, attn_mask, fused=fused
            )
            output = self.transformer_self_attention_layers[i](
                output, pos, idx["self_attn_mask"], fused=fused
            )
            output = self.transformer_ffn_layers[i](output)
            predictions.append(
                self.prediction_heads(
                    output,
                    mask_features,
                    groups,
                    idx,
                    sizes[(i + 1) % self.num_levels],
                    manipulate,
                    heads,
                )
            )
        final = predictions[-1]
        aux_preds = predictions[:-1] if aux == "all" else predictions[:1]
        return DecoderOutput(final[0], final[1], [Prediction(p[0], p[1]) for p in aux_preds])

    def stacked_heads(self, groups: tuple[int, ...]) -> dict:
        """Stacked weights of the prompt groups' heads, built once per pass (see heads.stack_heads):
        with many steps, one batched matmul per layer replaces a call per group. Only when every
        class head runs (all groups, in order) and the prompt groups are of one size; the base
        group's heads always run alone (its predictions never depend on later steps)."""
        heads = {"cls": None, "mask": None}
        if groups != tuple(range(self.num_groups)) or self.num_groups < 3:
            return heads
        heads["cls"] = self.class_embed.stacked_step_heads()
        if self.cfg.prompt_mask_mlp and len({self.group_size(g) for g in groups[1:]}) == 1:
            heads["mask"] = stack_heads(list(self.prompt_mask_embed))
        return heads

    def _group_mask_embeddings(self, decoded, groups, stacked_mask):
        if stacked_mask is not None:  # base group alone, then every prompt group in one batch
            b, n0, c = decoded.shape[0], self.group_size(0), decoded.shape[-1]
            k, p = len(groups) - 1, self.group_size(1)
            prompts = decoded[:, n0:].reshape(b, k, p, c).transpose(0, 1).reshape(k, b * p, c)
            prompts = run_stacked(stacked_mask, prompts)
            prompts = prompts.reshape(k, b, p, -1).transpose(0, 1).reshape(b, k * p, -1)
            return torch.cat([self.mask_embed(decoded[:, :n0]), prompts], 1)
        embeds, start = [], 0
        for g in groups:
            n = self.group_size(g)
            embeds.append(self.group_mask_mlp(g)(decoded[:, start : start + n]))
            start += n
        return embeds[0] if len(embeds) == 1 else torch.cat(embeds, 1)

    def prediction_heads(
        self, output, mask_features, groups, idx, attn_size, manipulate, heads=None
    ):
        """Heads on one layer's queries -> (logits, masks (B, Q, H/4, W/4), cross-attention mask
        for the next layer (B, Q, H_l*W_l), True = blocked, shared by the heads)."""
        heads = heads or {"cls": None, "mask": None}
        decoded = self.decoder_norm(output)
        logits = self.class_embed(decoded, heads["cls"])
        if manipulate:
            logits = manipulate_logits(
                logits, idx["query_group"], idx["col_group"], self.deltas_for(groups)
            )
        mask_embed = self._group_mask_embeddings(decoded, groups, heads["mask"])
        masks = query_masks(mask_embed, mask_features)
        with torch.no_grad():
            attn = F.interpolate(
                masks.detach(), size=attn_size, mode="bilinear", align_corners=False
            )
            attn = (attn.sigmoid() < 0.5).flatten(2)
            attn[attn.all(-1)] = False  # a query that would see nothing sees everything
        return logits, masks, attn

    def deltas_for(self, groups: tuple[int, ...]) -> torch.Tensor:
        """Delta of every group, padded with the last value / truncated (official rule)."""
        d = self.deltas
        full = torch.cat([d, d[-1:].expand(max(self.num_groups - d.numel(), 0))])[: self.num_groups]
        return full


def query_masks(mask_embed: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
    """Mask logits: mask_embed (B, Q, C) . mask_features (B, C, H, W) -> (B, Q, H, W).

    On channels-last `mask_features` without autograd (what the pixel decoder hands on in
    inference mode) the product is taken as pixels x queries, (B, H*W, C) @ (B, C, Q), on a view of
    the features: the same dot products (MKL gives the einsum's bits), but the result is already
    channels-last, so the bilinear downsampling of the cross-attention mask runs its channels-last
    kernel directly; on a contiguous (B, Q, H, W) input it first converts the whole map (~10 ms per
    layer at 200 queries, 128x128, one thread). Otherwise it is the official einsum, whose backward
    gives the gradients' bits that the training runs of docs/demo.md were measured with."""
    grad = torch.is_grad_enabled() and (mask_embed.requires_grad or mask_features.requires_grad)
    if grad or not mask_features.is_contiguous(memory_format=torch.channels_last):
        return torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
    b, c = mask_features.shape[:2]
    pixels = mask_features.permute(0, 2, 3, 1).reshape(b, -1, c)
    masks = pixels @ mask_embed.transpose(1, 2)
    return masks.transpose(1, 2).unflatten(2, mask_features.shape[2:])


def manipulate_logits(
    logits: torch.Tensor, query_group: torch.Tensor, col_group: torch.Tensor, deltas: torch.Tensor
) -> torch.Tensor:
    """ECLIPSE logit manipulation, vectorised over queries.

    logits (B, Q, C+1), no-object last; query_group (Q,) group of each query; col_group (C,) group of
    each class column; deltas (G,) per group. For a query of group g with delta d:
    d > 0: no-object := logit(clamp(d * min(1, sum sigmoid(other groups' class logits)), .001, .999));
    d < 0: no-object := logit(clamp(|d| * sigmoid(no-object), .001, .999)); d = 0: unchanged.
    Always: other groups' class columns := -10, so a query predicts only its own group's classes.
    """
    cls, noobj = logits[..., :-1], logits[..., -1]
    other = col_group[None, :] != query_group[:, None]  # (Q, C)
    d = deltas.to(logits.dtype)[query_group]  # (Q,)
    evidence = (cls.sigmoid() * other).sum(-1).clamp(0.0, 1.0)
    positive = torch.logit((d * evidence).clamp(0.001, 0.999))
    negative = torch.logit((d.abs() * noobj.sigmoid()).clamp(0.001, 0.999))
    new_noobj = torch.where(d > 0, positive, torch.where(d < 0, negative, noobj))
    new_cls = cls.masked_fill(other, -10.0)
    return torch.cat([new_cls, new_noobj.unsqueeze(-1)], dim=-1)
