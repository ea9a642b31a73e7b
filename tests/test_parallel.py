"""sc_imagenet.io.parallel.ordered_map: order, laziness (a bounded window), errors."""

from __future__ import annotations

import threading
import time

import pytest

from sc_imagenet.io.parallel import ordered_map


class TestOrderedMap:
    def test_results_in_input_order(self) -> None:
        def slow_for_small(x: int) -> int:
            time.sleep(0.002 * (10 - x % 10))  # earlier items finish later
            return x * x

        assert list(ordered_map(slow_for_small, range(50), workers=4, window=8)) == [x * x for x in range(50)]

    def test_reads_at_most_a_window_ahead(self) -> None:
        read = []

        def items():
            for i in range(1000):
                read.append(i)
                yield i

        out = ordered_map(lambda x: x, items(), workers=2, window=16)
        assert next(out) == 0
        assert len(read) <= 16  # not the whole input: memory stays bounded
        assert list(out) == list(range(1, 1000))

    def test_in_flight_is_bounded(self) -> None:
        lock, state = threading.Lock(), {"now": 0, "most": 0}

        def work(x: int) -> int:
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
            time.sleep(0.001)
            with lock:
                state["now"] -= 1
            return x

        assert sum(ordered_map(work, range(200), workers=3, window=5)) == sum(range(200))
        assert state["most"] <= 3

    def test_error_is_raised_at_its_item(self) -> None:
        def fail_on_7(x: int) -> int:
            if x == 7:
                raise ValueError("seven")
            return x

        out = ordered_map(fail_on_7, range(20), workers=2, window=4)
        assert [next(out) for _ in range(7)] == list(range(7))
        with pytest.raises(ValueError, match="seven"):
            next(out)

    def test_empty_input(self) -> None:
        assert list(ordered_map(lambda x: x, [], workers=2)) == []
