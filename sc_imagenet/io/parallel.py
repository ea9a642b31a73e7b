"""A thread map that holds a bounded number of items in flight.

`ThreadPoolExecutor.map` submits every item before it yields the first result: over the ~900,000 files of an
ImageNet release that is ~900,000 futures (about a GB) alive at once. `ordered_map` keeps at most `window`
submitted, so memory stays flat however long the input is, and yields results in input order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 4, window: int = 256) -> Iterator[R]:
    """`fn(item)` for every item, computed `workers` at a time, yielded in the order of `items` (consumed lazily:
    at most `window` items are read ahead). An exception of `fn` is raised when its result is reached."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= max(1, window):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
