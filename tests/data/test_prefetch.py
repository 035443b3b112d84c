"""The sample thread pool: results in job order, the batch submitted ahead is the one returned
next, a different request recomputes, and errors reach the caller."""

import threading

import pytest

from eclipse_seg.data.prefetch import Prefetcher
from eclipse_seg.errors import DataError


def _jobs(tag, n, calls):
    def job(j):
        calls.append((tag, threading.current_thread().name))
        return (tag, j)

    return [lambda j=j: job(j) for j in range(n)]


def test_ahead_submission_is_returned_next():
    calls = []
    p = Prefetcher(2)
    assert p.run("a", _jobs("a", 3, calls), ahead=("b", _jobs("b", 3, calls))) == [
        ("a", 0),
        ("a", 1),
        ("a", 2),
    ]
    assert p.run("b", _jobs("b-again", 3, calls)) == [("b", 0), ("b", 1), ("b", 2)]
    assert all(tag != "b-again" and name.startswith("samples") for tag, name in calls)
    # asked for something else than what was submitted ahead: computed afresh
    p.run("c", _jobs("c", 1, calls), ahead=("d", _jobs("d", 1, calls)))
    assert p.run("e", _jobs("e", 2, calls)) == [("e", 0), ("e", 1)]
    p.close()
    assert p.run("f", _jobs("f", 1, calls)) == [("f", 0)]  # closed: runs in the caller
    assert calls[-1] == ("f", threading.current_thread().name)


def test_no_workers_runs_in_the_caller_without_lookahead():
    calls = []
    p = Prefetcher(0)
    assert p.run("a", _jobs("a", 2, calls), ahead=("b", _jobs("b", 2, calls))) == [
        ("a", 0),
        ("a", 1),
    ]
    assert [tag for tag, _ in calls] == ["a", "a"]
    assert p.run("b", _jobs("b2", 1, calls)) == [("b2", 0)]


def test_errors_reach_the_caller():
    def bad():
        raise DataError("x.png: corrupt")

    p = Prefetcher(2)
    with pytest.raises(DataError, match="x.png: corrupt"):
        p.run(0, [bad])
    p.close()
