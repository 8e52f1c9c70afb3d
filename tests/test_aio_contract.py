"""The pool's contract for AsyncPool, once per asyncio backend (aiosqlite, psycopg's
AsyncConnection, asyncpg, aiomysql): for every test of tests/test_pool_contract.py a twin of
the same name proving the same property here, or a reason in :data:`SYNC_ONLY`
(:func:`test_every_sync_contract_test_has_an_async_twin` fails on drift). Then what only
load shows: fairness with many tasks on few connections, sessions ended on the server under
load, many timeouts at once, and a server restart (private servers, ``slow``).

Each test runs its own event loop (``asyncio.run``, no plugin), as tests/test_aio_pool.py.
Statements go through :class:`Db`, which speaks each driver's own API (asyncpg: ``fetch``,
``$1`` placeholders; the others: DB-API cursors).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import gc
import inspect
import logging
import sqlite3
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from poolkeeper import PoolTimeout, TooManyWaiting
from poolkeeper.core.slot import SlotState
from poolkeeper.errors import ConnectionReturned, PoolClosed
from poolkeeper.pool import CloseReason
from poolkeeper.pool.aio import AsyncPool

from ._private_servers import PrivateMariaDB, PrivatePostgres, ServerUnavailable
from .conftest import MYSQL_DSN, PG_DSN, require_server

#: sync contract tests with no meaning for asyncio, and why (checked by the drift test)
SYNC_ONLY: dict[str, str] = {}

#: no load loop runs longer than this, whatever happens
LOAD_LIMIT_S = 30.0


def run(coro: Awaitable[Any]) -> Any:
    """Run ``coro`` in a fresh loop, failing on a "Task was destroyed but it is pending"."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return asyncio.run(coro)  # type: ignore[arg-type]


def counts_add_up(pool: AsyncPool) -> None:
    """Open connections by the bag == slots not closed == opened - closed <= max_size, and
    every slot in use has its checkout."""
    counts = pool._bag.counts()
    live = [s for s in pool._slots.values() if s.state is not SlotState.CLOSED]
    assert counts["total"] == len(live), (counts, live)
    assert all(s.checkout is not None for s in live if s.state is SlotState.IN_USE), live
    stats = pool.stats()
    closed = sum(stats[f"connections_closed_{r}"] for r in CloseReason.ALL)
    assert stats["connections_num"] - closed == stats["pool_size"] == counts["total"], stats
    assert counts["total"] <= pool.config.max_size


class Db:
    """One asyncio backend: its DSN and its dialect, spoken through a pool's proxy."""

    def __init__(self, name: str, dsn: str) -> None:
        self.name = name  # sqlite, postgresql, asyncpg, mysql
        self.dsn = dsn

    @property
    def server(self) -> str | None:
        return {"postgresql": "postgresql", "asyncpg": "postgresql",
                "mysql": "mysql"}.get(self.name)

    def ph(self, n: int) -> str:
        """The ``n``-th (1-based) parameter placeholder."""
        return {"sqlite": "?", "asyncpg": f"${n}"}.get(self.name, "%s")

    async def rows(self, conn: Any, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.name == "asyncpg":
            return [tuple(r) for r in await conn.fetch(sql, *params)]
        cur = await conn.execute(sql, params or None)
        return [tuple(r) for r in await cur.fetchall()] if cur.description else []

    async def one(self, conn: Any, sql: str, *params: Any) -> Any:
        return (await self.rows(conn, sql, *params))[0][0]

    async def begin(self, conn: Any) -> None:
        """Open a transaction (asyncpg commits each statement on its own without one)."""
        if self.name == "asyncpg":
            await conn.execute("BEGIN")

    def sleep_sql(self, seconds: float) -> str:
        if self.server == "postgresql":
            return f"SELECT pg_sleep({seconds})"
        if self.server == "mysql":
            return f"SELECT SLEEP({seconds})"
        n = int(seconds * 3_000_000)
        return (f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                f"WHERE x < {n}) SELECT max(x) FROM c")

    async def create(self, pool: AsyncPool) -> str:
        table = f"pka_{uuid.uuid4().hex[:10]}"
        async with pool.connection() as conn:
            await self.begin(conn)
            await self.rows(conn, f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, v TEXT)")
        return table

    async def drop(self, pool: AsyncPool, table: str) -> None:
        async with pool.connection() as conn:
            await self.rows(conn, f"DROP TABLE IF EXISTS {table}")

    async def count(self, pool: AsyncPool, table: str) -> int:
        async with pool.connection() as conn:
            return int(await self.one(conn, f"SELECT COUNT(*) FROM {table}"))

    def without_cursors(self) -> None:
        if self.name == "asyncpg":
            pytest.skip("asyncpg has no DB-API cursors: its proxy keeps asyncpg's own API")


@pytest.fixture(params=["sqlite", "postgresql", "asyncpg", "mysql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    """The same test once per asyncio backend (the servers skip with a reason when down)."""
    name: str = request.param
    if name == "sqlite":
        pytest.importorskip("aiosqlite")
        return Db(name, f"sqlite:///{tmp_path / 'aio.db'}")
    if name == "mysql":
        require_server("MariaDB", "127.0.0.1", 3306, "aiomysql")
        return Db(name, MYSQL_DSN)
    require_server("PostgreSQL", "127.0.0.1", 5432, "psycopg" if name == "postgresql"
                   else "asyncpg")
    scheme = "postgresql+asyncpg" if name == "asyncpg" else "postgresql"
    return Db(name, scheme + "://" + PG_DSN.split("://", 1)[1])


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Db:
    pytest.importorskip("aiosqlite")
    return Db("sqlite", f"sqlite:///{tmp_path / 'aio.db'}")


@pytest.fixture
def server_db(db: Db) -> Db:
    if db.server is None:
        pytest.skip("sqlite has no server sessions to end")
    return db


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def _line() -> int:
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


async def _use(call: Callable[[], Any]) -> None:
    result = call()
    if inspect.isawaitable(result):
        await result


# ================================================================== the contract's twins
def test_connection_commits_on_clean_exit(db: Db) -> None:
    async def main() -> None:
        async with AsyncPool(db.dsn, max_size=2) as pool:
            table = await db.create(pool)
            try:
                async with pool.connection() as conn:
                    await db.begin(conn)
                    await db.rows(conn, f"INSERT INTO {table} (id, v) VALUES (1, 'a')")
                assert await db.count(pool, table) == 1
            finally:
                await db.drop(pool, table)
    run(main())


def test_connection_rolls_back_on_exception(db: Db) -> None:
    async def main() -> None:
        async with AsyncPool(db.dsn, max_size=2) as pool:
            table = await db.create(pool)
            try:
                with pytest.raises(RuntimeError):
                    async with pool.connection() as conn:
                        await db.begin(conn)
                        await db.rows(conn, f"INSERT INTO {table} (id, v) VALUES (1, 'a')")
                        raise RuntimeError("boom")
                assert await db.count(pool, table) == 0
            finally:
                await db.drop(pool, table)
    run(main())


def test_putconn_rolls_back_an_open_transaction(db: Db) -> None:
    async def main() -> None:
        async with AsyncPool(db.dsn, max_size=1) as pool:
            table = await db.create(pool)
            try:
                conn = await pool.getconn()
                await db.begin(conn)
                await db.rows(conn, f"INSERT INTO {table} (id, v) VALUES (1, 'a')")
                await pool.putconn(conn)  # no commit: the transaction must not leak onward
                assert await db.count(pool, table) == 0
                assert pool.stats()["connections_closed_reset_failed"] == 0
            finally:
                await db.drop(pool, table)
    run(main())


def test_returned_proxy_is_inert_and_names_its_borrow_site(db: Db) -> None:
    async def main() -> None:
        async with AsyncPool(db.dsn, max_size=1) as pool:
            conn = await pool.getconn()
            borrow_line = _line() - 1
            cursor = None if db.name == "asyncpg" else await conn.cursor()
            await pool.putconn(conn)
            # looked up after the return, as the sync twin does
            uses: list[Callable[[], Any]] = [lambda: conn.raw,
                                             lambda: db.rows(conn, "SELECT 1")]
            if cursor is None:
                uses += [lambda: conn.fetchval("SELECT 1"), lambda: conn.transaction()]
            else:
                uses += [lambda: conn.cursor(), lambda: conn.commit(), cursor.fetchone,
                         lambda: cursor.execute("SELECT 1")]
            for use in uses:
                with pytest.raises(ConnectionReturned) as info:
                    await _use(use)
                assert f"test_aio_contract.py:{borrow_line}" in str(info.value)
            assert conn.closed
            if cursor is not None:
                assert cursor.closed
            async with pool.connection() as again:  # the next borrower's works
                assert await db.one(again, "SELECT 1") == 1
    run(main())


def test_cursors_left_open_are_closed_on_return(db: Db) -> None:
    db.without_cursors()

    async def main() -> None:
        async with AsyncPool(db.dsn, max_size=1) as pool:
            async with pool.connection() as conn:
                cursors = [conn.cursor() for _ in range(3)]
                raws = []
                for cur in cursors:
                    await cur.execute("SELECT 1")
                    raws.append(cur.raw)
            assert all(cur.closed for cur in cursors)
            if db.name != "sqlite":  # aiosqlite's cursor has no `closed`
                assert all(raw.closed for raw in raws)
    run(main())


def test_many_cursors_in_one_checkout_keep_a_bounded_list(db: Db) -> None:
    db.without_cursors()

    async def main() -> None:
        async with AsyncPool(db.dsn, max_size=1) as pool, pool.connection() as conn:
            for _ in range(1000):
                async with conn.cursor() as cur:
                    await cur.execute("SELECT 1")
            assert conn.checkout.cursors is not None and len(conn.checkout.cursors) < 100
    run(main())


def test_results_the_caller_dropped_are_not_kept_alive(db: Db) -> None:
    db.without_cursors()

    async def main() -> None:
        async with AsyncPool(db.dsn, max_size=1) as pool:
            async with pool.connection() as conn:
                for _ in range(1000):
                    await conn.execute("SELECT 1")  # the cursor is dropped at once
                alive = [r for r in conn.checkout.cursors or [] if r() is not None]
                assert len(alive) <= 1
                kept = [await conn.execute("SELECT 1") for _ in range(200)]  # kept by caller
            assert all(cur.closed for cur in kept)
    run(main())


def test_stats_count_requests_and_returns(db: Db) -> None:
    async def main() -> None:
        async with AsyncPool(db.dsn, max_size=2) as pool:
            pool.pop_stats()
            for _ in range(5):
                async with pool.connection() as conn:
                    await db.rows(conn, "SELECT 1")
            stats = pool.pop_stats()
            assert stats["requests_num"] == 5
            assert stats["returns_num"] == 5
            assert sum(stats["usage_ms_histogram"]) == 5
            assert pool.stats()["requests_num"] == 0  # popped
    run(main())


def test_threads_share_a_small_pool_without_loss(db: Db) -> None:
    # the asyncio twin: tasks, not threads, share the pool
    tasks, per_task = 8, 60

    async def main() -> None:
        async with AsyncPool(db.dsn, max_size=3, max_wait=30) as pool:
            done = [0] * tasks

            async def work(i: int) -> None:
                deadline = time.monotonic() + LOAD_LIMIT_S
                for _ in range(per_task):
                    if time.monotonic() > deadline:
                        break
                    async with pool.connection() as conn:
                        assert await db.one(conn, "SELECT 1") == 1
                    done[i] += 1

            async with asyncio.timeout(LOAD_LIMIT_S + 10):
                await asyncio.gather(*(work(i) for i in range(tasks)))
            assert done == [per_task] * tasks
            stats = pool.stats()
            assert stats["requests_num"] == stats["returns_num"] == tasks * per_task
            assert stats["pool_size"] <= 3
            assert stats["pool_active"] == 0
            counts_add_up(pool)
    run(main())


def test_waiters_are_served_first_come_first_served(db: Db) -> None:
    async def main() -> list[int]:
        order: list[int] = []
        async with AsyncPool(db.dsn, min_idle=1, max_size=1, max_wait=20) as pool:
            await pool.wait_ready()
            holder = await pool.getconn()

            async def wait_then_record(i: int) -> None:
                async with pool.connection():
                    order.append(i)

            waiting = []
            for i in range(5):
                waiting.append(asyncio.create_task(wait_then_record(i)))
                await until(lambda: pool.stats()["requests_waiting"] == len(waiting))
            await pool.putconn(holder)
            async with asyncio.timeout(20):
                await asyncio.gather(*waiting)
        return order
    assert run(main()) == [0, 1, 2, 3, 4]


def test_pool_timeout_names_counts_and_holders(db: Db) -> None:
    async def main() -> str:
        async with AsyncPool(db.dsn, min_idle=1, max_size=1) as pool:
            started, release = asyncio.Event(), asyncio.Event()

            async def hold_and_run() -> None:
                async with pool.connection() as conn:
                    started.set()
                    await db.rows(conn, db.sleep_sql(0.8))
                    await release.wait()

            holder = asyncio.create_task(hold_and_run(), name="the-holder")
            await asyncio.wait_for(started.wait(), 10)
            await asyncio.sleep(0.1)
            with pytest.raises(PoolTimeout) as info:
                await pool.getconn(timeout=0.2)
            release.set()
            await asyncio.wait_for(holder, 10)
            return f"{pool.name!r}\n{info.value}"
    name, message = run(main()).split("\n", 1)
    assert f"pool {name}: couldn't get a connection after 0.2" in message
    assert "total=1, active=1, idle=0, waiting=1, opening=0, max_size=1" in message
    assert "by task 'the-holder'" in message, message
    assert "test_aio_contract.py" in message and "in hold_and_run" in message
    assert "running: " in message
    assert "0.8" not in message.split("running: ")[1]  # literals are folded, never shown
    assert "what to do" in message


def test_max_waiting_turns_callers_away_at_once(sqlite_db: Db) -> None:
    async def main() -> None:
        async with AsyncPool(sqlite_db.dsn, max_size=1, max_waiting=1) as pool:
            holder = await pool.getconn()

            async def wait() -> None:
                async with pool.connection(timeout=5):
                    pass
            queued = asyncio.create_task(wait())
            await until(lambda: pool.stats()["requests_waiting"] == 1)
            with pytest.raises(TooManyWaiting, match="max_waiting=1"):
                await pool.getconn(timeout=5)
            await pool.putconn(holder)
            await asyncio.wait_for(queued, 10)
    run(main())


def test_close_stops_every_thread_and_closes_late_returns(db: Db) -> None:
    # the asyncio twin: close() ends every task the pool started; a late return is closed
    async def main() -> None:
        pool = AsyncPool(db.dsn, min_idle=2, max_size=3)
        await pool.open()
        await pool.wait_ready(10)
        borrowed = await pool.getconn()
        tasks = pool.tasks
        assert tasks and not any(t.done() for t in tasks)
        await pool.close()
        assert all(t.done() for t in tasks) and pool.tasks == []
        with pytest.raises(PoolClosed):
            await pool.getconn()
        raw = borrowed.raw
        await borrowed.close()  # returned after close: the physical connection is closed
        assert pool.stats()["connections_closed_pool_closed"] >= 1
        assert pool.stats()["pool_size"] == 0
        await until(lambda: pool.tasks == [], timeout=5)
        await _assert_raw_closed(db, raw)
    run(main())


async def _assert_raw_closed(db: Db, raw: Any) -> None:
    if db.name == "asyncpg":
        assert raw.is_closed()
    elif db.name in ("postgresql", "mysql"):
        assert raw.closed
    else:
        with pytest.raises(ValueError, match="no active connection"):
            await raw.execute("SELECT 1")


def test_waiters_are_woken_with_pool_closed(sqlite_db: Db) -> None:
    async def main() -> None:
        pool = AsyncPool(sqlite_db.dsn, max_size=1)
        holder = await pool.getconn()
        waiter = asyncio.create_task(pool.getconn(timeout=10))
        await until(lambda: pool.stats()["requests_waiting"] == 1)
        await pool.close()
        with pytest.raises(PoolClosed):
            await asyncio.wait_for(waiter, 5)
        await holder.close()
    run(main())


def test_expire_all_retires_idle_now_and_borrowed_on_return(db: Db) -> None:
    async def main() -> None:
        async with AsyncPool(db.dsn, min_idle=1, max_size=2) as pool:
            borrowed = await pool.getconn()
            first_id = borrowed.slot.id
            pool.expire_all()
            await pool.putconn(borrowed)
            await until(lambda: pool.stats()["connections_closed_expired"] >= 1)
            async with pool.connection() as conn:
                assert conn.slot.id != first_id
    run(main())


def test_max_lifetime_retires_connections(sqlite_db: Db) -> None:
    async def main() -> None:
        async with AsyncPool(sqlite_db.dsn, min_idle=1, max_size=1, max_lifetime=1,
                             idle_timeout=None, keepalive_interval=None,
                             housekeeping_interval=0.05) as pool:
            async with pool.connection() as conn:
                first = conn.slot.id
            await until(lambda: pool.stats()["connections_closed_lifetime"] >= 1, timeout=5)
            async with pool.connection() as conn:
                assert conn.slot.id != first
    run(main())


def test_idle_expiry_never_goes_below_min_idle(db: Db) -> None:
    async def main() -> None:
        async with AsyncPool(db.dsn, min_idle=2, max_size=4, idle_timeout=0.2,
                             housekeeping_interval=0.05) as pool:
            held = [await pool.getconn() for _ in range(4)]
            for conn in held:
                await pool.putconn(conn)
            await until(lambda: pool.stats()["connections_closed_idle"] == 2, timeout=5)
            await asyncio.sleep(0.5)
            stats = pool.stats()
            assert stats["pool_size"] == 2
            assert stats["connections_closed_idle"] == 2
    run(main())


def test_keepalive_pings_idle_connections_instead_of_replacing_them(db: Db) -> None:
    async def main() -> None:
        async with AsyncPool(db.dsn, min_idle=2, max_size=2, keepalive_interval=0.1,
                             housekeeping_interval=0.05) as pool:
            await pool.wait_ready(10)
            opened = pool.stats()["connections_num"]
            await until(lambda: pool.stats()["keepalives_num"] >= 4, timeout=5)
            stats = pool.stats()
            assert stats["connections_num"] == opened  # no churn
            assert stats["connections_opened_last_hour"] == opened
    run(main())


def test_validation_is_skipped_within_the_bypass_window(db: Db) -> None:
    async def main() -> None:
        async with AsyncPool(db.dsn, min_idle=1, max_size=1, validation_bypass=60) as pool:
            for _ in range(5):
                async with pool.connection():
                    pass
            assert pool.stats()["validations_num"] == 0
        async with AsyncPool(db.dsn, min_idle=1, max_size=1, validation_bypass=0) as pool:
            for _ in range(5):
                async with pool.connection():
                    pass
            assert pool.stats()["validations_num"] == 5
    run(main())


async def borrow_and_forget(pool: AsyncPool) -> Any:
    return await pool.getconn()


def test_leak_is_logged_with_site_thread_and_sql_then_unleaked(
        db: Db, caplog: pytest.LogCaptureFixture) -> None:
    # the asyncio twin names the holding task where the thread shell names the thread
    caplog.set_level(logging.INFO, logger="poolkeeper")

    async def main() -> None:
        async with AsyncPool(db.dsn, max_size=2, leak_threshold=0.1) as pool:
            conn = await borrow_and_forget(pool)
            await db.rows(conn, "SELECT 42")
            await until(lambda: pool.stats()["leaks_detected"] == 1)
            leak = next(r.getMessage() for r in caplog.records
                        if "possible leak" in r.getMessage())
            assert "in borrow_and_forget" in leak and "test_aio_contract.py" in leak
            assert "task 'the-leaker'" in leak, leak
            assert "running: SELECT" in leak and "borrow stack" in leak
            await pool.putconn(conn)
            assert pool.stats()["leaks_returned"] == 1
            assert any("previously reported leak returned" in r.getMessage()
                       for r in caplog.records)

    async def named() -> None:
        await asyncio.create_task(main(), name="the-leaker")
    run(named())


def test_garbage_collected_proxy_gives_its_connection_back(
        db: Db, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="poolkeeper")

    async def main() -> None:
        async with AsyncPool(db.dsn, min_idle=1, max_size=1,
                             housekeeping_interval=0.05) as pool:
            await db.rows(await borrow_and_forget(pool), "SELECT 1")  # dropped at once
            gc.collect()
            async with pool.connection(timeout=5) as conn:
                assert await db.one(conn, "SELECT 1") == 1
            assert pool.stats()["orphans_returned"] == 1
            counts_add_up(pool)
    run(main())
    assert any("garbage-collected without being returned" in r.getMessage()
               and "borrow_and_forget" in r.getMessage() for r in caplog.records)


def test_putconn_rejects_a_connection_of_another_pool(sqlite_db: Db) -> None:
    async def main() -> None:
        async with AsyncPool(sqlite_db.dsn, max_size=1) as a, \
                AsyncPool("sqlite://:memory:", max_size=1, name="the-other") as b:
            conn = await a.getconn()
            with pytest.raises(ValueError, match="connection of pool 'the-other'"):
                await b.putconn(conn)
            await a.putconn(conn)
    run(main())


def test_memory_dsn_is_shared_by_all_connections_of_a_pool() -> None:
    pytest.importorskip("aiosqlite")

    async def main() -> None:
        async with AsyncPool("sqlite://:memory:", max_size=2) as pool:
            c1, c2 = await pool.getconn(), await pool.getconn()
            assert c1.slot.id != c2.slot.id
            await c1.execute("CREATE TABLE t (x INTEGER)")
            await c1.commit()
            cur = await c2.execute("SELECT COUNT(*) FROM t")  # c2 sees c1's table
            assert (await cur.fetchone())[0] == 0
            await pool.putconn(c1)
            await pool.putconn(c2)
    run(main())


def test_params_and_rows_round_trip(db: Db) -> None:
    async def main() -> None:
        async with AsyncPool(db.dsn, max_size=1) as pool:
            table = await db.create(pool)
            insert = f"INSERT INTO {table} (id, v) VALUES ({db.ph(1)}, {db.ph(2)})"
            select = f"SELECT id, v FROM {table} WHERE id >= {db.ph(1)} ORDER BY id"
            values = [(i, f"v{i}") for i in range(10)]
            try:
                async with pool.connection() as conn:
                    if db.name == "asyncpg":
                        await conn.executemany(insert, values)
                    else:
                        await conn.cursor().executemany(insert, values)
                async with pool.connection() as conn:
                    if db.name != "asyncpg":
                        cur = conn.cursor()
                        await cur.execute(select, (5,))
                        assert cur.description is not None
                    assert await db.rows(conn, select, 5) == values[5:]
            finally:
                await db.drop(pool, table)
    run(main())


def test_autocommit_change_is_restored_on_return(db: Db) -> None:
    if db.name == "asyncpg":
        pytest.skip("asyncpg has no autocommit setting to change (it refuses "
                    "set_autocommit(False)); it has nothing to restore")

    async def main() -> None:
        async with AsyncPool(db.dsn, min_idle=1, max_size=1) as pool:
            async with pool.connection() as conn:
                first = conn.slot.id
                before = pool.driver.get_autocommit(conn.raw)
                await conn.set_autocommit(not before)
                assert pool.driver.get_autocommit(conn.raw) is (not before)
            async with pool.connection() as conn:
                assert conn.slot.id == first  # the same physical connection
                assert pool.driver.get_autocommit(conn.raw) is before
    run(main())


def test_read_only_transaction_is_ended_on_return(db: Db) -> None:
    async def main() -> None:
        async with AsyncPool(db.dsn, min_idle=1, max_size=1) as pool:
            table = await db.create(pool)
            try:
                conn = await pool.getconn()
                await db.begin(conn)
                await db.rows(conn, f"SELECT COUNT(*) FROM {table}")
                await pool.putconn(conn)
                async with pool.connection(timeout=5) as conn:  # the same connection
                    if db.name == "mysql":
                        assert await db.one(conn, "SELECT @@in_transaction") == 0
                    elif db.name == "postgresql":
                        assert conn.raw.info.transaction_status == 0  # idle
                    elif db.name == "asyncpg":
                        assert not conn.raw.is_in_transaction()
                    else:
                        assert not conn.raw.in_transaction
            finally:
                await db.drop(pool, table)
    run(main())


def test_proxies_are_transparent_for_the_drivers_own_attributes(db: Db) -> None:
    async def main() -> None:
        async with AsyncPool(db.dsn, max_size=1, min_idle=0) as pool, \
                pool.connection() as conn:
            raw = conn.raw
            if db.name == "asyncpg":
                assert conn.get_server_pid() == raw.get_server_pid()  # a driver method
                assert conn.get_server_version() == raw.get_server_version()
            else:
                cur = await conn.cursor()
                await cur.execute("SELECT 1")
                assert (await cur.fetchone())[0] == 1
                assert cur.arraysize == cur.raw.arraysize  # DB-API attribute of each driver
                cur.arraysize = 7  # a write reaches the driver's cursor
                assert cur.raw.arraysize == 7
                if db.name == "postgresql":
                    assert conn.info.dbname == raw.info.dbname  # psycopg attribute
                    assert cur.statusmessage == "SELECT 1"
                    assert conn.prepare_threshold == raw.prepare_threshold
                elif db.name == "mysql":
                    assert conn.get_server_info() == raw.get_server_info()  # a driver method
                    assert cur.rownumber == cur.raw.rownumber
                else:
                    conn.row_factory = sqlite3.Row  # aiosqlite attribute, written
                    assert raw.row_factory is sqlite3.Row
                    row = await (await conn.execute("SELECT 2 AS two")).fetchone()
                    assert row["two"] == 2
                    conn.row_factory = None
                    assert cur.lastrowid == cur.raw.lastrowid
                await cur.close()
            with pytest.raises(AttributeError):
                conn.no_such_attribute_anywhere  # noqa: B018 - neither proxy nor driver
    run(main())


# ================================================================== the shells cannot drift
def _test_names(module: Any) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    return {node.name for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")}


def test_every_sync_contract_test_has_an_async_twin() -> None:
    import sys

    from . import test_pool_contract

    sync = _test_names(test_pool_contract)
    here = _test_names(sys.modules[__name__])
    assert sync, "no tests found in test_pool_contract.py"
    missing = sorted(sync - here - set(SYNC_ONLY))
    assert not missing, (
        f"{len(missing)} sync contract test(s) have no asyncio twin in test_aio_contract.py "
        f"and no reason in SYNC_ONLY: {', '.join(missing)}; add a twin of the same name, or "
        "say in SYNC_ONLY why it has no meaning for asyncio")
    stale = sorted(set(SYNC_ONLY) - sync)
    assert not stale, f"SYNC_ONLY names tests test_pool_contract.py no longer has: {stale}"
    both = sorted(set(SYNC_ONLY) & here)
    assert not both, f"SYNC_ONLY names tests that do have a twin here: {both}"
    assert all(reason.strip() for reason in SYNC_ONLY.values())
