"""Output-directory safety: one job per directory (a lock file with the owner's pid), a writable
directory, and no silent mixing of results from different configs. Nothing is ever deleted."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import yaml

from eclipse_seg.config import Config, save_config
from eclipse_seg.engine import distributed as dist
from eclipse_seg.errors import TrainingError

LOCK_NAME = ".eclipse-seg.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def claim_output_dir(out: Path, cfg: Config, *, overwrite: bool = False, resume: bool = False):
    """Lock `out` for this job (rank 0 only) and record its config; refuse another job's directory."""
    if dist.rank() != 0:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise TrainingError(f"output directory {out} is not writable")
    lock = out / LOCK_NAME
    if lock.exists():
        try:
            pid = int(lock.read_text().strip() or 0)
        except ValueError:
            pid = 0
        if pid and pid != os.getpid() and _pid_alive(pid):
            raise TrainingError(
                f"output directory {out} is in use by another running job (pid {pid}, "
                f"lock file {lock}); wait for it or choose another --output"
            )
    saved = out / "config.yaml"
    if saved.exists() and not overwrite:
        old = yaml.safe_load(saved.read_text()) or {}
        if _fingerprint_of(old) != cfg.fingerprint():
            raise TrainingError(
                f"output directory {out} holds results of a different config ({saved}); use another "
                f"--output, or --overwrite to add this config's results there (nothing is deleted)"
            )
    lock.write_text(str(os.getpid()))
    try:
        save_config(cfg, saved)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def _fingerprint_of(data: dict) -> str:
    from eclipse_seg.config import config_from_dict
    from eclipse_seg.errors import ConfigError

    try:
        return config_from_dict(data).fingerprint()
    except ConfigError:
        return "<unreadable>"
