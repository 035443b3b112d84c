"""Pictures and label files of predictions: overlays with category names, label PNGs."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["instance_colour", "render_overlay", "save_overlay", "side_by_side", "write_label_png"]

_FALLBACK = (255, 0, 0)


def write_label_png(path: Path, category_ids: np.ndarray) -> None:
    """(H, W) category ids (0 = none) as a single-channel PNG, 8-bit when they fit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if category_ids.max(initial=0) < 256:
        Image.fromarray(category_ids.astype(np.uint8), mode="L").save(path)
    else:
        Image.fromarray(category_ids.astype(np.uint16)).save(path)


def instance_colour(base: tuple[int, int, int] | list[int], k: int) -> tuple[int, int, int]:
    """The k-th instance's colour of a class: the class colour's hue, lightness and saturation
    stepped so that neighbours differ clearly (k = 0 is the class colour itself)."""
    r, g, b = (c / 255 for c in base)
    h, light, s = colorsys.rgb_to_hls(r, g, b)
    if k:
        light = 0.25 + ((light - 0.25) + 0.29 * k) % 0.55
        s = min(1.0, max(0.45, s))
        h = (h + 0.03 * ((k % 3) - 1)) % 1.0
    return tuple(int(round(255 * c)) for c in colorsys.hls_to_rgb(h, light, s))


def render_overlay(
    image: np.ndarray,
    panoptic: np.ndarray,
    segments: list[dict],
    names: dict[int, str],
    colors: dict[int, list[int]],
    *,
    title: str = "",
    min_side: int = 256,
) -> Image.Image:
    """The image with each segment blended in its colour (instances of one class in shades of the
    class colour) and its category name, kept inside the picture; a note when nothing is shown."""
    overlay = image.astype(np.float32).copy()
    seen: dict[int, int] = {}
    items = []
    for s in segments:
        m = panoptic == s["id"]
        if not m.any():
            continue
        k = seen.get(s["category_id"], 0)
        seen[s["category_id"]] = k + 1
        colour = np.array(
            instance_colour(colors.get(s["category_id"], _FALLBACK), k if s.get("isthing") else 0),
            np.float32,
        )
        overlay[m] = 0.45 * overlay[m] + 0.55 * colour
        ys, xs = np.nonzero(m)
        items.append(
            (float(xs.mean()), float(ys.mean()), names.get(s["category_id"], str(s["category_id"])))
        )
    scale = max(1, -(-min_side // max(image.shape[:2])))
    pic = Image.fromarray(overlay.astype(np.uint8)).resize(
        (image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST
    )
    draw = ImageDraw.Draw(pic)
    for x, y, text in items:
        _label(draw, pic.size, x * scale, y * scale, text)
    if not items:
        _label(draw, pic.size, pic.size[0] / 2, pic.size[1] / 2, "(nothing predicted)")
    if title:
        _label(draw, pic.size, pic.size[0] / 2, 8, title)
    return pic


def _label(draw: ImageDraw.ImageDraw, size: tuple[int, int], x: float, y: float, text: str) -> None:
    """White text with a black outline centred at (x, y), shifted to stay inside the picture."""
    left, top, right, bottom = draw.textbbox((0, 0), text, stroke_width=1)
    w, h = right - left, bottom - top
    x0 = min(max(1, x - w / 2), size[0] - w - 1)
    y0 = min(max(1, y - h / 2), size[1] - h - 1)
    draw.text(
        (x0 - left, y0 - top), text, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0)
    )


def save_overlay(
    image: np.ndarray,
    panoptic: np.ndarray,
    segments: list[dict],
    names: dict[int, str],
    colors: dict[int, list[int]],
    path: Path,
) -> None:
    """Write :func:`render_overlay` of one prediction (or ground truth) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    render_overlay(image, panoptic, segments, names, colors).save(path)


def side_by_side(panels: list[Image.Image], path: Path, gap: int = 4) -> None:
    """Panels of one height in a row (e.g. ground truth | ECLIPSE | fine-tuning)."""
    height = max(p.size[1] for p in panels)
    width = sum(p.size[0] for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    x = 0
    for p in panels:
        canvas.paste(p, (x, 0))
        x += p.size[0] + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
