"""AsyncPool against the real servers: the contract of the thread shell, in asyncio, and
cancellation at every await point of acquire, check, reset, release and close.

Each test runs its own event loop (``asyncio.run``), like tests/test_aio_drivers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import warnings
from collections.abc import Awaitable
from typing import Any

import pytest

from poolkeeper import Pool, PoolTimeout
from poolkeeper.core.slot import SlotState
from poolkeeper.errors import ConnectionReturned, PoolClosed
from poolkeeper.pool.aio import AsyncPool

from .aiofault import FaultDriver, Faults


def run(coro: Awaitable[Any]) -> Any:
    """Run ``coro`` in a fresh loop, failing on a "Task was destroyed but it is pending"."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return asyncio.run(coro)  # type: ignore[arg-type]


def counts_add_up(pool: AsyncPool) -> None:
    """The bag's count of open connections is the number of slots not closed, every slot in
    use has its checkout, and none is over max_size."""
    counts = pool._bag.counts()
    live = [s for s in pool._slots.values() if s.state is not SlotState.CLOSED]
    assert counts["total"] == len(live), (counts, live)
    assert all(s.checkout is not None for s in live if s.state is SlotState.IN_USE), live
    assert counts["total"] <= pool.config.max_size


@pytest.fixture(params=["sqlite", "postgresql", "asyncpg", "mysql"])
def adsn(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """One DSN per asyncio backend (the servers' fixtures skip with a reason when down)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'aio.db'}"
    if request.param == "mysql":
        return str(request.getfixturevalue("mysql_dsn"))
    dsn = str(request.getfixturevalue("pg_dsn"))
    if request.param == "asyncpg":
        return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    return dsn


async def _one(conn: Any) -> Any:
    """SELECT 1 through the proxy, in the driver's own style."""
    if hasattr(conn, "fetchval"):  # asyncpg keeps its API
        return await conn.fetchval("SELECT 1")
    cur = await conn.execute("SELECT 1")
    row = await cur.fetchone()
    return row[0]


def test_borrow_use_return_and_the_same_statistics_names_as_pool(adsn: str) -> None:
    async def main() -> dict[str, Any]:
        async with AsyncPool(adsn, max_size=2, name="aio-basic") as pool:
            async with pool.connection() as conn:
                assert await _one(conn) == 1
            conn2 = await pool.getconn()
            assert await _one(conn2) == 1
            await pool.putconn(conn2)
            with pytest.raises(ConnectionReturned):
                await _one(conn2)
            counts_add_up(pool)
            stats = pool.stats()
            assert stats["pool_active"] == 0 and stats["connections_num"] >= 1
            return stats
    stats = run(main())
    with Pool("sqlite://:memory:", name="sync-names") as sync:
        assert set(sync.stats()) - set(stats) <= {"timeouts_num", "timeouts_fired"}, (
            set(sync.stats()) ^ set(stats))


def test_commit_on_clean_exit_and_rollback_on_error(pg_dsn: str) -> None:
    async def main() -> None:
        async with AsyncPool(pg_dsn, max_size=1) as pool:
            async with pool.connection() as conn:
                await conn.execute("CREATE TABLE IF NOT EXISTS aio_t (v int)")
                await conn.execute("DELETE FROM aio_t")
            async with pool.connection() as conn:
                await conn.execute("INSERT INTO aio_t VALUES (1)")
            with pytest.raises(ZeroDivisionError):
                async with pool.connection() as conn:
                    await conn.execute("INSERT INTO aio_t VALUES (2)")
                    raise ZeroDivisionError
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT v FROM aio_t ORDER BY v")
                assert [r[0] for r in await cur.fetchall()] == [1]
                await conn.execute("DROP TABLE aio_t")
            assert pool.stats()["connections_closed_reset_failed"] == 0
    run(main())


def test_a_timeout_names_the_holding_task_and_its_line(sqlite_dsn: str) -> None:
    async def main() -> None:
        async with AsyncPool(sqlite_dsn, max_size=1, max_wait=0.2) as pool:
            async def hold(ready: asyncio.Event, done: asyncio.Event) -> None:
                async with pool.connection():
                    ready.set()
                    await done.wait()
            ready, done = asyncio.Event(), asyncio.Event()
            holder = asyncio.create_task(hold(ready, done), name="the-holder")
            await ready.wait()
            with pytest.raises(PoolTimeout) as err:
                await pool.getconn()
            message = str(err.value)
            assert "task 'the-holder'" in message and "in hold" in message, message
            assert "total=1, active=1" in message
            done.set()
            await holder
            counts_add_up(pool)
    run(main())


def test_waiters_are_served_first_come_first_served(sqlite_dsn: str) -> None:
    async def main() -> list[int]:
        order: list[int] = []
        async with AsyncPool(sqlite_dsn, max_size=1, min_idle=1) as pool:
            await pool.wait_ready()
            first = await pool.getconn()

            async def waiter(i: int) -> None:
                async with pool.connection():
                    order.append(i)
                    await asyncio.sleep(0)
            tasks = []
            for i in range(5):
                tasks.append(asyncio.create_task(waiter(i)))
                await asyncio.sleep(0)  # queued in this order
            await pool.putconn(first)
            # a newcomer arriving now must not barge past the woken waiter
            tasks.append(asyncio.create_task(waiter(99)))
            await asyncio.gather(*tasks)
            counts_add_up(pool)
        return order
    assert run(main()) == [0, 1, 2, 3, 4, 99]


def test_a_cancelled_waiter_leaves_the_queue_and_loses_nothing(sqlite_dsn: str) -> None:
    async def main() -> None:
        async with AsyncPool(sqlite_dsn, max_size=1, min_idle=1) as pool:
            await pool.wait_ready()
            held = await pool.getconn()
            queued = asyncio.create_task(pool.getconn())
            await asyncio.sleep(0.01)
            assert pool.stats()["requests_waiting"] == 1
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            assert pool.stats()["requests_waiting"] == 0
            # cancelled just after the hand-off: the slot comes back, the next waiter gets it
            second = asyncio.create_task(pool.getconn())
            third = asyncio.create_task(pool.getconn())
            await asyncio.sleep(0.01)
            await pool.putconn(held)  # handed to `second`, which has not run yet
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
            conn = await asyncio.wait_for(third, 2)
            await pool.putconn(conn)
            counts_add_up(pool)
            assert pool.stats()["pool_size"] == 1
    run(main())


def test_wait_for_bounds_an_acquire_and_loses_no_connection(sqlite_dsn: str) -> None:
    async def main() -> None:
        async with AsyncPool(sqlite_dsn, max_size=1, min_idle=1, max_wait=30) as pool:
            await pool.wait_ready()
            held = await pool.getconn()
            for _ in range(3):
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.05):
                        async with pool.connection():
                            pass
            await pool.putconn(held)
            async with pool.connection() as conn:
                assert await _one(conn) == 1
            counts_add_up(pool)
    run(main())


def test_close_stops_every_task_and_closes_every_connection(adsn: str) -> None:
    async def main() -> None:
        pool = AsyncPool(adsn, max_size=3, min_idle=2)
        await pool.open()
        await pool.wait_ready()
        async with pool.connection() as conn:
            await _one(conn)
        assert pool.tasks  # the housekeeper at least
        await pool.close()
        assert pool.tasks == []
        assert pool.stats()["pool_size"] == 0
        with pytest.raises(PoolClosed):
            await pool.getconn()
    run(main())


def test_an_orphaned_checkout_is_taken_back(sqlite_dsn: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with AsyncPool(sqlite_dsn, max_size=1, housekeeping_interval=0.05) as pool:
            async def leak() -> None:
                conn = await pool.getconn()
                await _one(conn)
            await asyncio.create_task(leak(), name="leaky")
            gc.collect()
            async with asyncio.timeout(5):
                async with pool.connection() as conn:
                    assert await _one(conn) == 1
            assert pool.stats()["orphans_returned"] == 1
            counts_add_up(pool)
    with caplog.at_level(logging.WARNING, logger="poolkeeper.pool"):
        run(main())
    assert any("task 'leaky'" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------- every await point
async def _cycle(pool: AsyncPool) -> None:
    """Borrow (a connect while waiting, a validation ping), run, return with a commit; again
    with a rollback (the block raises); then retire the connection (its close)."""
    async with pool.connection() as conn:
        await conn.execute("BEGIN")
        await conn.execute("SELECT 1")
    with contextlib.suppress(LookupError):
        async with pool.connection() as conn:
            await conn.execute("BEGIN")
            raise LookupError
    pool.expire_all()


async def _scenario(faults: Faults, action: str, at: int | None) -> tuple[int, FaultDriver]:
    driver = FaultDriver(faults)
    pool = AsyncPool(adapter=driver, max_size=2, min_idle=0, validate_on_borrow=True,
                     validation_bypass=0.0, name=f"faults-{at}")
    await pool.open(wait=False)
    faults.reset()
    if at is not None:
        faults.arm(at, action)  # type: ignore[arg-type]
    # the fault's own outcome (CancelledError, the injected error) is not the point here
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(_cycle(pool), 5)
    await asyncio.sleep(0.05)  # let the pool's own tasks (reset, close, open) finish
    points = faults.count  # the suspensions of one cycle
    faults.disarm()
    faults.release()
    # the pool recovers: a plain cycle works, and no connection is lost or left open
    await asyncio.wait_for(_cycle(pool), 5)
    counts_add_up(pool)
    assert pool.stats()["pool_active"] == 0
    await pool.close()
    assert pool.tasks == []
    return points, driver


@pytest.mark.parametrize("action", ["cancel", "raise"])
def test_a_fault_at_every_await_point_loses_no_connection(action: str) -> None:
    total, _ = run(_scenario(Faults(), action, None))
    # connect, ping, commit, ping, rollback, close: each suspends before and after
    assert total >= 12, total
    for n in range(1, total + 1):
        faults = Faults()
        _count, driver = run(_scenario(faults, action, n))
        assert faults.fired is not None, n
        assert not driver.live, f"fault {action} at suspension {n} ({faults.fired}): " \
            f"{len(driver.live)} connections left open"


def test_stats_names_cover_the_sync_pools(sqlite_dsn: str) -> None:
    async def main() -> list[dict[str, Any]]:
        async with AsyncPool(sqlite_dsn) as pool:
            async with pool.connection() as conn:
                await _one(conn)
            return pool.connections_info()
    rows = run(main())
    assert rows and rows[0]["state"] == "idle"



def test_a_caller_cancelled_during_its_reset_loses_nothing() -> None:
    """The rollback on return runs in the pool's own task: the caller's cancellation while it
    runs is raised to the caller, and the connection still comes back (or is discarded)."""
    async def main() -> None:
        faults = Faults(before=1, after=0)
        driver = FaultDriver(faults)
        async with AsyncPool(adapter=driver, max_size=1, name="reset-cancel") as pool:
            conn = await pool.getconn()
            await conn.execute("BEGIN")
            faults.reset()
            faults.arm(1, "hang")  # the rollback's first suspension hangs until released

            async def give_back() -> None:
                await pool.putconn(conn)
            returning = asyncio.create_task(give_back())
            await asyncio.sleep(0.05)
            assert faults.fired is not None and faults.fired[1] == "rollback"
            returning.cancel()
            with pytest.raises(asyncio.CancelledError):
                await returning
            faults.release()
            async with asyncio.timeout(5):
                async with pool.connection() as again:
                    cur = await again.execute("SELECT 1")
                    assert (await cur.fetchone())[0] == 1
            counts_add_up(pool)
            assert pool.stats()["pool_size"] == 1
        assert not driver.live
    run(main())


def test_a_failed_commit_whose_caller_was_cancelled_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    """The commit on return runs on in the pool's task after its caller is cancelled; if it
    fails, nobody is left to raise it to, so it is logged rather than lost in silence."""
    async def main() -> None:
        faults = Faults(before=2, after=0)
        driver = FaultDriver(faults)
        async with AsyncPool(adapter=driver, max_size=1, name="commit-unheard") as pool:
            async def work() -> None:
                async with pool.connection() as conn:
                    await conn.execute("BEGIN")
                    await conn.execute("CREATE TABLE t (x INTEGER)")
                    faults.reset()
                    faults.arm(1, "hang")  # the commit's first suspension
            working = asyncio.create_task(work())
            async with asyncio.timeout(5):
                while faults.fired is None:
                    await asyncio.sleep(0.01)
            assert faults.fired[1] == "commit"
            working.cancel()
            with pytest.raises(asyncio.CancelledError):
                await working
            faults.arm(2, "raise")  # the commit's second suspension fails
            faults.release()
            async with asyncio.timeout(5), pool.connection() as again:
                cur = await again.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'")
                assert (await cur.fetchone())[0] == 0  # rolled back, not committed
            counts_add_up(pool)
        assert not driver.live
    with caplog.at_level(logging.WARNING, logger="poolkeeper"):
        run(main())
    logged = [r.getMessage() for r in caplog.records if "caller was cancelled" in r.getMessage()]
    assert len(logged) == 1, caplog.text
    assert "'commit-unheard'" in logged[0] and "injected fault" in logged[0]
    assert "changes are lost" in logged[0]


def test_a_reset_past_reset_timeout_discards_the_connection(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        faults = Faults(before=1, after=0)
        driver = FaultDriver(faults)
        async with AsyncPool(adapter=driver, max_size=1, reset_timeout=0.2,
                             name="reset-slow") as pool:
            conn = await pool.getconn()
            await conn.execute("BEGIN")
            faults.reset()
            faults.arm(1, "hang")  # the rollback on return never ends by itself
            async with asyncio.timeout(5):
                await pool.putconn(conn)  # returns once reset_timeout passed
            assert faults.fired is not None and faults.fired[1] == "rollback"
            faults.release()
            stats = pool.stats()
            assert stats["connections_closed_reset_failed"] == 1, stats
            async with asyncio.timeout(5), pool.connection() as again:
                cur = await again.execute("SELECT 1")
                assert (await cur.fetchone())[0] == 1
            counts_add_up(pool)
        assert not driver.live
    with caplog.at_level(logging.WARNING, logger="poolkeeper"):
        run(main())
    assert "within reset_timeout=0.2 s" in caplog.text, caplog.text


def test_a_return_after_close_closes_the_connection_before_it_returns() -> None:
    """close() does not wait for connections still lent; their returner does, so a loop that
    ends right after the return leaves no close pending and no connection open."""
    faults = Faults(before=1, after=1)
    driver = FaultDriver(faults)

    async def main() -> AsyncPool:
        pool = AsyncPool(adapter=driver, max_size=1, name="late-return")
        await pool.open()
        conn = await pool.getconn()
        await pool.close()
        assert driver.live  # still lent
        await pool.putconn(conn)
        assert pool.tasks == [] and not driver.live
        return pool

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Task was destroyed but it is pending" would show
        pool = run(main())
    gc.collect()
    assert pool.stats()["connections_closed_pool_closed"] == 1
    assert driver.opened == driver.closed == 1
