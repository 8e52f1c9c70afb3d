"""Background work for one pool: opening and closing connections, and periodic housekeeping.

Tasks are small callables that hold the pool by weakref, so a queued task never keeps a pool
alive; a pool that is garbage-collected without close() stops its workers through a finalizer.
Both queues are bounded by construction: at most one open or close task per connection
(``max_size``), exactly one periodic housekeeping entry re-armed after each run, and at most
one timed reconnect attempt while connecting fails (the pool's backoff).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["Worker"]

logger = logging.getLogger("poolkeeper.pool")
_monotonic = time.monotonic


class Worker:
    """A few daemon threads running immediate tasks and tasks due at a time."""

    def __init__(self, name: str, threads: int = 2) -> None:
        self.name = name
        self._cond = threading.Condition(threading.Lock())
        self._ready: deque[Callable[[], None]] = deque()
        self._timed: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._run, name=f"poolkeeper-{name}-worker-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, task: Callable[[], None]) -> None:
        """Run ``task`` as soon as a worker thread is free."""
        with self._cond:
            if self._stopping:
                return
            self._ready.append(task)
            self._cond.notify()

    def call_later(self, delay: float, task: Callable[[], None]) -> int:
        """Run ``task`` after ``delay`` seconds; returns a handle for :meth:`cancel`."""
        with self._cond:
            handle = next(self._seq)
            if self._stopping:
                return handle
            heapq.heappush(self._timed, (_monotonic() + delay, handle, task))
            self._cond.notify()
            return handle

    def cancel(self, handle: int) -> bool:
        """Remove a task queued by :meth:`call_later`; False if it already ran (or is running).

        The entry leaves the queue at once (the queue holds a few entries: the housekeeping
        pass and at most one reconnect attempt), so a cancelled task is never left behind.
        """
        with self._cond:
            for i, entry in enumerate(self._timed):
                if entry[1] == handle:
                    self._timed[i] = self._timed[-1]
                    self._timed.pop()
                    heapq.heapify(self._timed)
                    return True
            return False

    def pending(self) -> dict[str, int]:
        """How many tasks are queued: ``ready`` (to run now) and ``timed`` (due later)."""
        with self._cond:
            return {"ready": len(self._ready), "timed": len(self._timed)}

    def stop(self, timeout: float = 5.0) -> list[str]:
        """Stop every thread; returns the names of any that did not stop within ``timeout``."""
        with self._cond:
            self._stopping = True
            self._ready.clear()
            self._timed.clear()
            self._cond.notify_all()
        current = threading.current_thread()
        deadline = _monotonic() + timeout
        stuck = []
        for thread in self._threads:
            if thread is current:
                continue
            thread.join(max(0.0, deadline - _monotonic()))
            if thread.is_alive():
                stuck.append(thread.name)
        return stuck

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def _next_task(self) -> Callable[[], None] | None:
        with self._cond:
            while not self._stopping:
                if self._ready:
                    return self._ready.popleft()
                if self._timed:
                    due = self._timed[0][0] - _monotonic()
                    if due <= 0:
                        return heapq.heappop(self._timed)[2]
                    self._cond.wait(due)
                else:
                    self._cond.wait()
            return None

    def _run(self) -> None:
        while (task := self._next_task()) is not None:
            try:
                task()
            except Exception:
                logger.exception("poolkeeper %s: a background task failed", self.name)
