"""A synthetic COCO-panoptic dataset that a tiny Mask2Former learns in minutes on a CPU.

Why it exists: tests and the demo need panoptic data with things and stuff, several instances,
occlusions and a class order to split into continual steps, with no download. Classes are not
separable by one pixel colour: every thing colour is worn by two shapes (one instance in ten
of a class borrow another class's colour), and sky/water (blue), sand/wall (tan), snow/white things
share hues but differ in texture or shape.

Things also carry a class texture (stripes, checkerboard, dots, plain), a local cue that a small
network picks up quickly, as it does the stuff textures.

Written in the same on-disk format as COCO / ADE20K panoptic (JSON + id PNGs + images), so the demo
exercises the very loader real users run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from eclipse_seg.data.coco_panoptic import segments_from_id_map, write_coco_panoptic

# Interleaved so that any prefix split of the order mixes things and stuff; the later pairs (a stuff
# and a thing per incremental step of the demo's 6-2 scenario) differ in colour within each pair.
SYNTHETIC_CATEGORIES: list[dict] = [
    {"id": 1, "name": "sky", "isthing": 0, "color": [135, 190, 235]},
    {"id": 2, "name": "disk", "isthing": 1, "color": [220, 40, 40]},
    {"id": 3, "name": "grass", "isthing": 0, "color": [60, 150, 50]},
    {"id": 4, "name": "square", "isthing": 1, "color": [240, 200, 30]},
    {"id": 5, "name": "water", "isthing": 0, "color": [30, 80, 170]},
    {"id": 6, "name": "triangle", "isthing": 1, "color": [150, 60, 200]},
    {"id": 7, "name": "snow", "isthing": 0, "color": [225, 230, 240]},
    {"id": 8, "name": "ring", "isthing": 1, "color": [250, 140, 20]},
    {"id": 9, "name": "sand", "isthing": 0, "color": [215, 190, 130]},
    {"id": 10, "name": "diamond", "isthing": 1, "color": [30, 30, 30]},
    {"id": 11, "name": "wall", "isthing": 0, "color": [170, 90, 60]},
    {"id": 12, "name": "cross", "isthing": 1, "color": [245, 245, 245]},
]

_PALETTE = {
    "red": (215, 40, 40),
    "yellow": (235, 205, 35),
    "purple": (150, 60, 200),
    "orange": (245, 140, 25),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
# (own colour, borrowed colour): every colour is one class's own and another's borrowed one, so a
# pixel's colour alone is ambiguous; shape and texture decide.
_THING_COLOURS = {
    "disk": ("red", "yellow"),
    "square": ("yellow", "purple"),
    "triangle": ("purple", "red"),
    "ring": ("orange", "white"),
    "cross": ("white", "black"),
    "diamond": ("black", "orange"),
}
_OWN_COLOUR_PROB = 0.9
_STUFF = [c for c in SYNTHETIC_CATEGORIES if not c["isthing"]]
_THINGS = [c for c in SYNTHETIC_CATEGORIES if c["isthing"]]


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and content of one generated split."""

    height: int = 64
    width: int = 64
    max_things: int = 3
    min_thing_frac: float = 0.35  # shape size as a fraction of min(H, W)
    max_thing_frac: float = 0.6


def _stuff_texture(name: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float texture of a stuff class."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    noise = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    if name == "sky":
        t = yy / max(h - 1, 1)
        base = np.stack([120 + 60 * t, 170 + 40 * t, 240 - 10 * t], -1)
        return base + 3 * noise[..., None]
    if name == "water":
        phase = rng.uniform(0, 2 * np.pi)
        stripes = np.sin(yy * 2 * np.pi / 5.0 + 0.3 * np.sin(xx / 4.0) + phase)
        base = np.stack([40 + 20 * stripes, 90 + 30 * stripes, 185 + 30 * stripes], -1)
        return base + 4 * noise[..., None]
    if name == "grass":
        streaks = rng.normal(0, 1, (1, w)).astype(np.float32)
        g = 140 + 35 * noise + 25 * streaks
        return np.stack([55 + 15 * noise, g, 45 + 10 * noise], -1)
    if name == "sand":
        return np.stack([215 + 14 * noise, 188 + 14 * noise, 128 + 12 * noise], -1)
    if name == "wall":
        off = (((yy // 6) % 2) * 5).astype(np.float32)
        mortar = ((yy % 6) < 1) | (((xx + off) % 10) < 1)
        brick = np.stack([200 + 8 * noise, 170 + 8 * noise, 120 + 8 * noise], -1)
        brick[mortar] = (120, 110, 105)
        return brick
    if name == "snow":
        blot = _smooth_noise(h, w, rng, scale=8)
        return np.stack([228 + 18 * blot, 232 + 14 * blot, 242 + 8 * blot], -1)
    raise ValueError(f"unknown stuff class {name!r}")


def _smooth_noise(h: int, w: int, rng: np.random.Generator, scale: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: coarse random grid upsampled bilinearly."""
    coarse = rng.uniform(-1, 1, (h // scale + 2, w // scale + 2)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((w + 2 * scale, h + 2 * scale), Image.BILINEAR)
    return np.asarray(img)[scale : scale + h, scale : scale + w]


def _shape_mask(name: str, h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    """Boolean mask of a shape of class `name` centred at (cy, cx) with half-size r."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    if name == "disk":
        return dy**2 + dx**2 <= r**2
    if name == "square":
        return (np.abs(dy) <= 0.85 * r) & (np.abs(dx) <= 0.85 * r)
    if name == "triangle":  # apex up
        top, bottom = cy - r, cy + 0.8 * r
        half = (yy - top) / (bottom - top) * r
        return (yy >= top) & (yy <= bottom) & (np.abs(dx) <= half)
    if name == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if name == "cross":
        arm = 0.33 * r
        return ((np.abs(dy) <= arm) & (np.abs(dx) <= r)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= r))
    if name == "diamond":
        return np.abs(dy) + np.abs(dx) <= r
    raise ValueError(f"unknown thing class {name!r}")


def _thing_pattern(name: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) brightness pattern of a thing class: a local texture cue on top of its shape."""
    yy, xx = np.mgrid[0:h, 0:w]
    oy, ox = rng.integers(0, 4, size=2)
    if name == "square":  # horizontal stripes
        return np.where(((yy + oy) // 2) % 2 == 0, 1.0, 0.6).astype(np.float32)
    if name == "triangle":  # checkerboard
        return np.where((((yy + oy) // 3) + ((xx + ox) // 3)) % 2 == 0, 1.0, 0.55).astype(np.float32)
    if name == "cross":  # diagonal stripes
        return np.where(((yy + xx + ox) // 2) % 2 == 0, 1.0, 0.6).astype(np.float32)
    if name == "diamond":  # dots
        return np.where(((yy + oy) % 3 == 0) & ((xx + ox) % 3 == 0), 0.5, 1.0).astype(np.float32)
    return np.ones((h, w), np.float32)  # disk and ring: plain


def _stuff_layout(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """(H, W) index map into the chosen stuff classes: a wavy horizon, sometimes a blob."""
    n = 3 if rng.random() < 0.5 else 2
    chosen = [_STUFF[i] for i in rng.choice(len(_STUFF), size=n, replace=False)]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = h * rng.uniform(0.35, 0.65) + h * 0.08 * np.sin(
        xx * 2 * np.pi / w * rng.uniform(0.5, 1.5) + rng.uniform(0, 2 * np.pi)
    )
    layout = (yy > horizon).astype(np.int64)
    if n == 3:
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
        ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.15, 0.3) * w
        wobble = 1 + 0.25 * _smooth_noise(h, w, rng, scale=8)
        layout[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= wobble] = 2
    return layout, chosen


def generate_image(
    rng: np.random.Generator, spec: SyntheticSpec
) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """One image: (H, W, 3) uint8 RGB, (H, W) int64 segment ids (0 = void), {segment id: category id}.

    Stuff: one segment per class. Things: up to `max_things` instances, later ones occluding
    earlier ones; an instance left with less than 35% of its area visible is removed.
    """
    h, w = spec.height, spec.width
    layout, stuff = _stuff_layout(h, w, rng)
    image = np.zeros((h, w, 3), np.float32)
    ids = np.zeros((h, w), np.int64)
    seg_to_cat: dict[int, int] = {}
    next_id = 1
    for k, cat in enumerate(stuff):
        region = layout == k
        if region.sum() == 0:
            continue
        image[region] = _stuff_texture(cat["name"], h, w, rng)[region]
        ids[region] = next_id
        seg_to_cat[next_id] = cat["id"]
        next_id += 1

    placed: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, spec.max_things + 1))):
        cat = _THINGS[int(rng.integers(len(_THINGS)))]
        r = 0.5 * min(h, w) * rng.uniform(spec.min_thing_frac, spec.max_thing_frac)
        cy, cx = rng.uniform(r * 0.6, h - r * 0.6), rng.uniform(r * 0.6, w - r * 0.6)
        mask = _shape_mask(cat["name"], h, w, cy, cx, r)
        if mask.sum() < 12:
            continue
        own_colour = rng.random() < _OWN_COLOUR_PROB
        colour = np.array(_PALETTE[_THING_COLOURS[cat["name"]][0 if own_colour else 1]], np.float32)
        shade = 1.0 + 0.08 * rng.normal(0, 1, (h, w, 1)).astype(np.float32)
        shade *= _thing_pattern(cat["name"], h, w, rng)[..., None]
        image[mask] = (colour * shade)[mask]
        ids[mask] = next_id
        seg_to_cat[next_id] = cat["id"]
        placed.append((next_id, mask))
        next_id += 1
    for seg_id, mask in placed:  # drop heavily occluded instances: relabel to what lies under them
        visible = ids == seg_id
        if visible.sum() < 0.35 * mask.sum():
            ids[visible] = 0
            del seg_to_cat[seg_id]
    ids = _fill_void_from_stuff(ids, layout, stuff, seg_to_cat)
    return np.clip(image, 0, 255).astype(np.uint8), ids, seg_to_cat


def _fill_void_from_stuff(ids, layout, stuff, seg_to_cat) -> np.ndarray:
    """Pixels of removed instances take the stuff segment of their layout region (their pixels keep
    the removed shape's colour: a realistic label-noise region, like unlabelled clutter)."""
    stuff_seg = {cat_id: seg for seg, cat_id in seg_to_cat.items()}
    for k, cat in enumerate(stuff):
        hole = (ids == 0) & (layout == k)
        if hole.any():
            if cat["id"] not in stuff_seg:
                continue
            ids[hole] = stuff_seg[cat["id"]]
    return ids


def make_synthetic(
    out: Path,
    *,
    seed: int = 0,
    num_train: int = 400,
    num_val: int = 100,
    height: int = 64,
    width: int = 64,
) -> Path:
    """Write `out/{train,val}/{images,panoptic}/*.png` and `out/{train,val}/panoptic.json`.

    Deterministic: image i of a split depends only on (seed, split, i).
    """
    out = Path(out)
    spec = SyntheticSpec(height=height, width=width)
    for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        images, annotations = [], []
        image_dir, png_dir = out / split / "images", out / split / "panoptic"
        image_dir.mkdir(parents=True, exist_ok=True)
        png_dir.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, i])
            image, ids, seg_to_cat = generate_image(rng, spec)
            name = f"{split}_{i:06d}"
            Image.fromarray(image).save(image_dir / f"{name}.png")
            images.append({"id": i, "file_name": f"{name}.png", "height": height, "width": width})
            annotations.append(
                {
                    "image_id": i,
                    "file_name": f"{name}.png",
                    "segments_info": segments_from_id_map(ids, seg_to_cat),
                    "_id_map": ids,
                }
            )
        write_coco_panoptic(out / split / "panoptic.json", png_dir, images, annotations,
                            SYNTHETIC_CATEGORIES)
    return out
