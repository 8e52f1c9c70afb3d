"""The asyncio driver adapters against the real servers: aiosqlite, psycopg's
AsyncConnection, asyncpg and aiomysql (drivers/aio_*.py).

Each test runs its coroutine with ``asyncio.run`` (no pytest plugin). A server's own view
(``pg_stat_activity``, ``information_schema.PROCESSLIST``) is read over a sync admin
connection to tell what a session runs. "Server side gone" is a TCP relay of the test's own
that stops forwarding in both directions while keeping both sockets open: a network
partition, not a closed socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from poolkeeper.drivers import create_async_driver, detect_async_driver
from poolkeeper.drivers.aiobase import AsyncDriver
from poolkeeper.drivers.base import ErrorKind
from poolkeeper.dsn import parse_dsn
from poolkeeper.errors import ConfigError, ConnectError

from .conftest import MYSQL_DSN, PG_DSN, require_server

#: rows enough for a recursive CTE to run for seconds (interruptible)
_SQLITE_LONG = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                "WHERE x < 300000000) SELECT max(x) FROM c")


@dataclass
class Backend:
    name: str  # the adapter: sqlite, postgresql, asyncpg, mysql
    dsn: str
    sleep_sql: str

    @property
    def server(self) -> str | None:
        return {"postgresql": "postgresql", "asyncpg": "postgresql",
                "mysql": "mysql"}.get(self.name)

    def driver(self, dsn: str | None = None, **kwargs: Any) -> AsyncDriver:
        info = parse_dsn(dsn or self.dsn)
        if self.name != "asyncpg":
            kwargs.setdefault("autocommit", True)  # BEGIN is what opens a transaction
        return create_async_driver(info.driver, dict(info.params), **kwargs)


#: the asyncio backends, and those with a server session (one to end, cancel or watch)
BACKENDS = ["sqlite", "postgresql", "asyncpg", "mysql"]
SERVER_BACKENDS = ["postgresql", "asyncpg", "mysql"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(request.param, tmp_path)


@pytest.fixture(params=SERVER_BACKENDS)
def server_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(request.param, tmp_path)


def make_backend(name: str, tmp_path: Path) -> Backend:
    """The backend ``name`` (one of BACKENDS); skipped if its server is unreachable."""
    if name == "sqlite":
        pytest.importorskip("aiosqlite")
        return Backend(name, f"sqlite:///{tmp_path / 'aio.db'}", _SQLITE_LONG)
    if name in ("postgresql", "asyncpg"):
        require_server("PostgreSQL", "127.0.0.1", 5432,
                       "psycopg" if name == "postgresql" else "asyncpg")
        scheme = "postgresql+asyncpg" if name == "asyncpg" else "postgresql"
        return Backend(name, scheme + "://" + PG_DSN.split("://", 1)[1], "SELECT pg_sleep(5)")
    require_server("MariaDB", "127.0.0.1", 3306, "aiomysql")
    return Backend(name, MYSQL_DSN, "SELECT SLEEP(5)")


async def run(backend: Backend, raw: Any, sql: str) -> list[Any]:
    """One statement in the driver's own API; its rows (as tuples)."""
    if backend.name == "asyncpg":
        return [tuple(r) for r in await raw.fetch(sql)]
    if backend.name == "sqlite":
        return [tuple(r) for r in await raw.execute_fetchall(sql)]
    if backend.name == "postgresql":
        cur = await raw.execute(sql)
        return list(await cur.fetchall()) if cur.description else []
    async with raw.cursor() as cur:
        await cur.execute(sql)
        return list(await cur.fetchall())


# ------------------------------------------------------------------ the server's view
def _admin_query(backend: Backend, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    if backend.server == "postgresql":
        import psycopg

        with psycopg.connect(parse_dsn(PG_DSN).params["conninfo"], autocommit=True) as conn:
            return list(conn.execute(sql, args).fetchall())
    import pymysql

    mysql = pymysql.connect(**parse_dsn(MYSQL_DSN).params)
    try:
        with mysql.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        mysql.close()


def _running(backend: Backend, session: Any) -> str | None:
    """What the server says session ``session`` runs now (None: nothing)."""
    if backend.server == "postgresql":
        rows = _admin_query(backend, "SELECT state, query FROM pg_stat_activity WHERE pid = %s",
                            (session,))
        return str(rows[0][1]) if rows and rows[0][0] == "active" else None
    rows = _admin_query(backend, "SELECT COMMAND, INFO FROM information_schema.PROCESSLIST "
                        "WHERE ID = %s", (session,))
    return str(rows[0][1]) if rows and rows[0][1] is not None else None


def _terminate(backend: Backend, session: Any) -> None:
    if backend.server == "postgresql":
        _admin_query(backend, "SELECT pg_terminate_backend(%s)", (session,))
    else:
        _admin_query(backend, f"KILL {int(session)}")


async def _until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` (a server query, run off the loop) until true; fail past timeout."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout:g} s")
        await asyncio.sleep(0.05)


async def _statement_started(backend: Backend, driver: AsyncDriver, raw: Any) -> None:
    if backend.server is None:
        await asyncio.sleep(0.3)  # sqlite: nothing to watch; the statement runs for seconds
        return
    session = driver.session_id(raw)
    await _until(lambda: "sleep" in (_running(backend, session) or "").lower(),
                 f"session {session} running {backend.sleep_sql!r}")


def _is_cancelled_outcome(backend: Backend, driver: AsyncDriver, outcome: Any) -> bool:
    """Whether a sleep statement's outcome says it was stopped before its end."""
    if isinstance(outcome, BaseException):
        if backend.name == "mysql":
            return bool(outcome.args) and outcome.args[0] == 1317  # interrupted
        assert driver.cancelled_error is not None
        return isinstance(outcome, driver.cancelled_error)
    return backend.name == "mysql" and outcome == [(1,)]  # SLEEP() returns 1 when killed


# ------------------------------------------------------------------ a relay to partition
class Relay:
    """A TCP relay to a server that can stop forwarding (``partition()``) while both its
    sockets stay open: to the client, the server went silent."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.silent = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                if not self.silent:
                    dst.write(data)
                    await dst.drain()

    def partition(self) -> None:
        self.silent = True

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def relayed(backend: Backend) -> AsyncIterator[tuple[Relay, str]]:
    """A relay to the backend's server and the DSN that goes through it."""
    scheme, rest = backend.dsn.split("://", 1)
    userinfo, _, tail = rest.rpartition("@")
    hostport, _, path = tail.partition("/")
    relay = Relay(int(hostport.rpartition(":")[2]))
    await relay.start()
    try:
        yield relay, f"{scheme}://{userinfo}@127.0.0.1:{relay.port}/{path}"
    finally:
        await relay.close()


async def _connected(backend: Backend, **kwargs: Any) -> tuple[AsyncDriver, Any]:
    driver = backend.driver(**kwargs)
    return driver, await driver.connect()


# ================================================================== tests
def test_the_protocol_keeps_io_in_coroutines_and_answers_in_plain_methods(
        backend: Backend) -> None:
    driver = backend.driver()
    for name in ("connect", "close", "commit", "rollback", "ping", "set_autocommit",
                 "cancel", "recover_from_cancel", "dispose"):
        assert inspect.iscoroutinefunction(getattr(driver, name)), name
    for name in ("in_transaction", "is_broken", "left_mid_call", "classify_error",
                 "session_id", "get_autocommit", "rowcount", "query_text", "describe",
                 "abort", "statement_cache_policy"):
        assert not inspect.iscoroutinefunction(getattr(driver, name)), name
    assert driver.closed_connection_error is not None and driver.closed_cursor_error is not None


def test_transaction_state_is_read_locally_before_and_after_begin(backend: Backend) -> None:
    async def main() -> None:
        driver, raw = await _connected(backend)
        try:
            assert detect_async_driver(raw) == backend.name
            probe, none_open = driver.transaction_probe()  # the fast getter agrees
            assert driver.in_transaction(raw) is False and probe(raw) == none_open
            assert driver.get_autocommit(raw) is True
            await run(backend, raw, "BEGIN")
            await run(backend, raw, "SELECT 1")
            assert driver.in_transaction(raw) is True and probe(raw) != none_open
            await driver.commit(raw)
            assert driver.in_transaction(raw) is False
            await run(backend, raw, "BEGIN")
            await run(backend, raw, "SELECT 1")
            await driver.rollback(raw)
            assert driver.in_transaction(raw) is False
        finally:
            assert await driver.close(raw)
            await driver.dispose()
        assert driver.in_transaction(raw) is None  # closed: unknown, never a guess
        assert driver.is_broken(raw)

    asyncio.run(main())


def test_commit_keeps_and_rollback_drops_the_rows(backend: Backend) -> None:
    table = f"aio_t_{backend.name}_{int(time.time() * 1000) % 10**9}"

    async def main() -> None:
        driver, raw = await _connected(backend)
        try:
            await run(backend, raw, f"CREATE TEMPORARY TABLE {table} (x INTEGER)")
            await run(backend, raw, "BEGIN")
            await run(backend, raw, f"INSERT INTO {table} VALUES (1)")
            await driver.rollback(raw)
            assert await run(backend, raw, f"SELECT count(*) FROM {table}") == [(0,)]
            await run(backend, raw, "BEGIN")
            await run(backend, raw, f"INSERT INTO {table} VALUES (2)")
            await driver.commit(raw)
            assert driver.in_transaction(raw) is False
            assert await run(backend, raw, f"SELECT count(*) FROM {table}") == [(1,)]
        finally:
            await driver.close(raw)
            await driver.dispose()

    asyncio.run(main())


def test_ping_answers_on_a_live_connection_and_raises_on_a_closed_one(
        backend: Backend) -> None:
    async def main() -> None:
        driver, raw = await _connected(backend)
        await driver.ping(raw, 2.0)
        await driver.ping(raw, 2.0)
        assert await driver.close(raw)
        with pytest.raises(Exception) as info:
            await driver.ping(raw, 2.0)
        assert not isinstance(info.value, AssertionError)
        await driver.dispose()

    asyncio.run(main())


def test_a_session_the_server_terminated_is_broken(server_backend: Backend) -> None:
    backend = server_backend

    async def main() -> None:
        driver, raw = await _connected(backend)
        session = driver.session_id(raw)
        assert isinstance(session, int) and session > 0
        await run(backend, raw, "BEGIN")
        await run(backend, raw, "SELECT 1")
        await asyncio.to_thread(_terminate, backend, session)
        # answered from the client's state, no round trip: asyncpg reads its socket whenever
        # the loop runs (here, while the terminating thread ran) and may have heard of it
        if driver.in_transaction(raw) is None:
            assert backend.name == "asyncpg" and driver.is_broken(raw)
        else:
            assert driver.in_transaction(raw) is True
            assert not driver.is_broken(raw)
        with pytest.raises(Exception) as info:
            for _ in range(3):  # MariaDB may accept one write before the socket says so
                await run(backend, raw, "SELECT 1")
        error = info.value
        assert driver.is_broken(raw, error), repr(error)
        assert driver.classify_error(error) is ErrorKind.BROKEN, repr(error)
        assert await driver.close(raw) in (True, False)  # never raises
        assert driver.is_broken(raw)
        await driver.dispose()

    asyncio.run(main())


def test_cancel_stops_the_running_statement_on_the_server(backend: Backend) -> None:
    async def main() -> None:
        driver, raw = await _connected(backend)
        try:
            assert await driver.cancel(raw) is not True  # nothing runs: nothing to stop
            statement = asyncio.ensure_future(run(backend, raw, backend.sleep_sql))
            await _statement_started(backend, driver, raw)
            answer = await driver.cancel(raw)
            assert answer in (True, None)
            outcome: Any
            try:
                outcome = await asyncio.wait_for(statement, 10.0)
            except Exception as exc:  # noqa: BLE001 - the cancel's own error is the outcome
                outcome = exc
            assert _is_cancelled_outcome(backend, driver, outcome), repr(outcome)
            if backend.server is not None:
                assert await asyncio.to_thread(_running, backend, driver.session_id(raw)) \
                    is None
            assert await run(backend, raw, "SELECT 1") == [(1,)]  # usable afterwards
            if backend.name in ("mysql", "asyncpg"):
                stats = driver.cancel_stats()
                assert stats["timeouts_control_connections"] == 1
                assert stats["timeouts_kills_num"] == 1
        finally:
            await driver.close(raw)
            await driver.dispose()
        if backend.name in ("mysql", "asyncpg"):
            assert driver.cancel_stats()["timeouts_control_connections"] == 0  # disposed
            with pytest.raises(ConnectError, match="closed"):
                await driver.cancel(raw, 1)

    asyncio.run(main())


def test_a_cancelled_await_leaves_no_statement_running(backend: Backend) -> None:
    """What each driver does when the task awaiting a statement is cancelled, seen from the
    server: psycopg and asyncpg send a cancel request themselves, aiomysql closes the
    connection (the adapter then kills the query), aiosqlite runs on until interrupted."""
    async def main() -> None:
        driver, raw = await _connected(backend)
        session = driver.session_id(raw)
        try:
            statement = asyncio.ensure_future(run(backend, raw, backend.sleep_sql))
            await _statement_started(backend, driver, raw)
            statement.cancel()
            with pytest.raises(asyncio.CancelledError):
                await statement
            reusable = await driver.recover_from_cancel(raw, 5.0)
            if backend.server is not None:
                await _until(lambda: _running(backend, session) is None,
                             f"session {session} idle after the cancelled await")
            if backend.name == "mysql":
                assert reusable is False  # aiomysql closed it
                return
            assert reusable is True
            assert await run(backend, raw, "SELECT 1") == [(1,)]
        finally:
            await driver.close(raw)
            await driver.dispose()

    asyncio.run(main())


def test_close_and_ping_cannot_hang_when_the_server_side_is_gone(backend: Backend) -> None:
    async def sqlite_busy() -> None:
        # aiosqlite's close queues behind the statement its worker thread runs
        driver, raw = await _connected(backend)
        statement = asyncio.ensure_future(run(backend, raw, backend.sleep_sql))
        await asyncio.sleep(0.2)
        with pytest.raises(sqlite3.OperationalError, match="did not answer"):
            await driver.ping(raw, 0.2)
        closed = await asyncio.wait_for(driver.close(raw, timeout=0.2), 10.0)
        assert closed is False  # aborted: the statement interrupted, the worker stopped
        with pytest.raises(sqlite3.OperationalError, match="interrupt"):
            await asyncio.wait_for(statement, 10.0)
        await driver.dispose()  # waits for the aborted close to end in the worker
        assert not driver._lingering

    async def partitioned() -> None:
        async with relayed(backend) as (relay, dsn):
            driver = backend.driver(dsn)
            raw = await driver.connect()
            await run(backend, raw, "SELECT 1")
            relay.partition()
            with pytest.raises(Exception) as info:
                await asyncio.wait_for(driver.ping(raw, 0.3), 10.0)
            assert "0.3 s" in str(info.value), repr(info.value)
            closed = await asyncio.wait_for(driver.close(raw, timeout=0.3), 10.0)
            assert closed in (True, False)
            assert driver.is_broken(raw)
            await driver.dispose()
            # and a connect to a silent server ends at connect_timeout, masked
            silent = backend.driver(dsn.replace("://", "://", 1), connect_timeout=0.5)
            with pytest.raises(ConnectError, match=r"connect_timeout=0\.5 s"):
                await asyncio.wait_for(silent.connect(), 10.0)

    asyncio.run(sqlite_busy() if backend.server is None else partitioned())


def test_a_connect_error_never_shows_the_password(server_backend: Backend) -> None:
    backend = server_backend
    secret = "s3cretQZ9x"
    # the user is named like the password: the server's "role ... does not exist" /
    # "Access denied for user ..." quotes it back, and the adapter must mask it
    scheme, rest = backend.dsn.split("://", 1)
    dsn = f"{scheme}://{secret}:{secret}@{rest.rpartition('@')[2]}"

    async def main() -> None:
        driver = backend.driver(dsn)
        with pytest.raises(Exception) as info:
            await driver.connect()
        texts = [str(info.value), repr(info.value), driver.describe()]
        cause: BaseException | None = info.value
        while cause is not None:
            texts += [str(cause), repr(cause)]
            cause = cause.__cause__ or cause.__context__
        shown = "\n".join(texts)
        assert secret not in shown, shown
        assert "***" in str(info.value), shown  # it was quoted, and masked
        await driver.dispose()

    asyncio.run(main())


# ------------------------------------------------------------------ per-adapter details
def test_asyncpg_command_tags_give_the_row_counts_and_the_cache_is_bounded() -> None:
    require_server("PostgreSQL", "127.0.0.1", 5432, "asyncpg")
    from poolkeeper.drivers.aio_asyncpg import AsyncpgDriver, asyncpg_policy

    dsn = "postgresql+asyncpg://" + PG_DSN.split("://", 1)[1]
    info = parse_dsn(dsn)
    driver = create_async_driver(info.driver, dict(info.params), statement_cache_size=10,
                                 statement_cache_bytes=4096)
    assert isinstance(driver, AsyncpgDriver) and driver.dialect == "postgresql"
    policy = asyncpg_policy(10, 4096)
    assert (policy.max_statements, policy.max_statement_bytes) == (10, 409)
    assert policy.max_statements * policy.max_statement_bytes <= 4096
    # a budget below one character per statement turns the cache off: asyncpg would read
    # max_cacheable_statement_size=0 as "no limit"
    assert asyncpg_policy(10, 9).max_statements == 0
    assert asyncpg_policy(0, 4096).max_statements == 0
    assert driver.statement_text("copy_records_to_table", ("items",)) == \
        "COPY items FROM STDIN"

    async def main() -> None:
        raw = await driver.connect()
        try:
            await raw.execute("CREATE TEMPORARY TABLE aio_rows (x int)")
            status = await raw.execute("INSERT INTO aio_rows SELECT generate_series(1, 5)")
            assert status == "INSERT 0 5" and driver.rowcount(status) == 5
            assert driver.result_rows("execute", await raw.execute(
                "UPDATE aio_rows SET x = x + 1 WHERE x > 2")) == 3
            assert driver.result_rows("fetch", await raw.fetch("SELECT x FROM aio_rows")) == 5
            assert driver.result_rows("fetchrow", await raw.fetchrow("SELECT 1 WHERE false")) \
                == 0
            assert driver.rowcount(await raw.execute("CREATE TEMPORARY TABLE aio_x (y int)")) \
                == -1
            copied = await raw.copy_records_to_table("aio_rows", records=[(7,), (8,)])
            assert driver.result_rows("copy_records_to_table", copied) == 2
            # the bound reaches asyncpg: a statement longer than the cap is never cached
            long_query = "SELECT 1 AS " + "x" * 500
            await raw.fetch(long_query)
            await raw.fetch("SELECT 2")
            assert driver.classify_error(await _error(raw.fetch("SELECT 1/0"))) is \
                ErrorKind.DATA
            assert driver.classify_error(await _error(raw.fetch("SELEC 1"))) is ErrorKind.OTHER
        finally:
            await driver.close(raw)
            await driver.dispose()

    asyncio.run(main())
    with pytest.raises(ConfigError, match="autocommit=False"):
        create_async_driver("asyncpg", dict(info.params), autocommit=False)


async def _error(call: Awaitable[Any]) -> BaseException:
    try:
        await call
    except Exception as exc:  # noqa: BLE001 - the error is what the caller inspects
        return exc
    raise AssertionError("the statement did not fail")


def test_aiosqlite_interrupt_falls_back_to_a_task_when_it_would_suspend() -> None:
    """aiosqlite's interrupt() never suspends today; a version whose does gets a fresh
    interrupt() in a task instead of a coroutine resumed outside the loop."""
    from poolkeeper.drivers.aio_sqlite import interrupt_now

    class Suspending:
        calls = 0
        done = 0

        async def interrupt(self) -> None:
            Suspending.calls += 1
            await asyncio.sleep(0)
            Suspending.done += 1

    class Immediate:
        done = 0

        async def interrupt(self) -> None:
            Immediate.done += 1

    class Closed:
        async def interrupt(self) -> None:
            raise ValueError("no active connection")

    async def main() -> None:
        assert interrupt_now(Immediate()) is True and Immediate.done == 1
        assert interrupt_now(Closed()) is False
        assert interrupt_now(Suspending()) is False
        for _ in range(10):  # bounded: the fallback task runs on the next loop turns
            await asyncio.sleep(0)
        assert Suspending.calls == 2 and Suspending.done == 1  # the fresh one finished

    asyncio.run(main())
    assert interrupt_now(Suspending()) is False  # no loop: nothing scheduled, no error


def test_aiosqlite_memory_database_is_shared_and_goes_with_dispose() -> None:
    pytest.importorskip("aiosqlite")
    info = parse_dsn("sqlite://:memory:")
    driver = create_async_driver(info.driver, dict(info.params))

    async def main() -> None:
        first, second = await driver.connect(), await driver.connect()
        try:
            await first.execute("CREATE TABLE shared (x INTEGER)")
            await first.execute("INSERT INTO shared VALUES (7)")
            await first.commit()
            assert list(await second.execute_fetchall("SELECT x FROM shared")) == [(7,)]
        finally:
            assert await driver.close(first) and await driver.close(second)
        await driver.dispose()
        fresh = await driver.connect()  # the anchor is gone: a new, empty database
        try:
            with pytest.raises(sqlite3.OperationalError, match="no such table"):
                await fresh.execute_fetchall("SELECT x FROM shared")
        finally:
            await driver.close(fresh)

    asyncio.run(main())


def test_unknown_and_missing_asyncio_drivers_are_named() -> None:
    with pytest.raises(ConfigError, match="unknown for AsyncPool"):
        create_async_driver("oracle", {})
    with pytest.raises(ConfigError, match="cannot tell which asyncio driver"):
        detect_async_driver(object())


def test_aiomysql_local_infile_reaches_the_loader_connection_only(tmp_path: Path) -> None:
    require_server("MariaDB", "127.0.0.1", 3306, "aiomysql")
    rows = tmp_path / "rows.tsv"
    rows.write_text("1\n2\n3\n")
    info = parse_dsn(MYSQL_DSN)
    driver = create_async_driver(info.driver, dict(info.params), autocommit=True)

    async def load(raw: Any) -> Any:
        async with raw.cursor() as cur:
            await cur.execute("CREATE TEMPORARY TABLE aio_infile (x INTEGER)")
            await cur.execute(f"LOAD DATA LOCAL INFILE '{rows}' INTO TABLE aio_infile")
            await cur.execute("SELECT count(*) FROM aio_infile")
            return (await cur.fetchone())[0]

    async def main() -> None:
        pooled = await driver.connect()
        loader = await driver.connect_for_local_files()  # type: ignore[attr-defined]
        try:
            with pytest.raises(Exception) as refused:  # the pool's connections send no file
                await load(pooled)
            assert not isinstance(refused.value, AssertionError)
            try:
                count = await load(loader)
            except Exception as exc:
                if exc.args and exc.args[0] in (1148, 3948):
                    pytest.skip(f"the server refuses LOAD DATA LOCAL: {exc}")
                raise
            assert count == 3
        finally:
            await driver.close(pooled)
            await driver.close(loader)
            await driver.dispose()

    asyncio.run(main())


def test_aiomysql_local_infile_given_by_the_user_warns_and_is_passed_on() -> None:
    pytest.importorskip("aiomysql")
    from poolkeeper.config import ConfigWarning
    from poolkeeper.drivers.aio_mysql import AiomysqlDriver

    params = {**parse_dsn(MYSQL_DSN).params, "local_infile": True}
    with pytest.warns(ConfigWarning, match="aiomysql send the file the server names"):
        driver = create_async_driver("mysql", params)
    assert isinstance(driver, AiomysqlDriver)
    kwargs = driver._connect_kwargs()
    assert kwargs["local_infile"] is True and "database" not in kwargs and kwargs["db"]
