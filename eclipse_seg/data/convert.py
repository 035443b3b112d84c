"""Converting annotations of your own to the COCO panoptic layout that training reads.

One split folder at a time (``SPLIT``, e.g. ``mydata/train``), images in ``SPLIT/images``
(``<stem>.jpg``, ``.png``, ...), annotations in one of two layouts:

* **mask folders** (``SPLIT/masks``): per image a folder ``SPLIT/masks/<stem>/`` of binary mask PNGs
  (non-zero pixels = the object), one file per segment, named ``<category>.png`` or
  ``<category>_<k>.png``. ``<category>`` is a category id or name of the categories file; ``<k>``
  is any number telling instances apart. Each file of a thing class is one instance; the files of a
  stuff class in one image merge into one segment. A pixel in two masks is an error (or void, with
  ``overlap="void"``). An empty folder is an image without any labelled pixel.
* **label PNGs** (``SPLIT/labels``, optionally ``SPLIT/instances``): ``labels/<stem>.png`` holds
  the category id of each pixel (single channel, 8 or 16 bit; ``void_values``, default 0, mark
  unlabelled pixels); ``instances/<stem>.png`` the instance number of each pixel (0 = none). A thing
  segment is one (class, instance number) pair; thing pixels with instance 0 form one crowd segment
  per class (ignored by training and PQ). Without instance PNGs every class, thing or stuff, is one
  segment per image (semantic labels as panoptic data).

The categories file (see :mod:`eclipse_seg.data.categories`) fixes ids, names and thing flags; ids
need not be contiguous nor start at 1. Categories without a ``color`` get a distinct one (for the
overlay pictures of ``predict``). Output: ``SPLIT/panoptic.json`` (``images`` with integer ids
1..n in file-name order, ``annotations``, the categories) and ``SPLIT/panoptic/<stem>.png``: the
default paths of a config's ``data`` section, so ``data.root`` = the folder above ``SPLIT`` is all
a config needs. Images are not copied.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from eclipse_seg.data.categories import load_categories
from eclipse_seg.data.coco_panoptic import (
    segments_from_id_map,
    write_coco_panoptic,
    write_panoptic_png,
)
from eclipse_seg.data.files import PIL_ERRORS
from eclipse_seg.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ConversionSummary",
    "convert_label_pngs",
    "convert_mask_folders",
    "convert_split",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_SINGLE_CHANNEL = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L")
_INSTANCE_SUFFIX = re.compile(r"^(.+)_(\d+)$")
Categories = str | os.PathLike | Sequence[Mapping]


@dataclass
class ConversionSummary:
    """What a conversion wrote: counts per category id are of segments (crowd included)."""

    json_path: Path
    png_dir: Path
    num_images: int = 0
    segments: Counter = field(default_factory=Counter)  # category id -> segments
    images_with: Counter = field(default_factory=Counter)  # category id -> images
    categories: list[dict] = field(default_factory=list)

    def format(self) -> str:
        total = sum(self.segments.values())
        lines = [
            (
                f"wrote {self.json_path} and {self.num_images} panoptic PNGs in {self.png_dir}: "
                f"{self.num_images} images, {total} segments"
            )
        ]
        for c in self.categories:
            kind = "thing" if c["isthing"] else "stuff"
            lines.append(
                f"  id {c['id']:>4}  {c['name']} ({kind}): {self.segments[c['id']]} segments "
                f"in {self.images_with[c['id']]} images"
            )
        missing = [c["id"] for c in self.categories if not self.segments[c["id"]]]
        if missing:
            lines.append(f"  note: categories {missing} have no segment in this split")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def _images_by_stem(image_dir: Path) -> dict[str, str]:
    """{stem: file name} of the images of a folder (by extension, case-insensitive)."""
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder not found")
    found: dict[str, str] = {}
    for p in sorted(image_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            if p.stem in found:
                raise DataError(
                    f"{image_dir}: two images share the stem {p.stem!r} "
                    f"({found[p.stem]}, {p.name}); masks are matched by stem"
                )
            found[p.stem] = p.name
    if not found:
        raise DataError(f"{image_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return found


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the image header."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except PIL_ERRORS as e:
        raise DataError(f"{path}: cannot read the image (corrupt or not an image?): {e}") from e
    return h, w


def _open(path: Path, what: str) -> tuple[str, np.ndarray]:
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":  # palette masks: judge by colour / transparency, not index
                im = im.convert("RGBA") if what == "mask" else im
            return im.mode, np.asarray(im)
    except PIL_ERRORS as e:
        raise DataError(f"{path}: cannot decode the {what} PNG (corrupt or truncated?): {e}") from e


def _check_size(path: Path, arr: np.ndarray, size: tuple[int, int], image: str) -> None:
    if arr.shape[:2] != size:
        raise DataError(
            f"{path}: size {arr.shape[1]}x{arr.shape[0]} (WxH) differs from its image "
            f"{image} ({size[1]}x{size[0]})"
        )


def _read_mask(path: Path, size: tuple[int, int], image: str) -> np.ndarray:
    """(H, W) bool: the non-zero pixels; RGB(A)/LA masks: any colour channel non-zero (and, with an
    alpha channel, not transparent)."""
    mode, arr = _open(path, "mask")
    _check_size(path, arr, size, image)
    if mode in ("RGBA", "LA"):
        return (arr[..., :-1] != 0).any(-1) & (arr[..., -1] != 0)
    if mode == "RGB":
        return (arr != 0).any(-1)
    if mode in _SINGLE_CHANNEL or mode == "F":
        return arr != 0
    raise DataError(f"{path}: unsupported mask mode {mode} (expected a grey, palette or RGB PNG)")


def _read_ids(path: Path, size: tuple[int, int], image: str, what: str) -> np.ndarray:
    """(H, W) int64 values of a single-channel PNG (category ids or instance numbers)."""
    mode, arr = _open(path, what)
    if mode not in _SINGLE_CHANNEL:
        raise DataError(
            f"{path}: a {what} PNG must be single-channel (one number per pixel: L, P "
            f"or 16-bit), got mode {mode}; convert colour-coded maps to ids first"
        )
    _check_size(path, arr, size, image)
    return arr.astype(np.int64)


class _CategoryLookup:
    """A mask file name's ``<category>`` part -> category id (an id, or a unique name)."""

    def __init__(self, categories: list[dict]):
        self.by_id = {c["id"]: c for c in categories}
        names = Counter(c["name"] for c in categories)
        self.by_name = {c["name"]: c["id"] for c in categories if names[c["name"]] == 1}
        self.ambiguous = {n for n, k in names.items() if k > 1}

    def _token(self, token: str) -> int | None:
        if re.fullmatch(r"-?\d+", token) and int(token) in self.by_id:
            return int(token)
        return self.by_name.get(token)

    def category_of(self, path: Path) -> int:
        """The whole stem names a category, else the part before a trailing ``_<k>``."""
        stem = path.stem
        cid = self._token(stem)
        m = _INSTANCE_SUFFIX.match(stem)
        if cid is None and m:
            cid = self._token(m.group(1))
        if cid is not None:
            return cid
        token = m.group(1) if m and m.group(1) in self.ambiguous else stem
        if token in self.ambiguous:
            raise DataError(
                f"{path}: several categories are named {token!r}; name the file by "
                f"category id instead"
            )
        raise DataError(
            f"{path}: {stem!r} names no category: expected <category>.png or "
            f"<category>_<k>.png with <category> one of the ids "
            f"{sorted(self.by_id)[:20]} or their names"
        )


# --------------------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------------------
def _pair(
    images: dict[str, str], annotated: Iterable[str], image_dir: Path, ann_dir: Path, what: str
) -> None:
    annotated = set(annotated)
    no_ann = sorted(set(images) - annotated)
    no_image = sorted(annotated - set(images))
    problems = []
    if no_ann:
        problems.append(
            f"{len(no_ann)} image(s) of {image_dir} have no {what} in {ann_dir}, e.g. {no_ann[:5]}"
        )
    if no_image:
        problems.append(
            f"{len(no_image)} {what}(s) in {ann_dir} have no image in {image_dir}, "
            f"e.g. {no_image[:5]}"
        )
    if problems:
        raise DataError("; ".join(problems) + " (images and annotations are matched by file stem)")


def _with_colours(categories: list[dict]) -> list[dict]:
    """Copies of ``categories``; those without a ``color`` get one, spread over the hue circle
    (golden-ratio steps) so neighbours in the list differ."""
    import colorsys

    out = []
    for k, c in enumerate(categories):
        if "color" not in c:
            r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.75, 0.95)
            c = {**c, "color": [round(255 * r), round(255 * g), round(255 * b)]}
        out.append(dict(c))
    return out


class _Writer:
    """Writes one panoptic PNG per image as it goes, then the JSON."""

    def __init__(self, categories: list[dict], out_json: Path, png_dir: Path):
        categories = _with_colours(categories)
        self.categories = categories
        self.summary = ConversionSummary(Path(out_json), Path(png_dir), categories=categories)
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def add(
        self,
        stem: str,
        file_name: str,
        id_map: np.ndarray,
        seg_to_cat: dict[int, int],
        crowd: dict[int, int],
    ) -> None:
        h, w = id_map.shape
        image_id = len(self.images) + 1
        png = f"{stem}.png"
        segments = segments_from_id_map(id_map, seg_to_cat, crowd)
        write_panoptic_png(self.summary.png_dir / png, id_map)
        self.images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        self.annotations.append({"image_id": image_id, "file_name": png, "segments_info": segments})
        self.summary.num_images += 1
        cats = [s["category_id"] for s in segments]
        self.summary.segments.update(cats)
        self.summary.images_with.update(set(cats))

    def finish(self) -> ConversionSummary:
        s = self.summary
        write_coco_panoptic(s.json_path, s.png_dir, self.images, self.annotations, self.categories)
        return s


def convert_mask_folders(
    image_dir: str | os.PathLike,
    mask_dir: str | os.PathLike,
    categories: Categories,
    out_json: str | os.PathLike,
    out_png_dir: str | os.PathLike,
    *,
    overlap: str = "error",
) -> ConversionSummary:
    """Mask-folder layout (module docstring) -> COCO panoptic JSON + PNGs.

    ``overlap``: "error" (a pixel in two masks names both files) or "void" (such pixels become
    unlabelled)."""
    if overlap not in ("error", "void"):
        raise DataError(f"overlap must be 'error' or 'void', got {overlap!r}")
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    cats = load_categories(categories)
    lookup = _CategoryLookup(cats)
    images = _images_by_stem(image_dir)
    if not mask_dir.is_dir():
        raise DataError(f"{mask_dir}: mask folder not found")
    _pair(
        images,
        (p.name for p in mask_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
        image_dir,
        mask_dir,
        "mask folder",
    )
    writer = _Writer(cats, Path(out_json), Path(out_png_dir))
    for stem, name in images.items():
        size = _image_size(image_dir / name)
        id_map = np.zeros(size, dtype=np.int64)
        conflict = np.zeros(size, dtype=bool)
        seg_to_cat: dict[int, int] = {}
        source: dict[int, Path] = {}  # segment id -> a mask file of it
        stuff_segment: dict[int, int] = {}
        files = sorted(p for p in (mask_dir / stem).iterdir() if not p.name.startswith("."))
        for path in files:
            if not path.is_file() or path.suffix.lower() != ".png":
                raise DataError(
                    f"{path}: not a mask PNG (a mask folder holds <category>[_<k>].png files only)"
                )
            cid = lookup.category_of(path)
            mask = _read_mask(path, size, name)
            thing = lookup.by_id[cid]["isthing"]
            sid = stuff_segment.get(cid) if not thing else None
            if sid is None:
                sid = len(seg_to_cat) + 1
                seg_to_cat[sid], source[sid] = cid, path
                if not thing:
                    stuff_segment[cid] = sid
            clash = mask & (id_map != 0) & (id_map != sid)
            if clash.any():
                if overlap == "error":
                    other = source[int(id_map[clash][0])]
                    raise DataError(
                        f"{path}: {int(clash.sum())} pixels also belong to {other}; "
                        f"panoptic segments may not overlap (overlap='void' / --overlap "
                        f"void makes such pixels unlabelled)"
                    )
                conflict |= clash
            id_map[mask & ~clash] = sid
        id_map[conflict] = 0
        writer.add(stem, name, id_map, seg_to_cat, 0)
    return writer.finish()


def convert_label_pngs(
    image_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    categories: Categories,
    out_json: str | os.PathLike,
    out_png_dir: str | os.PathLike,
    *,
    instance_dir: str | os.PathLike | None = None,
    void_values: Sequence[int] = (0,),
) -> ConversionSummary:
    """Label-PNG layout (module docstring) -> COCO panoptic JSON + PNGs."""
    image_dir, label_dir = Path(image_dir), Path(label_dir)
    cats = load_categories(categories)
    by_id = {c["id"]: c for c in cats}
    void = {int(v) for v in void_values}
    clash = sorted(void & set(by_id))
    if clash:
        raise DataError(
            f"category ids {clash} are also void values {sorted(void)}; choose other "
            f"void values (--void-values)"
        )
    images = _images_by_stem(image_dir)
    if not label_dir.is_dir():
        raise DataError(f"{label_dir}: label folder not found")
    _pair(images, (p.stem for p in label_dir.glob("*.png")), image_dir, label_dir, "label PNG")
    if instance_dir is not None:
        instance_dir = Path(instance_dir)
        if not instance_dir.is_dir():
            raise DataError(f"{instance_dir}: instance folder not found")
        _pair(
            images,
            (p.stem for p in instance_dir.glob("*.png")),
            image_dir,
            instance_dir,
            "instance PNG",
        )
    writer = _Writer(cats, Path(out_json), Path(out_png_dir))
    for stem, name in images.items():
        size = _image_size(image_dir / name)
        label_path = label_dir / f"{stem}.png"
        labels = _read_ids(label_path, size, name, "label")
        present = [int(v) for v in np.unique(labels) if int(v) not in void]
        unknown = [v for v in present if v not in by_id]
        if unknown:
            raise DataError(
                f"{label_path}: values {unknown[:10]} are neither category ids of the "
                f"categories file {sorted(by_id)[:20]} nor void {sorted(void)}"
            )
        inst = None
        if instance_dir is not None:
            inst = _read_ids(instance_dir / f"{stem}.png", size, name, "instance")
        id_map = np.zeros(size, dtype=np.int64)
        seg_to_cat: dict[int, int] = {}
        crowd: dict[int, int] = {}
        for cid in present:
            where = labels == cid
            parts = [(0, where)]
            if inst is not None and by_id[cid]["isthing"]:
                parts = [(int(k), where & (inst == k)) for k in np.unique(inst[where])]
            for k, mask in parts:
                sid = len(seg_to_cat) + 1
                seg_to_cat[sid] = cid
                crowd[sid] = int(inst is not None and by_id[cid]["isthing"] and k == 0)
                id_map[mask] = sid
        writer.add(stem, name, id_map, seg_to_cat, crowd)
    return writer.finish()


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
def convert_split(
    split: str | Path,
    categories: str | Path,
    *,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    labels: str | Path | None = None,
    instances: str | Path | None = None,
    out_json: str | Path | None = None,
    out_pngs: str | Path | None = None,
    overlap: str = "error",
    void_values: Sequence[int] = (0,),
):
    """Convert one split folder (``eclipse-seg convert-masks``): ``SPLIT/images`` with
    ``SPLIT/masks`` (mask folders) or ``SPLIT/labels`` (+ ``SPLIT/instances``) -> ``SPLIT/panoptic.json``
    and ``SPLIT/panoptic/``, unless the paths are given. Returns the conversion summary."""
    split = Path(split)
    if not split.is_dir() and not (images and (masks or labels)):
        raise DataError(f"{split}: split folder not found")
    images = Path(images) if images else split / "images"
    out_json = Path(out_json) if out_json else split / "panoptic.json"
    out_pngs = Path(out_pngs) if out_pngs else split / "panoptic"
    if masks and labels:
        raise DataError("give either --masks or --labels, not both")
    if instances and masks:
        raise DataError("--instances goes with --labels (mask folders hold one file per instance)")
    given_labels = labels is not None
    masks = Path(masks) if masks else None
    labels = Path(labels) if labels else None
    if masks is None and labels is None:
        if (split / "masks").is_dir():
            masks = split / "masks"
        elif (split / "labels").is_dir():
            labels = split / "labels"
        else:
            raise DataError(f"{split}: neither masks/ nor labels/ found; pass --masks or --labels")
    if masks is not None:
        return convert_mask_folders(images, masks, categories, out_json, out_pngs, overlap=overlap)
    instances = Path(instances) if instances else None
    if instances is None and not given_labels and (split / "instances").is_dir():
        instances = split / "instances"
    return convert_label_pngs(
        images,
        labels,
        categories,
        out_json,
        out_pngs,
        instance_dir=instances,
        void_values=list(void_values),
    )
