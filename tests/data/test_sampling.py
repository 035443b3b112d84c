"""The sample order: the seeded epoch stream, and aspect-ratio grouped batches against a direct
simulation of detectron2's bucket loop (sharded stream, two buckets, first full bucket leaves)."""

import numpy as np
import pytest

from eclipse_seg.data.sampling import AspectRatioGroupedBatches, stream_offsets


def test_stream_is_a_seeded_permutation_per_epoch():
    n = 7
    positions = np.arange(3 * n)
    offsets = stream_offsets(5, 1, positions, n)
    for epoch in range(3):
        perm = np.random.default_rng([5, 1, epoch]).permutation(n)
        np.testing.assert_array_equal(offsets[epoch * n : (epoch + 1) * n], perm)
    assert not np.array_equal(offsets[:n], offsets[n : 2 * n])
    np.testing.assert_array_equal(stream_offsets(5, 1, [17, 2, 9], n), offsets[[17, 2, 9]])


def _bucket_loop(landscape, seed, step, batch_size, rank, world, count):
    """The reference: walk this process's share of the stream and fill two buckets."""
    buckets, batches, q = ([], []), [], 0
    while len(batches) < count:
        position = q * world + rank
        offset = stream_offsets(seed, step, [position], len(landscape))[0]
        bucket = buckets[0 if landscape[offset] else 1]
        bucket.append(position)
        if len(bucket) == batch_size:
            batches.append(list(bucket))
            bucket.clear()
        q += 1
    return batches


@pytest.mark.parametrize("batch_size, rank, world", [(4, 0, 1), (3, 1, 2), (1, 0, 1)])
def test_grouped_batches_equal_the_bucket_loop(batch_size, rank, world):
    landscape = np.random.default_rng(0).random(23) < 0.7
    grouped = AspectRatioGroupedBatches(landscape, 3, 2, batch_size, rank, world)
    expected = _bucket_loop(landscape, 3, 2, batch_size, rank, world, 60)
    # ask out of order and far ahead: the prefix grows as needed and stays consistent
    for i in [0, 1, 59, 5, *range(60)]:
        np.testing.assert_array_equal(grouped.positions(i), expected[i])


def test_batches_are_homogeneous_and_disjoint():
    landscape = np.random.default_rng(1).random(50) < 0.5
    grouped = AspectRatioGroupedBatches(landscape, 0, 0, 8, 0, 1)
    seen = []
    for i in range(40):
        positions = grouped.positions(i)
        flags = landscape[stream_offsets(0, 0, positions, 50)]
        assert flags.all() or not flags.any()
        seen.extend(positions.tolist())
    assert len(seen) == len(set(seen))


def test_single_aspect_dataset_is_the_plain_stream():
    grouped = AspectRatioGroupedBatches(np.ones(10, bool), 0, 0, 4, 1, 3)
    np.testing.assert_array_equal(grouped.positions(0), [1, 4, 7, 10])
    np.testing.assert_array_equal(grouped.positions(2), [25, 28, 31, 34])
