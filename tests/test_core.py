"""The I/O-free core (bag and policy), driven directly: no database, no driver."""

from __future__ import annotations

import math
import random
import threading

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
    assert policy.idle_evictions(slots, now=100.0, idle_count=5, min_idle=3) == slots[:2]
    assert policy.idle_evictions(slots, now=5.0, idle_count=5, min_idle=0) == []


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
