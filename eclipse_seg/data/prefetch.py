"""Training samples produced by a thread pool, the next batch while the current one trains.

The official pipelines cost tens of milliseconds per image on a CPU core (Pillow resizes to up to
1280 x 1707, OpenCV's HSV round trips), which the official code spreads over DataLoader worker
processes. Pillow, OpenCV, numpy and torch release the GIL in that work, so threads give the same
overlap without pickling. Every sample is a pure function of its arguments (its own seeded
generator), so the results do not depend on the scheduling.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["Prefetcher", "default_workers"]


def default_workers(world: int = 1) -> int:
    """Threads per process: up to 8 (the official loaders' worker count), sharing the CPUs among
    the ``world`` processes of a machine."""
    return max(1, min(8, (os.cpu_count() or 1) // max(1, world)))


class Prefetcher:
    """``run(key, jobs, ahead)`` returns ``[job() for job in jobs]``, computed in the pool (or taken
    from an earlier ``ahead`` submission under the same key), and submits ``ahead = (key, jobs)``
    for the next call. ``workers`` 0 runs everything in the caller's thread, nothing ahead."""

    def __init__(self, workers: int):
        self._pool = (
            ThreadPoolExecutor(workers, thread_name_prefix="samples") if workers > 0 else None
        )
        self._pending: tuple[Hashable, list[Future]] | None = None

    def run(
        self,
        key: Hashable,
        jobs: Sequence[Callable[[], Any]],
        ahead: tuple[Hashable, Sequence[Callable[[], Any]]] | None = None,
    ) -> list:
        if self._pool is None:
            return [job() for job in jobs]
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == key:
            futures = pending[1]
        else:
            if pending is not None:  # asked for something else (e.g. another step): drop it
                for f in pending[1]:
                    f.cancel()
            futures = [self._pool.submit(job) for job in jobs]
        if ahead is not None:
            self._pending = (ahead[0], [self._pool.submit(job) for job in ahead[1]])
        return [f.result() for f in futures]

    def close(self) -> None:
        """Drop pending work and stop the threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool, self._pending = None, None
