"""An independent reference of the official ECLIPSE / Mask2Former inference, for equivalence tests.

Plain functions over an official-layout state dict (`backbone.*`, `sem_seg_head.pixel_decoder.*`,
`sem_seg_head.predictor.*`), written from the facts of the official code, not from ours: nothing here
imports `eclipse_seg`. Only torch.nn.functional is used. Each step's comment names the official fact
it implements (file / function of facebookresearch/detectron2, facebookresearch/Mask2Former or
clovaai/ECLIPSE). Shapes: B images, Q queries, C classes (+1 no-object column, last).

Deliberate choices:
- attention goes through F.multi_head_attention_forward, the function nn.MultiheadAttention (used by
  the official decoder) calls, in the official (L, B, C) layout and with its default need_weights=True;
- deformable-attention sampling is the CUDA kernel's own bilinear formula (ms_deform_attn_im2col_bilinear:
  h = y * H - 0.5, zero outside the map), written with gathers, not with grid_sample;
- the decoder's self-attention runs one group at a time (ECLIPSE forward_infer's Python loop), and
  logit manipulation is done in place group by group, as ECLIPSE forward_prediction_heads does;
- position encodings and deformable reference points are computed in float32 whatever the working
  dtype (the official code builds them with dtype=torch.float32).
The working dtype is a parameter (float64 gives a ground truth for float32 comparisons).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
State = dict

PIXEL_MEAN = (123.675, 116.280, 103.530)  # MODEL.PIXEL_MEAN of the official configs
PIXEL_STD = (58.395, 57.120, 57.375)
PD = "sem_seg_head.pixel_decoder."
PR = "sem_seg_head.predictor."


# ----------------------------------------------------------------------------------------------
# input
# ----------------------------------------------------------------------------------------------
def preprocess(
    images: list[Tensor],
    dtype=torch.float64,
    size_divisibility: int = 32,
    mean=PIXEL_MEAN,
    std=PIXEL_STD,
) -> tuple[Tensor, list[tuple[int, int]]]:
    """MaskFormer.forward: (x - pixel_mean) / pixel_std per image, then detectron2
    ImageList.from_tensors: zero padding bottom/right to the per-dimension batch maximum, rounded up
    to a multiple of size_divisibility. No padding mask is made (ECLIPSE decoder: `del mask`)."""
    m = torch.tensor(mean, dtype=dtype).view(3, 1, 1)
    s = torch.tensor(std, dtype=dtype).view(3, 1, 1)
    normed = [(im.to(dtype) - m) / s for im in images]
    sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in normed]
    h = -(-max(a for a, _ in sizes) // size_divisibility) * size_divisibility
    w = -(-max(b for _, b in sizes) // size_divisibility) * size_divisibility
    batch = torch.zeros(len(images), 3, h, w, dtype=dtype)
    for i, x in enumerate(normed):
        batch[i, :, : x.shape[-2], : x.shape[-1]] = x
    return batch, sizes


# ----------------------------------------------------------------------------------------------
# backbone: detectron2 modeling/backbone/resnet.py (BasicStem, BottleneckBlock, build_resnet_backbone)
# ----------------------------------------------------------------------------------------------
def _frozen_bn(x: Tensor, sd: State, p: str, eps: float = 1e-5) -> Tensor:
    # detectron2 layers/batch_norm.py FrozenBatchNorm2d.forward (no grad): F.batch_norm, eval, eps 1e-5
    return F.batch_norm(
        x,
        sd[p + "running_mean"],
        sd[p + "running_var"],
        sd[p + "weight"],
        sd[p + "bias"],
        training=False,
        eps=eps,
    )


def _conv_bn(
    x: Tensor, sd: State, p: str, stride: int = 1, padding: int = 0, groups: int = 1
) -> Tensor:
    # detectron2 Conv2d(bias=False, norm=FrozenBN): conv, then its norm
    return _frozen_bn(
        F.conv2d(x, sd[p + "weight"], None, stride, padding, 1, groups), sd, p + "norm."
    )


def _num_blocks(sd: State, prefix: str) -> int:
    ids = {int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def resnet(x: Tensor, sd: State, stride_in_1x1: bool = False) -> dict[str, Tensor]:
    """(B, 3, H, W) -> {"res2": stride 4, ..., "res5": stride 32}."""
    # BasicStem: conv 7x7/2 pad 3 (+FrozenBN), relu, max_pool2d(3, stride 2, padding 1)
    x = F.relu(_conv_bn(x, sd, "backbone.stem.conv1.", stride=2, padding=3))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    out = {}
    for stage in (2, 3, 4, 5):
        for i in range(_num_blocks(sd, f"backbone.res{stage}.")):
            p = f"backbone.res{stage}.{i}."
            # build_resnet_backbone: first block of res3..res5 has stride 2, all others 1
            stride = 2 if (stage > 2 and i == 0) else 1
            # BottleneckBlock: stride on the 3x3 conv unless STRIDE_IN_1X1 (False in the configs)
            s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
            w2 = sd[p + "conv2.weight"]
            groups = sd[p + "conv1.weight"].shape[0] // w2.shape[1]
            y = F.relu(_conv_bn(x, sd, p + "conv1.", stride=s1))
            y = F.relu(_conv_bn(y, sd, p + "conv2.", stride=s3, padding=1, groups=groups))
            y = _conv_bn(y, sd, p + "conv3.")
            # projection shortcut only where in_channels != out_channels (the key exists)
            short = (
                _conv_bn(x, sd, p + "shortcut.", stride=stride)
                if p + "shortcut.weight" in sd
                else x
            )
            x = F.relu(y + short)
        out[f"res{stage}"] = x
    return out


# ----------------------------------------------------------------------------------------------
# position encoding: Mask2Former transformer_decoder/position_encoding.py PositionEmbeddingSine
# ----------------------------------------------------------------------------------------------
def sine_position_embedding(x: Tensor, num_pos_feats: int, temperature: float = 10000.0) -> Tensor:
    """(B, C, H, W) -> (B, 2*num_pos_feats, H, W): y channels then x channels.

    Facts: mask None -> all valid, so the embed of row i (1-based) is the cumulative count i;
    normalize=True divides by (last count + 1e-6) and multiplies by scale 2*pi; frequency of feature
    k is temperature ** (2 * (k // 2) / num_pos_feats); even features take sin, odd ones cos; all in
    float32 (cumsum(dtype=torch.float32))."""
    b, _, h, w = x.shape
    eps, scale = 1e-6, 2 * math.pi

    def encode(n: int) -> Tensor:  # (n, num_pos_feats)
        count = torch.arange(1, n + 1, dtype=torch.float32)
        coord = count / (count[-1] + eps) * scale
        k = torch.arange(num_pos_feats, dtype=torch.float32)
        freq = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / num_pos_feats)
        ang = coord[:, None] / freq[None, :]
        even = (torch.arange(num_pos_feats) % 2 == 0)[None, :]
        return torch.where(even, ang.sin(), ang.cos())

    ey = encode(h)[:, None, :].expand(h, w, num_pos_feats)
    ex = encode(w)[None, :, :].expand(h, w, num_pos_feats)
    pos = torch.cat([ey, ex], dim=-1).permute(2, 0, 1)
    return pos[None].expand(b, -1, -1, -1).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# multi-scale deformable attention: Mask2Former pixel_decoder/ops/modules/ms_deform_attn.py and the
# CUDA kernel ms_deform_attn_im2col_bilinear / ms_deformable_im2col_gpu_kernel
# ----------------------------------------------------------------------------------------------
def _kernel_bilinear(v: Tensor, h: int, w: int, loc_x: Tensor, loc_y: Tensor) -> Tensor:
    """v (B, M, h*w, D); loc (B, M, N) normalised [0, 1] -> (B, M, N, D).

    Kernel facts: h_im = loc_y * h - 0.5, w_im = loc_x * w - 0.5; sampled only when
    -1 < h_im < h and -1 < w_im < w (else 0); corners floor / floor + 1, weights (1-lh)(1-lw),
    (1-lh)lw, lh(1-lw), lh*lw; a corner outside the map contributes 0."""
    h_im = loc_y * h - 0.5
    w_im = loc_x * w - 0.5
    inside = (h_im > -1) & (w_im > -1) & (h_im < h) & (w_im < w)
    h0, w0 = torch.floor(h_im), torch.floor(w_im)
    lh, lw = h_im - h0, w_im - w0
    out = torch.zeros(*loc_x.shape, v.shape[-1], dtype=v.dtype)
    for dh, dw, weight in (
        (0, 0, (1 - lh) * (1 - lw)),
        (0, 1, (1 - lh) * lw),
        (1, 0, lh * (1 - lw)),
        (1, 1, lh * lw),
    ):
        hy, wx = h0 + dh, w0 + dw
        ok = inside & (hy >= 0) & (hy <= h - 1) & (wx >= 0) & (wx <= w - 1)
        idx = (hy.clamp(0, h - 1) * w + wx.clamp(0, w - 1)).long()
        corner = torch.gather(v, 2, idx[..., None].expand(-1, -1, -1, v.shape[-1]))
        out = out + corner * (weight * ok.to(v.dtype))[..., None]
    return out


def ms_deform_attn(
    query: Tensor,
    ref: Tensor,
    value_in: Tensor,
    shapes: list[tuple[int, int]],
    sd: State,
    p: str,
    n_heads: int,
) -> Tensor:
    """MSDeformAttn.forward: query (B, Lq, C), ref (B, Lq, L, 2) (x, y) in [0, 1], value_in (B, S, C)."""
    b, lq, c = query.shape
    n_levels = len(shapes)
    n_points = sd[p + "attention_weights.weight"].shape[0] // (n_heads * n_levels)
    d = c // n_heads
    value = F.linear(value_in, sd[p + "value_proj.weight"], sd[p + "value_proj.bias"])
    value = value.view(b, -1, n_heads, d)
    offsets = F.linear(query, sd[p + "sampling_offsets.weight"], sd[p + "sampling_offsets.bias"])
    offsets = offsets.view(b, lq, n_heads, n_levels, n_points, 2)
    # attention weights: softmax over levels x points jointly, per head
    attw = F.linear(query, sd[p + "attention_weights.weight"], sd[p + "attention_weights.bias"])
    attw = attw.view(b, lq, n_heads, n_levels * n_points).softmax(-1)
    attw = attw.view(b, lq, n_heads, n_levels, n_points)
    # offsets are in pixels of each level: divided by (W_l, H_l) (offset_normalizer)
    normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype)
    loc = ref[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    out = torch.zeros(b, n_heads, lq, d, dtype=query.dtype)
    start = 0
    for lvl, (h, w) in enumerate(shapes):
        v = value[:, start : start + h * w].permute(0, 2, 1, 3)  # (B, M, hw, D)
        lx = loc[:, :, :, lvl, :, 0].permute(0, 2, 1, 3).reshape(b, n_heads, lq * n_points)
        ly = loc[:, :, :, lvl, :, 1].permute(0, 2, 1, 3).reshape(b, n_heads, lq * n_points)
        sampled = _kernel_bilinear(v, h, w, lx, ly).view(b, n_heads, lq, n_points, d)
        wts = attw[:, :, :, lvl, :].permute(0, 2, 1, 3)  # (B, M, Lq, P)
        out = out + (sampled * wts[..., None]).sum(3)
        start += h * w
    out = out.permute(0, 2, 1, 3).reshape(b, lq, c)
    return F.linear(out, sd[p + "output_proj.weight"], sd[p + "output_proj.bias"])


# ----------------------------------------------------------------------------------------------
# pixel decoder: Mask2Former pixel_decoder/msdeformattn.py (MSDeformAttnPixelDecoder.forward_features,
# MSDeformAttnTransformerEncoderOnly, ...EncoderLayer, ...Encoder.get_reference_points)
# ----------------------------------------------------------------------------------------------
def _layer_norm(x: Tensor, sd: State, p: str) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd[p + "weight"], sd[p + "bias"], eps=1e-5)


def _reference_points(shapes: list[tuple[int, int]], b: int, dtype) -> Tensor:
    # get_reference_points: pixel centres linspace(0.5, H - 0.5, H) / H (float32), valid ratios 1
    # (no padding mask), the same point repeated for every level -> (B, S, L, 2) as (x, y)
    pts = []
    for h, w in shapes:
        ys = torch.linspace(0.5, h - 0.5, h, dtype=torch.float32) / h
        xs = torch.linspace(0.5, w - 0.5, w, dtype=torch.float32) / w
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        pts.append(torch.stack([gx.reshape(-1), gy.reshape(-1)], -1))
    ref = torch.cat(pts, 0).to(dtype)
    return ref[None, :, None, :].expand(b, -1, len(shapes), -1)


def pixel_decoder(
    features: dict[str, Tensor], sd: State, n_heads: int
) -> tuple[Tensor, list[Tensor]]:
    """-> (mask_features (B, mask_dim, H/4, W/4), multi-scale [res5, res4, res3] encoded maps)."""
    names = ["res5", "res4", "res3"]  # transformer_in_features[::-1]: low to high resolution
    srcs, pos = [], []
    for i, name in enumerate(names):
        x = features[name]
        # input_proj[i] = Sequential(Conv2d 1x1 with bias, GroupNorm(32))
        y = F.conv2d(x, sd[PD + f"input_proj.{i}.0.weight"], sd[PD + f"input_proj.{i}.0.bias"])
        srcs.append(
            F.group_norm(
                y,
                32,
                sd[PD + f"input_proj.{i}.1.weight"],
                sd[PD + f"input_proj.{i}.1.bias"],
                eps=1e-5,
            )
        )
        pos.append(sine_position_embedding(x, y.shape[1] // 2))  # pe_layer(x), normalize=True
    b, c = srcs[0].shape[:2]
    shapes = [tuple(s.shape[-2:]) for s in srcs]
    flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
    # lvl_pos_embed = pos + level_embed[lvl]
    level_embed = sd[PD + "transformer.level_embed"]
    lvl_pos = torch.cat(
        [p_.flatten(2).transpose(1, 2) + level_embed[i].view(1, 1, -1) for i, p_ in enumerate(pos)],
        1,
    )
    ref = _reference_points(shapes, b, flat.dtype)
    out = flat
    for j in range(_num_blocks(sd, PD + "transformer.encoder.layers.")):
        p = PD + f"transformer.encoder.layers.{j}."
        # encoder layer (post-norm): attn(query = src + pos, value = src) -> add -> norm1;
        # FFN linear1 -> relu -> linear2 -> add -> norm2
        out = _layer_norm(
            out + ms_deform_attn(out + lvl_pos, ref, out, shapes, sd, p + "self_attn.", n_heads),
            sd,
            p + "norm1.",
        )
        ffn = F.linear(
            F.relu(F.linear(out, sd[p + "linear1.weight"], sd[p + "linear1.bias"])),
            sd[p + "linear2.weight"],
            sd[p + "linear2.bias"],
        )
        out = _layer_norm(out + ffn, sd, p + "norm2.")
    maps = []
    start = 0
    for h, w in shapes:
        maps.append(out[:, start : start + h * w].transpose(1, 2).reshape(b, c, h, w))
        start += h * w
    # one FPN level (log2(8) - log2(common stride 4) = 1), res2: lateral adapter_1 = Conv2d 1x1 no
    # bias + GN(32); add the bilinearly upsampled (align_corners False) finest encoder map;
    # output layer_1 = Conv2d 3x3 pad 1 no bias + GN(32) + ReLU
    lat = F.group_norm(
        F.conv2d(features["res2"], sd[PD + "adapter_1.weight"]),
        32,
        sd[PD + "adapter_1.norm.weight"],
        sd[PD + "adapter_1.norm.bias"],
        eps=1e-5,
    )
    y = lat + F.interpolate(maps[-1], size=lat.shape[-2:], mode="bilinear", align_corners=False)
    y = F.relu(
        F.group_norm(
            F.conv2d(y, sd[PD + "layer_1.weight"], None, 1, 1),
            32,
            sd[PD + "layer_1.norm.weight"],
            sd[PD + "layer_1.norm.bias"],
            eps=1e-5,
        )
    )
    # mask_features: Conv2d 1x1 with bias on the finest FPN output; multi-scale = first 3 of `out`
    mask_features = F.conv2d(y, sd[PD + "mask_features.weight"], sd[PD + "mask_features.bias"])
    return mask_features, maps


# ----------------------------------------------------------------------------------------------
# decoder: ECLIPSE mask2former/modeling/transformer_decoder/mask2former_transformer_decoder.py
# (MultiScaleMaskedTransformerDecoder.forward, forward_infer, forward_prediction_heads) and
# continual/modeling/classifier.py (IncrementalClassifier)
# ----------------------------------------------------------------------------------------------
def _mlp(x: Tensor, sd: State, p: str) -> Tensor:
    # MLP: linear layers `layers.i`, ReLU after every one but the last
    n = _num_blocks(sd, p + "layers.")
    for i in range(n):
        x = F.linear(x, sd[p + f"layers.{i}.weight"], sd[p + f"layers.{i}.bias"])
        if i < n - 1:
            x = F.relu(x)
    return x


def _head(x: Tensor, sd: State, p: str) -> Tensor:
    # deep_cls: a 3-layer MLP; otherwise nn.Linear(bias=CONT.USE_BIAS)
    if p + "layers.0.weight" in sd:
        return _mlp(x, sd, p)
    return F.linear(x, sd[p + "weight"], sd.get(p + "bias"))


def class_heads(x: Tensor, sd: State) -> Tensor:
    # IncrementalClassifier.forward: cls[1], cls[2], ... in step order, then cls[0] (no-object) last
    p = PR + "class_embed.cls."
    n = _num_blocks(sd, p)
    return torch.cat(
        [_head(x, sd, p + f"{k}.") for k in range(1, n)] + [_head(x, sd, p + "0.")], -1
    )


def _logit(x: Tensor) -> Tensor:
    # sigmoid_to_logit: clamp to [0.001, 0.999], then log(x / (1 - x))
    x = x.clamp(0.001, 0.999)
    return torch.log(x) - torch.log1p(-x)


def manipulate_logits(
    logits: Tensor, qdims: list[int], classes: list[int], deltas: list[float]
) -> Tensor:
    """forward_prediction_heads in eval with prompts: for each group n (rows qdims[n]:qdims[n+1]),
    in place and in group order: delta > 0 -> no-object := logit(delta * clamp(sum of sigmoid of the
    other groups' class columns, 0, 1)); delta < 0 -> no-object := logit(-delta * sigmoid(no-object));
    then the other groups' class columns := -10."""
    out = logits.clone()
    total = sum(classes)
    for n in range(len(qdims) - 1):
        rows = slice(qdims[n], qdims[n + 1])
        others = torch.tensor(
            list(range(sum(classes[:n]))) + list(range(sum(classes[: n + 1]), total)),
            dtype=torch.long,
        )
        if deltas[n] > 0:
            evidence = out[:, rows][:, :, others].sigmoid().sum(2).clamp(0.0, 1.0)
            out[:, rows, -1] = _logit(evidence * deltas[n])
        elif deltas[n] < 0:
            out[:, rows, -1] = _logit(out[:, rows, -1].sigmoid() * -deltas[n])
        if len(others):
            out[:, rows, others] = -10.0
    return out


def official_deltas(deltas: list[float] | float | None, num_groups: int) -> list[float]:
    # decoder __init__: None -> zeros; a float -> one per group; longer -> truncated; shorter ->
    # padded with its last value
    if deltas is None:
        return [0.0] * num_groups
    if isinstance(deltas, (int, float)):
        return [float(deltas)] * num_groups
    d = [float(x) for x in deltas][:num_groups]
    return d + [d[-1]] * (num_groups - len(d))


def _mha(
    q: Tensor, k: Tensor, v: Tensor, sd: State, p: str, n_heads: int, mask: Tensor | None
) -> Tensor:
    # nn.MultiheadAttention(d, nhead) called with (query, key, value, attn_mask)[0], (L, B, C) layout
    out, _ = F.multi_head_attention_forward(
        q,
        k,
        v,
        q.shape[-1],
        n_heads,
        sd[p + "in_proj_weight"],
        sd[p + "in_proj_bias"],
        None,
        None,
        False,
        0.0,
        sd[p + "out_proj.weight"],
        sd[p + "out_proj.bias"],
        training=False,
        key_padding_mask=None,
        need_weights=True,
        attn_mask=mask,
    )
    return out


def decoder(
    multi_scale: list[Tensor],
    mask_features: Tensor,
    sd: State,
    n_heads: int,
    deltas: list[float] | float | None,
) -> dict:
    """-> {"predictions": [(logits (B, Q, C+1), masks (B, Q, H/4, W/4)) per layer, first = on the
    learnable queries], "attn_margin": min |sigmoid - 0.5| over every attention mask used,
    "qdims", "classes", "deltas", "unblocked_rows": how many (image, head, query) rows blocked
    everything, "blocked": blocked fraction of each layer's mask}."""
    b = mask_features.shape[0]
    # forward: per level i (coarsest first): size, pe_layer(x) (normalize=True, hidden/2 feats),
    # input_proj[i](x) (identity when in_channels == hidden) + level_embed[i]; flattened to (HW, B, C)
    srcs, poss, sizes = [], [], []
    level_embed = sd[PR + "level_embed.weight"]
    hidden = level_embed.shape[1]
    for i, x in enumerate(multi_scale):
        sizes.append(tuple(x.shape[-2:]))
        poss.append(sine_position_embedding(x, hidden // 2).flatten(2).permute(2, 0, 1))
        if PR + f"input_proj.{i}.weight" in sd:
            x = F.conv2d(x, sd[PR + f"input_proj.{i}.weight"], sd[PR + f"input_proj.{i}.bias"])
        srcs.append((x.flatten(2) + level_embed[i][None, :, None]).permute(2, 0, 1))

    # query groups: base queries then one prompt set per step; qdims = cumsum([0, N, P, P, ...])
    num_prompt_groups = _num_blocks(sd, PR + "prompt_feat.")
    feats = [sd[PR + "query_feat.weight"]] + [
        sd[PR + f"prompt_feat.{g}.weight"] for g in range(num_prompt_groups)
    ]
    qdims = [0]
    for f in feats:
        qdims.append(qdims[-1] + f.shape[0])
    p = PR + "class_embed.cls."
    classes = [
        (
            sd[p + f"{k}.layers.2.weight"]
            if p + f"{k}.layers.2.weight" in sd
            else sd[p + f"{k}.weight"]
        ).shape[0]
        for k in range(1, _num_blocks(sd, p))
    ]
    deltas = official_deltas(deltas, len(classes))
    manipulate = num_prompt_groups > 0  # eval, num_prompts > 0, qdims given
    mask_mlps = [PR + "mask_embed."] + [
        PR + f"prompt_mask_embed.{g}." for g in range(num_prompt_groups)
    ]
    deep = PR + "prompt_embed.0.0.weight" in sd

    def query_pos(layer: int) -> Tensor:
        # query_embed, then each group's prompt_embed (deep: one embedding per decoder layer)
        parts = [sd[PR + "query_embed.weight"]] + [
            sd[PR + (f"prompt_embed.{g}.{layer}.weight" if deep else f"prompt_embed.{g}.weight")]
            for g in range(num_prompt_groups)
        ]
        return torch.cat(parts)[:, None, :].expand(-1, b, -1)

    margins: list[float] = []
    stats = {"unblocked_rows": 0, "blocked": []}  # not official: what the attention masks did

    def heads(output: Tensor, target_size) -> tuple[Tensor, Tensor, Tensor]:
        # forward_prediction_heads: decoder_norm, transpose to (B, Q, C), class heads, logit
        # manipulation, each group's own mask MLP, einsum with mask_features; attention mask =
        # bilinear (align_corners False) resize to the next level, sigmoid < 0.5, repeated per head
        dec = _layer_norm(output, sd, PR + "decoder_norm.").transpose(0, 1)
        logits = class_heads(dec, sd)
        if manipulate:
            logits = manipulate_logits(logits, qdims, classes, deltas)
        embeds = [
            _mlp(dec[:, qdims[n] : qdims[n + 1]], sd, mask_mlps[n] if manipulate else mask_mlps[0])
            for n in range(len(qdims) - 1)
        ]
        masks = torch.einsum("bqc,bchw->bqhw", torch.cat(embeds, 1), mask_features)
        prob = F.interpolate(
            masks, size=target_size, mode="bilinear", align_corners=False
        ).sigmoid()
        margins.append(float((prob - 0.5).abs().min()))
        attn = prob.flatten(2)[:, None].expand(-1, n_heads, -1, -1).flatten(0, 1) < 0.5
        return logits, masks, attn

    output = torch.cat(feats)[:, None, :].expand(-1, b, -1)
    logits, masks, attn = heads(output, sizes[0])
    predictions = [(logits, masks)]
    for i in range(_num_blocks(sd, PR + "transformer_cross_attention_layers.")):
        qpos = query_pos(i)
        level = i % len(srcs)  # layer i attends to level i % 3
        attn = attn.clone()
        full = attn.all(-1)
        stats["unblocked_rows"] += int(full.sum())
        stats["blocked"].append(float(attn.double().mean()))
        attn[full] = False  # rows that block every key are unblocked
        # cross-attention (post-norm): q = tgt + query_pos, k = memory + pos, v = memory
        ca = PR + f"transformer_cross_attention_layers.{i}."
        output = _layer_norm(
            output
            + _mha(
                output + qpos,
                srcs[level] + poss[level],
                srcs[level],
                sd,
                ca + "multihead_attn.",
                n_heads,
                attn,
            ),
            sd,
            ca + "norm.",
        )
        # self-attention (post-norm) within each query group separately: q = k = tgt + pos, v = tgt
        sa = PR + f"transformer_self_attention_layers.{i}."
        parts = []
        for n in range(len(qdims) - 1):
            t, qp = output[qdims[n] : qdims[n + 1]], qpos[qdims[n] : qdims[n + 1]]
            parts.append(
                _layer_norm(
                    t + _mha(t + qp, t + qp, t, sd, sa + "self_attn.", n_heads, None),
                    sd,
                    sa + "norm.",
                )
            )
        output = torch.cat(parts)
        # FFN (post-norm): linear1 -> relu -> linear2, add, norm
        fp = PR + f"transformer_ffn_layers.{i}."
        ffn = F.linear(
            F.relu(F.linear(output, sd[fp + "linear1.weight"], sd[fp + "linear1.bias"])),
            sd[fp + "linear2.weight"],
            sd[fp + "linear2.bias"],
        )
        output = _layer_norm(output + ffn, sd, fp + "norm.")
        logits, masks, attn = heads(output, sizes[(i + 1) % len(srcs)])
        predictions.append((logits, masks))
    # the last attention mask is built but never used: its margin does not count
    return {
        "predictions": predictions,
        "attn_margin": min(margins[:-1]),
        "qdims": qdims,
        "classes": classes,
        "deltas": deltas,
        **stats,
    }


# ----------------------------------------------------------------------------------------------
# post-processing: ECLIPSE mask2former/maskformer_model.py (forward_inference, panoptic_inference,
# semantic_inference with softcls False, softmask False) and detectron2 sem_seg_postprocess
# ----------------------------------------------------------------------------------------------
def _kept_queries(mask_cls: Tensor, mask_pred: Tensor, object_mask_threshold: float):
    """Sigmoid scores, max over all columns (no-object included); keep a query whose best column is
    not no-object and whose score > threshold -> (keep, scores, labels, mask probs) of the kept."""
    num_classes = mask_cls.shape[-1] - 1
    scores, labels = mask_cls.sigmoid().max(-1)
    probs = mask_pred.sigmoid()
    keep = (labels != num_classes) & (scores > object_mask_threshold)
    return keep, scores[keep], labels[keep], probs[keep]


def panoptic_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    thing_ids: set[int],
    object_mask_threshold: float = 0.0,
    overlap_threshold: float = 0.0,
) -> dict:
    """One image: mask_cls (Q, C+1) logits, mask_pred (Q, H, W) logits at the output size.

    Returns the official (panoptic_seg, segments_info) plus decision margins (not official):
    "label_margin" (Q,) top-1 minus top-2 logit of every query (the label is the argmax of the
    sigmoid scores, so of the logits), "pixel_margin" (H, W): the smaller of (best - second best
    score*prob among kept queries) and |prob of the best - 0.5|; counts "merged" (stuff queries
    joining a segment) and "dropped_overlap" (queries dropped by overlap_threshold)."""
    top2 = mask_cls.topk(2, dim=-1).values
    keep, cur_scores, cur_classes, cur_masks = _kept_queries(
        mask_cls, mask_pred, object_mask_threshold
    )
    probs = mask_pred.sigmoid()
    h, w = probs.shape[-2:]
    panoptic = torch.zeros((h, w), dtype=torch.int32)
    segments: list[dict] = []
    out = {
        "panoptic_seg": panoptic,
        "segments_info": segments,
        "kept": keep.nonzero().flatten(),
        "label_margin": top2[:, 0] - top2[:, 1],
        "merged": 0,
        "dropped_overlap": 0,
        "pixel_margin": torch.full((h, w), math.inf, dtype=probs.dtype),
    }
    if cur_masks.shape[0] == 0:
        return out
    prob_masks = cur_scores.view(-1, 1, 1) * cur_masks
    owner = prob_masks.argmax(0)
    owner_prob = cur_masks.gather(0, owner[None])[0]
    margin = (owner_prob - 0.5).abs()
    if cur_masks.shape[0] > 1:
        t2 = prob_masks.topk(2, dim=0).values
        margin = torch.minimum(margin, t2[0] - t2[1])
    out["pixel_margin"] = margin
    stuff_memory: dict[int, int] = {}
    current_id = 0
    for k in range(cur_classes.shape[0]):
        pred_class = int(cur_classes[k]) + 1  # "ADD ONE TO MATCH GT"
        isthing = pred_class in thing_ids  # thing_dataset_id_to_contiguous_id.values()
        mask_area = int((owner == k).sum())
        original_area = int((cur_masks[k] >= 0.5).sum())
        mask = (owner == k) & (cur_masks[k] >= 0.5)
        if mask_area > 0 and original_area > 0 and int(mask.sum()) > 0:
            if mask_area / original_area < overlap_threshold:
                out["dropped_overlap"] += 1
                continue
            if not isthing:  # merge stuff regions of one class into the first segment
                if pred_class in stuff_memory:
                    panoptic[mask] = stuff_memory[pred_class]
                    out["merged"] += 1
                    continue
                stuff_memory[pred_class] = current_id + 1
            current_id += 1
            panoptic[mask] = current_id
            segments.append(
                {
                    "id": current_id,
                    "isthing": bool(isthing),
                    "category_id": pred_class,
                    "score": float(cur_scores[k]),
                }
            )  # score: ours reports it, not official
    return out


def semantic_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    object_mask_threshold: float = 0.0,
    overlap_threshold: float = 0.0,
) -> Tensor:
    """semantic_inference (mask_bg False, softcls False): one-hot (C+1, H, W) of label + 1 of the
    owning query, channel 0 = unassigned."""
    _, cur_scores, cur_classes, cur_masks = _kept_queries(
        mask_cls, mask_pred, object_mask_threshold
    )
    h, w = mask_pred.shape[-2:]
    semseg = torch.zeros((h, w), dtype=torch.long)
    if cur_masks.shape[0] > 0:
        owner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
        for k in range(cur_classes.shape[0]):
            mask_area = int((owner == k).sum())
            original_area = int((cur_masks[k] >= 0.5).sum())
            mask = (owner == k) & (cur_masks[k] >= 0.5)
            if mask_area > 0 and original_area > 0 and int(mask.sum()) > 0:
                if mask_area / original_area < overlap_threshold:
                    continue
                semseg[mask] = int(cur_classes[k]) + 1
    return F.one_hot(semseg, mask_cls.shape[-1]).permute(2, 0, 1).to(mask_pred.dtype)


def postprocess(
    pred_logits: Tensor,
    pred_masks: Tensor,
    padded_size: tuple[int, int],
    image_sizes: list[tuple[int, int]],
    output_sizes: list[tuple[int, int]],
    thing_ids: set[int],
    **thresholds,
) -> list[dict]:
    """forward_inference: masks of the whole batch upsampled bilinearly (align_corners False) to the
    padded input size; per image, sem_seg_postprocess (crop to the image size, bilinear resize to the
    output size), then panoptic_inference and semantic_inference."""
    up = F.interpolate(pred_masks, size=padded_size, mode="bilinear", align_corners=False)
    results = []
    for i, (isz, osz) in enumerate(zip(image_sizes, output_sizes)):
        m = up[i][:, : isz[0], : isz[1]].expand(1, -1, -1, -1)
        m = F.interpolate(m, size=osz, mode="bilinear", align_corners=False)[0]
        r = panoptic_inference(pred_logits[i], m, thing_ids, **thresholds)
        r["sem_seg"] = semantic_inference(pred_logits[i], m, **thresholds)
        results.append(r)
    return results


# ----------------------------------------------------------------------------------------------
# whole inference
# ----------------------------------------------------------------------------------------------
def official_inference(
    images: list[Tensor],
    state: State,
    *,
    num_heads: int,
    deltas: list[float] | float | None,
    thing_ids: set[int],
    output_sizes: list[tuple[int, int]] | None = None,
    dtype=torch.float64,
    batch: Tensor | None = None,
    **thresholds,
) -> dict:
    """MaskFormer.forward in eval for a list of (3, H, W) 0..255 RGB images.

    `num_heads`: MODEL.MASK_FORMER.NHEADS (the deformable encoder uses it too: from_config passes
    transformer_nheads = NHEADS). `thing_ids`: official category ids (label + 1) that are things.
    `batch`: an already preprocessed batch to use instead of preprocessing `images`.
    Returns every intermediate: batch, features, mask_features, multi_scale, predictions (per
    layer), pred_logits / pred_masks (last layer), attn_margin, results (one dict per image)."""
    with torch.no_grad():
        sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
        pre, sizes = preprocess(images, dtype)
        if batch is not None:
            pre = batch.to(dtype)
        features = resnet(pre, sd)
        mask_features, multi_scale = pixel_decoder(features, sd, num_heads)
        dec = decoder(multi_scale, mask_features, sd, num_heads, deltas)
        logits, masks = dec["predictions"][-1]
        results = postprocess(
            logits,
            masks,
            tuple(pre.shape[-2:]),
            sizes,
            output_sizes or sizes,
            thing_ids,
            **thresholds,
        )
    return {
        "batch": pre,
        "image_sizes": sizes,
        "features": features,
        "mask_features": mask_features,
        "multi_scale": multi_scale,
        **dec,
        "pred_logits": logits,
        "pred_masks": masks,
        "results": results,
    }
