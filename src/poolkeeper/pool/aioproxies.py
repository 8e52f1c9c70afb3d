"""Checkout-scoped connection and cursor proxies for the asyncio shell (``AsyncPool``).

They mirror the thread shell's (:mod:`.proxies`): a proxy lives for one borrow and turns inert
when it goes back (its class is switched to :class:`ReturnedAsyncConnection`, whose every use
raises :class:`~poolkeeper.errors.ConnectionReturned`, naming the borrow site); cursors opened
through it are dropped on return; statements are counted on the :class:`Checkout` (odd while
one runs) and go through the pool's hooks (``hooks.context.chain_async``) with one
:class:`AsyncStatementContext` each; anything the proxy does not define is reached on the
driver's object (:mod:`.delegate`), its coroutines and ``async with`` blocks watched so that an
escaping exception is judged by the driver.

Two proxies, picked by :func:`async_proxy_class`:

* :class:`AsyncConnectionProxy`, DB-API style (psycopg's ``AsyncConnection``, aiomysql,
  aiosqlite): ``cursor()``, ``await conn.execute(...)``, the fetches, ``commit``/``rollback``;
* :class:`AsyncpgConnectionProxy`, asyncpg's own API (``fetch``, ``fetchrow``, ``fetchval``,
  ``execute``, ``executemany``, ``prepare``, ``copy_*``, ``transaction()``).

*Cancellation is a state.* A ``CancelledError`` escaping an awaited driver call means the
connection may be mid-protocol: the checkout is marked ``interrupted`` (``Checkout.interrupted``)
and the pool must put the connection through ``AsyncDriver.recover_from_cancel`` (or discard it)
before lending it again. The error itself always propagates. Any other exception is judged by
``AsyncDriver.is_broken`` as in the thread shell (``slot.broken``).

*Timeouts.* ``timeout=`` on a statement (default: the pool's ``query_timeout``) cancels it on the
server first (:mod:`.aiodeadline`) and raises :class:`~poolkeeper.errors.QueryTimeout`.

Example::

    async with pool.connection() as conn:
        cur = await conn.execute("SELECT id FROM t WHERE x = %s", (1,), timeout=2.5)
        rows = await cur.fetchall()
        async with conn.cursor() as cur:
            await cur.execute("SELECT 1")
            async for row in cur:
                ...
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Coroutine, Generator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from ..core.slot import Checkout, Slot
from ..drivers.aiobase import AsyncDriver
from ..errors import ConnectionReturned, QueryTimeout, as_driver_error
from ..hooks.context import StatementContext
from ..observe.monitor import MONITOR, CursorWatch
from .aiodeadline import run_within
from .cursorwatch import cursor_freed, watch_cursor
from .delegate import delegating_class
from .holders import returned_error
from .lender import AsyncLender

__all__ = [
    "AsyncConnectionBase",
    "AsyncConnectionProxy",
    "AsyncCursorProxy",
    "AsyncMonitoredConnection",
    "AsyncMonitoredCursor",
    "AsyncStatementContext",
    "AsyncpgConnectionProxy",
    "AsyncpgPrepared",
    "ClosedAsyncCursor",
    "Executing",
    "ReturnedAsyncConnection",
    "async_proxy_class",
    "close_cursors",
    "run_statement",
]

# Dead cursor references are pruned whenever the list reaches a power of two from this size
# on (as in proxies.py): a long checkout opening a cursor per statement keeps a short list.
_CURSOR_PRUNE_FROM = 64
#: "no timeout argument given" (None means "no timeout")
_UNSET: Any = object()
_weakref = weakref.ref
_getframe = sys._getframe
_CancelledError = asyncio.CancelledError


class AsyncStatementContext(StatementContext):
    """A :class:`StatementContext` that also carries the driver call itself: ``call`` is
    ``(method, args, kwargs)``, the bound coroutine method of the driver's cursor (DB-API) or
    connection (asyncpg) and its arguments. The innermost call of the pool's hook chain,
    :func:`run_statement`, makes it; hooks see an ordinary context."""

    __slots__ = ("call",)

    call: tuple[Any, tuple[Any, ...], dict[str, Any]]

    def result_rows(self, result: Any) -> int:
        # asyncpg's statements run on no cursor: its adapter reads the rows from the result
        # of the method called (a command tag, a list of records, a record)
        rows: int = self.driver.result_rows(getattr(self.call[0], "__name__", ""), result)
        return rows


def run_statement(ctx: StatementContext) -> Awaitable[Any]:
    """The statement itself: what the asyncio pool chains its hooks around, once::

        pool._execute = chain_async(active_hooks, run_statement) if active_hooks else None
    """
    method, args, kwargs = ctx.call  # type: ignore[attr-defined]  # AsyncStatementContext
    return method(*args, **kwargs)  # type: ignore[no-any-return]


async def close_cursors(driver: AsyncDriver, cursors: Sequence[Any], timeout: float) -> None:
    """Close the driver cursors a returned proxy left open (what ``_retire()`` returned),
    within ``timeout`` seconds in all; never raises a driver error. For the pool's reset task,
    before its rollback (a psycopg cursor ``WITH HOLD`` outlives the transaction on the server,
    an aiomysql unbuffered result is read to its end), and after ``recover_from_cancel`` for
    an interrupted checkout (aiosqlite closes a cursor in its worker thread, queued behind a
    statement that runs on until interrupted)."""
    if not cursors:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            for cursor in cursors:
                # a dead connection's cursor often fails to close; it is gone anyway
                with contextlib.suppress(Exception):
                    await driver.close_cursor(cursor)


def _open_cursors(refs: list[weakref.ref[Any]]) -> list[weakref.ref[Any]]:
    return [r for r in refs if (c := r()) is not None and not c.closed]


# ---------------------------------------------------------------------- connections
class _AsyncConnectionState:
    """The layout shared by a live and a returned connection proxy: its pool and its
    checkout's record (a returned proxy keeps it, to say where it was borrowed)."""

    __slots__ = ("__weakref__", "_co", "_pool")

    _pool: AsyncLender
    _co: Checkout

    def _returned(self) -> ConnectionReturned:
        pool = self._pool
        return returned_error(pool.name, self._co, pool.driver.closed_connection_error,
                              pool.config.abandoned_timeout)

    @property
    def pool(self) -> AsyncLender:
        return self._pool


class AsyncConnectionBase(_AsyncConnectionState):
    """What both live proxies share: the records, the return, the statement path, the
    judgement of a failed driver call and the retirement (``_retire``)."""

    __slots__ = ()

    def __init__(self, pool: AsyncLender, checkout: Checkout) -> None:
        self._pool = pool
        self._co = checkout

    @property
    def raw(self) -> Any:
        """The driver's own connection, valid only until this proxy is returned."""
        return self._co.raw

    @property
    def slot(self) -> Slot:
        """The physical connection's record (id, session id, created time, uses)."""
        return self._co.slot  # type: ignore[return-value]  # set while the proxy is live

    @property
    def checkout(self) -> Checkout:
        """This borrow's record (borrow time and site, holder, current SQL, statements)."""
        return self._co

    @property
    def closed(self) -> bool:
        """True once the proxy went back to the pool."""
        return False

    async def close(self) -> None:
        """Return the connection to the pool (the proxy, not the connection, is closed)."""
        await self._pool._give_back(self, None)

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        # commit on a clean exit, roll back on an error (the pool does both, shielded)
        if exc is not None:
            await self._pool._give_back_after(self, exc)
            return
        await self._pool._commit_back(self)

    if TYPE_CHECKING:  # the driver's attributes are properties of the delegating subclass
        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...

    def __del__(self) -> None:
        # Only a live proxy has this method: it was dropped without being returned.
        self._pool._orphaned(self._co)

    def __repr__(self) -> str:
        slot = self._co.slot
        return (f"<poolkeeper.{type(self).__name__} {self._pool.name!r} "
                f"slot {slot.id if slot else '?'}>")

    # ------------------------------------------------------------------ the statement path
    async def _statement(self, query: Any, params: Any, many: bool, cursor: Any,
                         method: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                         timeout: Any) -> Any:
        """One statement: ``method(*args, **kwargs)`` awaited through the pool's hooks (if
        any), counted on the checkout, within ``timeout`` (default ``query_timeout``)."""
        co = self._co
        slot = co.slot
        if slot is None:  # returned (or reclaimed) meanwhile
            raise self._returned()
        pool = self._pool
        if timeout is _UNSET:
            timeout = pool.config.query_timeout
        elif timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
            raise ValueError(f"timeout={timeout!r}: a statement's timeout is a number of "
                             "seconds above 0, or None for no timeout")
        clock = pool._txn_clock
        txn = False
        if clock is not None:  # transaction_timeout: never past the transaction's end
            timeout, txn = clock.bound(self, co.raw, timeout)
            if timeout is not None and timeout <= 0:
                age = clock.age(self)
                raise clock.refused(query, age, await clock.roll_back(self, co.raw))
        co.sql = query
        co.statements += 1  # odd: a statement is running
        run = pool._execute
        ctx: AsyncStatementContext | None = None
        try:
            if run is None:
                call = method(*args, **kwargs)
            else:
                ctx = AsyncStatementContext(pool.driver, co.raw, cursor, query, params, many,
                                            slot.hook_memo, self, slot.session_id)
                ctx.call = (method, args, kwargs)
                call = run(ctx)
            if timeout is None:
                result = await call
            else:
                result = await run_within(call, timeout, pool_name=pool.name,
                                          driver=pool.driver, co=co, query=query,
                                          cursor=cursor)
        except BaseException as exc:
            # A timeout is judged by what the driver raised (its cause), unless the await was
            # cancelled: then the checkout is interrupted already, recovery decides.
            cause = exc.__cause__
            self._failed(cause if isinstance(exc, QueryTimeout) and cause is not None
                         and not co.interrupted else exc)
            if ctx is not None and ctx.discard:  # a hook judged the connection unusable
                slot.broken = True
            if txn and clock is not None and isinstance(exc, QueryTimeout):
                # cut by the transaction's end: the transaction is over, as in Pool
                outcome = ("its await was cancelled, so the pool checks the connection "
                           "before lending it again" if co.interrupted
                           else await clock.roll_back(self, co.raw))
                raise clock.cut(exc, outcome) from exc.__cause__
            raise
        finally:
            co.statements += 1
        if ctx is not None and ctx.discard:
            slot.broken = True
        return result

    def _failed(self, exc: BaseException) -> None:
        """A driver call raised ``exc``: a cancelled await marks the checkout interrupted (the
        pool recovers or discards the connection), anything else the driver judges. Only
        while this checkout holds the connection."""
        co = self._co
        slot = co.slot
        if slot is None or slot.checkout is not co:
            return
        if isinstance(exc, _CancelledError):
            co.interrupted = True
        elif self._pool.driver.is_broken(co.raw, exc):
            slot.broken = True

    def _driver_call(self, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call a method of the driver's connection the proxy does not define (delegate.py);
        a coroutine, an ``async with`` block or an async iterator it returns is watched."""
        self._co.statements += 2  # use, for abandoned_timeout (see AsyncCursorProxy.fetchone)
        try:
            result = method(*args, **kwargs)
        except BaseException as exc:
            self._failed(exc)
            raise
        return _watch_result(self, result)

    def _retire(self, reclaimed: bool = False) -> list[Any]:
        """End this checkout on the proxy's side, synchronously (the pool calls it in its
        ``_give_back`` before any ``await``): from now on every call raises
        ConnectionReturned (ConnectionReclaimed with ``reclaimed``), and the cursors the
        caller left open turn inert.

        Returns the driver cursors they held, for the pool to close in its reset task
        (:func:`close_cursors`): closing one is a coroutine. A reclaim returns none: the
        holder may still be inside a driver call, and the pool closes the connection.
        """
        co = self._co
        cursors = co.cursors
        self.__class__ = ReturnedAsyncConnection  # type: ignore[assignment]
        left: list[Any] = []
        if cursors is not None:
            co.cursors = None
            for ref in cursors:
                cur: Any = ref()
                if cur is not None and cur.__class__ is not ClosedAsyncCursor:
                    raw = cur._drop()
                    if raw is not None and not reclaimed:
                        left.append(raw)
        if reclaimed:
            co.mon_frames = None
        else:
            # a returned proxy its caller keeps keeps its checkout, not the connection
            co.slot = co.raw = None
        return left


class AsyncConnectionProxy(AsyncConnectionBase):
    """The connection a caller holds for one borrow (DB-API style drivers).

    ``async with`` it (commit on a clean exit, rollback on an exception, then return), or
    ``await conn.close()`` / ``await pool.putconn(conn)`` to give it back.
    """

    __slots__ = ()

    #: the class of this proxy's cursors (AsyncMonitoredConnection's: AsyncMonitoredCursor)
    _cursor_class: ClassVar[type[AsyncCursorProxy]]
    #: whether cursor() hands each cursor to the resource monitor (_watch)
    _monitored: ClassVar[bool] = False

    def cursor(self, *args: Any, **kwargs: Any) -> AsyncCursorProxy:
        """A cursor (opened on the driver on first need): ``cur = conn.cursor()``,
        ``cur = await conn.cursor()`` or ``async with conn.cursor() as cur``."""
        co = self._co
        if co.slot is None:
            raise self._returned()
        cur = self._cursor_class(self, (args, kwargs) if args or kwargs else None)
        # the checkout's reference to it (the monitor's views find the open cursors there)
        ref = self._watch(cur, _getframe(1)) if self._monitored else _weakref(cur)
        cursors = co.cursors
        if cursors is None:
            co.cursors = [ref]
        else:
            cursors.append(ref)
            n = len(cursors)
            if n >= _CURSOR_PRUNE_FROM and not n & (n - 1):
                co.cursors = _open_cursors(cursors)
        return cur

    def _watch(self, cur: AsyncCursorProxy, f: Any) -> Any:
        """The monitor's watch of a new cursor (AsyncMonitoredConnection)."""
        raise NotImplementedError

    def execute(self, query: Any, params: Any = None, *, timeout: Any = _UNSET,
                **kwargs: Any) -> Executing:
        """Open a cursor, execute, give the cursor: ``cur = await conn.execute(...)``
        (psycopg / aiosqlite style), or ``async with conn.execute(...) as cur`` (closed at
        the end, aiosqlite style).

        ``timeout`` (seconds, or None for none) overrides the pool's ``query_timeout``; other
        keywords go to the driver's ``execute`` (psycopg's ``prepare=``, ``binary=``).
        """
        cur = self.cursor()
        return Executing(cur, cur._executed(query, params, False, timeout, kwargs))

    def executemany(self, query: Any, seq_of_params: Any, *, timeout: Any = _UNSET,
                    **kwargs: Any) -> Executing:
        cur = self.cursor()
        return Executing(cur, cur._executed(query, seq_of_params, True, timeout, kwargs))

    async def commit(self) -> None:
        clock = self._pool._txn_clock
        raw = self._co.raw
        if clock is not None and (age := clock.overdue(self, raw)) is not None:
            # transaction_timeout: an overdue transaction is rolled back, not committed
            raise clock.refused(None, age, await clock.roll_back(self, raw))
        try:
            await raw.commit()
        except BaseException as exc:
            self._failed(exc)
            raise
        if clock is not None:
            clock.ended(self)

    async def rollback(self) -> None:
        try:
            await self._co.raw.rollback()
        except BaseException as exc:
            self._failed(exc)
            raise
        clock = self._pool._txn_clock
        if clock is not None:
            clock.ended(self)

    async def set_autocommit(self, on: bool) -> None:
        """Switch autocommit for this borrow; the pool restores it on return."""
        co = self._co
        driver = self._pool.driver
        if co.autocommit_was is None:
            co.autocommit_was = driver.get_autocommit(co.raw)
        try:
            await driver.set_autocommit(co.raw, on)
        except BaseException as exc:
            self._failed(exc)
            raise


class AsyncMonitoredConnection(AsyncConnectionProxy):
    """A checkout the resource monitor recorded (DB-API style drivers), with its cursors and
    their sites: :class:`~poolkeeper.pool.proxies.MonitoredConnection`'s records, the holder
    being the task. An asyncpg checkout has no cursors: its record is the checkout's alone."""

    __slots__ = ()

    _monitored = True

    def _watch(self, cur: AsyncCursorProxy, f: Any) -> CursorWatch:
        """The watch of ``cur``, opened from frame ``f``: its site, times and deadline."""
        return watch_cursor(cur, f, _ENTRY_CODES, self._co.mon_frames,
                            self._pool.monitor.cursor_leak_s)


class AsyncpgConnectionProxy(AsyncConnectionBase):
    """The connection a caller holds for one borrow of an asyncpg connection: asyncpg's own
    API, each statement counted, hooked (``StatementContext.cursor`` is None, ``query`` the
    driver's ``statement_text``, ``params`` the statement's other positional arguments) and
    timed. ``timeout=`` is poolkeeper's per-statement timeout (cancelled on the server,
    :class:`~poolkeeper.errors.QueryTimeout`), not passed to asyncpg."""

    __slots__ = ()

    async def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                    timeout: Any) -> Any:
        raw = self._co.raw
        if raw is None:
            raise self._returned()
        driver = self._pool.driver
        return await self._statement(driver.statement_text(name, args), args[1:],
                                     name == "executemany", None, getattr(raw, name), args,
                                     kwargs, timeout)

    async def execute(self, query: str, *args: Any, timeout: Any = _UNSET) -> str:
        result: str = await self._call("execute", (query, *args), {}, timeout)
        return result

    async def executemany(self, command: str, args: Any, *, timeout: Any = _UNSET) -> None:
        await self._call("executemany", (command, args), {}, timeout)

    async def fetch(self, query: str, *args: Any, timeout: Any = _UNSET,
                    **kwargs: Any) -> list[Any]:
        result: list[Any] = await self._call("fetch", (query, *args), kwargs, timeout)
        return result

    async def fetchrow(self, query: str, *args: Any, timeout: Any = _UNSET,
                       **kwargs: Any) -> Any:
        return await self._call("fetchrow", (query, *args), kwargs, timeout)

    async def fetchval(self, query: str, *args: Any, timeout: Any = _UNSET,
                       **kwargs: Any) -> Any:
        return await self._call("fetchval", (query, *args), kwargs, timeout)

    async def fetchmany(self, query: str, args: Any, *, timeout: Any = _UNSET,
                        **kwargs: Any) -> list[Any]:
        result: list[Any] = await self._call("fetchmany", (query, args), kwargs, timeout)
        return result

    async def prepare(self, query: str, *, timeout: Any = _UNSET,
                      **kwargs: Any) -> AsyncpgPrepared:
        """asyncpg's prepared statement, its executions counted and hooked as statements."""
        statement = await self._call("prepare", (query,), kwargs, timeout)
        return AsyncpgPrepared(self, statement, query)

    async def copy_records_to_table(self, table_name: str, *, timeout: Any = _UNSET,
                                    **kwargs: Any) -> str:
        result: str = await self._call("copy_records_to_table", (table_name,), kwargs, timeout)
        return result

    async def copy_to_table(self, table_name: str, *, timeout: Any = _UNSET,
                            **kwargs: Any) -> str:
        result: str = await self._call("copy_to_table", (table_name,), kwargs, timeout)
        return result

    async def copy_from_table(self, table_name: str, *, timeout: Any = _UNSET,
                              **kwargs: Any) -> str:
        result: str = await self._call("copy_from_table", (table_name,), kwargs, timeout)
        return result

    async def copy_from_query(self, query: str, *args: Any, timeout: Any = _UNSET,
                              **kwargs: Any) -> str:
        result: str = await self._call("copy_from_query", (query, *args), kwargs, timeout)
        return result

    def transaction(self, **kwargs: Any) -> _WatchedTransaction:
        """asyncpg's ``Transaction`` (``async with conn.transaction():``), its round trips
        judged by the driver."""
        raw = self._co.raw
        if raw is None:
            raise self._returned()
        return _WatchedTransaction(self, raw.transaction(**kwargs))


class AsyncpgPrepared:
    """asyncpg's ``PreparedStatement``, its executions through the checkout's statement
    path (counted, hooked, timed). Other attributes are asyncpg's."""

    __slots__ = ("_conn", "_query", "_statement")

    def __init__(self, conn: AsyncpgConnectionProxy, statement: Any, query: str) -> None:
        self._conn = conn
        self._statement = statement
        self._query = query

    async def _run(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                   timeout: Any) -> Any:
        conn: Any = self._conn  # a ReturnedAsyncConnection once returned: raises there
        return await conn._statement(self._query, args, name == "executemany", None,
                                     getattr(self._statement, name), args, kwargs, timeout)

    async def fetch(self, *args: Any, timeout: Any = _UNSET) -> list[Any]:
        result: list[Any] = await self._run("fetch", args, {}, timeout)
        return result

    async def fetchrow(self, *args: Any, timeout: Any = _UNSET) -> Any:
        return await self._run("fetchrow", args, {}, timeout)

    async def fetchval(self, *args: Any, column: int = 0, timeout: Any = _UNSET) -> Any:
        return await self._run("fetchval", args, {"column": column}, timeout)

    async def fetchmany(self, args: Any, *, timeout: Any = _UNSET) -> list[Any]:
        result: list[Any] = await self._run("fetchmany", (args,), {}, timeout)
        return result

    async def executemany(self, args: Any, *, timeout: Any = _UNSET) -> None:
        await self._run("executemany", (args,), {}, timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._statement, name)


class ReturnedAsyncConnection(_AsyncConnectionState):
    """What a live proxy becomes once returned: every use raises."""

    __slots__ = ()

    def _raise(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise self._returned()

    cursor = execute = executemany = commit = rollback = set_autocommit = _raise
    fetch = fetchrow = fetchval = fetchmany = prepare = transaction = _raise
    _statement = _call = _raise

    @property
    def raw(self) -> NoReturn:
        raise self._returned()

    @property
    def slot(self) -> NoReturn:
        raise self._returned()

    @property
    def closed(self) -> bool:
        return True

    async def close(self) -> None:
        """Closing twice is harmless."""

    async def __aenter__(self) -> NoReturn:
        raise self._returned()

    async def __aexit__(self, *exc: object) -> None:
        """An ``async with`` block whose connection was returned (or reclaimed) inside it."""

    def _failed(self, exc: BaseException) -> None:
        """A driver call that outlived the checkout: the connection is someone else's."""

    def __getattr__(self, name: str) -> NoReturn:
        raise self._returned()

    def __repr__(self) -> str:
        return f"<poolkeeper.AsyncConnectionProxy {self._pool.name!r} returned>"


# ---------------------------------------------------------------------- cursors
class _AsyncCursorState:
    # _mon only on an AsyncMonitoredCursor (and the ClosedAsyncCursor it becomes): what the
    # resource monitor knows of it, also the weak reference its checkout keeps
    __slots__ = ("__weakref__", "_args", "_co", "_conn", "_mon", "_pool", "_raw")

    _conn: AsyncConnectionProxy
    _pool: AsyncLender
    _co: Checkout
    _raw: Any
    #: cursor() arguments, until the driver's cursor is opened (None: none)
    _args: tuple[tuple[Any, ...], dict[str, Any]] | None

    @property
    def connection(self) -> AsyncConnectionProxy:
        return self._conn


class AsyncCursorProxy(_AsyncCursorState):
    """A cursor of a checked-out connection; dropped when the connection goes back.

    The driver's cursor is opened on first need (``await``, ``async with``, the first
    statement or fetch); from then on the driver cursor's own attributes are reachable on
    the proxy (``lastrowid``, ``arraysize``, psycopg's ``stream()`` ...).
    """

    __slots__ = ()

    #: the class an opened cursor's delegating class is made from (kept by its subclasses)
    _plain: ClassVar[type[AsyncCursorProxy]]

    def __init__(self, conn: AsyncConnectionProxy,
                 args: tuple[tuple[Any, ...], dict[str, Any]] | None) -> None:
        self._conn = conn
        self._pool = conn._pool
        self._co = conn._co
        self._raw = None
        self._args = args

    @property
    def raw(self) -> Any:
        """The driver's cursor (None until opened), valid until this cursor is closed."""
        return self._raw

    async def _open(self) -> Any:
        co = self._co
        if co.slot is None:
            raise self._conn._returned()
        args, kwargs = self._args or ((), {})
        try:
            raw = await self._pool.driver.open_cursor(co.raw, *args, **kwargs)
        except BaseException as exc:
            self._conn._failed(exc)
            raise
        if self.closed:  # dropped while it opened (now a ClosedAsyncCursor)
            raise _closed_error(self)
        self._raw = raw
        self._args = None
        # now the driver's cursor class is known: its attributes become reachable
        self.__class__ = delegating_class(self._plain, raw)
        return raw

    async def _opened(self) -> AsyncCursorProxy:
        if self._raw is None:
            await self._open()
        return self

    def __await__(self) -> Generator[Any, None, AsyncCursorProxy]:
        return self._opened().__await__()

    async def execute(self, query: Any, params: Any = None, *, timeout: Any = _UNSET,
                      **kwargs: Any) -> Any:
        """Execute a statement; ``timeout`` (seconds, or None) overrides ``query_timeout``,
        other keywords go to the driver. Returns the cursor (aiomysql: the row count, as its
        own ``execute``)."""
        return await self._run(query, params, False, timeout, kwargs)

    async def executemany(self, query: Any, seq_of_params: Any, *, timeout: Any = _UNSET,
                          **kwargs: Any) -> Any:
        return await self._run(query, seq_of_params, True, timeout, kwargs)

    async def _run(self, query: Any, params: Any, many: bool, timeout: Any,
                   kwargs: dict[str, Any]) -> Any:
        raw = self._raw
        if raw is None:
            raw = await self._open()
        args: tuple[Any, ...]
        if many:
            method, args = raw.executemany, (query, params)
        else:
            method, args = raw.execute, ((query,) if params is None else (query, params))
        result = await self._conn._statement(query, params, many, raw, method, args, kwargs,
                                             timeout)
        # What an idle connection pins (psycopg: libpq's input buffer), as in the thread
        # shell: the pool retires a connection above max_idle_result_bytes on return
        measure = self._pool.driver.result_bytes
        slot = self._co.slot
        if not many and measure is not None and slot is not None \
                and (n := measure(raw)) > slot.largest_result_bytes:
            slot.largest_result_bytes = n
        return self if result is raw else result

    async def _executed(self, query: Any, params: Any, many: bool, timeout: Any,
                        kwargs: dict[str, Any]) -> AsyncCursorProxy:
        await self._run(query, params, many, timeout, kwargs)
        return self

    # A fetch counts as use for abandoned_timeout: +2 keeps the count even (no statement
    # running) but changed. aiomysql's buffered fetches return a done future: awaited alike.
    async def fetchone(self) -> Any:
        self._co.statements += 2
        raw = self._raw if self._raw is not None else await self._open()
        try:
            return await raw.fetchone()
        except BaseException as exc:
            self._conn._failed(exc)
            raise

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        self._co.statements += 2
        raw = self._raw if self._raw is not None else await self._open()
        try:
            return list(await (raw.fetchmany() if size is None else raw.fetchmany(size)))
        except BaseException as exc:
            self._conn._failed(exc)
            raise

    async def fetchall(self) -> list[Any]:
        self._co.statements += 2
        raw = self._raw if self._raw is not None else await self._open()
        try:
            return list(await raw.fetchall())
        except BaseException as exc:
            self._conn._failed(exc)
            raise

    def __aiter__(self) -> AsyncIterator[Any]:
        self._co.statements += 2
        return self._rows()

    async def _rows(self) -> AsyncIterator[Any]:
        raw = self._raw if self._raw is not None else await self._open()
        async for row in _watch_rows(self._conn, raw):
            yield row

    def _driver_call(self, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call a method of the driver's cursor the proxy does not define (delegate.py):
        ``scroll``, ``nextset``, ``callproc``, ``copy``, ``stream``, ``executescript``..."""
        self._co.statements += 2
        try:
            result = method(*args, **kwargs)
        except BaseException as exc:
            self._conn._failed(exc)
            raise
        return _watch_result(self._conn, result, self._raw, self)

    @property
    def description(self) -> Sequence[Any] | None:
        raw = self._raw
        return None if raw is None else raw.description

    @property
    def rowcount(self) -> int:
        raw = self._raw
        return -1 if raw is None else int(raw.rowcount)

    @property
    def closed(self) -> bool:
        return False

    async def close(self) -> None:
        raw = self._raw
        self._raw = None
        self.__class__ = ClosedAsyncCursor  # type: ignore[assignment]
        if raw is not None:
            try:
                await self._pool.driver.close_cursor(raw)
            except BaseException as exc:
                self._conn._failed(exc)
                raise

    def _drop(self) -> Any:
        """Turn inert on the connection's return; the driver's cursor (or None) for the pool
        to close (its close is a coroutine: see ``_retire``)."""
        raw = self._raw
        self._raw = None
        self.__class__ = ClosedAsyncCursor  # type: ignore[assignment]
        return raw

    async def __aenter__(self) -> AsyncCursorProxy:
        return await self._opened()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    if TYPE_CHECKING:
        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...

    def __repr__(self) -> str:
        return "<poolkeeper.AsyncCursorProxy open>"


AsyncCursorProxy._plain = AsyncCursorProxy
AsyncConnectionProxy._cursor_class = AsyncCursorProxy


class AsyncMonitoredCursor(AsyncCursorProxy):
    """A cursor of a checkout the resource monitor recorded: the leaks of
    :class:`~poolkeeper.pool.proxies.MonitoredCursor` (open when its checkout goes back,
    collected after its checkout was dropped unreturned, open past its threshold); one freed
    unclosed under its held checkout before its deadline is only counted."""

    __slots__ = ()

    def __del__(self) -> None:
        cursor_freed(self._mon, self._co, self._pool.name)  # without close()

    def _drop(self) -> Any:
        # still referenced and open when its checkout goes back: it outlived its checkout
        MONITOR.cursor_outlived(self._mon, self._co, self._pool.name)
        return AsyncCursorProxy._drop(self)


AsyncMonitoredCursor._plain = AsyncMonitoredCursor
AsyncMonitoredConnection._cursor_class = AsyncMonitoredCursor
# the frames AsyncMonitoredConnection._watch looks past for a cursor's site
_EXECUTE_CODE = AsyncConnectionProxy.execute.__code__
_EXECUTEMANY_CODE = AsyncConnectionProxy.executemany.__code__
#: the codes whose caller is a cursor's site (watch_cursor)
_ENTRY_CODES = (_EXECUTE_CODE, _EXECUTEMANY_CODE)


class Executing:
    """What ``conn.execute(...)`` gives: awaited, the cursor after the statement ran; as an
    ``async with`` block, that cursor, closed when the block ends."""

    __slots__ = ("_cursor", "_run")

    def __init__(self, cursor: AsyncCursorProxy, run: Coroutine[Any, Any, AsyncCursorProxy]
                 ) -> None:
        self._cursor = cursor
        self._run = run

    def __await__(self) -> Generator[Any, None, AsyncCursorProxy]:
        return self._run.__await__()

    async def __aenter__(self) -> AsyncCursorProxy:
        return await self._run

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._cursor.close()


def _closed_error(cur: _AsyncCursorState) -> ConnectionReturned:
    conn: _AsyncConnectionState = cur._conn
    if conn.__class__ is ReturnedAsyncConnection:  # closed with its connection
        return conn._returned()
    closed = as_driver_error(ConnectionReturned, cur._pool.driver.closed_cursor_error)
    return closed(f"pool {cur._pool.name!r}: this cursor is closed; open a new one with "
                  "connection.cursor()")


class ClosedAsyncCursor(_AsyncCursorState):
    """What an :class:`AsyncCursorProxy` becomes once closed: every use raises."""

    __slots__ = ()

    def _raise(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise _closed_error(self)

    execute = executemany = fetchone = fetchmany = fetchall = __aiter__ = __await__ = _raise

    @property
    def raw(self) -> NoReturn:
        raise _closed_error(self)

    @property
    def description(self) -> NoReturn:
        raise _closed_error(self)

    @property
    def rowcount(self) -> NoReturn:
        raise _closed_error(self)

    @property
    def closed(self) -> bool:
        return True

    async def close(self) -> None:
        """Closing twice is harmless."""

    def _drop(self) -> None:
        return None

    async def __aenter__(self) -> NoReturn:
        raise _closed_error(self)

    async def __aexit__(self, *exc: object) -> None:
        pass

    def __getattr__(self, name: str) -> NoReturn:
        raise _closed_error(self)

    def __repr__(self) -> str:
        return "<poolkeeper.AsyncCursorProxy closed>"


# ---------------------------------------------------------------------- watched results
async def _watch_rows(conn: Any, rows: Any) -> AsyncIterator[Any]:
    """``rows`` (an async iterator pulling from the driver) with an escaping exception judged."""
    try:
        async for row in rows:
            yield row
    except GeneratorExit:  # the caller stopped iterating: nothing went wrong
        raise
    except BaseException as exc:
        conn._failed(exc)
        raise


def _watch_result(conn: Any, result: Any, raw_cursor: Any = None, cursor: Any = None) -> Any:
    """What a delegated driver method returned, watched where it talks to the server later: a
    coroutine or other awaitable, an ``async with`` block (psycopg's ``transaction()``,
    ``copy()``), an async iterator (psycopg's ``stream()``)."""
    cls = type(result)
    if (inspect.isawaitable(result) or hasattr(cls, "__aenter__")
            or hasattr(cls, "__anext__")):
        return _Watched(conn, result, raw_cursor, cursor)
    if cursor is not None and result is raw_cursor and result is not None:
        return cursor  # chaining
    return result


class _Watched:
    """A driver's awaitable / ``async with`` block / async iterator whose exceptions the
    driver judges; a result that is the driver's cursor comes back as its proxy."""

    __slots__ = ("_aw", "_conn", "_cursor", "_raw_cursor")

    def __init__(self, conn: Any, aw: Any, raw_cursor: Any, cursor: Any) -> None:
        self._conn = conn
        self._aw = aw
        self._raw_cursor = raw_cursor
        self._cursor = cursor

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result().__await__()

    async def _result(self) -> Any:
        try:
            result = await self._aw
        except BaseException as exc:
            self._conn._failed(exc)
            raise
        if self._cursor is not None and result is self._raw_cursor and result is not None:
            return self._cursor  # chaining (aiosqlite's executescript)
        return result

    async def __aenter__(self) -> Any:
        try:
            return await self._aw.__aenter__()
        except BaseException as exc:
            self._conn._failed(exc)
            raise

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        try:
            return bool(await self._aw.__aexit__(exc_type, exc, tb))
        except BaseException as failure:
            # the body's own exception coming back through the driver's block is the body's
            if failure is not exc:
                self._conn._failed(failure)
            raise

    def __aiter__(self) -> AsyncIterator[Any]:
        return _watch_rows(self._conn, self._aw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._aw, name)


class _WatchedTransaction:
    """asyncpg's ``Transaction``, its round trips judged by the driver."""

    __slots__ = ("_conn", "_tx")

    def __init__(self, conn: AsyncpgConnectionProxy, tx: Any) -> None:
        self._conn = conn
        self._tx = tx

    async def _judged(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except BaseException as exc:
            self._conn._failed(exc)
            raise

    async def start(self) -> None:
        await self._judged(self._tx.start())

    async def commit(self) -> None:
        await self._judged(self._tx.commit())

    async def rollback(self) -> None:
        await self._judged(self._tx.rollback())

    async def __aenter__(self) -> _WatchedTransaction:
        await self._judged(self._tx.__aenter__())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        try:
            return bool(await self._tx.__aexit__(exc_type, exc, tb))
        except BaseException as failure:
            if failure is not exc:
                self._conn._failed(failure)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)


def async_proxy_class(driver: AsyncDriver, raw: Any,
                      monitored: bool = False) -> type[AsyncConnectionBase]:
    """The proxy class for the driver connection ``raw``: :class:`AsyncpgConnectionProxy`
    for a driver without DB-API cursors (asyncpg), else :class:`AsyncConnectionProxy` (for a
    checkout the monitor records, :class:`AsyncMonitoredConnection`), with ``raw``'s other
    attributes as properties. The pool makes each proxy as ``cls(pool, checkout)``, and
    keeps the classes per slot (``Slot.proxy_class``, ``Slot.monitored_class``)."""
    base: type[AsyncConnectionBase] = AsyncpgConnectionProxy if not driver.dbapi else (
        AsyncMonitoredConnection if monitored else AsyncConnectionProxy)
    return delegating_class(base, raw)
