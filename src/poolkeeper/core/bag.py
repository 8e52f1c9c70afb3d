"""Idle slots, waiters and hand-off: the decisions of borrow and return, with no I/O.

The bag knows nothing of databases, threads or event loops. A shell (the thread pool, the
asyncio pool) asks it for a slot and gets one of three answers: *here is a slot*; *here is your
waiter, queued* (a :class:`Waiter` of the shell's own class, made by the bag under its lock); or
an exception (closed, too many waiting). On return, the bag decides whether the slot goes idle,
to the oldest waiter, or is parked for its borrower; it tells the shell which slots to close (a
closed bag's). Giving a slot to a waiter is one step under the lock: the bag assigns it and
calls :meth:`Waiter.wake`, which the shell defines (release a lock, resolve a future) and which
must neither block nor do I/O. The waiting itself (and its deadline, re-checks and cancellation)
is the shell's; it ends every wait with :meth:`Bag.end_wait`.

The lock is the shell's too (``lock=``, with ``acquire``/``release`` and ``with``): the thread
shell passes a ``threading.Lock``. One lock guards everything; nothing under it does I/O or
allocates more than a waiter.

**Hand-off.** Waiters queue first come first served. A returned slot goes straight to the oldest
waiter (never through the idle stack, where a newcomer could snatch it). Each waiter has an
explicit state (:class:`WaiterState`): waiting, assigned (a slot was handed to it, it has not
taken it yet), taken, cancelled. A waiter cancelled after it was assigned gives its slot back
(:meth:`Bag.end_wait` returns it for the shell to give back), so no slot is lost to a
cancellation or a timeout racing a hand-off.

**Lease** (the thread shell's strategy; ``lease_s=0`` turns it off, and the asyncio shell has no
use for it). A strict hand-off on every return wakes a waiter into a GIL the returning thread
still holds: about three context switches per query, which halves throughput when threads
outnumber connections (see FIELD-NOTES, "hand-off under contention"). So a borrower, identified
by a hashable *owner* token of the shell's (the thread shell passes the thread's ident), keeps a
lease on the slot it got for ``lease_s``: while the lease is young, a return with waiters queued
*parks* the slot for that owner instead of handing it off, and the owner's next borrow takes it
back without waking anyone. (The return does not say who returns: a connection handed to another
thread and returned there is parked for its borrower, at most for the lease.) When the lease has
run out, the next return hands the slot to the oldest waiter. Only connections with no open
transaction are parked. A parked slot whose owner stopped borrowing is reclaimed once its lease
ends, by whichever caller next touches the bag, or by a waiter's re-check (:meth:`Bag.recheck`).

**Two twins.** :class:`Bag` takes its lock on every borrow and return: it is correct on any
interpreter, the free-threaded one included. :class:`LockFreeBag` (see its docstring) borrows
and returns without the lock in the common case, which is correct only under the GIL; a shell
uses it only where ``sys._is_gil_enabled()`` says so (:func:`make_bag`).
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..errors import PoolClosed, TooManyWaiting
from .histogram import BOUNDS_S as _BOUNDS_S
from .histogram import BUCKETS as _BUCKETS
from .histogram import FIRST_BOUND_S as _FIRST_BOUND_S
from .histogram import HISTOGRAM_BOUNDS_MS
from .policy import opens_for_min_idle
from .slot import Slot, SlotState
from .tally import count_usage

__all__ = ["HISTOGRAM_BOUNDS_MS", "Bag", "LockFreeBag", "Waiter", "WaiterState", "make_bag"]

_IDLE, _IN_USE, _PARKED, _RESERVED, _CLOSED = (SlotState.IDLE, SlotState.IN_USE,
                                               SlotState.PARKED, SlotState.RESERVED,
                                               SlotState.CLOSED)
#: "close nothing": what a return answers in the common case (no allocation)
_NOTHING: tuple[Slot, ...] = ()


class _Lock(Protocol):
    """What the bag needs of the shell's lock (``threading.Lock`` is one)."""

    def acquire(self) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, t: Any, v: Any, tb: Any, /) -> Any: ...


class WaiterState(enum.IntEnum):
    WAITING = 0  #: queued
    ASSIGNED = 1  #: a slot was handed to it; the shell has not taken it yet
    TAKEN = 2  #: the shell took the slot (end_wait returned it)
    CANCELLED = 3  #: left the queue without a slot: timed out, cancelled, or the bag closed


class Waiter:
    """One caller queued for a slot. The shell subclasses it and defines :meth:`wake`."""

    __slots__ = ("error", "since", "slot", "state")

    def __init__(self, now: float) -> None:
        self.slot: Slot | None = None
        self.error: BaseException | None = None  #: set when the bag closed under it
        self.since = now
        self.state = WaiterState.WAITING

    def wake(self) -> None:
        """Called under the bag's lock once ``slot`` or ``error`` is set: must not block."""
        raise NotImplementedError


class Bag:
    """Slots and waiters of one pool, with the counts that must change atomically with them.

    Every borrow and return takes the lock (the twin that is correct without the GIL).
    """

    def __init__(self, *, lock: _Lock, lease_s: float,
                 max_waiting: int) -> None:
        self.lock = lock
        # right end = most recently returned (LIFO borrow); mutated in place only (see
        # LockFreeBag: a lock-free caller may hold the reference)
        self.idle: deque[Slot] = deque()
        self.waiters: deque[Waiter] = deque()
        self.parked: dict[Any, Slot] = {}  #: by owner: at most one parked slot per owner
        self.lease_s = lease_s
        self.max_waiting = max_waiting
        self.total = 0  #: open physical connections (idle + parked + in use + reserved)
        self.opening = 0  #: connection attempts under way
        self.generation = 0  #: bumped by expire_all(); older slots retire at their next return
        self.closed = False
        # Counters (under the lock). Borrows that took no lock (LockFreeBag) and every
        # return's usage are counted on the slots (tally.SlotTally). Requests and returns are
        # not counted separately: every request lands in exactly one wait-histogram bucket (or
        # is rejected), every return in one usage bucket, so the totals are the histogram sums.
        self.requests_rejected = 0
        self.requests_queued = 0
        self.requests_timeouts = 0
        self.requests_cancelled = 0
        self.requests_wait_s = 0.0
        self.handoffs = 0
        self.lease_parks = 0
        self.lease_reuses = 0
        self.wait_hist = [0] * _BUCKETS

    # ------------------------------------------------------------------ borrow
    def borrow(self, now: float, owner: Any, new_waiter: Callable[[float], Waiter]
               ) -> Slot | Waiter:
        """A slot now (marked in use), or a waiter made by ``new_waiter(now)`` and queued.

        ``owner`` identifies the borrower for the lease (a hashable token, or None for no
        lease). The shell waits on the waiter, then calls :meth:`end_wait`.
        """
        # acquire/release, not `with`: 0.12 us less per locked borrow and per return on
        # CPython 3.11 (timeit: a `with` on a lock 0.20 us, acquire + release 0.07 us)
        lock = self.lock
        lock.acquire()
        try:
            if self.closed:
                self.requests_rejected += 1
                raise PoolClosed("the pool is closed")
            if self.parked:
                slot: Slot | None = self.parked.pop(owner, None)
                if slot is not None:  # parked for this owner: its lease goes on
                    slot.state = _IN_USE
                    self.lease_reuses += 1
                    self.wait_hist[0] += 1
                    return slot
                self._unpark_expired(now)
            if self.idle:
                slot = self.idle.pop()
                slot.state = _IN_USE
                slot.lease_start = now
                slot.lease_owner = owner
                self.wait_hist[0] += 1
                return slot
            if self.max_waiting and len(self.waiters) >= self.max_waiting:
                self.requests_rejected += 1
                raise TooManyWaiting(
                    f"{len(self.waiters)} callers are already waiting (max_waiting="
                    f"{self.max_waiting}); raise max_waiting or max_size, or shed load earlier"
                )
            waiter = new_waiter(now)
            self.waiters.append(waiter)
            self.requests_queued += 1
            self._after_enqueue()
            return waiter
        finally:
            lock.release()

    def _after_enqueue(self) -> None:
        """Under the lock, right after a waiter was queued (LockFreeBag serves it from a slot
        a lock-free return pushed meanwhile)."""

    def recheck(self, now: float) -> None:
        """A waiter's periodic re-check (the thread shell's timer): reclaim parked slots whose
        lease ran out (their owner went quiet), for the waiters."""
        with self.lock:
            if self.parked:
                self._unpark_expired(now)
            if self.idle and self.waiters:  # cannot happen by the protocol; cheap to make sure
                self._serve_waiters()

    def end_wait(self, waiter: Waiter, now: float, owner: Any = None, *,
                 cancelled: bool = False) -> Slot | None:
        """End ``waiter``'s wait: its slot (now taken), or None after a timeout or a cancel.

        The shell calls this once, when its wait ended for any reason. ``cancelled`` says the
        caller gave up for a reason of its own (an asyncio cancellation) rather than its
        deadline; either way a slot assigned meanwhile is returned, for the shell to use or,
        when it gives up anyway, to :meth:`give_back`. ``owner``: the waiter's lease owner
        (see :meth:`borrow`), now the slot's. Raises the error the bag woke it with
        (PoolClosed) when it closed.
        """
        with self.lock:
            if waiter.error is not None:  # counted as rejected by close()
                waiter.state = WaiterState.CANCELLED
                raise waiter.error
            waited = now - waiter.since
            self.requests_wait_s += waited
            self.wait_hist[bisect_left(_BOUNDS_S, waited)] += 1
            slot = waiter.slot
            if slot is None:
                self.waiters.remove(waiter)
                waiter.state = WaiterState.CANCELLED
                if cancelled:
                    self.requests_cancelled += 1
                else:
                    self.requests_timeouts += 1
                return None
            waiter.state = WaiterState.TAKEN
            slot.lease_start = now
            slot.lease_owner = owner
            return slot

    # ------------------------------------------------------------------ return
    def give_back(self, slot: Slot, now: float, usage: float | None) -> Sequence[Slot]:
        """Give a healthy slot back: park it, hand it to the oldest waiter, or make it idle.

        ``usage``: how long the checkout held it, in seconds, counted in the usage histogram
        (None: it was handed to a waiter that left before taking it, and never lent).

        A slot is parked only for the owner that borrowed it (``slot.lease_owner``; None never
        parks), only if that owner has none parked yet, and only with no transaction left open
        (``slot.dirty``). Returns the slots the shell must close (this one, when the bag is
        closed; usually none).
        """
        if usage is not None:
            count_usage(slot, usage)
        return self._give_back_counted(slot, now)

    def _give_back_counted(self, slot: Slot, now: float) -> Sequence[Slot]:
        """give_back() once the usage is counted on the slot."""
        lock = self.lock
        lock.acquire()  # not `with`: see borrow()
        try:
            if self.closed:
                self.total -= 1
                slot.state = _CLOSED
                return (slot,)
            if self.waiters:
                owner = slot.lease_owner
                if (self.lease_s > 0.0 and owner is not None and owner not in self.parked
                        and not slot.dirty and now - slot.lease_start < self.lease_s):
                    slot.state = _PARKED
                    slot.parked_until = slot.lease_start + self.lease_s
                    self.parked[owner] = slot
                    self.lease_parks += 1
                    return _NOTHING
                self._handoff(slot)
                return _NOTHING
            slot.state = _IDLE
            self.idle.append(slot)
            return _NOTHING
        finally:
            lock.release()

    def add_new(self, slot: Slot) -> bool:
        """A freshly opened slot joins the pool; False if the pool closed meanwhile."""
        with self.lock:
            self.opening -= 1
            if self.closed:
                slot.state = _CLOSED
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
                slot.state = _CLOSED
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
            slot.state = _CLOSED
            drained.append(slot)
        self.total -= len(drained)
        return drained

    def _handoff(self, slot: Slot) -> None:
        waiter = self.waiters.popleft()
        slot.state = _IN_USE
        slot.lease_owner = None  # the waiter's owner is not known here: no parking for it
        waiter.slot = slot
        waiter.state = WaiterState.ASSIGNED
        self.handoffs += 1
        waiter.wake()

    def _unpark_expired(self, now: float) -> None:
        parked = self.parked
        for owner in [o for o, slot in parked.items() if slot.parked_until <= now]:
            slot = parked.pop(owner)
            if self.waiters:
                self._handoff(slot)
            else:
                slot.state = _IDLE
                self.idle.append(slot)

    # ------------------------------------------------------------------ accounting
    def forget(self, slot: Slot) -> None:
        """A slot leaves the pool for good (broken, expired, reclaimed)."""
        with self.lock:
            if slot.state is not _CLOSED:
                slot.state = _CLOSED
                self.total -= 1

    def expire_all(self) -> int:
        """Start a new generation: every slot of an older one retires. Returns the new one."""
        with self.lock:
            self.generation += 1
            return self.generation

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

    def reserve_one(self) -> None:
        """Count one connection attempt the shell starts on its own (the first connection)."""
        with self.lock:
            self.opening += 1

    def open_failed(self) -> None:
        with self.lock:
            self.opening -= 1

    def take_idle(self, pick: Callable[[list[Slot], float], Sequence[Slot]], now: float
                  ) -> list[Slot]:
        """Reserve the idle slots chosen by ``pick(idle_oldest_first, now)`` for housekeeping."""
        with self.lock:
            self._unpark_expired(now)
            chosen = pick(list(self.idle), now)
            taken: list[Slot] = []
            for slot in chosen:
                try:
                    self.idle.remove(slot)  # in place: see LockFreeBag
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
            for slot in self.parked.values():
                slot.state = _CLOSED
            slots += self.parked.values()
            self.total -= len(self.parked)
            self.parked.clear()
            while self.waiters:
                waiter = self.waiters.popleft()
                waiter.error = PoolClosed("the pool was closed while waiting for a connection")
                waiter.state = WaiterState.CANCELLED
                self.requests_rejected += 1
                waiter.wake()
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
                "requests_cancelled": self.requests_cancelled,
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
                self.requests_cancelled = 0
                self.handoffs = self.lease_parks = self.lease_reuses = 0
                self.requests_wait_s = 0.0
                self.wait_hist = [0] * _BUCKETS
            return out


class LockFreeBag(Bag):
    """The bag with a lock-free common path: correct only under the GIL.

    With nobody waiting and nothing parked, a borrow is ``idle.pop()`` and a return
    ``idle.append()`` (each atomic under the GIL), with no lock; their counters live on the
    slot held (:mod:`.tally`). Everything else (waiting, hand-off, parking, closing,
    housekeeping) happens under the lock, and the two meet by a store-then-check on both sides:

    - a lock-free return appends the slot, *then* looks at ``waiters`` and ``closed`` and, if
      either is set, settles under the lock (hands idle slots to the waiters, or drains a
      closed bag);
    - a borrower about to wait queues its waiter under the lock, *then* looks at the idle stack
      again and serves waiters from it; :meth:`Bag.close` sets ``closed`` *then* drains it.

    Under the GIL's total order, either the return sees the waiter (or the close), or the
    other side sees the returned slot: a slot never sits idle while someone waits for it, nor
    in a closed bag. The idle stack is therefore only ever mutated in place (pop, append,
    remove), never replaced, so a lock-free caller holding the old reference cannot lose a
    slot. A borrow racing a new waiter may take an idle slot first (like HikariCP's); waiters
    among themselves stay first come first served.

    Measured gain over :class:`Bag`: 0.32 us per borrow + return cycle, 1.52 -> 1.20 us CPU
    (``benchmarks/bench_pool.py --sections 1``, CPython 3.11, with and without
    ``POOLKEEPER_ASSUME_NO_GIL=1``): above the 0.2 us a lock-free path must earn.
    """

    def borrow(self, now: float, owner: Any, new_waiter: Callable[[float], Waiter]
               ) -> Slot | Waiter:
        if not self.waiters and not self.parked:
            try:
                slot = self.idle.pop()
            except IndexError:
                pass
            else:
                slot.state = _IN_USE
                slot.lease_start = now
                slot.lease_owner = owner
                slot.fast_borrows += 1
                return slot
        return Bag.borrow(self, now, owner, new_waiter)

    def _after_enqueue(self) -> None:
        if self.idle:  # a lock-free return came in since the check: see the docstring
            self._serve_waiters()

    def give_back(self, slot: Slot, now: float, usage: float | None) -> Sequence[Slot]:
        # tally.count_usage written out: a Python call less per return, 0.06 us of the
        # 1.13 us cycle (bench_pool.py section 1), which the "within 3 %" target needs
        if usage is not None:
            slot.usage_s += usage
            slot.usage_hist[0 if usage <= _FIRST_BOUND_S
                            else bisect_left(_BOUNDS_S, usage)] += 1
        if self.waiters or self.closed:  # hand-off, parking or closing: under the lock
            return self._give_back_counted(slot, now)
        # Push, then check again for a waiter or a close that came in meanwhile. The slot is
        # not touched after the push: another thread may already hold it.
        slot.state = _IDLE
        self.idle.append(slot)
        if self.waiters or self.closed:
            with self.lock:
                if self.closed:
                    return self._drain_idle()
                self._serve_waiters()
        return _NOTHING


def make_bag(*, lock: _Lock, lease_s: float, max_waiting: int,
             lock_free: bool) -> Bag:
    """The bag twin for this interpreter: lock-free only where the shell says the GIL is on."""
    cls = LockFreeBag if lock_free else Bag
    return cls(lock=lock, lease_s=lease_s, max_waiting=max_waiting)
