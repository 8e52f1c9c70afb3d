"""The I/O-free core (bag and policy), driven directly: no database, no driver, no thread.

The bag's tests run on both twins (the locked Bag, correct without the GIL, and LockFreeBag)
unless they test what only the lock-free twin does; a waiter here is a plain object that
records its wake, as the shells' lock or future would.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque

import pytest

from poolkeeper.core import policy
from poolkeeper.core.bag import Bag, LockFreeBag, Waiter, WaiterState, make_bag
from poolkeeper.core.maintenance import plan_maintenance
from poolkeeper.core.opening import OpenSchedule
from poolkeeper.core.slot import Checkout, CloseReason, Slot, SlotState
from poolkeeper.errors import PoolClosed, TooManyWaiting


class _Owner:
    """A lease owner token (the thread shell passes the thread's ident)."""


class _Waiter(Waiter):
    __slots__ = ("woken",)

    def __init__(self, now: float) -> None:
        super().__init__(now)
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


def _state(waiter: Waiter) -> WaiterState:
    """Read afresh (a type checker would otherwise keep the state it narrowed before a call)."""
    return waiter.state


def _slot(i: int, now: float = 0.0) -> Slot:
    return Slot(i, object(), now=now, expires_at=math.inf, idle_timeout=math.inf, generation=0)


@pytest.fixture(params=[Bag, LockFreeBag], ids=["locked", "lock-free"])
def twin(request: pytest.FixtureRequest) -> type[Bag]:
    return request.param  # type: ignore[no-any-return]


def _bag_with(cls: type[Bag], n: int, lease_s: float = 0.0, max_waiting: int = 0) -> Bag:
    bag = cls(lock=threading.Lock(), lease_s=lease_s, max_waiting=max_waiting)
    for i in range(n):
        bag.reserve_one()
        bag.add_new(_slot(i))
    return bag


def _borrow(bag: Bag, owner: object, now: float) -> Slot | _Waiter:
    got = bag.borrow(now, owner, _Waiter)
    assert isinstance(got, Slot | _Waiter)
    return got


def _slot_of(bag: Bag, owner: object, now: float) -> Slot:
    got = _borrow(bag, owner, now)
    assert isinstance(got, Slot)
    return got


def _waiter_of(bag: Bag, owner: object, now: float) -> _Waiter:
    got = _borrow(bag, owner, now)
    assert isinstance(got, _Waiter)
    return got


def test_make_bag_takes_the_lock_free_twin_only_when_asked() -> None:
    lock = threading.Lock()
    assert type(make_bag(lock=lock, lease_s=0, max_waiting=0, lock_free=False)) is Bag
    assert type(make_bag(lock=lock, lease_s=0, max_waiting=0, lock_free=True)) is LockFreeBag


def test_borrow_prefers_the_most_recently_returned_slot(twin: type[Bag]) -> None:
    bag = _bag_with(twin, 2)
    owner = _Owner()
    a, b = _slot_of(bag, owner, 1.0), _slot_of(bag, owner, 1.0)
    assert bag.give_back(a, 2.0, 0.0) == ()
    assert bag.give_back(b, 3.0, 0.0) == ()
    assert _borrow(bag, owner, 4.0) is b  # LIFO keeps the warm connection busy, the cold ages
    assert bag.pop_counters(False, {"fast_borrows": 0, "usage_s": 0.0,
                                    "usage_hist": [0]})["requests_queued"] == 0


def test_waiters_queue_only_when_nothing_is_idle_and_get_a_direct_hand_off(
        twin: type[Bag]) -> None:
    bag = _bag_with(twin, 1)
    owner = _Owner()
    slot = _slot_of(bag, owner, 0.0)
    waiter = _waiter_of(bag, _Owner(), 0.0)
    assert _state(waiter) is WaiterState.WAITING and waiter.woken == 0
    bag.give_back(slot, 1.0, 0.0)
    # never passed through the idle stack; assigned and woken in the same step
    assert waiter.slot is slot and not bag.idle and waiter.woken == 1
    assert _state(waiter) is WaiterState.ASSIGNED and slot.state is SlotState.IN_USE
    waiter_owner = _Owner()
    assert bag.end_wait(waiter, 1.5, waiter_owner) is slot
    assert _state(waiter) is WaiterState.TAKEN and slot.lease_owner is waiter_owner
    assert bag.handoffs == 1 and bag.requests_queued == 1


def test_waiters_are_served_first_come_first_served(twin: type[Bag]) -> None:
    bag = _bag_with(twin, 1)
    owner = _Owner()
    slot = _slot_of(bag, owner, 0.0)
    waiters = [_waiter_of(bag, _Owner(), float(i)) for i in range(4)]
    for i, waiter in enumerate(waiters):
        bag.give_back(slot, 10.0 + i, 0.0)
        assert [w.slot is slot for w in waiters] == [j == i for j in range(4)]
        assert bag.end_wait(waiter, 10.0 + i) is slot
        waiter.slot = None  # so the next round's check sees only the new assignment


def test_a_timed_out_waiter_leaves_the_queue_and_is_counted(twin: type[Bag]) -> None:
    bag = _bag_with(twin, 1)
    owner = _Owner()
    slot = _slot_of(bag, owner, 0.0)
    waiter = _waiter_of(bag, _Owner(), 0.0)
    assert bag.end_wait(waiter, 2.0) is None
    assert _state(waiter) is WaiterState.CANCELLED and not bag.waiters
    assert bag.requests_timeouts == 1 and bag.requests_cancelled == 0
    bag.give_back(slot, 3.0, 0.0)  # nobody waits any more: it goes idle
    assert list(bag.idle) == [slot] and waiter.slot is None


def test_a_waiter_cancelled_after_its_hand_off_gets_the_slot_to_give_back(
        twin: type[Bag]) -> None:
    # The race every shell must survive: a slot handed over just as the waiter gives up.
    bag = _bag_with(twin, 1)
    owner = _Owner()
    slot = _slot_of(bag, owner, 0.0)
    waiter = _waiter_of(bag, _Owner(), 0.0)
    second = _waiter_of(bag, _Owner(), 0.5)
    bag.give_back(slot, 1.0, 0.0)
    assert waiter.slot is slot
    got = bag.end_wait(waiter, 1.1, cancelled=True)
    assert got is slot and bag.requests_cancelled == 0  # it did get one: not a cancel
    bag.give_back(got, 1.1, 0.0)  # the shell gives it back: the next waiter gets it
    assert second.slot is slot and bag.counts()["total"] == 1


def test_a_waiter_cancelled_while_queued_is_counted_as_cancelled(twin: type[Bag]) -> None:
    bag = _bag_with(twin, 1)
    _slot_of(bag, _Owner(), 0.0)
    waiter = _waiter_of(bag, _Owner(), 0.0)
    assert bag.end_wait(waiter, 0.1, cancelled=True) is None
    assert bag.requests_cancelled == 1 and bag.requests_timeouts == 0 and not bag.waiters


def test_max_waiting_refuses_with_the_numbers(twin: type[Bag]) -> None:
    bag = _bag_with(twin, 0, max_waiting=2)
    _waiter_of(bag, None, 0.0)
    _waiter_of(bag, None, 0.0)
    with pytest.raises(TooManyWaiting, match="2 callers are already waiting"):
        bag.borrow(0.0, None, _Waiter)
    assert bag.requests_rejected == 1


def test_young_lease_parks_and_the_owner_takes_it_back(twin: type[Bag]) -> None:
    bag = _bag_with(twin, 1, lease_s=1.0)
    owner = _Owner()
    slot = _slot_of(bag, owner, 10.0)
    waiter = _waiter_of(bag, _Owner(), 10.0)
    bag.give_back(slot, 10.2, 0.0)
    assert slot.state is SlotState.PARKED and waiter.slot is None
    assert _borrow(bag, owner, 10.3) is slot and bag.lease_reuses == 1
    bag.give_back(slot, 11.5, 0.0)  # lease over: hand off to the oldest waiter
    assert waiter.slot is slot


def test_the_lease_never_parks_without_an_owner_nor_two_for_one(twin: type[Bag]) -> None:
    bag = _bag_with(twin, 3, lease_s=1.0)
    owner = _Owner()
    orphan = _slot_of(bag, owner, 10.0)
    first, second = _slot_of(bag, owner, 10.0), _slot_of(bag, owner, 10.0)
    waiters = [_waiter_of(bag, _Owner(), 10.0) for _ in range(2)]
    orphan.lease_owner = None  # an orphan's return (no owner): straight to the waiter
    bag.give_back(orphan, 10.1, 0.0)
    assert waiters[0].slot is orphan and bag.lease_parks == 0
    bag.give_back(first, 10.1, 0.0)  # parked for its owner
    bag.give_back(second, 10.1, 0.0)  # the owner has one parked already: handed off
    assert first.state is SlotState.PARKED and waiters[1].slot is second
    assert bag.lease_parks == 1


def test_a_dirty_connection_is_never_parked(twin: type[Bag]) -> None:
    bag = _bag_with(twin, 1, lease_s=1.0)
    owner = _Owner()
    slot = _slot_of(bag, owner, 10.0)
    waiter = _waiter_of(bag, _Owner(), 10.0)
    slot.dirty = True  # came back with a transaction open (reset_on_return=False)
    bag.give_back(slot, 10.1, 0.0)
    assert waiter.slot is slot and bag.lease_parks == 0


def test_expired_park_is_reclaimed_for_the_waiter(twin: type[Bag]) -> None:
    bag = _bag_with(twin, 1, lease_s=0.5)
    owner = _Owner()
    slot = _slot_of(bag, owner, 10.0)
    waiter = _waiter_of(bag, _Owner(), 10.0)
    bag.give_back(slot, 10.1, 0.0)
    # any later visit to the bag after the lease end reclaims it for the waiter
    other = _waiter_of(bag, _Owner(), 11.0)
    assert waiter.slot is slot and other.slot is None
    # and the owner, coming back, does not get it
    assert isinstance(_borrow(bag, owner, 11.1), _Waiter)


def test_a_waiters_recheck_reclaims_an_expired_park(twin: type[Bag]) -> None:
    bag = _bag_with(twin, 1, lease_s=0.5)
    owner = _Owner()
    slot = _slot_of(bag, owner, 10.0)
    waiter = _waiter_of(bag, _Owner(), 10.0)
    bag.give_back(slot, 10.1, 0.0)
    bag.recheck(10.3)
    assert waiter.slot is None  # still young
    bag.recheck(10.6)
    assert waiter.slot is slot and waiter.woken == 1


def test_close_wakes_every_waiter_with_pool_closed(twin: type[Bag]) -> None:
    bag = _bag_with(twin, 1)
    _slot_of(bag, _Owner(), 0.0)
    waiters = [_waiter_of(bag, _Owner(), 0.0) for _ in range(3)]
    bag.close()
    for waiter in waiters:
        assert waiter.woken == 1 and _state(waiter) is WaiterState.CANCELLED
        with pytest.raises(PoolClosed, match="closed while waiting"):
            bag.end_wait(waiter, 1.0)
    assert bag.requests_rejected == 3
    with pytest.raises(PoolClosed):
        bag.borrow(1.0, None, _Waiter)


def test_a_return_to_a_closed_bag_says_close_it(twin: type[Bag]) -> None:
    bag = _bag_with(twin, 2)
    held = _slot_of(bag, _Owner(), 0.0)
    assert len(bag.close()) == 1 and bag.total == 1  # the idle one; `held` is still out
    assert list(bag.give_back(held, 1.0, 0.0)) == [held]
    assert held.state is SlotState.CLOSED and bag.total == 0 and not bag.idle


def test_reserve_opens_counts_waiters_min_idle_and_room(twin: type[Bag]) -> None:
    bag = _bag_with(twin, 0)
    assert bag.reserve_opens(min_idle=2, max_size=5) == 2
    assert bag.reserve_opens(min_idle=2, max_size=5) == 0  # already opening
    for _ in range(6):
        _waiter_of(bag, None, 0.0)  # six waiters
    assert bag.reserve_opens(min_idle=2, max_size=5) == 3  # capped by max_size
    assert bag.opening == 5


def test_a_new_connection_goes_to_the_oldest_waiter(twin: type[Bag]) -> None:
    bag = _bag_with(twin, 0)
    first, second = _waiter_of(bag, None, 0.0), _waiter_of(bag, None, 0.1)
    assert bag.reserve_opens(min_idle=0, max_size=5) == 2
    new = _slot(7)
    assert bag.add_new(new) and first.slot is new and second.slot is None


def test_counts_add_up(twin: type[Bag]) -> None:
    bag = _bag_with(twin, 3, lease_s=1.0)
    owner = _Owner()
    a = _slot_of(bag, owner, 0.0)
    _slot_of(bag, _Owner(), 0.0)
    assert bag.counts() == {"total": 3, "idle": 1, "active": 2, "waiting": 0, "opening": 0,
                            "parked": 0}
    _slot_of(bag, _Owner(), 0.0)
    _waiter_of(bag, _Owner(), 0.0)
    _waiter_of(bag, _Owner(), 0.0)
    assert bag.counts()["waiting"] == 2 and bag.counts()["active"] == 3
    bag.give_back(a, 0.1, 0.0)  # parked for its owner (lease young, waiters queued)
    assert bag.counts() == {"total": 3, "idle": 1, "active": 2, "waiting": 2, "opening": 0,
                            "parked": 1}


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




# ---------------------------------------------------------------------- the lock-free twin
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
    bag = _bag_with(LockFreeBag, 1)
    slot = _slot_of(bag, _Owner(), 0.0)
    bag.idle = _ReturnDuringCheck(slot)
    waiter = _waiter_of(bag, _Owner(), 0.0)
    # Queued (the stack looked empty), then served from the stack it re-checked: without the
    # re-check it would sleep until its deadline with a connection idle.
    assert waiter.slot is slot and not bag.idle and waiter.woken == 1
    assert bag.end_wait(waiter, 0.5) is slot


class _CloseBeforePush(deque[Slot]):
    """An idle stack where another thread's close() runs to its end between the lock-free
    return's first look at ``closed`` and its push."""

    def __init__(self, bag: Bag) -> None:
        super().__init__()
        self.bag: Bag | None = bag

    def append(self, slot: Slot) -> None:
        bag, self.bag = self.bag, None
        if bag is not None:
            assert bag.close() == []  # nothing idle yet: the slot is still being returned
        super().append(slot)


def test_a_lock_free_return_that_sees_the_close_drains_the_slot() -> None:
    bag = _bag_with(LockFreeBag, 1)
    held = _slot_of(bag, _Owner(), 0.0)
    bag.idle = _CloseBeforePush(bag)
    closing = bag.give_back(held, 1.0, 0.0)  # its check after the push finds the bag closed
    assert list(closing) == [held] and not bag.idle
    assert held.state is SlotState.CLOSED and bag.total == 0


def test_the_lock_free_twin_counts_its_borrows_on_the_slot() -> None:
    bag = _bag_with(LockFreeBag, 1)
    slot = _slot_of(bag, None, 0.0)
    assert slot.fast_borrows == 1 and bag.wait_hist[0] == 0
    locked = _bag_with(Bag, 1)
    other = _slot_of(locked, None, 0.0)
    assert other.fast_borrows == 0 and locked.wait_hist[0] == 1


def test_a_lock_free_return_with_waiters_serves_them_oldest_first() -> None:
    bag = _bag_with(LockFreeBag, 2)
    a, b = _slot_of(bag, _Owner(), 0.0), _slot_of(bag, _Owner(), 0.0)
    first, second = _waiter_of(bag, _Owner(), 0.0), _waiter_of(bag, _Owner(), 0.0)
    bag.give_back(a, 1.0, 0.0)
    assert first.slot is a and second.slot is None and not bag.idle
    bag.give_back(b, 1.0, 0.0)
    assert second.slot is b


def test_housekeeping_takes_idle_slots_in_place_and_skips_ones_borrowed_meanwhile() -> None:
    bag = _bag_with(LockFreeBag, 3)
    idle_stack = bag.idle
    first, second, third = list(idle_stack)

    def pick(idle: list[Slot], now: float) -> list[Slot]:
        idle_stack.remove(second)  # a lock-free borrower takes one while the pick is made
        return idle

    assert bag.take_idle(pick, 0.0) == [first, third]
    assert bag.idle is idle_stack and not idle_stack  # the same deque: a lock-free push is kept
    assert first.state is third.state is SlotState.RESERVED


# ---------------------------------------------------------------------- the open schedule
def _schedule() -> OpenSchedule:
    return OpenSchedule(lock=threading.Lock(), backoff_max=10.0, rand=random.Random(3))


def test_opens_start_at_once_while_the_server_answers() -> None:
    sched = _schedule()
    assert sched.start(3, 0.0) == (3, None)
    ticket, retry = sched.begin(False, 0.0)
    assert ticket is not None and retry is None
    assert sched.succeeded(False, lambda handle: False) == 0


def test_an_outage_defers_opens_behind_one_timed_retry() -> None:
    sched = _schedule()
    tickets = [sched.begin(False, 0.0)[0] for _ in range(3)]  # three attempts overlap
    assert all(t is not None for t in tickets)
    failures, delay = sched.failed(tickets[0], 0.0, 0.1, retry=False)  # type: ignore[arg-type]
    assert failures == 1 and 0.0 < delay <= 0.2
    # the overlapping attempts failed in the same outage: not more backoff steps
    assert sched.failed(tickets[1], 0.0, 0.1, retry=False)[0] == 1  # type: ignore[arg-type]
    assert sched.failed(tickets[2], 0.0, 0.1, retry=False)[0] == 1  # type: ignore[arg-type]
    # new opens are deferred; the first deferral asks for the one timed retry
    started, retry_in = sched.start(4, 0.1)
    assert started == 0 and retry_in is not None and sched.deferred == 3
    assert sched.start(1, 0.1) == (0, None)  # a retry is already queued
    sched.retry_queued("retry-handle")
    # an attempt queued before the failure waits too (no retry asked: one is queued)
    assert sched.begin(False, 0.2) == (None, None) and sched.deferred == 5


def test_the_first_success_releases_every_deferred_open_and_the_queued_retry() -> None:
    sched = _schedule()
    ticket = sched.begin(False, 0.0)[0]
    assert ticket is not None
    sched.failed(ticket, 0.0, 0.1, retry=False)
    assert sched.start(3, 0.1)[1] is not None  # retry asked for (one reservation is its own)
    sched.retry_queued("retry-handle")
    cancelled: list[object] = []
    assert sched.begin(False, 0.1)[0] is None  # a queued attempt starting now is deferred too
    ticket = sched.begin(True, 0.5)[0]  # the retry itself runs
    assert ticket is not None
    def cancel(handle: object) -> bool:
        cancelled.append(handle)
        return True

    released = sched.succeeded(True, cancel)
    assert released == 3 and sched.failures == 0 and not cancelled  # 2 + the deferred attempt
    assert sched.start(2, 0.6) == (2, None)


def test_a_success_outside_the_retry_cancels_the_queued_retry_and_starts_its_open() -> None:
    sched = _schedule()
    first, second = sched.begin(False, 0.0)[0], sched.begin(False, 0.0)[0]
    assert first is not None and second is not None
    sched.failed(first, 0.0, 0.1, retry=False)
    assert sched.start(1, 0.1)[1] is not None
    sched.retry_queued("retry-handle")
    assert sched.succeeded(False, lambda handle: handle == "retry-handle") == 1
    assert sched.retry is None and not sched.retry_busy


def test_a_closed_schedule_queues_no_retry() -> None:
    sched = _schedule()
    ticket = sched.begin(False, 0.0)[0]
    assert ticket is not None
    sched.failed(ticket, 0.0, 0.1, retry=False)
    sched.close()
    assert sched.start(2, 0.1) == (0, None)


# ---------------------------------------------------------------------- maintenance
def test_a_pass_never_retires_below_min_idle_counting_lifetime_retirements() -> None:
    bag = _bag_with(Bag, 3)
    old, young, fresh = list(bag.idle)
    old.expires_at = 5.0  # past its lifetime at t=10
    for s in (old, young, fresh):
        s.idle_timeout = 1.0
        s.last_used = 0.0
    plan = plan_maintenance(bag, [old, young, fresh], 10.0, min_idle=2, idle_timeout=1.0,
                            keepalive_interval=None, leak_threshold=None,
                            abandoned_timeout=None, reclaim_grace=1.0)
    # the lifetime retirement leaves two open: none more may go for idleness
    assert plan.retire == [(old, CloseReason.LIFETIME)]
    assert old.state is SlotState.RESERVED and len(bag.idle) == 2


def test_a_pass_plans_pings_leaks_and_reclaims() -> None:
    bag = _bag_with(Bag, 4)
    idle = bag.idle[0]
    idle.last_alive = 0.0
    held = _slot_of(bag, None, 0.0)
    revoked = _slot_of(bag, None, 0.0)
    returning = _slot_of(bag, None, 0.0)  # in use, its checkout ended a moment ago
    for slot in (held, revoked):
        slot.checkout = Checkout(slot, None, 0.0, None, -1)
    revoked.checkout.reclaimed_at = 1.0  # type: ignore[union-attr]
    plan = plan_maintenance(bag, [idle, held, revoked, returning], 100.0, min_idle=0,
                            idle_timeout=None, keepalive_interval=60.0, leak_threshold=30.0,
                            abandoned_timeout=50.0, reclaim_grace=1.0)
    assert plan.ping == [idle] and idle.state is SlotState.RESERVED
    assert plan.leaked == [held.checkout, revoked.checkout]
    assert plan.reclaimable == [revoked.checkout]
    # ran no statement for 100 s; the revoked one is skipped
    assert plan.abandoned == [held.checkout]
