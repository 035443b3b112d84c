"""The order of training samples, a pure function of (seed, step, iteration): no sampler state to
save, so a resumed run draws exactly the batches the uninterrupted run would have drawn.

The stream: epoch after epoch, a permutation of the step's images seeded by (seed, step, epoch).
With aspect-ratio grouping (detectron2's ``AspectRatioGroupedDataset``, used by the official
training loaders), each process reads every ``world``-th element of the stream (rank ``r`` from
``r``), puts it in one of two buckets, landscape (width > height) or not, and a batch is whatever
bucket fills up first; batch ``i`` is the ``i``-th bucket to fill.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AspectRatioGroupedBatches", "stream_offsets"]


def stream_offsets(seed: int, step: int, positions: np.ndarray | list[int], n: int) -> np.ndarray:
    """Stream positions -> offsets in [0, n): position ``p`` is element ``p mod n`` of the
    permutation of epoch ``p // n``, seeded by (seed, step, epoch)."""
    positions = np.asarray(positions, dtype=np.int64)
    epochs, offsets = np.divmod(positions, n)
    out = np.empty_like(positions)
    for epoch in np.unique(epochs):
        at = epochs == epoch
        perm = np.random.default_rng([seed, step, int(epoch)]).permutation(n)
        out[at] = perm[offsets[at]]
    return out


class AspectRatioGroupedBatches:
    """Batches of stream positions for one process, grouped by aspect ratio.

    ``landscape``: (n,) bool, width > height for each of the step's images (stream offsets).
    ``positions(i)`` gives the ``batch_size`` global stream positions of iteration ``i``, in the
    order they entered their bucket. The grouping is computed for a prefix of the stream and
    extended (doubling) when a later iteration asks for more, so a run costs linear time overall.
    """

    def __init__(
        self,
        landscape: np.ndarray,
        seed: int,
        step: int,
        batch_size: int,
        rank: int = 0,
        world: int = 1,
    ):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.landscape = np.asarray(landscape, dtype=bool)
        if self.landscape.size == 0:
            raise ValueError("no images to sample from")
        self.seed, self.step, self.batch_size = seed, step, batch_size
        self.rank, self.world = rank, world
        self._batches = np.zeros((0, batch_size), dtype=np.int64)  # local positions per batch
        self._length = 0  # local stream prefix the batches were computed from

    def positions(self, iteration: int) -> np.ndarray:
        """(batch_size,) int64 global stream positions of batch ``iteration`` of this process."""
        if iteration >= len(self._batches):
            self._extend(max(2 * self._length, (iteration + 3) * self.batch_size))
        return self._batches[iteration] * self.world + self.rank

    def _extend(self, length: int) -> None:
        # the two buckets hold fewer than 2 * batch_size leftovers, so (iteration + 3) * batch_size
        # elements fill more than iteration + 1 batches
        local = np.arange(length, dtype=np.int64)
        n = self.landscape.size
        flags = self.landscape[
            stream_offsets(self.seed, self.step, local * self.world + self.rank, n)
        ]
        chunks, ends = [], []
        for members in (np.flatnonzero(flags), np.flatnonzero(~flags)):
            full = len(members) // self.batch_size * self.batch_size
            groups = members[:full].reshape(-1, self.batch_size)
            chunks.append(groups)
            ends.append(groups[:, -1])  # a batch leaves when its last member arrives
        order = np.argsort(np.concatenate(ends), kind="stable")
        self._batches = np.concatenate(chunks)[order]
        self._length = length
