"""The resource monitor fed by an AsyncPool: the records of tests/test_pool_monitor.py's key
cases, the holder being the task (each test runs its own loop, asyncio.run)."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from poolkeeper.observe import MONITOR, admin
from poolkeeper.observe.monitor import LEAK_CURSOR_OPEN, LEAK_DROPPED
from poolkeeper.pool.aio import AsyncPool
from poolkeeper.pool.aioproxies import (
    AsyncConnectionProxy,
    AsyncCursorProxy,
    AsyncMonitoredConnection,
    AsyncMonitoredCursor,
)

HERE = __file__


@pytest.fixture
def clean_monitor() -> Iterator[None]:
    MONITOR.clear()
    yield
    MONITOR.disable()
    MONITOR.clear()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def cursor_dsn(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """The asyncio backends with DB-API cursors (asyncpg has none: see the checkout test)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'aio.db'}"
    return str(request.getfixturevalue("mysql_dsn" if request.param == "mysql" else "pg_dsn"))


async def borrow_and_keep(pool: AsyncPool, kept: list[Any]) -> int:
    kept.append(await pool.getconn())
    return sys._getframe().f_lineno - 1


def open_cursor_and_keep(conn: Any, kept: list[Any]) -> int:
    kept.append(conn.cursor())
    return sys._getframe().f_lineno - 1


async def execute_here(conn: Any) -> tuple[Any, int]:
    cur = await conn.execute("SELECT 7")
    return cur, sys._getframe().f_lineno - 1


def test_planted_leaks_are_shown_at_their_lines_with_the_task_and_queryable(
        cursor_dsn: str, clean_monitor: None) -> None:
    async def main() -> None:
        async with AsyncPool(cursor_dsn, max_size=2, name="aio-leaky", monitor=True) as pool:
            conns: list[Any] = []
            cursors: list[Any] = []
            conn_line = await borrow_and_keep(pool, conns)
            assert type(conns[0]).__mro__[1] is AsyncMonitoredConnection
            cur_line = open_cursor_and_keep(conns[0], cursors)
            assert isinstance(cursors[0], AsyncMonitoredCursor)
            await cursors[0].execute("SELECT 42")
            live = {r.kind: r for r in MONITOR.live(min_age=0, pool="aio-leaky")}
            assert live["checkout"].site == f"{HERE}:{conn_line} in borrow_and_keep"
            assert live["checkout"].thread == "planter"
            assert live["cursor"].site == f"{HERE}:{cur_line} in open_cursor_and_keep"
            assert live["cursor"].parent_id == live["checkout"].id
            assert live["checkout"].sql == live["cursor"].sql == "SELECT ?"
            result = admin.query(
                "select kind, thread, site from resources where pool = 'aio-leaky' "
                "and kind in ('checkout', 'cursor') order by kind")
            assert [row[:2] for row in result.rows] == [("checkout", "planter"),
                                                        ("cursor", "planter")]
            await pool.putconn(conns[0])
            assert MONITOR.live(min_age=0, pool="aio-leaky", kind="checkout") == []
            assert MONITOR.live(min_age=0, pool="aio-leaky", kind="cursor") == []
            # still open when its checkout went back: a leak, listed once with its site
            [leak] = MONITOR.collected(pool="aio-leaky")
            assert (leak.kind, leak.leak, leak.sql) == ("cursor", LEAK_CURSOR_OPEN, "SELECT ?")
            assert leak.site == f"{HERE}:{cur_line} in open_cursor_and_keep"
            assert cursors[0].closed
            cursors.clear()
            gc.collect()
            assert len(MONITOR.collected(pool="aio-leaky")) == 1

    async def named() -> None:
        await asyncio.create_task(main(), name="planter")
    asyncio.run(named())


def test_an_open_cursor_of_conn_execute_is_shown_at_the_callers_line(
        cursor_dsn: str, clean_monitor: None) -> None:
    async def main() -> None:
        async with AsyncPool(cursor_dsn, max_size=1, name="aio-exec", monitor=True) as pool, \
                pool.connection() as conn:
            cur, line = await execute_here(conn)
            [shown] = MONITOR.live(min_age=0, kind="cursor", pool="aio-exec")
            assert shown.site == f"{HERE}:{line} in execute_here"
            assert shown.sql == "SELECT ?"
            await cur.close()
            assert MONITOR.live(min_age=0, kind="cursor", pool="aio-exec") == []
        assert MONITOR.collected(pool="aio-exec") == []  # closed in time: no leak
    asyncio.run(main())


def test_a_cursor_freed_under_its_live_checkout_is_neither_live_nor_collected(
        cursor_dsn: str, clean_monitor: None) -> None:
    async def main() -> None:
        async with AsyncPool(cursor_dsn, max_size=1, name="aio-idiom", monitor=True) as pool, \
                pool.connection() as conn:
            freed = MONITOR.stats()["cursors_freed_total"]
            for _ in range(3):
                await (await conn.execute("SELECT 1")).fetchall()  # the idiom: never closed
            gc.collect()
            assert MONITOR.live(min_age=0, kind="cursor", pool="aio-idiom") == []
            assert MONITOR.stats()["cursors_freed_total"] == freed + 3
        assert MONITOR.collected(pool="aio-idiom") == []
    asyncio.run(main())


def test_a_dropped_checkout_is_listed_as_collected_with_its_site_on_each_backend(
        pg_dsn: str, tmp_path: Any, clean_monitor: None) -> None:
    dsns = [f"sqlite:///{tmp_path / 'drop.db'}",
            pg_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)]

    async def main(dsn: str) -> None:
        async with AsyncPool(dsn, max_size=1, name="aio-dropper", monitor=True) as pool:
            line = await borrow_and_keep(pool, [])  # the list is dropped: so is the proxy
            gc.collect()
            [gone] = [r for r in MONITOR.collected(pool="aio-dropper") if r.kind == "checkout"]
            assert gone.site.endswith(f":{line} in borrow_and_keep")
            assert (gone.leak, gone.thread) == (LEAK_DROPPED, "dropper-task")
            async with pool.connection(timeout=5):  # and the pool took the connection back
                pass

    for dsn in dsns:
        MONITOR.clear()

        async def named(dsn: str = dsn) -> None:
            await asyncio.create_task(main(dsn), name="dropper-task")
        asyncio.run(named())


def test_monitor_off_hands_out_the_plain_proxies(sqlite_dsn: str, clean_monitor: None) -> None:
    async def main() -> None:
        async with AsyncPool(sqlite_dsn, max_size=1, name="aio-off") as pool:
            assert not pool.monitor.enabled
            async with pool.connection() as conn:
                assert type(conn).__mro__[1] is AsyncConnectionProxy
                cur = conn.cursor()
                assert type(cur) is AsyncCursorProxy
                assert conn.checkout.mon_frames is None
                await cur.close()
            pool.monitor.enable()  # switched at runtime: the next borrow is recorded
            async with pool.connection() as conn:
                assert isinstance(conn, AsyncMonitoredConnection)
                [rec] = MONITOR.live(min_age=0, kind="checkout", pool="aio-off")
                assert rec.thread == asyncio.current_task().get_name()  # type: ignore[union-attr]
    asyncio.run(main())
