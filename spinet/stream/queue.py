"""The bounded queue between a source and the classifier: when the classifier falls behind, the oldest
waiting shots are dropped (and counted), so a live source never waits and latency stays bounded.

A file replayed as fast as possible is the exception: it uses :meth:`DropQueue.put` with ``block=True`` and
waits for room instead (nothing is lost, nothing is live).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class DropQueue(Generic[T]):
    """A FIFO of at most ``maxsize`` items that drops its oldest items when full.

    Args:
        maxsize: most items waiting (≥ 1).
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        self.maxsize = int(maxsize)
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, items: Sequence[T], block: bool = False, stop: threading.Event | None = None) -> tuple[int, int]:
        """Append ``items``.

        Args:
            items: new items, oldest first.
            block: wait for room instead of dropping, until ``stop`` is set; then the items not yet in are
                left out (the stream is ending: they were never taken).
            stop: ends a blocking wait.

        Returns:
            (waiting items dropped to make room, items left out because ``stop`` ended a blocking wait).
        """
        dropped = 0
        with self._cond:
            for k, item in enumerate(items):
                while block and len(self._items) >= self.maxsize:
                    if stop is not None and stop.is_set():
                        self._cond.notify_all()
                        return dropped, len(items) - k
                    self._cond.wait(0.05)
                if len(self._items) >= self.maxsize:
                    self._items.popleft()
                    dropped += 1
                self._items.append(item)
            self.dropped += dropped
            self._cond.notify_all()
        return dropped, 0

    def close(self) -> None:
        """No more items will come: :meth:`get_batch` returns what is left, then empty lists at once."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def get_batch(self, max_items: int, max_wait_s: float, timeout_s: float, arrival=None) -> list[T]:  # noqa: ANN001
        """Up to ``max_items`` items, oldest first.

        Waits at most ``timeout_s`` for a first item (returns [] if none came). Then waits until
        ``max_items`` are there or the first item has waited ``max_wait_s`` (its age from ``arrival(item)``,
        a ``time.monotonic()`` stamp, when given; else from now).
        """
        with self._cond:
            end = time.monotonic() + timeout_s
            while not self._items and not self.closed:
                left = end - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            if not self._items:
                return []
            t_first = arrival(self._items[0]) if arrival is not None else time.monotonic()
            deadline = t_first + max_wait_s
            while len(self._items) < max_items and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            n = min(max_items, len(self._items))
            out = [self._items.popleft() for _ in range(n)]
            self._cond.notify_all()
            return out
