"""Where a config's dataset files are: the one rule every reader of ``data.root`` uses.

A relative ``data.root`` is resolved against the environment variable ``ECLIPSE_DATA`` when it is
set (as detectron2 resolves its builtin datasets against ``DETECTRON2_DATASETS``), else against the
working directory; so one shipped config (``root: ADEChallengeData2016``) works on every machine.
Dataset keys (``train_json``, ``val_image_dir``, ...) are relative to the resolved root unless
absolute.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV", "data_path", "data_root", "root_note"]

ENV = "ECLIPSE_DATA"


def _env() -> str:
    return os.environ.get(ENV, "")


def data_root(root: str) -> Path:
    """``root`` resolved: absolute as is; relative under ``$ECLIPSE_DATA`` when set, else the
    working directory."""
    if Path(root).is_absolute() or not _env():
        return Path(root)
    return Path(_env()).expanduser() / root


def data_path(root: str, p: str) -> Path:
    """A dataset file or folder of the config: ``p`` absolute as is, else under ``data_root(root)``."""
    return Path(p) if Path(p).is_absolute() else data_root(root) / p


def root_note(root: str) -> str:
    """One line telling how ``data.root`` was resolved (appended to missing-file errors)."""
    if Path(root).is_absolute():
        return f"data.root {root!r} is absolute ({ENV} not used)"
    if _env():
        return f"data.root {root!r} resolved against {ENV}={_env()}: {data_root(root)}"
    return (
        f"data.root {root!r} resolved against the working directory {Path.cwd()} ({ENV} is not "
        f"set; set it to the folder holding your datasets)"
    )
