"""Idle slots, waiters and hand-off: the hot path. It knows nothing of databases.

One lock guards everything; nothing under it does I/O or allocates more than a waiter.

**Hand-off.** Waiters queue first come first served, each blocked on its own pre-acquired lock.
A returned slot goes straight to the oldest waiter (never through the idle stack, where a
newcomer could snatch it).

**Lease.** A strict hand-off on every return wakes a waiter into a GIL the returning thread
still holds: about three context switches per query, which halves throughput when threads
outnumber connections (see FIELD-NOTES, "hand-off under contention"). So a thread that got a
slot keeps a *lease* on it for ``lease_s``: while the lease is young, a return with waiters
queued *parks* the slot for that thread instead of handing it off, and the thread's next
borrow takes it back without waking anyone. When the lease has run out, the next return hands
the slot to the oldest waiter. Only connections with no open transaction are parked. A parked
slot whose owner stopped borrowing is reclaimed once its lease ends, by whichever thread next
touches the bag, or by a waiter re-checking every ``recheck_s``. ``lease_s = 0`` gives strict
FIFO hand-off.

**No lock on the common path.** With nobody waiting and nothing parked, the pool borrows with
``idle.pop()`` and returns with ``idle.append()`` (each atomic under the GIL) and takes no lock;
its counters live on the slot it holds (:mod:`.tally`). Everything else (waiting, hand-off,
parking, closing, housekeeping) happens under the lock, and the two meet by a store-then-check
on both sides:

- a lock-free return appends the slot, *then* looks at ``waiters`` and ``closed`` and, if either
  is set, calls :meth:`Bag.settle`;
- a borrower about to wait queues its waiter under the lock, *then* looks at the idle stack
  again and serves waiters from it (:meth:`Bag._serve_waiters`); :meth:`Bag.close` sets
  ``closed`` *then* drains the idle stack.

Under the GIL's total order, either the return sees the waiter (or the close), or the other side
sees the returned slot: a slot never sits idle while someone waits for it, nor in a closed bag.
The idle stack is therefore only ever mutated in place (pop, append, remove), never replaced,
so a lock-free caller holding the old reference cannot lose a slot. A borrow racing a new waiter
may take an idle slot first (like HikariCP's); waiters among themselves stay first come first
served.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import deque
from typing import Any

from ..errors import PoolClosed, TooManyWaiting
from .policy import opens_for_min_idle
from .slot import Slot, SlotState
from .tally import BOUNDS_S as _BOUNDS_S
from .tally import BUCKETS as _BUCKETS
from .tally import HISTOGRAM_BOUNDS_MS, count_usage

__all__ = ["HISTOGRAM_BOUNDS_MS", "Bag", "ThreadLease", "Waiter"]

_IDLE, _IN_USE, _PARKED, _RESERVED = (SlotState.IDLE, SlotState.IN_USE, SlotState.PARKED,
                                      SlotState.RESERVED)
_monotonic = time.monotonic
_get_ident = threading.get_ident


class ThreadLease(threading.local):
    """Per-thread lease state: the slot parked for this thread (the lease's start is kept on
    the slot itself, so the common path never touches this thread-local)."""

    def __init__(self) -> None:
        self.parked: Slot | None = None


class Waiter:
    """One caller queued for a slot; it sleeps on a lock that the hand-off releases."""

    __slots__ = ("error", "lock", "since", "slot")

    def __init__(self, now: float) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.slot: Slot | None = None
        self.error: BaseException | None = None
        self.since = now


class Bag:
    """Slots and waiters of one pool, with the counts that must change atomically with them."""

    def __init__(self, *, lease_s: float, max_waiting: int, recheck_s: float = 0.05) -> None:
        self.lock = threading.Lock()
        # right end = most recently returned (LIFO borrow); mutated in place only (see above)
        self.idle: deque[Slot] = deque()
        self.waiters: deque[Waiter] = deque()
        self.parked: list[Slot] = []
        self.lease_s = lease_s
        self.max_waiting = max_waiting
        self.recheck_s = recheck_s
        self.total = 0  #: open physical connections (idle + parked + in use + reserved)
        self.opening = 0  #: connection attempts under way
        self.generation = 0  #: bumped by expire_all(); older slots retire at their next return
        self.closed = False
        # Counters (under the lock) of the locked paths; the lock-free borrows and every
        # return are counted on the slots (tally.SlotTally). Requests and returns are not
        # counted separately: every request lands in exactly one wait-histogram bucket (or is
        # rejected), every return in one usage bucket, so the totals are the histogram sums.
        self.requests_rejected = 0
        self.requests_queued = 0
        self.requests_timeouts = 0
        self.requests_wait_s = 0.0
        self.handoffs = 0
        self.lease_parks = 0
        self.lease_reuses = 0
        self.wait_hist = [0] * _BUCKETS

    # ------------------------------------------------------------------ borrow
    def acquire(self, lease: ThreadLease, now: float) -> Slot | Waiter:
        """A slot now (marked in use), or a queued Waiter to pass to :meth:`wait`."""
        with self.lock:
            if self.closed:
                self.requests_rejected += 1
                raise PoolClosed("the pool is closed")
            slot = lease.parked
            if slot is not None:
                lease.parked = None
                if slot.parked_by is lease and slot.state is _PARKED:
                    self.parked.remove(slot)
                    slot.parked_by = None
                    slot.state = _IN_USE
                    self.lease_reuses += 1
                    self.wait_hist[0] += 1
                    return slot
            if self.parked:
                self._unpark_expired(now)
            if self.idle:
                slot = self.idle.pop()
                slot.state = _IN_USE
                slot.lease_start = now
                self.wait_hist[0] += 1
                return slot
            if self.max_waiting and len(self.waiters) >= self.max_waiting:
                self.requests_rejected += 1
                raise TooManyWaiting(
                    f"{len(self.waiters)} callers are already waiting (max_waiting="
                    f"{self.max_waiting}); raise max_waiting or max_size, or shed load earlier"
                )
            waiter = Waiter(now)
            self.waiters.append(waiter)
            self.requests_queued += 1
            if self.idle:  # a lock-free return came in since the check above: see the docstring
                self._serve_waiters()
            return waiter

    def wait(self, waiter: Waiter, deadline: float) -> Slot | None:
        """Block until a slot is handed to ``waiter`` or ``deadline``; None on timeout."""
        lock = waiter.lock
        while True:
            remaining = deadline - _monotonic()
            if remaining <= 0:
                break
            if lock.acquire(timeout=min(remaining, self.recheck_s)):
                break
            # Woken by the re-check timer: reclaim a parked slot whose owner went quiet.
            with self.lock:
                if waiter.slot is not None or waiter.error is not None:
                    break
                if self.parked:
                    self._unpark_expired(_monotonic())
                if self.idle:  # cannot happen by the protocol; cheap to make sure
                    self._serve_waiters()
                if waiter.slot is not None:
                    break
        with self.lock:
            if waiter.error is not None:  # counted as rejected by close()
                raise waiter.error
            now = _monotonic()
            waited = now - waiter.since
            self.requests_wait_s += waited
            self.wait_hist[bisect_left(_BOUNDS_S, waited)] += 1
            if waiter.slot is None:
                self.waiters.remove(waiter)
                self.requests_timeouts += 1
                return None
            return waiter.slot

    # ------------------------------------------------------------------ return
    def release(self, slot: Slot, lease: ThreadLease, now: float, usage_s: float) -> bool:
        """Give a healthy slot back: park it, hand it to the oldest waiter, or make it idle.

        ``lease`` is the returning thread's. A slot is parked only for the thread that
        borrowed it and only with no transaction left open (``slot.dirty``). False means the
        bag is closed: close the connection.
        """
        count_usage(slot, usage_s)
        with self.lock:
            if self.closed:
                self.total -= 1
                slot.state = SlotState.CLOSED
                return False
            if self.waiters:
                if (self.lease_s > 0.0 and now - slot.lease_start < self.lease_s
                        and lease.parked is None and not slot.dirty
                        and slot.borrow_thread == _get_ident()):
                    slot.state = _PARKED
                    slot.parked_by = lease
                    slot.parked_until = slot.lease_start + self.lease_s
                    lease.parked = slot
                    self.parked.append(slot)
                    self.lease_parks += 1
                    return True
                self._handoff(slot)
                return True
            slot.state = _IDLE
            self.idle.append(slot)
            return True

    def settle(self) -> list[Slot]:
        """After a lock-free return saw waiters or a close: hand idle slots to the waiters, or
        take them out of a closed bag. Returns the slots the caller must close."""
        with self.lock:
            if self.closed:
                return self._drain_idle()
            self._serve_waiters()
            return []

    def add_new(self, slot: Slot) -> bool:
        """A freshly opened slot joins the pool; False if the pool closed meanwhile."""
        with self.lock:
            self.opening -= 1
            if self.closed:
                slot.state = SlotState.CLOSED
                return False
            self.total += 1
            if self.waiters:
                self._handoff(slot)
            else:
                slot.state = _IDLE
                self.idle.append(slot)
            return True

    def give_back_reserved(self, slot: Slot) -> bool:
        """Return a slot the housekeeper reserved (after a keepalive ping)."""
        with self.lock:
            if self.closed:
                self.total -= 1
                slot.state = SlotState.CLOSED
                return False
            if self.waiters:
                self._handoff(slot)
            else:
                slot.state = _IDLE
                self.idle.appendleft(slot)  # it was idle longest: keep it at the cold end
            return True

    def _serve_waiters(self) -> None:
        """Hand idle slots to waiters, oldest waiter first (under the lock)."""
        idle = self.idle
        while self.waiters:
            try:
                slot = idle.pop()
            except IndexError:  # a lock-free borrower took it first
                return
            self._handoff(slot)

    def _drain_idle(self) -> list[Slot]:
        """Take every idle slot out of a closed bag (under the lock); one pop at a time, so a
        lock-free borrower racing this gets each slot or not, never one both sides hold."""
        drained: list[Slot] = []
        idle = self.idle
        while True:
            try:
                slot = idle.pop()
            except IndexError:
                break
            slot.state = SlotState.CLOSED
            drained.append(slot)
        self.total -= len(drained)
        return drained

    def _handoff(self, slot: Slot) -> None:
        waiter = self.waiters.popleft()
        slot.state = _IN_USE
        waiter.slot = slot
        self.handoffs += 1
        waiter.lock.release()

    def _unpark_expired(self, now: float) -> None:
        keep: list[Slot] = []
        for slot in self.parked:
            if slot.parked_until > now:
                keep.append(slot)
                continue
            slot.parked_by = None
            if self.waiters:
                self._handoff(slot)
            else:
                slot.state = _IDLE
                self.idle.append(slot)
        self.parked = keep

    # ------------------------------------------------------------------ accounting
    def forget(self, slot: Slot) -> None:
        """A slot leaves the pool for good (broken, expired, reclaimed)."""
        with self.lock:
            if slot.state is not SlotState.CLOSED:
                slot.state = SlotState.CLOSED
                self.total -= 1

    def reserve_opens(self, min_idle: int, max_size: int) -> int:
        """How many connections to open now (for waiters and min_idle), reserved as opening.

        ``min_idle`` counts open connections, idle or lent, like the idle expiry
        (``policy.idle_evictions``): so a light load never opens what the expiry closes.
        """
        with self.lock:
            if self.closed:
                return 0
            for_waiters = len(self.waiters) - self.opening
            for_min_idle = opens_for_min_idle(self.total, self.opening, min_idle)
            room = max_size - self.total - self.opening
            n = min(max(for_waiters, for_min_idle, 0), room)
            if n > 0:
                self.opening += n
            return max(n, 0)

    def open_failed(self) -> None:
        with self.lock:
            self.opening -= 1

    def take_idle(self, pick: Any) -> list[Slot]:
        """Reserve the idle slots chosen by ``pick(idle_oldest_first, now)`` for housekeeping."""
        with self.lock:
            self._unpark_expired(_monotonic())
            chosen = pick(list(self.idle), _monotonic())
            taken: list[Slot] = []
            for slot in chosen:
                try:
                    self.idle.remove(slot)  # in place: see the docstring
                except ValueError:  # a lock-free borrower took it meanwhile
                    continue
                slot.state = _RESERVED
                taken.append(slot)
            return taken

    def close(self) -> list[Slot]:
        """Close the bag: wake every waiter with PoolClosed; return the idle and parked slots."""
        with self.lock:
            self.closed = True
            slots = self._drain_idle()
            for slot in self.parked:
                slot.state = SlotState.CLOSED
                slot.parked_by = None
            slots += self.parked
            self.total -= len(self.parked)
            self.parked = []
            while self.waiters:
                waiter = self.waiters.popleft()
                waiter.error = PoolClosed("the pool was closed while waiting for a connection")
                self.requests_rejected += 1
                waiter.lock.release()
            return slots

    def counts(self) -> dict[str, int]:
        with self.lock:
            idle = len(self.idle) + len(self.parked)
            return {
                "total": self.total,
                "idle": idle,
                "active": self.total - idle,
                "waiting": len(self.waiters),
                "opening": self.opening,
                "parked": len(self.parked),
            }

    def pop_counters(self, reset: bool, tally: dict[str, Any]) -> dict[str, Any]:
        """The counters, with ``tally`` (:meth:`.SlotTally.read`) merged in."""
        with self.lock:
            wait_hist = list(self.wait_hist)
            wait_hist[0] += tally["fast_borrows"]
            usage_hist = tally["usage_hist"]
            out: dict[str, Any] = {
                "requests_num": sum(wait_hist) + self.requests_rejected,
                "requests_rejected": self.requests_rejected,
                "requests_queued": self.requests_queued,
                "requests_timeouts": self.requests_timeouts,
                "requests_wait_ms": round(self.requests_wait_s * 1000.0, 3),
                "handoffs_num": self.handoffs,
                "lease_parks_num": self.lease_parks,
                "lease_reuses_num": self.lease_reuses,
                "returns_num": sum(usage_hist),
                "usage_ms": round(tally["usage_s"] * 1000.0, 3),
                "wait_ms_histogram": wait_hist,
                "usage_ms_histogram": list(usage_hist),
            }
            if reset:
                self.requests_rejected = self.requests_queued = self.requests_timeouts = 0
                self.handoffs = self.lease_parks = self.lease_reuses = 0
                self.requests_wait_s = 0.0
                self.wait_hist = [0] * _BUCKETS
            return out
