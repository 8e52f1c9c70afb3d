"""The process-wide deadline scheduler: one thread for every pool's query timeouts.

Why one shared scheduler, and why cancelled entries leave at once (seed 004): MySQL
Connector/J scheduled a ``TimerTask`` per statement with a query timeout, and ``cancel()`` only
flagged the task, so with a one-hour timeout every statement run in that hour stayed queued:
290,000 tasks, 2 GB. Here memory follows the statements *in flight*, never the statements *run*.

Structure: a binary heap of ``(when, seq, Deadline)`` tuples under one lock.

* ``call_later``/``call_at`` push: O(log n), and O(1) in practice when every statement uses the
  same timeout, because a later deadline stays at the bottom of the heap.
* ``Deadline.cancel()`` removes the entry **at once** when it is the heap's last element (the
  common case: the statement just scheduled is the one that just finished; removing the last
  array element keeps the heap valid). Otherwise it is flagged, and the heap is rebuilt without
  flagged entries as soon as they would outnumber the live ones. Hence the hard bound
  ``cancelled_pending <= entries_now`` at every moment outside the lock, and the amortised cost
  of a cancel stays O(1): a rebuild of ``2k + 1`` entries happens only after ``k + 1`` cancels.
* A true O(log n) delete from the middle would need every entry to know its heap index, i.e. a
  heap written in Python, several times slower per operation than :mod:`heapq`'s C code: the
  pair ``call_later`` + ``cancel`` runs around *every* statement, so it has to be cheap.

The thread, named ``poolkeeper-scheduler``, exists only while someone holds a lease: it starts
when the first user calls :func:`acquire_scheduler` and stops when the last lease is released.
Callbacks run on that thread and must be short (hand any I/O to another thread); an exception
in a callback is logged and counted, never fatal. Example::

    lease = acquire_scheduler("my-pool")
    handle = lease.call_later(2.5, lambda: print("too slow"))
    ...                       # the work being timed
    handle.cancel()           # True: removed before it fired
    lease.release()           # the last release stops the thread
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .errors import PoolError

__all__ = ["Deadline", "SchedulerLease", "acquire_scheduler", "memory_usage", "scheduler_stats"]

logger = logging.getLogger("poolkeeper.scheduler")

_monotonic = time.monotonic
_heappush = heapq.heappush
_heappop = heapq.heappop
THREAD_NAME = "poolkeeper-scheduler"
#: a callback running longer than this is logged: it delays every other pool's deadlines
SLOW_CALLBACK_S = 0.1
# Longest single wait: keeps Condition.wait far below threading.TIMEOUT_MAX on every platform.
_MAX_WAIT_S = 3600.0

Callback = Callable[[], object]


class Deadline:
    """A scheduled callback; :meth:`cancel` it when the work finished in time."""

    __slots__ = ("callback", "lease", "when")

    # Made by SchedulerLease.call_at, which sets the fields directly: a Python __init__ would
    # double the cost of creating one (about 0.2 us of a budget of about 1 us per statement).
    when: float  #: the ``time.monotonic()`` deadline
    callback: Callback | None  #: None once fired, cancelled or dropped
    lease: SchedulerLease

    def cancel(self) -> bool:
        """Remove the entry. True if it had not fired yet (so its callback will never run).

        False means the callback fired (it may still be running on the scheduler thread) or
        the entry was already cancelled.
        """
        s = _S
        with s.lock:
            if self.callback is None:
                return False
            self.callback = None
            self.lease._cancelled += 1
            s.cancelled += 1
            heap = s.heap
            if heap and heap[-1][2] is self:
                heap.pop()
                # Entries flagged earlier may now be at the end too: they go for free.
                while heap and heap[-1][2].callback is None:
                    heap.pop()
                    s.dead -= 1
            else:
                s.dead += 1
            # One live entry fewer either way: restore "flagged <= live" (2*dead <= len).
            if s.dead * 2 > len(heap):
                s.compact()
            return True

    @property
    def pending(self) -> bool:
        """True until the entry fires or is cancelled."""
        return self.callback is not None

    def __repr__(self) -> str:
        state = "pending" if self.callback is not None else "done"
        return f"<poolkeeper.Deadline in {self.when - _monotonic():.3f} s {state}>"


class SchedulerLease:
    """One user's registration with the shared scheduler (a pool, a hook, a test).

    While at least one lease is held the scheduler thread runs. :meth:`release` is idempotent;
    entries scheduled through a lease should be cancelled before it is released (any left are
    dropped, without running, when the last lease goes). Counters are per lease.
    """

    __slots__ = ("__weakref__", "_cancelled", "_dropped", "_fired", "_released", "_scheduled",
                 "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._released = False
        self._scheduled = 0
        self._cancelled = 0
        self._fired = 0
        self._dropped = 0

    def call_at(self, when: float, callback: Callback) -> Deadline:
        """Run ``callback`` on the scheduler thread at ``time.monotonic()`` time ``when``."""
        entry = Deadline()
        entry.when = when
        entry.callback = callback
        entry.lease = self
        s = _S
        with s.lock:
            if self._released:
                raise PoolError(f"scheduler lease {self.name!r} was released; acquire a new one "
                                "with acquire_scheduler() before scheduling")
            if s.run is None:
                s.start()  # only after a fork: the child has no scheduler thread yet
            s.seq += 1
            heap = s.heap
            _heappush(heap, (when, s.seq, entry))
            if len(heap) > s.max_entries:  # noqa: PLR1730 - cheaper than max() per statement
                s.max_entries = len(heap)
            self._scheduled += 1
            if when < s.wake_at:
                s.wake_at = when
                s.cond.notify()
        return entry

    def call_later(self, delay: float, callback: Callback) -> Deadline:
        """Run ``callback`` on the scheduler thread ``delay`` seconds from now."""
        return self.call_at(_monotonic() + delay, callback)

    def release(self, timeout: float = 5.0) -> bool:
        """Give the lease back; the last one stops the thread (waiting up to ``timeout``).

        Returns False if the thread was still running a callback after ``timeout``.
        """
        return _S.release(self, timeout)

    @property
    def released(self) -> bool:
        return self._released

    def stats(self, reset: bool = False) -> dict[str, int]:
        """This lease's counters: entries pending now, scheduled, cancelled in time, fired."""
        with _S.lock:
            out = {
                "entries_now": self._scheduled - self._cancelled - self._fired - self._dropped,
                "scheduled_num": self._scheduled,
                "cancelled_num": self._cancelled,
                "fired_num": self._fired,
                "dropped_num": self._dropped,
            }
            if reset:
                # Keep the difference (the entries still pending) in _scheduled.
                self._scheduled = out["entries_now"]
                self._cancelled = self._fired = self._dropped = 0
        return out

    def __enter__(self) -> SchedulerLease:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<poolkeeper.SchedulerLease {self.name!r}{' released' if self._released else ''}>"


class _Run:
    """One incarnation of the scheduler thread; ``stop`` is never reset, so a lease acquired
    while an old thread is still exiting starts a fresh thread instead of racing it."""

    __slots__ = ("stop", "thread")

    def __init__(self) -> None:
        self.stop = False
        self.thread: threading.Thread | None = None


class _Scheduler:
    """The singleton's state; every field is guarded by ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.heap: list[tuple[float, int, Deadline]] = []
        self.dead = 0  # flagged-cancelled entries still in the heap
        self.seq = 0
        #: when the thread wakes by itself: -inf while it is busy, inf while the heap is empty
        self.wake_at = math.inf
        self.run: _Run | None = None
        self.users = 0
        self.leases_total = 0
        self.threads_started = 0
        self.fired = 0
        self.cancelled = 0
        self.dropped = 0
        self.compactions = 0
        self.callback_errors = 0
        self.slow_callbacks = 0
        self.max_entries = 0

    # ------------------------------------------------------------------ users
    def acquire(self, name: str) -> SchedulerLease:
        lease = SchedulerLease(name)
        with self.lock:
            self.users += 1
            self.leases_total += 1
            if self.run is None:
                self.start()
        return lease

    def release(self, lease: SchedulerLease, timeout: float) -> bool:
        with self.lock:
            if lease._released:
                return True
            lease._released = True
            self.users -= 1
            if self.users > 0 or self.run is None:
                return True
            run, self.run = self.run, None
            run.stop = True
            self.drop_all()
            self.cond.notify_all()
        thread = run.thread
        if thread is None or thread is threading.current_thread():
            return True  # released from a callback: the thread exits when the callback returns
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("poolkeeper scheduler: the thread is still running a callback %g s "
                           "after the last user released it; it exits when the callback returns",
                           timeout)
            return False
        return True

    def start(self) -> None:
        """Start a thread (lock held)."""
        run = _Run()
        thread = threading.Thread(target=self.loop, args=(run,), name=THREAD_NAME, daemon=True)
        run.thread = thread
        self.run = run
        self.wake_at = -math.inf  # a new thread looks at the heap before it sleeps
        self.threads_started += 1
        thread.start()

    def drop_all(self) -> None:
        """Forget every pending entry without running it (lock held, last user gone)."""
        for _, _, entry in self.heap:
            if entry.callback is not None:
                entry.callback = None
                entry.lease._dropped += 1
                self.dropped += 1
        self.heap.clear()
        self.dead = 0
        self.wake_at = math.inf

    def compact(self) -> None:
        """Rebuild the heap without cancelled entries (lock held)."""
        live = [item for item in self.heap if item[2].callback is not None]
        heapq.heapify(live)
        self.heap = live
        self.dead = 0
        self.compactions += 1

    # ------------------------------------------------------------------ the thread
    def loop(self, run: _Run) -> None:
        due: list[tuple[Deadline, Callback]] = []
        while True:
            with self.lock:
                while True:
                    if run.stop:
                        return
                    heap = self.heap
                    now = _monotonic()
                    while heap and (heap[0][0] <= now or heap[0][2].callback is None):
                        entry = _heappop(heap)[2]
                        callback = entry.callback
                        if callback is None:
                            self.dead -= 1
                            continue
                        entry.callback = None
                        entry.lease._fired += 1
                        due.append((entry, callback))
                    if due:
                        self.fired += len(due)
                        if self.dead * 2 > len(heap):
                            self.compact()
                        self.wake_at = -math.inf
                        break
                    if heap:
                        target = heap[0][0]
                    elif self.wake_at > now:
                        # Keep the old target although its entry was cancelled: a spurious
                        # wake-up later is cheaper than being notified by every next schedule.
                        target = self.wake_at
                    else:
                        target = math.inf
                    self.wake_at = target
                    if target == math.inf:
                        self.cond.wait()
                    else:
                        self.cond.wait(min(target - now, _MAX_WAIT_S))
            for entry, callback in due:
                self.call(entry, callback)
            due.clear()

    def call(self, entry: Deadline, callback: Callback) -> None:
        start = _monotonic()
        try:
            callback()
        except BaseException:  # one bad callback must not stop every pool's timeouts
            with self.lock:
                self.callback_errors += 1
            logger.exception("poolkeeper scheduler: callback %r of %r failed; the scheduler "
                             "carries on", callback, entry.lease.name)
        took = _monotonic() - start
        if took > SLOW_CALLBACK_S:
            with self.lock:
                self.slow_callbacks += 1
            logger.warning("poolkeeper scheduler: callback %r of %r took %.3f s (limit %g s); "
                           "it delays every other deadline: move its I/O to another thread",
                           callback, entry.lease.name, took, SLOW_CALLBACK_S)

    # ------------------------------------------------------------------ fork
    def after_fork_in_child(self) -> None:
        # The parent's thread does not exist in the child and the lock may have been held at
        # the fork; the parent's pending deadlines belong to statements of the parent.
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.heap = []
        self.dead = 0
        self.run = None
        self.wake_at = math.inf


_S = _Scheduler()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_S.after_fork_in_child)


def acquire_scheduler(name: str = "") -> SchedulerLease:
    """Register a user of the shared scheduler; the first one starts its thread.

    Give the lease back with ``lease.release()`` (or use it as a context manager); the last
    release stops the thread, so no thread exists while nobody needs deadlines.
    """
    return _S.acquire(name)


# Per-entry bytes: the heap slot's tuple, its float and int, and the Deadline itself. The
# callback is owned (and counted) by whoever scheduled it.
_ENTRY_BYTES = (sys.getsizeof((0.0, 1 << 40, None)) + sys.getsizeof(1e9) + sys.getsizeof(1 << 40)
                + sys.getsizeof(Deadline()) + 8)


def scheduler_stats() -> dict[str, Any]:
    """A snapshot of the shared scheduler: entries now, counters, thread state, bytes used.

    ``entries_now`` counts live deadlines; ``cancelled_pending`` counts cancelled entries not
    yet removed, and is never larger than ``entries_now``.
    """
    s = _S
    with s.lock:
        n = len(s.heap)
        run = s.run
        return {
            "scheduler_users": s.users,
            "scheduler_thread_alive": bool(run is not None and run.thread is not None
                                           and run.thread.is_alive()),
            "scheduler_threads_started": s.threads_started,
            "scheduler_entries_now": n - s.dead,
            "scheduler_cancelled_pending": s.dead,
            "scheduler_entries_max": s.max_entries,
            "scheduler_bytes": sys.getsizeof(s.heap) + n * _ENTRY_BYTES,
            "scheduler_scheduled_num": s.seq,
            "scheduler_cancelled_num": s.cancelled,
            "scheduler_fired_num": s.fired,
            "scheduler_compactions_num": s.compactions,
            "scheduler_dropped_num": s.dropped,
            "scheduler_callback_errors_num": s.callback_errors,
            "scheduler_slow_callbacks_num": s.slow_callbacks,
        }


def memory_usage() -> tuple[int, int | None]:
    """``(bytes, budget)`` for the memory ledger: the heap and its entries; no fixed budget,
    since the entries are bounded by the statements in flight (at most two per statement)."""
    s = _S
    with s.lock:
        return sys.getsizeof(s.heap) + len(s.heap) * _ENTRY_BYTES, None
