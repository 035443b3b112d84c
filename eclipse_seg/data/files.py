"""Small file helpers every layer uses: atomic writes, safe existence checks, image decoding.

Kept apart from the dataset readers so that checkpoints, results and metrics can write and read
files without depending on a particular data format.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from eclipse_seg.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "PIL_ERRORS",
    "atomic_write_bytes",
    "expand_images",
    "is_file",
    "is_int",
    "read_image_rgb",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# What Pillow raises for a missing format, a truncated or a corrupt file.
PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder, fsync and ``os.replace``:
    a reader sees the old file or the new one, never half of it. ``mode`` is the file's permission
    (a temp file starts at 0600; results and checkpoints are meant to be shared)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def is_file(path: str | os.PathLike) -> bool:
    """Path.is_file() that answers False for names the OS rejects (too long, embedded NUL)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def is_int(v: Any) -> bool:
    """An int that is not a bool (JSON/YAML ids, sizes)."""
    return isinstance(v, int) and not isinstance(v, bool)


def read_image_rgb(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array; any failure is a DataError."""
    path = Path(path)
    if not is_file(path):
        raise DataError(f"{path}: {what} file not found")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.array(im.convert("RGB"))
    except PIL_ERRORS as e:
        raise DataError(f"{path}: cannot decode {what} (corrupt or truncated?): {e}") from e
    return arr


def expand_images(paths: list[Path]) -> list[Path]:
    """Files as given, folders replaced by their images (sorted); a missing path is a DataError."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(
                f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
            )
            if not found:
                raise DataError(f"{p}: folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise DataError(f"{p}: no such image file or folder")
    stems = [p.stem for p in out]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise DataError(
            f"several input images share the file stem(s) {twice[:10]}: their outputs "
            "would overwrite each other; rename them or predict them separately"
        )
    return out
