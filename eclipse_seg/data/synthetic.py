"""A synthetic COCO-panoptic world that a tiny Mask2Former learns in minutes on a CPU.

Why it exists: tests and the demo need panoptic data with things and stuff, several instances,
occlusions and a class order to split into continual steps, with no download. Written in the same
on-disk format as COCO / ADE20K panoptic (JSON + id PNGs + images), so the demo exercises the very
loader real users run.

How it is built (so that continual learning behaves as on real data): a class is a combination of
cues - colour, texture and shape for things, hue family and texture for stuff - and every cue of a
later class is one the base classes already exercise. Features trained on the base classes alone
therefore also describe the new classes, as ImageNet-pretrained features describe ADE20K's later
classes; a frozen network with new prompts can learn them. No class is separable by pixel colour
alone: every thing colour is worn by two classes (or by a thing and a stuff class), and the stuff
classes share hue families (blue: sky, water; pale: overcast sky, snow; tan: sand, wall; green:
grass, and the green things).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from eclipse_seg.data.coco_panoptic import segments_from_id_map, write_coco_panoptic

# Interleaved so that any prefix split of the order mixes things and stuff; the demo's scenario 9-1
# learns the first 9 at step 0, then diamond, wall and cross one per step. "color" is the class's
# display colour in overlays, chosen unlike its looks so that a tinted segment stands out.
SYNTHETIC_CATEGORIES: list[dict] = [
    {"id": 1, "name": "sky", "isthing": 0, "color": [255, 60, 180]},
    {"id": 2, "name": "disk", "isthing": 1, "color": [0, 200, 255]},
    {"id": 3, "name": "grass", "isthing": 0, "color": [255, 0, 255]},
    {"id": 4, "name": "square", "isthing": 1, "color": [0, 90, 255]},
    {"id": 5, "name": "water", "isthing": 0, "color": [255, 230, 0]},
    {"id": 6, "name": "triangle", "isthing": 1, "color": [0, 255, 120]},
    {"id": 7, "name": "snow", "isthing": 0, "color": [255, 100, 0]},
    {"id": 8, "name": "ring", "isthing": 1, "color": [120, 0, 255]},
    {"id": 9, "name": "sand", "isthing": 0, "color": [0, 160, 60]},
    {"id": 10, "name": "diamond", "isthing": 1, "color": [255, 255, 255]},
    {"id": 11, "name": "wall", "isthing": 0, "color": [20, 20, 20]},
    {"id": 12, "name": "cross", "isthing": 1, "color": [255, 0, 0]},
]

_PALETTE = {
    "red": (215, 40, 40),
    "yellow": (235, 205, 35),
    "purple": (150, 60, 200),
    "orange": (245, 140, 25),
    "blue": (50, 100, 235),
    "green": (85, 195, 55),
}
# Every thing class has one texture and one or two colours (drawn with equal chance); every
# (texture, colour) look belongs to one class. The base things need both cues: the two plain ones
# differ only in colour (and shape), and each base colour is worn by two classes. The incremental
# things are new looks made of cues the base classes exercise: diamond = the triangle's checkerboard
# in the ring's blue (the deep water's), cross = the square's stripes in the disk's green (the
# grass's).
_THING_LOOKS = {
    "disk": ("plain", ("red", "green")),
    "square": ("stripes", ("red", "purple")),
    "triangle": ("checker", ("yellow", "orange")),
    "ring": ("plain", ("orange", "blue")),
    "diamond": ("checker", ("blue",)),
    "cross": ("stripes", ("green",)),
}
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
    """(H, W, 3) float texture of a stuff class. Colours are shared (light blue: clear sky, calm
    water; pale: overcast sky, snow; tan: sand, wall; deep blue: water and diamonds; green: grass
    and crosses); the texture tells them apart."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    noise = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    if name == "sky":  # smooth vertical gradient, clear blue or overcast
        t = yy / max(h - 1, 1)
        if rng.random() < 0.5:
            base = np.stack([120 + 60 * t, 170 + 40 * t, 240 - 10 * t], -1)
        else:
            base = np.stack([200 + 28 * t, 206 + 26 * t, 220 + 20 * t], -1)
        return base + 3 * noise[..., None]
    if name == "water":  # horizontal waves, deep blue or the light blue of a reflected sky
        phase = rng.uniform(0, 2 * np.pi)
        waves = np.sin(yy * 2 * np.pi / 5.0 + 0.3 * np.sin(xx / 4.0) + phase)
        tint = (40, 90, 185) if rng.random() < 0.5 else (125, 175, 225)
        base = np.stack([tint[0] + 20 * waves, tint[1] + 30 * waves, tint[2] + 30 * waves], -1)
        return base + 4 * noise[..., None]
    if name == "grass":  # vertical streaks
        streaks = rng.normal(0, 1, (1, w)).astype(np.float32)
        g = 150 + 35 * noise + 25 * streaks
        return np.stack([65 + 15 * noise, g, 45 + 10 * noise], -1)
    if name == "sand":  # fine grain
        return np.stack([215 + 14 * noise, 188 + 14 * noise, 128 + 12 * noise], -1)
    if name == "wall":  # bricks: the tan of sand, mortar lines like the waves of water
        off = (((yy // 6) % 2) * 5).astype(np.float32)
        mortar = ((yy % 6) < 1) | (((xx + off) % 10) < 1)
        brick = np.stack([200 + 8 * noise, 170 + 8 * noise, 120 + 8 * noise], -1)
        brick[mortar] = (120, 110, 105)
        return brick
    if name == "snow":  # soft blotches
        blot = _smooth_noise(h, w, rng, scale=8)
        return np.stack([220 + 22 * blot, 226 + 18 * blot, 238 + 12 * blot], -1)
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
        return (d2 <= r**2) & (d2 >= (0.45 * r) ** 2)
    if name == "cross":
        arm = 0.4 * r
        return ((np.abs(dy) <= arm) & (np.abs(dx) <= r)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= r))
    if name == "diamond":
        return np.abs(dy) + np.abs(dx) <= r
    raise ValueError(f"unknown thing class {name!r}")


def _thing_pattern(texture: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) brightness pattern of a thing texture (random phase): a local cue on top of its shape."""
    yy, xx = np.mgrid[0:h, 0:w]
    oy, ox = rng.integers(0, 4, size=2)
    if texture == "stripes":  # horizontal, 3-pixel bands
        return np.where(((yy + oy) // 3) % 2 == 0, 1.0, 0.6).astype(np.float32)
    if texture == "checker":  # 3-pixel cells
        return np.where((((yy + oy) // 3) + ((xx + ox) // 3)) % 2 == 0, 1.0, 0.55).astype(
            np.float32
        )
    if texture == "plain":
        return np.ones((h, w), np.float32)
    raise ValueError(f"unknown thing texture {texture!r}")


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
        texture, colours = _THING_LOOKS[cat["name"]]
        colour = np.array(_PALETTE[colours[int(rng.integers(len(colours)))]], np.float32)
        shade = 1.0 + 0.08 * rng.normal(0, 1, (h, w, 1)).astype(np.float32)
        shade *= _thing_pattern(texture, h, w, rng)[..., None]
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
        for folder in (image_dir, png_dir):  # a rerun with fewer images leaves no stale files
            for stale in folder.glob(f"{split}_[0-9][0-9][0-9][0-9][0-9][0-9].png"):
                if int(stale.stem.rsplit("_", 1)[1]) >= count:
                    stale.unlink()
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
        write_coco_panoptic(
            out / split / "panoptic.json", png_dir, images, annotations, SYNTHETIC_CATEGORIES
        )
    return out
