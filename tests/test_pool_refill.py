"""Refill after an outage, and no churn under a light steady load (BoneCP's idle churn).

The outage here is a connect callable that fails on demand (a fault no real server produces
on cue, in order); the restarts of real servers are in test_faults_private.py. About 12 s in
all, most of it the churn runs on the three backends.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from typing import Any

import pytest

from poolkeeper import Pool
from poolkeeper.core import policy
from poolkeeper.core.bag import Bag
from poolkeeper.core.slot import Slot

from ._db import until


class _Outage:
    """A connect that fails its first ``failures`` calls, the first two of them together."""

    def __init__(self, path: str, failures: int) -> None:
        self.path = path
        self.failures = failures
        self.calls = 0
        self.successes = 0
        self.lock = threading.Lock()
        self.together = threading.Barrier(2, timeout=5)
        self.first_success = threading.Event()

    def __call__(self) -> sqlite3.Connection:
        with self.lock:
            self.calls += 1
            call = self.calls
        if call <= 2:
            self.together.wait()  # two attempts in flight at once, both failing
        if call <= self.failures:
            raise sqlite3.OperationalError(f"server unavailable (attempt {call})")
        raw = sqlite3.connect(self.path, check_same_thread=False)
        with self.lock:
            self.successes += 1
        self.first_success.set()
        return raw


def _failure_steps(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The "(N in a row)" of each logged connect failure."""
    steps = []
    for record in caplog.records:
        if "connecting to" in record.getMessage():
            steps.append(int(record.getMessage().split("(")[1].split(" ")[0]))
    return steps


def test_overlapping_failed_opens_count_as_one_backoff_step(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    outage = _Outage(str(tmp_path / "o.db"), failures=4)
    caplog.set_level(logging.DEBUG, logger="poolkeeper.pool")
    with Pool(connect=outage, driver="sqlite", min_idle=4, max_size=4, fail_fast=False,
              reconnect_backoff_max=10) as pool:
        pool.wait_ready(10)
        steps = _failure_steps(caplog)
        # the two overlapping attempts are one step; after them, one attempt per step
        assert steps == [1, 1, 2, 3], steps
        assert outage.calls == 4 + 4
        assert pool.stats()["connections_errors"] == 4


def test_opens_waiting_for_the_backoff_start_at_once_after_the_first_success(
        tmp_path: Any) -> None:
    # 9 failed attempts: on the old per-attempt count the opens still queued would wait
    # 12.8-51.2 s (cap 60 s) after the first success; they must start as soon as it lands.
    outage = _Outage(str(tmp_path / "o.db"), failures=9)
    with Pool(connect=outage, driver="sqlite", min_idle=4, max_size=4, fail_fast=False,
              reconnect_backoff_max=60) as pool:
        assert outage.first_success.wait(20)
        # a liveness bound, far below the backoff the queued opens used to wait out
        pool.wait_ready(5)
        stats = pool.stats()
        assert stats["pool_size"] == 4
        assert stats["connections_opening"] == 0
        assert stats["connections_num"] == 4 == outage.successes
        assert stats["connections_errors"] == 9
        # nothing left queued but the housekeeping pass: no retry, no deferred open
        assert pool._worker.pending() == {"ready": 0, "timed": 1}


def test_waiters_during_an_outage_are_served_after_the_first_success(tmp_path: Any) -> None:
    outage = _Outage(str(tmp_path / "o.db"), failures=6)
    errors: list[BaseException] = []
    done = 0
    lock = threading.Lock()

    def borrow() -> None:
        nonlocal done
        try:
            with pool.connection(timeout=20) as conn:
                conn.execute("SELECT 1")
                time.sleep(0.05)
            with lock:
                done += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with Pool(connect=outage, driver="sqlite", min_idle=0, max_size=4, fail_fast=False,
              reconnect_backoff_max=60, lease_ms=0) as pool:
        threads = [threading.Thread(target=borrow) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        assert done == 8
        stats = pool.stats()
        assert stats["connections_num"] == 4
        assert stats["pool_size"] == 4


def test_backoff_never_waits_longer_than_half_the_outage() -> None:
    rand = random.Random(3)
    for failures in range(1, 40):
        for outage_s in (0.0, 0.3, 1.0, 3.0, 100.0):
            delay = policy.backoff_delay(failures, 10.0, rand, outage_s=outage_s)
            assert delay <= max(0.1, outage_s / 2) + 1e-9
            assert delay <= 10.0
    assert policy.backoff_delay(0, 10.0, rand, outage_s=5.0) == 0.0


# ---------------------------------------------------------------------- churn
def _slot(i: int, now: float, idle_timeout: float) -> Slot:
    return Slot(i, object(), now=now, expires_at=float("inf"), idle_timeout=idle_timeout,
                generation=0)


def test_top_up_and_idle_expiry_count_the_same_connections() -> None:
    """A light load, simulated on the policy alone: one connection lent half the time.

    With min_idle=2 the pool keeps two connections and never opens or closes another; the
    old rules (top-up counting idle only) opened a third whenever one was lent and the
    expiry closed it again.
    """
    min_idle, idle_timeout = 2, 1.0
    now = 0.0
    idle = [_slot(i, now, idle_timeout) for i in range(min_idle)]
    lent: list[Slot] = []
    opened = closed = 0
    next_id = min_idle
    for step in range(1200):  # 12 s of 50 ms borrow / 50 ms pause, as in the report
        now = step * 0.05
        if step % 2 == 0:
            lent.append(idle.pop())  # LIFO borrow
        else:
            slot = lent.pop()
            slot.last_used = now
            idle.append(slot)
        if step % 5 == 0:  # a housekeeping pass every 250 ms
            for slot in policy.idle_evictions(idle, now, len(idle) + len(lent), min_idle):
                idle.remove(slot)
                closed += 1
            for _ in range(policy.opens_for_min_idle(len(idle) + len(lent), 0, min_idle)):
                idle.insert(0, _slot(next_id, now, idle_timeout))
                next_id += 1
                opened += 1
    assert (opened, closed) == (0, 0)
    # and the count is what both sides read: nothing spare, nothing missing
    assert policy.idle_evictions(idle, 1e9, 2, min_idle) == []
    assert policy.opens_for_min_idle(1, 0, min_idle) == 1
    assert policy.opens_for_min_idle(1, 1, min_idle) == 0


def _no_waiter(now: float) -> Any:
    raise AssertionError("a slot was idle: nobody should wait")


def test_reserve_opens_counts_lent_connections_toward_min_idle() -> None:
    bag = Bag(lock=threading.Lock(), lease_s=0.0, max_waiting=0)
    assert bag.reserve_opens(min_idle=2, max_size=4) == 2
    for i in range(2):
        bag.add_new(_slot(i, 0.0, 1.0))
    got = bag.borrow(0.0, None, _no_waiter)
    assert isinstance(got, Slot)
    assert bag.reserve_opens(min_idle=2, max_size=4) == 0  # one lent, one idle: two open


def _run_load(pool: Pool, seconds: float, hold: float, pause: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
            time.sleep(hold)
        time.sleep(pause)


def _burst(pool: Pool, threads: int, seconds: float) -> None:
    barrier = threading.Barrier(threads, timeout=10)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with pool.connection(timeout=10) as conn:
                barrier.wait()  # all held at once: the burst needs `threads` connections
                conn.execute("SELECT 1")
            _run_load(pool, seconds, 0.01, 0.0)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    assert not errors


def test_light_steady_load_opens_and_closes_nothing(any_dsn: str) -> None:
    # BoneCP's idle churn: the report's 12 s run (idle_timeout=1, keepalive 0.5) scaled by 1/4.
    with Pool(any_dsn, min_idle=2, max_size=4, idle_timeout=0.25, keepalive_interval=0.125,
              housekeeping_interval=0.05, validation_bypass=60) as pool:
        pool.wait_ready(10)
        _run_load(pool, 2.0, 0.0125, 0.0125)
        stats = pool.stats()
        assert stats["connections_num"] == 2
        assert stats["connections_closed_idle"] == 0
        assert stats["pool_size"] == 2


def test_bursts_open_only_what_they_need_above_min_idle(any_dsn: str) -> None:
    # opens = initial + bursts above min_idle, exactly; closes = the same bursts, when idle
    with Pool(any_dsn, min_idle=2, max_size=4, idle_timeout=0.3, keepalive_interval=0.15,
              housekeeping_interval=0.05, validation_bypass=60) as pool:
        pool.wait_ready(10)
        for _ in range(2):
            _burst(pool, 4, 0.2)
            _run_load(pool, 0.8, 0.01, 0.01)  # the trickle, longer than idle_timeout
            until(lambda: pool.stats()["pool_size"] == 2, timeout=5)
        stats = pool.stats()
        assert stats["connections_num"] == 2 + 2 * (4 - 2)
        assert stats["connections_closed_idle"] == 2 * (4 - 2)
