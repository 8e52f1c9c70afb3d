"""The shared deadline scheduler: one thread only while used, memory only for live entries."""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections.abc import Iterator

import pytest

from poolkeeper.errors import PoolError
from poolkeeper.scheduler import (
    THREAD_NAME,
    Deadline,
    SchedulerLease,
    acquire_scheduler,
    memory_usage,
    scheduler_stats,
)

WAIT_S = 10.0  # generous bound for "eventually": no test asserts on how fast things happen
FAR = 3600.0


def scheduler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


@pytest.fixture
def lease() -> Iterator[SchedulerLease]:
    held = acquire_scheduler("test")
    try:
        yield held
    finally:
        held.release()


def test_no_thread_exists_while_nobody_holds_a_lease() -> None:
    assert scheduler_stats()["scheduler_users"] == 0
    assert scheduler_threads() == []


def test_thread_starts_with_the_first_lease_and_stops_with_the_last() -> None:
    started = scheduler_stats()["scheduler_threads_started"]
    first = acquire_scheduler("first")
    second = acquire_scheduler("second")
    assert len(scheduler_threads()) == 1
    assert scheduler_stats()["scheduler_threads_started"] == started + 1
    assert first.release()
    assert len(scheduler_threads()) == 1  # still one user
    assert second.release()
    assert scheduler_threads() == []
    stats = scheduler_stats()
    assert stats["scheduler_users"] == 0
    assert stats["scheduler_thread_alive"] is False


def test_release_is_idempotent_and_counts_once() -> None:
    a = acquire_scheduler("a")
    b = acquire_scheduler("b")
    a.release()
    a.release()  # must not take b's share
    assert scheduler_stats()["scheduler_users"] == 1
    assert len(scheduler_threads()) == 1
    b.release()
    assert scheduler_threads() == []


def test_a_new_lease_after_the_last_release_starts_a_fresh_thread() -> None:
    for _ in range(3):
        with acquire_scheduler("cycle") as held:
            fired = threading.Event()
            held.call_later(0.0, fired.set)
            assert fired.wait(WAIT_S)
        assert scheduler_threads() == []


def test_scheduling_on_a_released_lease_is_refused() -> None:
    held = acquire_scheduler("gone")
    held.release()
    with pytest.raises(PoolError, match="released"):
        held.call_later(1.0, lambda: None)


def test_callback_runs_on_the_scheduler_thread_after_its_deadline(lease: SchedulerLease) -> None:
    ran_on: list[str] = []
    done = threading.Event()

    def callback() -> None:
        ran_on.append(threading.current_thread().name)
        done.set()

    handle = lease.call_later(0.01, callback)
    assert done.wait(WAIT_S)
    assert ran_on == [THREAD_NAME]
    assert handle.cancel() is False  # already fired
    assert not handle.pending
    assert lease.stats()["fired_num"] == 1


def test_cancelled_entry_never_runs(lease: SchedulerLease) -> None:
    ran = threading.Event()
    handle = lease.call_later(0.05, ran.set)
    assert handle.cancel() is True
    assert handle.cancel() is False  # only the first cancel counts
    marker = threading.Event()
    lease.call_later(0.1, marker.set)  # fires after the cancelled one would have
    assert marker.wait(WAIT_S)
    assert not ran.is_set()
    assert lease.stats()["cancelled_num"] == 1


def test_callbacks_fire_in_deadline_order(lease: SchedulerLease) -> None:
    order: list[int] = []
    done = threading.Event()
    base = 0.05
    for i in reversed(range(5)):
        lease.call_later(base + i * 0.01, functools.partial(order.append, i))
    lease.call_later(base + 0.1, done.set)
    assert done.wait(WAIT_S)
    assert order == [0, 1, 2, 3, 4]


def test_an_earlier_deadline_wakes_a_thread_sleeping_until_a_later_one(
        lease: SchedulerLease) -> None:
    late = lease.call_later(FAR, lambda: None)
    fired = threading.Event()
    lease.call_later(0.01, fired.set)
    assert fired.wait(WAIT_S)
    assert late.cancel()


def test_a_failing_callback_is_logged_and_the_thread_carries_on(
        lease: SchedulerLease, caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise RuntimeError("callback exploded")

    errors = scheduler_stats()["scheduler_callback_errors_num"]
    after = threading.Event()
    with caplog.at_level(logging.ERROR, logger="poolkeeper.scheduler"):
        lease.call_later(0.0, boom)
        lease.call_later(0.01, after.set)
        assert after.wait(WAIT_S)
    assert "callback exploded" in caplog.text
    assert scheduler_stats()["scheduler_callback_errors_num"] == errors + 1
    assert len(scheduler_threads()) == 1


def test_memory_follows_entries_in_flight_not_entries_scheduled(lease: SchedulerLease) -> None:
    # Seed 004: one-hour timeouts, statements that finish at once. 100,000 pairs must leave
    # nothing behind, and the heap must never hold more than the one entry in flight.
    before = scheduler_stats()
    for _ in range(100_000):
        lease.call_later(FAR, _noop).cancel()
    after = scheduler_stats()
    assert after["scheduler_entries_now"] == 0
    assert after["scheduler_cancelled_pending"] == 0
    assert after["scheduler_bytes"] <= before["scheduler_bytes"] + 1024
    assert lease.stats()["entries_now"] == 0
    assert lease.stats()["cancelled_num"] == 100_000


def test_cancelled_entries_never_outnumber_live_ones(lease: SchedulerLease) -> None:
    rng = random.Random(4)
    live: list[Deadline] = []
    for step in range(20_000):
        if live and rng.random() < 0.5:
            # the newest entry (often the heap's last one) or any other
            index = -1 if rng.random() < 0.3 else rng.randrange(len(live))
            live.pop(index).cancel()
        else:
            live.append(lease.call_later(FAR + rng.random() * FAR, _noop))
        stats = scheduler_stats()
        assert stats["scheduler_cancelled_pending"] <= stats["scheduler_entries_now"], step
        assert stats["scheduler_entries_now"] == len(live)
    for handle in live:
        handle.cancel()
    stats = scheduler_stats()
    assert stats["scheduler_entries_now"] == 0
    assert stats["scheduler_cancelled_pending"] == 0


def test_concurrent_schedule_and_cancel_leave_nothing_behind(lease: SchedulerLease) -> None:
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(5_000):
                handle = lease.call_later(FAR * rng.random() + 1.0, _noop)
                if not handle.cancel():
                    raise AssertionError("a pending entry could not be cancelled")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    stats = scheduler_stats()
    assert stats["scheduler_entries_now"] == 0
    assert stats["scheduler_cancelled_pending"] == 0


def test_pending_entries_are_dropped_unrun_when_the_last_user_leaves() -> None:
    held = acquire_scheduler("dropper")
    ran = threading.Event()
    handle = held.call_later(FAR, ran.set)
    dropped = scheduler_stats()["scheduler_dropped_num"]
    held.release()
    assert scheduler_stats()["scheduler_dropped_num"] == dropped + 1
    assert handle.cancel() is False
    assert not ran.is_set()
    assert held.stats()["entries_now"] == 0


def test_the_last_release_may_come_from_a_callback() -> None:
    held = acquire_scheduler("self-release")
    released = threading.Event()

    def release_from_callback() -> None:
        held.release()
        released.set()

    held.call_later(0.0, release_from_callback)
    assert released.wait(WAIT_S)
    for thread in scheduler_threads():
        thread.join(WAIT_S)
    assert scheduler_threads() == []


def test_stats_can_be_reset_without_losing_pending_entries(lease: SchedulerLease) -> None:
    pending = lease.call_later(FAR, _noop)
    lease.call_later(FAR, _noop).cancel()
    first = lease.stats(reset=True)
    assert first["scheduled_num"] == 2
    assert first["cancelled_num"] == 1
    assert first["entries_now"] == 1
    second = lease.stats()
    assert second["cancelled_num"] == 0
    assert second["entries_now"] == 1
    pending.cancel()
    assert lease.stats()["entries_now"] == 0


def test_memory_usage_reports_the_entries_held(lease: SchedulerLease) -> None:
    empty, budget = memory_usage()
    assert budget is None
    handles = [lease.call_later(FAR, _noop) for _ in range(100)]
    held, _ = memory_usage()
    assert held >= empty + 100 * 100  # at least 100 bytes per entry
    for handle in handles:
        handle.cancel()
    assert memory_usage()[0] <= empty + 1024
    assert scheduler_stats()["scheduler_bytes"] == memory_usage()[0]


def _noop() -> None:
    pass
