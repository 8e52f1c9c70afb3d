"""Borrow and return (see core/bag.py) under real thread interleavings, on both twins.

No connection is ever held by two callers, no count is lost, and a close racing lock-free
returns closes every connection. The loops are bounded in count and time; the GIL switch
interval is shortened so threads interleave inside the borrow and return paths far more often
than they would by default.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from poolkeeper import Pool, PoolClosed, PoolTimeout

# the whole module runs on both twins of the bag: lock-free and locked (no GIL)
pytestmark = pytest.mark.usefixtures("bag_twin")


@pytest.fixture(autouse=True)
def _switch_often() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _run_threads(n: int, work: Callable[[int], None], join_s: float = 60) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_s)
        assert not t.is_alive(), "a worker thread did not finish"
    return errors


def _recording_connect(opened: list[sqlite3.Connection]) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        raw = sqlite3.connect(":memory:", check_same_thread=False)
        opened.append(raw)
        return raw
    return connect


def test_no_connection_is_ever_held_by_two_callers_and_no_count_is_lost() -> None:
    threads, cycles, deadline = 6, 3_000, time.monotonic() + 30
    holders: dict[int, int] = {}
    overlaps: list[str] = []
    done = [0] * threads
    with Pool("sqlite://:memory:", min_idle=2, max_size=2, max_wait=30) as pool:
        pool.wait_ready(10)
        pool.pop_stats()

        def work(i: int) -> None:
            me = threading.get_ident()
            for _ in range(cycles):
                if time.monotonic() > deadline:
                    return
                conn = pool.getconn()
                key = id(conn.raw)
                # setdefault is atomic: a second holder finds the first one's mark.
                if holders.setdefault(key, me) != me:
                    overlaps.append(f"connection {key} held by two threads")
                del holders[key]
                pool.putconn(conn)
                done[i] += 1

        errors = _run_threads(threads, work)
        assert not errors and not overlaps
        total = sum(done)
        assert total > threads * 100  # the loop really ran concurrently, not just one thread
        stats = pool.stats()
        assert stats["requests_num"] == stats["returns_num"] == total
        assert sum(stats["wait_ms_histogram"]) == sum(stats["usage_ms_histogram"]) == total
        assert stats["pool_active"] == 0 and stats["requests_waiting"] == 0
        assert stats["pool_size"] == stats["pool_available"] <= 2


def test_counts_survive_retired_connections_and_reset_exactly() -> None:
    with Pool("sqlite://:memory:", max_size=2) as pool:
        pool.pop_stats()
        for i in range(10):
            with pool.connection():
                if i == 4:
                    pool.expire_all()  # this checkout's connection retires on return
        popped = pool.pop_stats()
        assert popped["requests_num"] == popped["returns_num"] == 10
        assert popped["connections_closed_expired"] >= 1
        for _ in range(3):
            with pool.connection():
                pass
        stats = pool.stats()
        assert stats["requests_num"] == stats["returns_num"] == 3
        assert stats["usage_ms_histogram"][0] + sum(stats["usage_ms_histogram"][1:]) == 3


def test_close_racing_lock_free_returns_closes_every_connection() -> None:
    opened: list[sqlite3.Connection] = []
    pool = Pool(connect=_recording_connect(opened), driver="sqlite", min_idle=3, max_size=3,
                max_wait=5)
    pool.wait_ready(10)
    started = threading.Barrier(5)
    deadline = time.monotonic() + 20

    def work(i: int) -> None:
        started.wait(10)
        while time.monotonic() < deadline:
            try:
                with pool.connection():
                    pass
            except PoolClosed:
                return
            except PoolTimeout:  # only while the pool shrinks under a close
                continue

    def closer(_: int) -> None:
        started.wait(10)
        time.sleep(0.05)
        pool.close()

    errors = _run_threads(5, lambda i: closer(i) if i == 4 else work(i))
    assert not errors
    stats = pool.stats()
    assert stats["pool_size"] == 0 and stats["pool_active"] == 0
    # every borrow came back; the rejected requests are the workers' PoolClosed
    assert stats["requests_num"] - stats["requests_rejected"] == stats["returns_num"]
    assert opened
    for raw in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            raw.execute("SELECT 1")


def test_a_waiter_is_served_while_others_borrow_lock_free() -> None:
    # One connection, cycled lock-free by one thread, while others queue for it: the queued
    # ones must be served (settle after a racing return), never left to their deadline.
    with Pool("sqlite://:memory:", min_idle=1, max_size=1, max_wait=10, lease_ms=0) as pool:
        pool.wait_ready(10)
        got: list[int] = []
        deadline = time.monotonic() + 20

        def work(i: int) -> None:
            for _ in range(200):
                if time.monotonic() > deadline:
                    return
                with pool.connection():
                    pass
                got.append(i)

        errors = _run_threads(4, work)
        assert not errors, errors[:1]
        assert sorted(set(got)) == [0, 1, 2, 3]
        stats: dict[str, Any] = pool.stats()
        assert stats["requests_timeouts"] == 0
        assert stats["requests_num"] == stats["returns_num"] == len(got)


# Only the lock-free twin pushes outside the lock (the locked one pushes under it, where a
# close cannot land): this test overrides the module's twins with that one alone.
@pytest.mark.parametrize("bag_twin", ["lock-free"], indirect=True)
def test_a_close_landing_inside_a_lock_free_return_still_closes_that_connection(
        bag_twin: str) -> None:
    # Forces the interleaving the GIL makes rare: the returner has seen "not closed", then
    # close() runs to the end, then the returner pushes its slot onto the closed bag's stack.
    # Its check after the push must catch it; otherwise the connection would stay open.
    opened: list[sqlite3.Connection] = []
    pool = Pool(connect=_recording_connect(opened), driver="sqlite", min_idle=1, max_size=1)
    pool.wait_ready(10)
    conn = pool.getconn()
    raw = conn.raw
    bag = pool._bag

    class CloseBeforePush(deque[Any]):
        def append(self, slot: Any) -> None:
            pool.close()
            super().append(slot)

    bag.idle = CloseBeforePush(bag.idle)
    pool.putconn(conn)
    assert not bag.idle and pool.stats()["pool_size"] == 0
    assert pool.stats()["connections_closed_pool_closed"] == 1
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        raw.execute("SELECT 1")


def test_an_interrupt_raised_into_a_waiting_thread_loses_no_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The worst moment: the connection is handed to the waiter, then an exception of the
    # thread's own (KeyboardInterrupt, say) ends the wait before it takes it. The exception
    # propagates, and the connection is back in the pool rather than lent to nobody.
    with Pool("sqlite://:memory:", min_idle=1, max_size=1, max_wait=10, lease_ms=0) as pool:
        pool.wait_ready(10)
        held = pool.getconn()
        bag = pool._bag
        recheck = bag.recheck

        def hand_over_then_interrupt(now: float) -> None:
            monkeypatch.setattr(bag, "recheck", recheck)
            pool.putconn(held)  # handed straight to the queued waiter (this thread)
            raise KeyboardInterrupt

        monkeypatch.setattr(bag, "recheck", hand_over_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            pool.getconn()
        stats = pool.stats()
        assert (stats["pool_size"], stats["pool_available"], stats["requests_waiting"]) == \
            (1, 1, 0)
        with pool.connection(timeout=1) as conn:  # at once: nobody holds it
            assert conn.execute("SELECT 1").fetchall() == [(1,)]
