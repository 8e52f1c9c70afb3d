"""The asyncio checkout proxies (pool/aioproxies.py) against the real servers: aiosqlite,
psycopg's AsyncConnection, asyncpg and aiomysql.

The pool itself is written elsewhere, so the proxies are driven by :class:`OneConnection`, a
test-only :class:`~poolkeeper.pool.lender.AsyncLender` over one real connection: it makes a
:class:`Checkout` per borrow, and on return does what the asyncio pool must do around the
proxies (``_retire()`` before any await, close the cursors left open, recover an interrupted
connection, commit or roll back). Each test runs its coroutine with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import gc
import math
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from poolkeeper.config import PoolConfig
from poolkeeper.core.slot import Checkout, Slot
from poolkeeper.drivers.aiobase import AsyncDriver
from poolkeeper.errors import ConnectionReclaimed, ConnectionReturned, QueryTimeout
from poolkeeper.hooks.context import StatementContext, chain_async
from poolkeeper.observe.monitor import MONITOR
from poolkeeper.pool.aiodeadline import run_within
from poolkeeper.pool.aioproxies import (
    AsyncConnectionBase,
    AsyncConnectionProxy,
    AsyncCursorProxy,
    AsyncpgConnectionProxy,
    ClosedAsyncCursor,
    ReturnedAsyncConnection,
    async_proxy_class,
    close_cursors,
    run_statement,
)
from poolkeeper.pool.aiotxn import TransactionClock

from .test_aio_drivers import (
    _SQLITE_LONG,
    BACKENDS,
    SERVER_BACKENDS,
    Backend,
    _running,
    _until,
    make_backend,
)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(request.param, tmp_path)


@pytest.fixture(params=[b for b in BACKENDS if b != "asyncpg"])
def dbapi(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The backends with DB-API cursors (asyncpg has its own API: test_asyncpg_*)."""
    return make_backend(request.param, tmp_path)


@pytest.fixture(params=SERVER_BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The backends with a server session to watch."""
    return make_backend(request.param, tmp_path)


class OneConnection:
    """A one-connection stand-in for AsyncPool: what the proxies ask of their pool."""

    def __init__(self, driver: AsyncDriver, *, query_timeout: float | None = None,
                 hooks: tuple[Any, ...] = ()) -> None:
        self.name = "proxies"
        self.config = PoolConfig(query_timeout=query_timeout)
        self.driver = driver
        self._execute = chain_async(list(hooks), run_statement) if hooks else None
        self._txn_clock: TransactionClock | None = None  # tests/test_aio_txn.py has one
        self.monitor = MONITOR.probe("proxies")  # off: the proxies here are the plain ones
        self.slot: Slot | None = None
        #: (checkout, commit flag or the error) of every return
        self.returns: list[tuple[Checkout, Any]] = []
        self.recovered: list[bool] = []  #: recover_from_cancel's answers
        self.orphans: list[Checkout] = []
        self.sessions: list[Any] = []  #: every physical connection's session id

    def stats(self) -> dict[str, Any]:
        return {}

    async def open(self) -> None:
        raw = await self.driver.connect()
        session = self.driver.session_id(raw)
        self.sessions.append(session)
        self.slot = Slot(len(self.sessions), raw, now=time.monotonic(), expires_at=math.inf,
                         idle_timeout=math.inf, generation=0, session_id=session)

    def borrow(self) -> Any:
        slot = self.slot
        assert slot is not None and slot.checkout is None
        caller = sys._getframe(1)
        co = Checkout(slot, asyncio.current_task(), time.monotonic(), caller.f_code,
                      caller.f_lasti)
        slot.checkout = co
        return async_proxy_class(self.driver, slot.raw)(self, co)

    async def _give_back(self, proxy: Any, commit: bool | None) -> None:
        await self._return(proxy, commit)

    async def _commit_back(self, proxy: Any) -> None:
        await self._return(proxy, True)

    async def _give_back_after(self, proxy: Any, error: BaseException) -> None:
        await self._return(proxy, error)

    async def _return(self, proxy: Any, outcome: Any) -> None:
        co: Checkout = proxy._co
        slot, raw = co.slot, co.raw
        assert slot is not None
        left = proxy._retire()  # synchronously, before any await
        driver = self.driver
        if co.interrupted:
            # first: aiosqlite's worker runs the statement on until interrupted, and closing
            # a cursor waits in its queue behind it
            ok = await driver.recover_from_cancel(raw, 5.0)
            self.recovered.append(ok)
            slot.broken = slot.broken or not ok
        await close_cursors(driver, left, 5.0)
        if not slot.broken:
            if outcome is True:
                await driver.commit(raw)
            if driver.in_transaction(raw):
                await driver.rollback(raw)
        slot.checkout = None
        self.returns.append((co, outcome))
        if slot.broken or driver.is_broken(raw):
            await driver.close(raw)
            await self.open()

    def _orphaned(self, checkout: Checkout) -> None:
        self.orphans.append(checkout)

    async def close(self) -> None:
        if self.slot is not None:
            await self.driver.close(self.slot.raw)
        await self.driver.dispose()


def run(backend: Backend, test: Callable[[OneConnection], Awaitable[None]],
        **kwargs: Any) -> None:
    """``test(lender)`` against one fresh connection of ``backend``, in a new event loop."""
    async def main() -> None:
        lender = OneConnection(backend.driver(), **kwargs)
        await lender.open()
        try:
            await test(lender)
        finally:
            await lender.close()
    asyncio.run(main())


async def _rows(backend: Backend, conn: Any, sql: str) -> list[tuple[Any, ...]]:
    if backend.name == "asyncpg":
        return [tuple(r) for r in await conn.fetch(sql)]
    cur = await conn.execute(sql)
    return [tuple(r) for r in await cur.fetchall()]


# ------------------------------------------------------------------ statements
def test_dbapi_statements_run_in_every_style_and_are_counted(dbapi: Backend) -> None:
    async def test(lender: OneConnection) -> None:
        conn = lender.borrow()
        assert isinstance(conn, AsyncConnectionProxy)
        co: Checkout = conn.checkout
        cur = await conn.execute("SELECT 1")
        assert [tuple(r) for r in await cur.fetchall()] == [(1,)]
        assert co.statements == 4 and not co.executing  # one statement, one fetch
        assert co.sql == "SELECT 1"

        plain = conn.cursor()  # not opened yet: nothing to describe
        assert plain.description is None and plain.rowcount == -1 and plain.raw is None
        await plain.execute("SELECT 2")
        assert plain.raw is not None and plain.description is not None
        assert tuple(await plain.fetchone()) == (2,)

        awaited = await conn.cursor()
        assert isinstance(awaited, AsyncCursorProxy) and awaited.raw is not None
        await awaited.execute("SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5")
        assert [tuple(r) for r in await awaited.fetchmany(2)] == [(3,), (4,)]
        await awaited.close()
        assert awaited.closed and isinstance(awaited, ClosedAsyncCursor)
        with pytest.raises(ConnectionReturned, match="cursor is closed"):
            await awaited.execute("SELECT 1")
        await awaited.close()  # twice: harmless

        async with conn.cursor() as cur:
            await cur.execute("SELECT 6 UNION ALL SELECT 7")
            assert [tuple(r) async for r in cur] == [(6,), (7,)]
        assert cur.closed

        await conn.execute("CREATE TABLE IF NOT EXISTS aioproxy_t (x INTEGER)")
        await conn.execute("DELETE FROM aioproxy_t")
        placeholder = "?" if dbapi.name == "sqlite" else "%s"
        many = await conn.executemany(f"INSERT INTO aioproxy_t (x) VALUES ({placeholder})",
                                      [(1,), (2,), (3,)])
        assert many.rowcount == 3
        cur = await conn.execute(f"SELECT count(*) FROM aioproxy_t WHERE x > {placeholder}",
                                 (1,))
        assert tuple(await cur.fetchone()) == (2,)
        async with conn.execute("SELECT 8") as cur:  # aiosqlite's idiom
            assert tuple(await cur.fetchone()) == (8,)
        assert cur.closed
        with pytest.raises(ValueError, match="timeout=0"):
            await conn.execute("SELECT 1", timeout=0)
        assert not conn.slot.broken and not co.executing  # refused before it ran
        await conn.execute("DROP TABLE aioproxy_t")
        await conn.commit()
        assert not co.executing and co.statements % 2 == 0
        await conn.close()
        assert lender.returns[-1] == (co, None)
    run(dbapi, test)


def test_the_drivers_own_attributes_are_reachable_and_their_coroutines_watched(
        dbapi: Backend) -> None:
    async def test(lender: OneConnection) -> None:
        async with lender.borrow() as conn:
            cur = await conn.cursor()
            assert cur.arraysize >= 1  # the driver cursor's attribute, through the proxy
            before = conn.checkout.statements
            if dbapi.name == "sqlite":
                rows = await conn.execute_fetchall("SELECT 1")  # aiosqlite's own method
                assert [tuple(r) for r in rows] == [(1,)]
            elif dbapi.name == "postgresql":
                async with conn.transaction():  # psycopg's, an async with block
                    await conn.execute("SELECT 1")
                assert conn.info.backend_pid == lender.slot.session_id  # type: ignore[union-attr]
            else:
                await conn.ping(reconnect=False)  # aiomysql's own coroutine
                assert conn.thread_id() == lender.slot.session_id  # type: ignore[union-attr]
            assert conn.checkout.statements > before
    run(dbapi, test)


# its own API
@pytest.mark.parametrize("backend", ["asyncpg"], indirect=True)
def test_asyncpg_methods_keep_asyncpgs_api_and_are_counted(backend: Backend) -> None:

    async def test(lender: OneConnection) -> None:
        async with lender.borrow() as conn:
            assert isinstance(conn, AsyncpgConnectionProxy)
            co: Checkout = conn.checkout
            assert await conn.fetchval("SELECT $1::int + 1", 1) == 2
            assert co.statements == 2 and co.sql == "SELECT $1::int + 1"
            assert tuple(await conn.fetchrow("SELECT 1, 2")) == (1, 2)
            assert [tuple(r) for r in await conn.fetch("SELECT generate_series(1, 3)")] == \
                [(1,), (2,), (3,)]
            await conn.execute("CREATE TEMP TABLE aioproxy_pg (x int)")
            await conn.executemany("INSERT INTO aioproxy_pg VALUES ($1)", [(1,), (2,)])
            tag = await conn.copy_records_to_table("aioproxy_pg", records=[(3,), (4,)])
            assert tag == "COPY 2"
            assert co.sql == "COPY aioproxy_pg FROM STDIN"
            statement = await conn.prepare("SELECT count(*) FROM aioproxy_pg WHERE x > $1")
            assert await statement.fetchval(1) == 3
            assert co.sql == "SELECT count(*) FROM aioproxy_pg WHERE x > $1"
            async with conn.transaction():
                await conn.execute("INSERT INTO aioproxy_pg VALUES (5)")
                assert conn.is_in_transaction()  # asyncpg's own, delegated
            async with conn.transaction():  # asyncpg's cursors need one
                assert [r[0] async for r in conn.cursor("SELECT generate_series(1, 3)")] \
                    == [1, 2, 3]
            assert await conn.fetchval("SELECT count(*) FROM aioproxy_pg") == 5
            # fetchval, fetchrow, fetch, execute, executemany, copy, prepare, prepared
            # fetchval, execute, fetchval: ten statements, two counts each, and the
            # delegated is_in_transaction() and cursor() counted as use (+2 each)
            assert co.statements == 24 and not co.executing
            assert conn.get_server_pid() == lender.slot.session_id  # type: ignore[union-attr]
        assert lender.returns[-1] == (co, True)
    run(backend, test)


# ------------------------------------------------------------------ return
def test_use_after_return_raises_connection_returned_that_is_the_drivers_error(
        backend: Backend) -> None:
    async def test(lender: OneConnection) -> None:
        conn = lender.borrow()
        co = conn.checkout
        await _rows(backend, conn, "SELECT 1")
        async with conn:
            pass
        assert lender.returns[-1] == (co, True)
        assert isinstance(conn, ReturnedAsyncConnection) and conn.closed
        driver_error = lender.driver.closed_connection_error
        assert driver_error is not None
        # (attribute, call arguments or None for a plain read)
        uses: list[tuple[str, tuple[Any, ...] | None]] = [("raw", None), ("slot", None)]
        if backend.name == "asyncpg":
            uses += [("fetch", ("SELECT 1",)), ("transaction", ()), ("is_closed", ())]
        else:
            uses += [("cursor", ()), ("execute", ("SELECT 1",)), ("commit", ())]
        for name, args in uses:
            with pytest.raises(ConnectionReturned) as caught:
                value = getattr(conn, name)
                if args is not None:
                    value(*args)
            assert isinstance(caught.value, driver_error)
            assert "has been returned to the pool" in str(caught.value)
            assert "test_aio_proxies.py" in str(caught.value)  # the borrow site
        await conn.close()  # twice: harmless
        assert co.slot is None and co.raw is None  # keeps no connection alive
        assert len(lender.returns) == 1
    run(backend, test)


def test_cursors_left_open_are_dropped_on_return_and_closed_by_the_pool(
        dbapi: Backend) -> None:
    async def test(lender: OneConnection) -> None:
        conn = lender.borrow()
        opened = await conn.execute("SELECT 1 UNION ALL SELECT 2")
        raw_cursor = opened.raw
        never_opened = conn.cursor()
        closed = await conn.execute("SELECT 3")
        await closed.close()
        await conn.close()
        for cur in (opened, never_opened, closed):
            assert isinstance(cur, ClosedAsyncCursor)
        with pytest.raises(ConnectionReturned, match="has been returned"):
            await opened.fetchall()
        with pytest.raises(ConnectionReturned):
            opened.rowcount  # noqa: B018
        # the pool closed the driver's cursor (close_cursors on what _retire returned)
        if dbapi.name == "sqlite":
            with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
                await raw_cursor.fetchall()
        else:
            assert raw_cursor.closed
    run(dbapi, test)


def test_a_reclaimed_proxy_raises_connection_reclaimed_and_closes_no_driver_object(
        dbapi: Backend) -> None:
    async def test(lender: OneConnection) -> None:
        lender.config = PoolConfig(abandoned_timeout=30.0)
        conn = lender.borrow()
        co: Checkout = conn.checkout
        cur = await conn.execute("SELECT 1")
        raw_cursor = cur.raw
        slot = co.slot
        co.reclaimed_at = time.monotonic()
        # the housekeeper's side: the holder may be inside a driver call, nothing is closed
        assert conn._retire(reclaimed=True) == []
        assert co.slot is slot  # held until the pool closes the connection
        with pytest.raises(ConnectionReclaimed, match="abandoned_timeout=30 s"):
            conn.cursor()
        with pytest.raises(ConnectionReclaimed):
            await cur.fetchall()
        assert [tuple(r) for r in await raw_cursor.fetchall()] == [(1,)]  # still open
        await conn.close()  # a late return of a reclaimed proxy: harmless, no second return
        assert lender.returns == []
        assert slot is not None
        slot.checkout = None
        await lender.driver.close(slot.raw)
        await lender.open()
    run(dbapi, test)


def test_a_proxy_dropped_unreturned_is_reported_and_a_returned_one_is_not(
        backend: Backend) -> None:
    async def test(lender: OneConnection) -> None:
        conn = lender.borrow()
        co = conn.checkout
        await conn.close()
        del conn
        gc.collect()
        assert lender.orphans == []
        conn = lender.borrow()
        co = conn.checkout
        del conn
        gc.collect()
        assert lender.orphans == [co]
    run(backend, test)


def test_async_with_asks_the_pool_to_commit_on_a_clean_exit_and_passes_an_error_on(
        backend: Backend) -> None:
    async def test(lender: OneConnection) -> None:
        boom = ValueError("boom")
        with pytest.raises(ValueError, match="boom"):
            async with lender.borrow() as conn:
                await _rows(backend, conn, "SELECT 1")
                raise boom
        async with lender.borrow() as conn:
            await _rows(backend, conn, "SELECT 1")
        assert [outcome for _, outcome in lender.returns] == [boom, True]
    run(backend, test)


# ------------------------------------------------------------------ cancellation
def _sleep_call(backend: Backend, conn: Any, **kwargs: Any) -> Awaitable[Any]:
    if backend.name == "asyncpg":
        return conn.fetchval(backend.sleep_sql, **kwargs)  # type: ignore[no-any-return]
    return conn.execute(backend.sleep_sql, **kwargs)  # type: ignore[no-any-return]


def _nothing_running(backend: Backend, session: Any) -> Callable[[], bool]:
    return lambda: backend.server is None or _running(backend, session) is None


def test_a_statement_cancelled_by_its_caller_marks_the_checkout_interrupted(
        backend: Backend) -> None:
    async def test(lender: OneConnection) -> None:
        conn = lender.borrow()
        co: Checkout = conn.checkout
        session = lender.slot.session_id  # type: ignore[union-attr]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await _sleep_call(backend, conn)
        assert co.interrupted  # the pool must recover or discard the connection
        assert not co.executing and co.statements == 2
        assert not co.slot.broken  # type: ignore[union-attr]  # recovery decides, not the proxy
        await conn.close()
        assert len(lender.recovered) == 1
        # whatever recover_from_cancel answered, the server no longer runs the statement
        await _until(_nothing_running(backend, session), f"session {session} idle")
        # the same with a statement timeout armed: the caller's cancellation passes through
        conn = lender.borrow()
        session = lender.slot.session_id  # type: ignore[union-attr]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await _sleep_call(backend, conn, timeout=30)
        assert conn.checkout.interrupted
        await conn.close()
        await _until(_nothing_running(backend, session), f"session {session} idle")
        async with lender.borrow() as again:
            assert await _rows(backend, again, "SELECT 1") == [(1,)]
    run(backend, test)


# aiosqlite's execute_fetchall: a statement the proxy does not define
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_cancelled_delegated_coroutine_marks_the_checkout_interrupted(
        backend: Backend) -> None:

    async def test(lender: OneConnection) -> None:
        conn = lender.borrow()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await conn.execute_fetchall(_SQLITE_LONG)
        assert conn.checkout.interrupted
        await conn.close()
        assert lender.recovered == [True]  # interrupted and drained: lent again
        async with lender.borrow() as again:
            assert await _rows(backend, again, "SELECT 1") == [(1,)]
        assert len(lender.sessions) == 1
    run(backend, test)


# ------------------------------------------------------------------ timeouts
def test_a_statement_timeout_cancels_on_the_server_and_raises_query_timeout(
        backend: Backend) -> None:
    async def test(lender: OneConnection) -> None:
        conn = lender.borrow()
        co: Checkout = conn.checkout
        session = lender.slot.session_id  # type: ignore[union-attr]
        with pytest.raises(QueryTimeout) as caught:
            await _sleep_call(backend, conn, timeout=0.5)
        error = caught.value
        driver = lender.driver
        assert driver.cancelled_error is not None
        assert isinstance(error, driver.cancelled_error)  # also the driver's error
        assert error.timeout_s == 0.5 and error.elapsed_s >= 0.5
        assert "cancelled on the server" in str(error) and "timeout 0.5 s" in str(error)
        assert error.__cause__ is not None
        # stopped on the server, not by cancelling the await: the connection stays usable
        assert not co.interrupted and not co.executing
        if backend.server is not None:
            assert _running(backend, session) is None
        assert await _rows(backend, conn, "SELECT 1") == [(1,)]
        await conn.close()
        assert lender.recovered == [] and lender.sessions == [session]
    run(backend, test)


# one backend is enough: the path is the same
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_cancel_that_cannot_be_delivered_ends_in_cancelling_the_await(
        backend: Backend) -> None:

    from poolkeeper.drivers.aio_sqlite import AiosqliteDriver

    class Undeliverable(AiosqliteDriver):
        """The real adapter, its server-side cancel failing (a fault, not a mock)."""

        cancel_timeout = 0.2

        async def cancel(self, raw: Any, session_id: Any = None) -> bool | None:
            raise OSError("control connection refused (injected)")

    async def test(lender: OneConnection) -> None:
        conn = lender.borrow()
        with pytest.raises(QueryTimeout, match="could not be delivered") as caught:
            await conn.execute(_SQLITE_LONG, timeout=0.3)
        assert isinstance(caught.value.__cause__, asyncio.CancelledError)  # its await, cut
        assert "its await was cancelled" in str(caught.value)
        assert conn.checkout.interrupted  # the pool recovers it before lending it again
        await conn.close()
        assert lender.recovered == [True]  # the real interrupt() stopped the worker
        # the caller's own cancellation after the deadline fired is the caller's, untouched
        conn = lender.borrow()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.4):  # before the await is cut (0.3 + 0.2 s)
                await conn.execute(_SQLITE_LONG, timeout=0.3)
        assert conn.checkout.interrupted
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        await conn.close()
        assert lender.recovered == [True, True]

    async def main() -> None:
        lender = OneConnection(Undeliverable(backend.driver().params, autocommit=True))
        await lender.open()
        try:
            await test(lender)
        finally:
            await lender.close()
    asyncio.run(main())


def test_the_pools_query_timeout_is_the_default_and_timeout_none_lifts_it(
        backend: Backend) -> None:
    async def test(lender: OneConnection) -> None:
        async with lender.borrow() as conn:
            with pytest.raises(QueryTimeout, match=r"timeout 0\.4 s"):
                await _sleep_call(backend, conn)
            assert await _rows(backend, conn, "SELECT 1") == [(1,)]
            # a statement shorter than its own, longer timeout is untouched
            if backend.name == "asyncpg":
                assert await conn.fetchval("SELECT 1", timeout=30) == 1
            else:
                cur = await conn.execute("SELECT 1", timeout=None)
                assert [tuple(r) for r in await cur.fetchall()] == [(1,)]
    run(backend, test, query_timeout=0.4)


def test_query_timeout_redacts_the_statement(server: Backend) -> None:
    async def test(lender: OneConnection) -> None:
        async with lender.borrow() as conn:
            sql = ("SELECT pg_sleep(5), 'secret-literal'" if server.server == "postgresql"
                   else "SELECT SLEEP(5), 'secret-literal'")
            with pytest.raises(QueryTimeout) as caught:
                if server.name == "asyncpg":
                    await conn.fetch(sql, timeout=0.3)
                else:
                    await conn.execute(sql, timeout=0.3)
            assert "secret-literal" not in str(caught.value)
            assert "secret-literal" not in caught.value.sql
    run(server, test)


# ------------------------------------------------------------------ hooks
class Recorder:
    """A hook that records what it saw."""

    def __init__(self, discard_on: str | None = None) -> None:
        self.seen: list[tuple[str, Any, Any, Any]] = []
        self.discard_on = discard_on

    def before(self, ctx: StatementContext) -> float:
        self.seen.append(("before", ctx.query, ctx.cursor, ctx.scope))
        return time.monotonic()

    def after(self, ctx: StatementContext, token: Any, result: Any,
              error: BaseException | None) -> None:
        self.seen.append(("after", ctx.query, type(error).__name__ if error else None,
                          ctx.session_id))
        if self.discard_on is not None and self.discard_on in str(ctx.query):
            ctx.discard = True


def test_hooks_see_each_statement_before_and_after_it_runs(backend: Backend) -> None:
    recorder = Recorder(discard_on="discard me")

    async def test(lender: OneConnection) -> None:
        conn = lender.borrow()
        session = lender.slot.session_id  # type: ignore[union-attr]
        assert await _rows(backend, conn, "SELECT 1") == [(1,)]
        (_, query, cursor, scope), after = recorder.seen
        assert query == "SELECT 1" and scope is conn
        if backend.name == "asyncpg":
            assert cursor is None
        else:
            assert cursor is not None and cursor is not conn  # the driver's cursor
        assert after == ("after", "SELECT 1", None, session)
        with pytest.raises(Exception) as caught:
            await _rows(backend, conn, "SELECT * FROM no_such_table_aioproxies")
        assert recorder.seen[-1][2] == type(caught.value).__name__
        assert not conn.slot.broken
        await _rows(backend, conn, "SELECT 1 /* discard me */")
        assert conn.slot.broken  # a hook judged the connection unusable
        await conn.close()
        assert len(lender.sessions) == 2  # so the pool replaced it
    run(backend, test, hooks=(recorder,))


def test_a_timeout_with_hooks_shows_the_drivers_error_to_the_hooks(backend: Backend) -> None:
    recorder = Recorder()

    async def test(lender: OneConnection) -> None:
        async with lender.borrow() as conn:
            with pytest.raises(QueryTimeout):
                await _sleep_call(backend, conn, timeout=0.4)
        kinds = [entry[2] for entry in recorder.seen if entry[0] == "after"]
        assert kinds and kinds[-1] is not None and kinds[-1] != "QueryTimeout"
    run(backend, test, hooks=(recorder,))


def test_the_proxy_classes_follow_the_driver() -> None:
    pytest.importorskip("aiosqlite")
    backend = Backend("sqlite", "sqlite:///:memory:", _SQLITE_LONG)

    async def test(lender: OneConnection) -> None:
        raw = lender.slot.raw  # type: ignore[union-attr]
        cls = async_proxy_class(lender.driver, raw)
        assert issubclass(cls, AsyncConnectionProxy) and issubclass(cls, AsyncConnectionBase)
        assert async_proxy_class(lender.driver, raw) is cls  # built once per driver class
    run(backend, test)


# sqlite3's interrupt() stays in force while rows are pending
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_interrupt_reaching_sqlite_rows_as_they_return_is_a_timeout_and_leaves_no_poison(
        backend: Backend) -> None:
    sql = "SELECT 1 UNION ALL SELECT 2"

    async def returns_late(cursor: Any) -> Any:
        await asyncio.sleep(0.5)  # the deadline fires meanwhile, the rows already there
        return cursor

    async def test(lender: OneConnection) -> None:
        driver = lender.driver
        assert driver.cancel_poisons_pending_rows
        raw = lender.slot.raw  # type: ignore[union-attr]
        conn = lender.borrow()
        co = conn.checkout
        # what the interrupt does to rows left to fetch, unhandled (the premise)
        cursor = await raw.execute(sql)
        assert tuple(await cursor.fetchone()) == (1,)
        driver.cancel_poisons_pending_rows = False
        try:
            assert await run_within(returns_late(cursor), 0.1, pool_name="proxies",
                                    driver=driver, co=co, query=sql, cursor=cursor) is cursor
        finally:
            del driver.cancel_poisons_pending_rows
        with pytest.raises(sqlite3.OperationalError, match="interrupted"):
            await cursor.fetchone()
        await cursor.close()
        # handled: a timeout, the cursor closed, the connection clean
        cursor = await raw.execute(sql)
        assert tuple(await cursor.fetchone()) == (1,)
        with pytest.raises(QueryTimeout, match="interrupted as it returned"):
            await run_within(returns_late(cursor), 0.1, pool_name="proxies", driver=driver,
                             co=co, query=sql, cursor=cursor)
        assert not co.interrupted
        assert [tuple(r) for r in await raw.execute_fetchall("SELECT 3")] == [(3,)]
        await conn.close()
    run(backend, test)
