"""The background thread that makes the trainer's batches ahead."""

from __future__ import annotations

import threading
import time

import pytest

from leanfit.train.prefetch import Prefetched


def test_items_come_in_order_and_end():
    with Prefetched(iter(range(50)), depth=3) as items:
        assert list(items) == list(range(50))
        assert list(items) == []  # an ended iterator stays ended


def test_an_error_while_making_an_item_is_raised_in_its_place():
    def items():
        yield 1
        raise ValueError("corrupt batch")

    with Prefetched(items()) as feed:
        assert next(feed) == 1
        with pytest.raises(ValueError, match="corrupt batch"):
            next(feed)
        with pytest.raises(StopIteration):
            next(feed)


def test_close_stops_the_thread_without_making_everything():
    made = []

    def items():
        for i in range(1000):
            made.append(i)
            time.sleep(0.001)
            yield i

    feed = Prefetched(items(), depth=2)
    assert next(feed) == 0
    feed.close()
    assert not [t for t in threading.enumerate() if t.name == "leanfit-prefetch"]
    assert len(made) <= 5, "at most the depth plus the item being made, after the one taken"
    with pytest.raises(StopIteration):
        next(feed)


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        Prefetched(iter([]), depth=0)
