"""How many CPU threads torch uses. On a shared machine torch's default (every core) is often many
times slower than fewer threads, so the default here is the cores this process may actually run on
(`os.sched_getaffinity`), `ECLIPSE_THREADS` or `--threads` override it, and the choice is logged."""

from __future__ import annotations

import os

import torch

from eclipse_seg.errors import ConfigError

__all__ = ["ENV", "available_cores", "configure_threads"]

ENV = "ECLIPSE_THREADS"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def configure_threads(requested: int | None = None) -> tuple[int, str]:
    """Set torch's intra-op threads: `requested`, else $ECLIPSE_THREADS, else the available cores.
    Returns (threads, where the number came from)."""
    source = "--threads"
    if requested is None and os.environ.get(ENV):
        text = os.environ[ENV]
        try:
            requested = int(text)
        except ValueError:
            raise ConfigError(f"{ENV}={text!r}: expected a positive integer") from None
        source = ENV
    if requested is None:
        requested, source = available_cores(), "cores available to this process"
    if requested < 1:
        raise ConfigError(f"{source}: the thread count must be at least 1, got {requested}")
    torch.set_num_threads(requested)
    return requested, source
