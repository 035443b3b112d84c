"""A tiny dataset "of your own" in the mask-folder layout, with category ids that are neither
contiguous nor start at 1 (7, 3, 42, 11), for the converter and custom-data guide tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# the categories file of docs/custom-data.md (file order: road, sky, car, person)
CATEGORIES = [
    {"id": 7, "name": "road", "isthing": 0},
    {"id": 3, "name": "sky", "isthing": 0},
    {"id": 42, "name": "car", "isthing": 1},
    {"id": 11, "name": "person", "isthing": 1},
]
_COLOURS = {7: (110, 110, 110), 3: (90, 150, 230), 42: (210, 30, 30), 11: (240, 210, 40)}


def draw_scene(
    rng: np.random.Generator, size: int
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """(H, W, 3) uint8 image and its segments [(category id, (H, W) bool mask)]: sky above road,
    one or two cars and sometimes a person, never overlapping each other."""
    h = w = size
    horizon = int(rng.integers(size // 3, 2 * size // 3))
    taken = np.zeros((h, w), dtype=bool)
    things = []
    for cid in [42] * int(rng.integers(1, 3)) + [11] * int(rng.random() < 0.6):
        for _ in range(20):
            bh, bw = (int(rng.integers(8, 16)), int(rng.integers(6, 12)))
            y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
            box = np.zeros((h, w), dtype=bool)
            box[y : y + bh, x : x + bw] = True
            if not (box & taken).any():
                taken |= box
                things.append((cid, box))
                break
    rows = np.arange(h)[:, None] < horizon
    sky = np.broadcast_to(rows, (h, w)) & ~taken
    road = np.broadcast_to(~rows, (h, w)) & ~taken
    segments = [(3, sky), (7, road)] + things
    image = np.zeros((h, w, 3), dtype=np.uint8)
    for cid, mask in segments:
        image[mask] = _COLOURS[cid]
    noise = rng.integers(-12, 13, size=image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8), segments


def make_mask_folder_dataset(
    root: Path, *, num_train: int = 8, num_val: int = 4, size: int = 64, seed: int = 0
) -> dict[str, dict[str, list[tuple[int, np.ndarray]]]]:
    """Write ``root/categories.json`` and ``root/{train,val}/images/*.jpg`` +
    ``root/{train,val}/masks/<stem>/*.png``. Mask files mix the naming styles: stuff by name (sky
    split into two files in some images), cars by id with an instance number, people by name.
    Returns {split: {stem: segments}} for checking a conversion."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "categories.json").write_text(json.dumps(CATEGORIES, indent=1))
    truth: dict[str, dict] = {}
    for split, n in (("train", num_train), ("val", num_val)):
        truth[split] = {}
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            stem = f"{split}_{i:03d}"
            image, segments = draw_scene(rng, size)
            Image.fromarray(image).save(root / split / "images" / f"{stem}.jpg", quality=95)
            folder = root / split / "masks" / stem
            folder.mkdir(parents=True, exist_ok=True)
            k = {42: 0, 11: 0}
            for cid, mask in segments:
                if cid == 3 and i % 2:  # a stuff region in two files: merged into one segment
                    top = mask.copy()
                    top[mask.shape[0] // 4 :] = False
                    _save_mask(folder / "sky_1.png", top)
                    _save_mask(folder / "sky_2.png", mask & ~top)
                elif cid in (3, 7):
                    _save_mask(folder / f"{'sky' if cid == 3 else 'road'}.png", mask)
                else:
                    k[cid] += 1
                    name = f"42_{k[cid]}" if cid == 42 else f"person_{k[cid]}"
                    _save_mask(folder / f"{name}.png", mask)
            truth[split][stem] = segments
    return truth


def _save_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
