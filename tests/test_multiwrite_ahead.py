"""convert.multiwrite.ahead: the worker thread that makes row chunks ahead of the writer."""

from __future__ import annotations

import threading

import pytest

from exaone_gguf.convert.multiwrite import ahead


def test_items_arrive_in_order_and_the_source_is_closed() -> None:
    closed = threading.Event()

    def source():
        try:
            yield from range(50)
        finally:
            closed.set()

    assert list(ahead(source(), 2)) == list(range(50))
    assert closed.is_set()


def test_a_worker_failure_is_raised_to_the_consumer_after_the_items_before_it() -> None:
    def source():
        yield 1
        yield 2
        raise ValueError("tensor blk.3 is broken")

    got = []
    with pytest.raises(ValueError, match="blk.3 is broken"):
        for x in ahead(source(), 2):
            got.append(x)
    assert got == [1, 2]


def test_a_consumer_that_stops_stops_the_worker_within_the_depth() -> None:
    """The writer failing (a full disk) must not leave the worker making chunks: it stops at its next item,
    is joined, and has made at most the consumed items, the queue's depth and the one it was handing over."""
    made = []
    closed = threading.Event()

    def source():
        try:
            for i in range(10_000):
                made.append(i)
                yield i
        finally:
            closed.set()

    items = ahead(source(), 2)
    assert next(items) == 0
    items.close()
    assert closed.is_set()
    assert len(made) <= 1 + 2 + 1
