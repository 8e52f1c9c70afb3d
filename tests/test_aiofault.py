"""The fault-injecting asyncio driver itself (tests/aiofault.py): it numbers every suspension
of every coroutine globally, injects a real cancel, an error or a hang at the n-th, and runs
statements on a real aiosqlite connection."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest

from poolkeeper.drivers.aiobase import AsyncDriver

from .aiofault import FaultDriver, Faults

pytest.importorskip("aiosqlite")


async def _scenario(driver: FaultDriver) -> list[Any]:
    """connect, ping, a write in a transaction, commit, a read, close: every coroutine."""
    raw = await driver.connect()
    try:
        await driver.ping(raw, 1.0)
        await driver.execute(raw, "CREATE TABLE IF NOT EXISTS t (x INTEGER)")
        await driver.execute(raw, "INSERT INTO t VALUES (1)")
        await driver.commit(raw)
        rows = await driver.execute(raw, "SELECT count(*) FROM t")
        await driver.rollback(raw)
    finally:
        try:
            await driver.close(raw)
        except BaseException:
            driver.abort(raw)  # what a shell does when its close is interrupted
            raise
    return rows


def test_every_coroutine_suspends_and_is_numbered_globally() -> None:
    faults = Faults(before=2, after=1)
    driver = FaultDriver(faults)
    assert isinstance(driver, AsyncDriver)
    rows = asyncio.run(_scenario(driver))
    assert rows == [(1,)]  # the statements ran on SQLite
    ops = [op for _, op, _ in faults.log]
    # 8 coroutine calls (close counting twice: its caller's and its I/O's) x (2 + 1)
    assert faults.count == len(faults.log) == 9 * 3
    assert [n for n, _, _ in faults.log] == list(range(1, 28))
    assert ops[:3] == ["connect"] * 3
    assert ops[-6:] == ["close", "close", "close_io", "close_io", "close_io", "close"]
    assert {"ping", "execute", "commit", "rollback"} <= set(ops)
    assert driver.opened == driver.closed == 1 and not driver.live


def test_a_cancel_at_each_suspension_reaches_the_caller_as_cancelled_error() -> None:
    faults = Faults()
    driver = FaultDriver(faults)
    asyncio.run(_scenario(driver))
    total = faults.count
    assert total == 18  # 9 coroutine calls x (1 before + 1 after)
    seen = []
    for n in range(1, total + 1):
        faults.reset()
        faults.arm(n, "cancel")

        async def run() -> tuple[bool, int]:
            task = asyncio.ensure_future(_scenario(driver))
            try:
                await task
            except asyncio.CancelledError:
                return task.cancelled(), faults.count
            return False, faults.count

        cancelled, count = asyncio.run(run())
        assert faults.fired is not None and faults.fired[0] == n
        op = faults.fired[1]
        seen.append(op)
        if op == "close_io":
            # inside close()'s own task: the close is aborted, the caller goes on
            assert not cancelled and count >= total - 1  # the rest of close_io is skipped
        else:
            assert cancelled, f"suspension {n} of {total} ({op}) did not cancel the caller"
            # it stopped at the n-th suspension, but for the close() its finally runs
            assert count >= n
    assert seen[0] == "connect" and seen[-1] == "close" and "close_io" in seen
    # no connection lost, whatever the point: connect cleans up after itself, the
    # scenario aborts what an interrupted close left open
    assert not driver.live and driver.opened == driver.closed


def test_a_raise_at_the_nth_suspension_raises_the_configured_error() -> None:
    faults = Faults(error=lambda: sqlite3.OperationalError("disk I/O error (injected)"))
    driver = FaultDriver(faults)

    async def run() -> None:
        raw = await driver.connect()
        faults.reset()
        faults.arm(2, "raise")  # ping: before (1), after (2)
        with pytest.raises(sqlite3.OperationalError, match="injected"):
            await driver.ping(raw, 1.0)
        assert faults.fired == (2, "ping", "after")
        assert await driver.close(raw)

    asyncio.run(run())


def test_a_hang_waits_until_released_or_cancelled() -> None:
    faults = Faults()
    driver = FaultDriver(faults)

    async def run() -> None:
        raw = await driver.connect()
        faults.reset()
        faults.arm(1, "hang")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await driver.commit(raw)
        faults.reset()
        faults.arm(1, "hang")
        commit = asyncio.ensure_future(driver.commit(raw))
        for _ in range(100):  # bounded: until the hang is reached
            if faults.fired is not None:
                break
            await asyncio.sleep(0)
        assert faults.fired == (1, "commit", "before") and not commit.done()
        faults.release()
        await asyncio.wait_for(commit, 5.0)
        assert await driver.close(raw)

    asyncio.run(run())


def test_a_hung_close_is_aborted_at_its_time_limit_and_the_connection_is_not_lost() -> None:
    faults = Faults()
    driver = FaultDriver(faults)

    async def run() -> bool:
        raw = await driver.connect()
        faults.reset()
        faults.arm(2, "hang")  # close (caller) 1, close_io 2: inside the time limit
        return await driver.close(raw, timeout=0.1)

    assert asyncio.run(run()) is False  # aborted, not closed cleanly
    assert not driver.live and driver.closed == 1
