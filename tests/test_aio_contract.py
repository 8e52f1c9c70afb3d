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

# the whole module runs on both twins of the bag, as the sync contract: lock-free and locked
pytestmark = pytest.mark.usefixtures("bag_twin")

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



#: the asyncio backends; those with DB-API cursors (asyncpg keeps its own API); those with a
#: server session to end
BACKENDS = ["sqlite", "postgresql", "asyncpg", "mysql"]
DBAPI_BACKENDS = ["sqlite", "postgresql", "mysql"]
SERVER_BACKENDS = ["postgresql", "asyncpg", "mysql"]


def make_db(name: str, tmp_path: Path) -> Db:
    """The backend ``name`` (one of BACKENDS); skipped with a reason when its server is down."""
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


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    """The same test once per asyncio backend."""
    return make_db(request.param, tmp_path)


@pytest.fixture(params=DBAPI_BACKENDS)
def dbapi_db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    """The backends whose proxies have DB-API cursors (asyncpg's keeps asyncpg's own API)."""
    return make_db(request.param, tmp_path)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Db:
    return make_db("sqlite", tmp_path)


@pytest.fixture(params=SERVER_BACKENDS)
def server_db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    """The backends with server sessions to end."""
    return make_db(request.param, tmp_path)


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
            # each looked up inside pytest.raises: on a returned proxy the lookup itself raises
            uses: list[Callable[[], Any]] = [lambda: conn.raw,
                                             lambda: db.rows(conn, "SELECT 1")]
            if cursor is None:
                uses += [lambda: conn.fetchval("SELECT 1"),
                         lambda: conn.transaction()]  # noqa: PLW0108
            else:
                uses += [lambda: conn.cursor(), lambda: conn.commit(),  # noqa: PLW0108
                         cursor.fetchone, lambda: cursor.execute("SELECT 1")]
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


def test_cursors_left_open_are_closed_on_return(dbapi_db: Db) -> None:
    db = dbapi_db

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


def test_many_cursors_in_one_checkout_keep_a_bounded_list(dbapi_db: Db) -> None:
    db = dbapi_db

    async def main() -> None:
        async with AsyncPool(db.dsn, max_size=1) as pool, pool.connection() as conn:
            for _ in range(1000):
                async with conn.cursor() as cur:
                    await cur.execute("SELECT 1")
            assert conn.checkout.cursors is not None and len(conn.checkout.cursors) < 100
    run(main())


def test_results_the_caller_dropped_are_not_kept_alive(dbapi_db: Db) -> None:
    db = dbapi_db

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
        assert pool.tasks == []  # the return waited for the close
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


def test_autocommit_change_is_restored_on_return(dbapi_db: Db) -> None:
    """Not asyncpg: it has no autocommit setting to change (it refuses set_autocommit(False)),
    so it has nothing to restore."""
    db = dbapi_db

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


# ================================================================== under load
class Lending:
    """Who holds which physical connection now, by server session id (or slot id for
    sqlite, or with ``by_slot``: across a MariaDB restart session ids start again at 1): a
    second borrower of one that is lent is recorded as a violation."""

    def __init__(self, by_slot: bool = False) -> None:
        self.by_slot = by_slot
        self.held: dict[Any, int] = {}
        self.seen: set[Any] = set()
        self.violations: list[str] = []

    @contextlib.contextmanager
    def lent(self, conn: Any, who: int) -> Iterator[None]:
        slot = conn.slot
        key = slot.id if self.by_slot or slot.session_id is None else slot.session_id
        if key in self.held:
            self.violations.append(f"session {key} lent to {who} while {self.held[key]} "
                                   "holds it")
        self.held[key] = who
        self.seen.add(key)
        try:
            yield
        finally:
            if self.held.get(key) == who:
                del self.held[key]


def test_fairness_under_load(db: Db) -> None:
    """40 tasks on 4 connections share a budget of 40 x 15 borrows.

    Served first come, first served: the tickets taken just before each borrow (the bag is
    asked synchronously, before the borrow's first await) are granted in increasing order.
    Share: a task that returns queues behind every other waiting task, so between two of its
    borrows each other task borrows at most once and no task's count strays more than about
    one from the fair 15; min/max >= 0.75 = (15 - 2) / (15 + 2) allows two either way.
    validation_bypass=60: no ping between hand-off and grant to reorder the grants."""
    tasks, rounds, size = 40, 15, 4

    async def main() -> tuple[list[int], list[int], Lending]:
        async with AsyncPool(db.dsn, min_idle=size, max_size=size, max_wait=30,
                             validation_bypass=60) as pool:
            await pool.wait_ready(10)
            budget = [tasks * rounds]
            ticket = [0]
            grants: list[int] = []
            counts = [0] * tasks
            lending = Lending()

            async def work(i: int) -> None:
                while budget[0] > 0:
                    budget[0] -= 1
                    mine = ticket[0]
                    ticket[0] += 1
                    async with pool.connection() as conn:
                        grants.append(mine)
                        with lending.lent(conn, i):
                            assert await db.one(conn, "SELECT 1") == 1
                    counts[i] += 1

            async with asyncio.timeout(LOAD_LIMIT_S):
                await asyncio.gather(*(work(i) for i in range(tasks)))
            counts_add_up(pool)
            assert pool.stats()["requests_waiting"] == 0
            assert pool.stats()["pool_active"] == 0
            return grants, counts, lending
    grants, counts, lending = run(main())
    assert lending.violations == []
    assert sum(counts) == len(grants) == tasks * rounds  # every borrow served
    assert grants == sorted(grants), "a later request was granted before an earlier one"
    print(f"\n{db.name}: borrows per task min {min(counts)}, max {max(counts)}")
    assert min(counts) / max(counts) >= 0.75, (min(counts), max(counts))


def test_timeouts_on_many_tasks_at_once(db: Db) -> None:
    """200 tasks with a 0.3 s timeout on a pool of 2 held by two named tasks: each gets its
    PoolTimeout naming both holders, none is lost or left queued; then 200 more borrowing
    briefly while the pool is free: each is served or times out, nothing else, and the
    connections all come back."""
    waiting = 200

    async def main() -> None:
        async with AsyncPool(db.dsn, min_idle=2, max_size=2, max_wait=30) as pool:
            await pool.wait_ready(10)
            release = asyncio.Event()
            holding = 0

            async def hold() -> None:
                nonlocal holding
                async with pool.connection():
                    holding += 1
                    await release.wait()
            holders = [asyncio.create_task(hold(), name=f"holder-{i}") for i in range(2)]
            await until(lambda: holding == 2)
            async with asyncio.timeout(LOAD_LIMIT_S):
                outcomes = await asyncio.gather(
                    *(pool.getconn(timeout=0.3) for _ in range(waiting)),
                    return_exceptions=True)
            assert all(isinstance(o, PoolTimeout) for o in outcomes), {
                type(o).__name__ for o in outcomes}
            for o in outcomes:
                message = str(o)
                assert "task 'holder-0'" in message and "task 'holder-1'" in message, message
            stats = pool.stats()
            assert stats["requests_waiting"] == 0 and stats["pool_active"] == 2
            release.set()
            await asyncio.wait_for(asyncio.gather(*holders), 10)

            lending = Lending()
            served = 0

            async def brief(i: int) -> None:
                nonlocal served
                async with pool.connection(timeout=0.3) as conn:
                    with lending.lent(conn, i):
                        await db.rows(conn, "SELECT 1")
                        await asyncio.sleep(0.005)
                served += 1
            async with asyncio.timeout(LOAD_LIMIT_S):
                outcomes = await asyncio.gather(*(brief(i) for i in range(waiting)),
                                                return_exceptions=True)
            timed_out = sum(isinstance(o, PoolTimeout) for o in outcomes)
            others = [o for o in outcomes if o is not None and not isinstance(o, PoolTimeout)]
            assert others == [] and lending.violations == []
            assert served + timed_out == waiting and served >= 2, (served, timed_out)
            stats = pool.stats()
            assert stats["requests_waiting"] == 0 and stats["pool_active"] == 0
            counts_add_up(pool)
            conns = [await pool.getconn(timeout=5) for _ in range(2)]  # usable after
            for conn in conns:
                assert await db.one(conn, "SELECT 1") == 1
                await pool.putconn(conn)
    run(main())


# ---------------------------------------------------------------- the server ends sessions
def _admin(db: Db, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A statement over a sync connection of the test's own (never through the pool)."""
    from poolkeeper.dsn import parse_dsn

    if db.server == "postgresql":
        import psycopg

        with psycopg.connect(parse_dsn(PG_DSN).params["conninfo"], autocommit=True) as conn:
            cur = conn.execute(sql, args)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
    import pymysql

    mysql = pymysql.connect(**parse_dsn(MYSQL_DSN).params, autocommit=True)
    try:
        with mysql.cursor() as cur:
            cur.execute(sql, args)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        mysql.close()


def _on_server(db: Db, sessions: set[Any]) -> set[Any]:
    """Which of ``sessions`` the server still has (pg_stat_activity / processlist)."""
    if not sessions:
        return set()
    if db.server == "postgresql":
        rows = _admin(db, "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)",
                      ([int(s) for s in sessions],))
    else:
        ids = ", ".join(str(int(s)) for s in sessions)
        rows = _admin(db, f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({ids})")
    return {int(r[0]) for r in rows}


def _end_sessions(db: Db, sessions: set[Any]) -> None:
    """pg_terminate_backend / KILL each of the pool's sessions (only the pool's: the server
    is shared with other tests)."""
    for session in sessions:
        if db.server == "postgresql":
            _admin(db, "SELECT pg_terminate_backend(%s)", (int(session),))
        else:
            with contextlib.suppress(Exception):  # it may have ended by itself meanwhile
                _admin(db, f"KILL {int(session)}")


def test_sessions_ended_on_the_server_under_load(server_db: Db) -> None:
    """12 tasks on 4 connections; three times every session of the pool is terminated
    (PostgreSQL) or KILLed (MariaDB). Borrowers may fail while it happens; afterwards every
    task succeeds again, no session was ever lent to two tasks, the counts add up, and the
    server has exactly the pool's live sessions (none of the ended ones, none after close)."""
    db = server_db
    tasks, size, kills = 12, 4, 3

    async def main() -> None:
        async with AsyncPool(db.dsn, min_idle=size, max_size=size, max_wait=5,
                             housekeeping_interval=0.1) as pool:
            await pool.wait_ready(10)
            lending = Lending()
            stop = asyncio.Event()
            failures: list[str] = []
            ok_after: list[bool] = [False] * tasks
            calm = [False]

            async def work(i: int) -> None:
                deadline = time.monotonic() + LOAD_LIMIT_S
                for _ in range(5000):
                    if stop.is_set() or time.monotonic() > deadline:
                        return
                    try:
                        async with pool.connection() as conn:
                            with lending.lent(conn, i):
                                assert await db.one(conn, "SELECT 1") == 1
                        if calm[0]:
                            ok_after[i] = True
                    except AssertionError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - counted; must stop after
                        failures.append(f"{'after' if calm[0] else 'during'}: "
                                        f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0)

            load = [asyncio.create_task(work(i)) for i in range(tasks)]
            ended: set[Any] = set()
            for _ in range(kills):
                await asyncio.sleep(0.2)
                sessions = {r["session_id"] for r in pool.connections_info()}
                ended |= sessions
                await asyncio.to_thread(_end_sessions, db, sessions)
            await asyncio.sleep(0.3)  # let the broken ones be found and replaced
            calm[0] = True
            await until(lambda: all(ok_after), timeout=10)
            stop.set()
            async with asyncio.timeout(10):
                await asyncio.gather(*load)
            assert lending.violations == []
            assert not [f for f in failures if f.startswith("after")], failures
            await until(lambda: pool.stats()["connections_opening"] == 0, timeout=5)
            counts_add_up(pool)
            stats = pool.stats()
            assert stats["connections_num"] >= size + 1, stats  # replacements were opened
            live = {r["session_id"] for r in pool.connections_info()}
            assert not live & ended  # no ended session is still in the pool
            on_server = await asyncio.to_thread(_on_server, db, live | ended)
            assert on_server == live, (on_server, live)
            assert len(live) == stats["pool_size"]
            print(f"\n{db.name}: {len(ended)} sessions ended, {len(failures)} borrows failed "
                  f"meanwhile, {stats['connections_num']} opened in all")
        everything = live | ended | lending.seen
        gone = await asyncio.to_thread(_on_server, db, everything)
        assert gone == set(), f"sessions left on the server after close: {gone}"
    run(main())


# ---------------------------------------------------------------- server restart
@pytest.fixture(scope="module", params=["postgresql", "mysql"])
def private_server(request: pytest.FixtureRequest) -> Iterator[PrivatePostgres | PrivateMariaDB]:
    """A private server (tests/_private_servers.py) this module may restart at will."""
    import os

    def unavailable(problem: str) -> None:
        if os.environ.get("POOLKEEPER_REQUIRE_SERVERS") == "1":
            pytest.fail(f"{problem} (POOLKEEPER_REQUIRE_SERVERS=1 turns this skip into a "
                        "failure)")
        pytest.skip(problem)

    srv: PrivatePostgres | PrivateMariaDB
    try:
        srv = PrivatePostgres() if request.param == "postgresql" else PrivateMariaDB()
    except ServerUnavailable as exc:
        unavailable(f"no private {request.param} server: {exc}")
    try:
        srv.start()
        yield srv
    finally:
        srv.stop_and_remove()


@pytest.mark.slow
@pytest.mark.parametrize(("private_server", "adapter"),  # asyncpg speaks to PostgreSQL only
                         [("postgresql", "native"), ("postgresql", "asyncpg"),
                          ("mysql", "native")], indirect=["private_server"])
def test_server_restart_under_load(private_server: PrivatePostgres | PrivateMariaDB,
                                   adapter: str) -> None:
    """8 tasks on 4 connections while the server restarts (stopped "fast", started again):
    every task succeeds again soon after the server is back, no session is lent twice, and
    the pool is back to min_idle fresh connections, the old ones all retired, counts adding
    up, and close() ends every task."""
    srv = private_server
    pytest.importorskip("asyncpg" if adapter == "asyncpg" else
                        "psycopg" if isinstance(srv, PrivatePostgres) else "aiomysql")
    if not srv.running():  # an earlier test failed with the server down
        srv.start()
    dsn = srv.dsn.replace("postgresql://", "postgresql+asyncpg://", 1) \
        if adapter == "asyncpg" else srv.dsn
    db = Db("asyncpg" if adapter == "asyncpg" else
            "postgresql" if isinstance(srv, PrivatePostgres) else "mysql", dsn)
    tasks, size = 8, 4

    async def main() -> None:
        async with AsyncPool(dsn, min_idle=size, max_size=size, max_wait=5,
                             connect_timeout=2, housekeeping_interval=0.2) as pool:
            await pool.wait_ready(10)
            # slot ids: MariaDB numbers its sessions from 1 again after a restart
            before = {r["id"] for r in pool.connections_info()}
            lending = Lending(by_slot=True)
            stop = asyncio.Event()
            back_at = [float("inf")]
            first_ok: list[float | None] = [None] * tasks
            failures = 0

            async def work(i: int) -> None:
                nonlocal failures
                deadline = time.monotonic() + LOAD_LIMIT_S
                for _ in range(20000):
                    if stop.is_set() or time.monotonic() > deadline:
                        return
                    try:
                        async with pool.connection() as conn:
                            with lending.lent(conn, i):
                                assert await db.one(conn, "SELECT 1") == 1
                        if first_ok[i] is None and time.monotonic() >= back_at[0]:
                            first_ok[i] = time.monotonic()
                    except AssertionError:
                        raise
                    except Exception:  # noqa: BLE001 - the server is down: counted
                        failures += 1
                        await asyncio.sleep(0.01)
                    await asyncio.sleep(0)

            load = [asyncio.create_task(work(i)) for i in range(tasks)]
            await asyncio.sleep(0.2)
            await asyncio.to_thread(srv.stop, "fast")
            await asyncio.to_thread(srv.start)
            back_at[0] = time.monotonic()
            await until(lambda: all(t is not None for t in first_ok), timeout=15)
            slowest = max(t for t in first_ok if t is not None) - back_at[0]
            await until(lambda: len({r["id"] for r in pool.connections_info()}
                                    - before) == size, timeout=10)
            stop.set()
            async with asyncio.timeout(10):
                await asyncio.gather(*load)
            assert lending.violations == []
            await until(lambda: pool.stats()["connections_opening"] == 0, timeout=5)
            counts_add_up(pool)
            stats = pool.stats()
            assert stats["pool_size"] == size
            assert stats["connections_closed_broken"] + stats[
                "connections_closed_validation"] >= size, stats  # the old ones, all
            print(f"\n{srv.name} ({adapter}): slowest task back {slowest:.3f} s after the "
                  f"restart; {failures} failed borrows; {stats['connections_num']} opened")
            assert slowest <= 5.0, f"a task took {slowest:.2f} s to succeed again"
        assert pool.tasks == []
    run(main())
