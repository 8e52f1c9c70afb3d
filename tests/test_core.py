"""The I/O-free core (bag and policy), driven directly: no database, no driver."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque

import pytest

from poolkeeper.core import policy
from poolkeeper.core.bag import Bag, ThreadLease, Waiter
from poolkeeper.core.slot import Slot, SlotState
from poolkeeper.errors import PoolClosed


def _slot(i: int, now: float = 0.0) -> Slot:
    slot = Slot(i, object(), now=now, expires_at=math.inf, idle_timeout=math.inf, generation=0)
    slot.borrow_thread = threading.get_ident()  # borrowed by this (the test's) thread
    return slot


def _bag_with(n: int, lease_s: float = 0.0) -> Bag:
    bag = Bag(lease_s=lease_s, max_waiting=0)
    for i in range(n):
        bag.opening += 1
        bag.add_new(_slot(i))
    return bag


def test_borrow_prefers_the_most_recently_returned_slot() -> None:
    bag = _bag_with(2)
    lease = ThreadLease()
    a = bag.acquire(lease, 1.0)
    b = bag.acquire(lease, 1.0)
    assert isinstance(a, Slot) and isinstance(b, Slot)
    bag.release(a, lease, 2.0, 1.0)
    bag.release(b, lease, 3.0, 1.0)
    assert bag.acquire(lease, 4.0) is b  # LIFO keeps the warm connection busy, the cold one ages


def test_waiters_queue_only_when_nothing_is_idle_and_get_a_direct_hand_off() -> None:
    bag = _bag_with(1)
    lease = ThreadLease()
    slot = bag.acquire(lease, 0.0)
    assert isinstance(slot, Slot)
    waiter = bag.acquire(ThreadLease(), 0.0)
    assert isinstance(waiter, Waiter)
    bag.release(slot, lease, 1.0, 1.0)
    assert waiter.slot is slot and not bag.idle  # never passed through the idle stack
    assert bag.wait(waiter, deadline=math.inf) is slot


def test_young_lease_parks_and_the_owner_takes_it_back() -> None:
    bag = _bag_with(1, lease_s=1.0)
    owner = ThreadLease()
    slot = bag.acquire(owner, 10.0)
    assert isinstance(slot, Slot)
    waiter = bag.acquire(ThreadLease(), 10.0)
    assert isinstance(waiter, Waiter)
    bag.release(slot, owner, 10.2, 0.1)
    assert slot.state is SlotState.PARKED and waiter.slot is None
    assert bag.acquire(owner, 10.3) is slot and bag.lease_reuses == 1
    bag.release(slot, owner, 11.5, 0.1)  # lease over: hand off to the oldest waiter
    assert waiter.slot is slot


def test_expired_park_is_reclaimed_for_the_waiter() -> None:
    bag = _bag_with(1, lease_s=0.5)
    owner = ThreadLease()
    slot = bag.acquire(owner, 10.0)
    assert isinstance(slot, Slot)
    waiter = bag.acquire(ThreadLease(), 10.0)
    assert isinstance(waiter, Waiter)
    bag.release(slot, owner, 10.1, 0.1)
    # any later visit to the bag after the lease end reclaims it for the waiter
    other = bag.acquire(ThreadLease(), 11.0)
    assert waiter.slot is slot and isinstance(other, Waiter)
    # and the owner, coming back, does not get it
    assert isinstance(bag.acquire(owner, 11.1), Waiter)


def test_close_wakes_every_waiter_with_pool_closed() -> None:
    bag = _bag_with(1)
    bag.acquire(ThreadLease(), 0.0)
    waiters = [bag.acquire(ThreadLease(), 0.0) for _ in range(3)]
    results: list[BaseException] = []

    def wait(w: Waiter) -> None:
        try:
            bag.wait(w, deadline=math.inf)
        except PoolClosed as exc:
            results.append(exc)

    threads = [threading.Thread(target=wait, args=(w,)) for w in waiters
               if isinstance(w, Waiter)]
    for t in threads:
        t.start()
    bag.close()
    for t in threads:
        t.join(5)
    assert len(results) == 3


def test_reserve_opens_counts_waiters_min_idle_and_room() -> None:
    bag = Bag(lease_s=0.0, max_waiting=0)
    assert bag.reserve_opens(min_idle=2, max_size=5) == 2
    assert bag.reserve_opens(min_idle=2, max_size=5) == 0  # already opening
    for _ in range(6):
        bag.acquire(ThreadLease(), 0.0)  # six waiters
    assert bag.reserve_opens(min_idle=2, max_size=5) == 3  # capped by max_size
    assert bag.opening == 5


def test_idle_evictions_stop_at_min_idle() -> None:
    slots = [_slot(i, now=0.0) for i in range(5)]
    for s in slots:
        s.idle_timeout = 10.0
    assert policy.idle_evictions(slots, now=100.0, open_count=5, min_idle=3) == slots[:2]
    assert policy.idle_evictions(slots, now=5.0, open_count=5, min_idle=0) == []


def test_lifetime_jitter_spreads_expiry_within_bounds() -> None:
    rand = random.Random(7)
    expiries = [policy.expires_at(0.0, 1000.0, 0.025, rand) for _ in range(200)]
    assert all(975.0 <= e <= 1000.0 for e in expiries)
    assert max(expiries) - min(expiries) > 10.0
    assert policy.expires_at(0.0, None, 0.025) == math.inf


@pytest.mark.parametrize(("failures", "low", "high"), [(1, 0.05, 0.1), (4, 0.4, 0.8),
                                                       (30, 5.0, 10.0)])
def test_backoff_grows_and_is_capped(failures: int, low: float, high: float) -> None:
    for _ in range(50):
        assert low <= policy.backoff_delay(failures, cap=10.0) <= high
    assert policy.backoff_delay(0, cap=10.0) == 0.0


class _ReturnDuringCheck(deque[Slot]):
    """An idle stack found empty the first time the bag looks, with a lock-free return landing
    just after that look (what another thread may do between two bytecodes)."""

    def __init__(self, returning: Slot) -> None:
        super().__init__()
        self.returning: Slot | None = returning

    def __len__(self) -> int:
        n = super().__len__()
        if self.returning is not None:
            slot, self.returning = self.returning, None
            slot.state = SlotState.IDLE
            self.append(slot)  # the returner then sees no waiter yet, so it does not settle
        return n


def test_a_return_racing_a_new_waiter_is_handed_to_that_waiter() -> None:
    bag = _bag_with(1)
    slot = bag.acquire(ThreadLease(), 0.0)
    assert isinstance(slot, Slot)
    bag.idle = _ReturnDuringCheck(slot)
    waiter = bag.acquire(ThreadLease(), 0.0)
    # Queued (the stack looked empty), then served from the stack it re-checked: without the
    # re-check it would sleep until its deadline with a connection idle.
    assert isinstance(waiter, Waiter) and waiter.slot is slot and not bag.idle
    assert bag.wait(waiter, deadline=time.monotonic() + 1) is slot


def test_a_lock_free_return_after_close_hands_the_slot_back_to_be_closed() -> None:
    bag = _bag_with(2)
    lease = ThreadLease()
    held = bag.acquire(lease, 0.0)
    assert isinstance(held, Slot)
    assert len(bag.close()) == 1 and bag.total == 1  # the idle one; `held` is still out
    held.state = SlotState.IDLE
    bag.idle.append(held)  # the pool's lock-free return, which then sees `closed`
    assert bag.settle() == [held]
    assert held.state is SlotState.CLOSED and bag.total == 0 and not bag.idle


def test_settle_serves_waiters_oldest_first_from_the_idle_stack() -> None:
    bag = _bag_with(2)
    a, b = bag.acquire(ThreadLease(), 0.0), bag.acquire(ThreadLease(), 0.0)
    assert isinstance(a, Slot) and isinstance(b, Slot)
    first, second = bag.acquire(ThreadLease(), 0.0), bag.acquire(ThreadLease(), 0.0)
    assert isinstance(first, Waiter) and isinstance(second, Waiter)
    bag.idle.append(a)  # lock-free return; it saw the waiters, so it settles
    assert bag.settle() == []
    assert first.slot is a and second.slot is None and not bag.idle
    assert bag.release(b, ThreadLease(), 1.0, 1.0) and second.slot is b


def test_housekeeping_takes_idle_slots_in_place_and_skips_ones_borrowed_meanwhile() -> None:
    bag = _bag_with(3)
    idle_stack = bag.idle
    first, second, third = list(idle_stack)

    def pick(idle: list[Slot], now: float) -> list[Slot]:
        idle_stack.remove(second)  # a lock-free borrower takes one while the pick is made
        return idle

    assert bag.take_idle(pick) == [first, third]
    assert bag.idle is idle_stack and not idle_stack  # the same deque: a lock-free push is kept
    assert first.state is third.state is SlotState.RESERVED
