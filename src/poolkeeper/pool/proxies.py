"""Checkout-scoped connection and cursor proxies (DB-API 2.0, transparent).

A :class:`ConnectionProxy` lives for one borrow. When it goes back to the pool it turns inert:
any later call raises :class:`~poolkeeper.errors.ConnectionReturned` naming where it was
borrowed, instead of silently running on a connection that now belongs to someone else.
Cursors opened through it are closed on return. Anything the proxy does not define is looked
up on the driver's connection, so driver-specific features (psycopg's ``copy()``, PyMySQL's
``thread_id()``) stay reachable.

*How inertness is made cheap.* A returned proxy does not carry a flag that every method
tests: its class is switched to :class:`ReturnedConnection`, a sibling with the same layout
whose every method raises. The live class therefore does no "was I returned?" test, and only
the live class has the ``__del__`` that hands back a checkout dropped without being returned,
so a properly returned proxy is freed without running any Python code. Closed cursors switch to
:class:`ClosedCursor` the same way.

Statement execution goes through the pool's hook chain when one is installed (timeouts,
statistics, the statement cache): the cursor makes one
:class:`~poolkeeper.hooks.context.StatementContext` per statement and the hooks see it before
and after the driver call; with no hook it calls the driver directly.
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from collections.abc import Iterator, Sequence
from types import GeneratorType, TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from ..core.slot import Checkout, Slot
from ..errors import ConnectionReturned, as_driver_error
from ..hooks.context import StatementContext
from ..hooks.timeouts import statement_timeout
from ..observe.monitor import MONITOR, CursorWatch
from .cursorwatch import cursor_freed, watch_cursor
from .delegate import delegating_class, is_method
from .delegate import table as delegate_table
from .holders import format_site, returned_error
from .lender import Lender, RunHooks

__all__ = [
    "ClosedCursor",
    "ConnectionProxy",
    "CursorProxy",
    "MonitoredConnection",
    "MonitoredCursor",
    "ReturnedConnection",
    "RunHooks",
    "format_site",
    "proxy_class",
]

# A checkout keeps weak references to its cursors, to close the ones still open when it goes
# back; dead references are pruned whenever the list reaches a power of two from this size
# on, so a long checkout that opens a cursor per statement keeps a short list at amortised
# constant cost, and never keeps a result alive that the caller dropped.
_CURSOR_PRUNE_FROM = 64


_weakref = weakref.ref
_getframe = sys._getframe
#: "no timeout argument given" (None means "no timeout")
_UNSET: Any = object()


def _open_cursors(refs: list[weakref.ref[Any]]) -> list[weakref.ref[Any]]:
    """The references to cursors still alive and open (a checkout's list, pruned)."""
    return [r for r in refs if (c := r()) is not None and not c.closed]


class _ConnectionState:
    """The layout shared by a live and a returned connection proxy: its pool and its
    checkout's record (a returned proxy keeps it, to say where it was borrowed)."""

    __slots__ = ("__weakref__", "_co", "_pool")

    _pool: Lender
    _co: Checkout

    def _returned(self) -> ConnectionReturned:
        pool = self._pool
        return returned_error(pool.name, self._co, pool.driver.closed_connection_error,
                              pool.config.abandoned_timeout)

    @property
    def pool(self) -> Lender:
        return self._pool


class ConnectionProxy(_ConnectionState):
    """The connection a caller holds for one borrow.

    Use it as a context manager (commit on clean exit, rollback on exception, then return),
    or call :meth:`close` / ``pool.putconn(conn)`` to give it back.
    """

    __slots__ = ()

    def __init__(self, pool: Lender, checkout: Checkout) -> None:
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

    # ------------------------------------------------------------------ DB-API
    #: the cursor classes by driver cursor class, and their base (MonitoredConnection's
    #: make MonitoredCursors)
    _cursor_classes: ClassVar[dict[type, type]]
    _cursor_base: ClassVar[type[CursorProxy]]
    #: whether cursor() hands each cursor to the resource monitor (_watch)
    _monitored: ClassVar[bool] = False

    def cursor(self, *args: Any, **kwargs: Any) -> CursorProxy:
        co = self._co
        # The usual call has no arguments: a plain call is cheaper than passing on * and **.
        raw = co.raw.cursor(*args, **kwargs) if args or kwargs else co.raw.cursor()
        cls = self._cursor_classes.get(raw.__class__)
        if cls is None:
            cls = delegating_class(self._cursor_base, raw)
        cur: CursorProxy = cls(self, raw)
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

    def _watch(self, cur: CursorProxy, f: Any) -> Any:
        """The monitor's watch of a new cursor (MonitoredConnection)."""
        raise NotImplementedError

    def execute(self, query: Any, params: Any = None, *, timeout: Any = _UNSET) -> Any:
        """Open a cursor, execute, return the cursor (sqlite3 / psycopg style).

        ``timeout`` (seconds, or None for none) overrides the pool's ``query_timeout`` for
        this statement.
        """
        cur = self.cursor()
        cur.execute(query, params, timeout=timeout)
        return cur

    def executemany(self, query: Any, seq_of_params: Any, *, timeout: Any = _UNSET) -> Any:
        cur = self.cursor()
        cur.executemany(query, seq_of_params, timeout=timeout)
        return cur

    def timeout(self, seconds: float | None) -> statement_timeout:
        """A ``with`` block in which this connection's statements time out after ``seconds``.

        Example::

            with pool.connection() as conn, conn.timeout(2.5):
                conn.execute("SELECT slow_report()")   # cancelled on the server after 2.5 s
        """
        self._pool._timeout_hook()
        return statement_timeout(seconds, self)

    def commit(self) -> None:
        hook = self._pool._timeouts
        if hook is not None:
            hook.check_transaction(self)  # refuses (and rolls back) an overdue transaction
        try:
            self._co.raw.commit()
        except BaseException as exc:
            self._failed(exc)
            raise
        if hook is not None:
            hook.transaction_ended(self)

    def rollback(self) -> None:
        try:
            self._co.raw.rollback()
        except BaseException as exc:
            self._failed(exc)
            raise
        hook = self._pool._timeouts
        if hook is not None:
            hook.transaction_ended(self)

    def close(self) -> None:
        """Return the connection to the pool (the proxy, not the connection, is closed)."""
        self._pool._give_back(self, None)

    @property
    def autocommit(self) -> bool:
        return self._pool.driver.get_autocommit(self._co.raw)

    @autocommit.setter
    def autocommit(self, on: bool) -> None:
        co = self._co
        if co.autocommit_was is None:
            co.autocommit_was = self.autocommit  # restored when the connection goes back
        self._pool.driver.set_autocommit(co.raw, on)

    def __enter__(self) -> ConnectionProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        pool = self._pool
        if exc is not None:
            pool._give_back_after(self, exc)
            return
        if pool._timeouts is not None:
            try:
                pool._timeouts.check_transaction(self)
            except BaseException as refused:
                pool._give_back_after(self, refused)
                raise
        pool._give_back(self, True)

    # No __getattr__ at run time: the driver's attributes are properties of the subclass the
    # pool builds per driver class (see poolkeeper.pool.delegate, and proxy_class()). Type checkers
    # still see the proxy as transparent.
    if TYPE_CHECKING:
        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...

    def __del__(self) -> None:
        # Only a live proxy has this method: it was dropped without being returned.
        self._pool._orphaned(self._co)

    def __repr__(self) -> str:
        slot = self._co.slot
        return f"<poolkeeper.ConnectionProxy {self._pool.name!r} slot {slot.id if slot else '?'}>"

    # ------------------------------------------------------------------ internals
    def _driver_call(self, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call a method of the driver's connection the proxy does not define (delegate.py):
        an exception escaping it may have left the connection mid-protocol (conn.query(),
        conn.next_result(), conn.executescript(), conn.pipeline(), ...)."""
        self._co.statements += 2  # use, for abandoned_timeout (see CursorProxy.fetchone)
        try:
            result = method(*args, **kwargs)
        except BaseException as exc:
            ConnectionProxy._failed(self, exc)
            raise
        return _watch_result(self, result)

    def _failed(self, exc: BaseException) -> None:
        """A driver call raised ``exc``: the driver judges whether the connection survived.
        Only while this checkout holds it: a generator of rows read on after the return must
        not mark a connection someone else holds now."""
        co = self._co
        slot = co.slot
        if slot is not None and slot.checkout is co and self._pool.driver.is_broken(co.raw, exc):
            slot.broken = True

    def _retire(self, reclaimed: bool = False) -> None:
        """End this checkout on the proxy's side: from now on every call raises
        ConnectionReturned (ConnectionReclaimed with ``reclaimed``), and the cursors the
        caller left open are closed.

        A reclaim runs in the housekeeper's thread while the holder may still be inside a
        driver call, so it closes no driver object: its cursors only turn inert, and the
        pool closes the connection later (see Pool._reclaim), the driver's cursors with it.
        """
        co = self._co
        cursors = co.cursors
        self.__class__ = ReturnedConnection  # type: ignore[assignment]
        if cursors is not None:
            co.cursors = None
            for ref in cursors:
                cur: Any = ref()  # a CursorProxy, or one switched to ClosedCursor
                # One the caller closed needs nothing: no call for it (the usual case).
                if cur is not None and cur.__class__ is not ClosedCursor:
                    cur._drop(not reclaimed)
        if reclaimed:
            # The monitor's views show a checkout while its slot holds it (a returned one is
            # let go of at once): a reclaimed one is held until its connection is closed.
            co.mon_frames = None
        else:
            # A returned proxy its caller keeps keeps its checkout, for the error it raises:
            # not the connection (a closed PyMySQL connection can hold megabytes).
            co.slot = co.raw = None


class MonitoredConnection(ConnectionProxy):
    """A checkout recorded by the resource monitor, with its cursors and their SQL.

    A checkout has this class only when the monitor recorded it, so an unmonitored (or
    sampled-out) checkout runs no monitor code at all. The checkout itself has no record
    unless a view or a leak needs one: the monitor makes it from the checkout's record (its
    kept frames, ``Checkout.mon_frames``, and what the pool keeps there anyway: borrow time,
    holder, SQL). Each cursor gets a :class:`~poolkeeper.observe.monitor.CursorWatch` (the
    weak reference the checkout keeps to it anyway, with its site and times): all the
    monitor reads of it. See :class:`MonitoredCursor` for what is a leak.
    """

    __slots__ = ()

    _monitored = True

    def _watch(self, cur: CursorProxy, f: Any) -> CursorWatch:
        """The watch of ``cur``, opened from frame ``f``: its site, times and deadline."""
        return watch_cursor(cur, f, _ENTRY_CODES, self._co.mon_frames,
                            self._pool.monitor.cursor_leak_s)


class ReturnedConnection(_ConnectionState):
    """What a :class:`ConnectionProxy` becomes once returned: every use raises."""

    __slots__ = ()

    def _raise(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise self._returned()

    cursor = execute = executemany = commit = rollback = timeout = _raise

    @property
    def raw(self) -> NoReturn:
        raise self._returned()

    @property
    def slot(self) -> NoReturn:
        raise self._returned()

    @property
    def autocommit(self) -> NoReturn:
        raise self._returned()

    @property
    def closed(self) -> bool:
        return True

    def close(self) -> None:
        """Closing twice is harmless."""

    def __enter__(self) -> NoReturn:
        raise self._returned()

    def __exit__(self, *exc: object) -> None:
        """A ``with`` block whose connection was returned (or reclaimed) inside it: no-op."""

    def __getattr__(self, name: str) -> NoReturn:
        raise self._returned()

    def __repr__(self) -> str:
        return f"<poolkeeper.ConnectionProxy {self._pool.name!r} returned>"


class _CursorState:
    # _mon only on a MonitoredCursor (and on the ClosedCursor it becomes): what the resource
    # monitor knows of it, also the weak reference its checkout keeps
    __slots__ = ("__weakref__", "_co", "_conn", "_mon", "_pool", "_raw")

    _conn: ConnectionProxy
    _pool: Lender
    _co: Checkout  #: its checkout's record (statement count, SQL)
    _raw: Any
    _mon: CursorWatch

    @property
    def connection(self) -> ConnectionProxy:
        return self._conn


class CursorProxy(_CursorState):
    """A cursor of a checked-out connection; closed when the connection goes back."""

    __slots__ = ()

    def __init__(self, conn: ConnectionProxy, raw: Any) -> None:
        self._conn = conn
        self._pool = conn._pool
        self._co = conn._co
        self._raw = raw

    @property
    def raw(self) -> Any:
        """The driver's cursor, valid only until this cursor or its connection is closed."""
        return self._raw

    def execute(self, query: Any, params: Any = None, *, timeout: Any = _UNSET) -> Any:
        """Execute a statement; ``timeout`` (seconds, or None) overrides ``query_timeout``."""
        if timeout is not _UNSET:
            self._pool._timeout_hook()
            with statement_timeout(timeout, self._conn):
                return self._statement(query, params, False)
        return self._statement(query, params, False)

    def executemany(self, query: Any, seq_of_params: Any, *, timeout: Any = _UNSET) -> Any:
        if timeout is not _UNSET:
            self._pool._timeout_hook()
            with statement_timeout(timeout, self._conn):
                return self._statement(query, seq_of_params, True)
        return self._statement(query, seq_of_params, True)

    def _statement(self, query: Any, params: Any, many: bool) -> Any:
        """One statement through the pool's hooks (if any) and the driver."""
        raw = self._raw
        co = self._co
        slot = co.slot
        if slot is None:  # its checkout was returned from another thread meanwhile
            raise self._conn._returned()
        co.sql = query
        co.statements += 1  # odd: a statement is running
        pool = self._pool
        run = pool._execute
        if run is None:
            try:
                if many:
                    result = raw.executemany(query, params)
                elif params is None:
                    result = raw.execute(query)
                else:
                    result = raw.execute(query, params)
            except BaseException as exc:
                self._conn._failed(exc)
                raise
            finally:
                co.statements += 1
        else:
            ctx = StatementContext(pool.driver, co.raw, raw, query, params, many,
                                   slot.hook_memo, self._conn, slot.session_id)
            try:
                result = run(ctx)
            except BaseException as exc:
                self._conn._failed(exc)
                if ctx.discard:  # a hook judged the connection unusable
                    slot.broken = True
                raise
            finally:
                co.statements += 1
            if ctx.discard:
                slot.broken = True
        # What an idle connection pins (PostgreSQL: libpq's input buffer), see max_idle_result_bytes
        measure = pool._result_bytes
        if not many and measure is not None and (n := measure(raw)) > slot.largest_result_bytes:
            slot.largest_result_bytes = n
        # sqlite3 and psycopg return the cursor (for chaining); PyMySQL returns a row count.
        return self if result is raw else result

    # A fetch counts as use for abandoned_timeout: +2 keeps the count even (no statement
    # running) but changed, so the housekeeper sees the checkout in use (policy.abandoned).
    # A row factory's / converter's exception mid-fetch may leave an unbuffered result half
    # read: _failed() lets the driver judge (a try block costs nothing until it raises).
    def fetchone(self) -> Any:
        self._co.statements += 2
        try:
            return self._raw.fetchone()
        except BaseException as exc:
            self._conn._failed(exc)
            raise

    def fetchmany(self, size: int | None = None) -> list[Any]:
        self._co.statements += 2
        raw = self._raw
        try:
            return list(raw.fetchmany() if size is None else raw.fetchmany(size))
        except BaseException as exc:
            self._conn._failed(exc)
            raise

    def fetchall(self) -> list[Any]:
        self._co.statements += 2
        try:
            return list(self._raw.fetchall())
        except BaseException as exc:
            self._conn._failed(exc)
            raise

    def __iter__(self) -> Iterator[Any]:
        # The rows are pulled by the driver as the caller iterates: a row factory's or a
        # decoder's exception escapes from inside a driver call, as in fetchone().
        self._co.statements += 2
        return _watch_rows(self._conn, iter(self._raw))

    def __next__(self) -> Any:
        """DB-API's optional ``next()``: :meth:`fetchone`, StopIteration at the end."""
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def _driver_call(self, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call a method of the driver's cursor the proxy does not define (delegate.py):
        ``scroll``, ``nextset``, ``callproc``, ``copy``, ``stream``, ``executescript``..."""
        self._co.statements += 2
        try:
            result = method(*args, **kwargs)
        except BaseException as exc:
            ConnectionProxy._failed(self._conn, exc)
            raise
        if result is self._raw and result is not None:  # chaining (sqlite's executescript)
            return self
        return _watch_result(self._conn, result)

    @property
    def description(self) -> Sequence[Any] | None:
        return self._raw.description  # type: ignore[no-any-return]

    @property
    def rowcount(self) -> int:
        return int(self._raw.rowcount)

    @property
    def closed(self) -> bool:
        return False

    def close(self) -> None:
        raw = self._raw
        self._raw = None
        self.__class__ = ClosedCursor  # type: ignore[assignment]
        raw.close()

    def _drop(self, close_raw: bool = True) -> None:
        """Close quietly on the connection's return (the driver may be dead already)."""
        raw = self._raw
        self._raw = None
        self.__class__ = ClosedCursor  # type: ignore[assignment]
        if close_raw:
            # Closing a cursor of a dead connection may fail; it is gone anyway.
            with contextlib.suppress(Exception):
                raw.close()

    def __enter__(self) -> CursorProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # No __getattr__ at run time (see ConnectionProxy): a cursor's class is built per driver
    # cursor class.
    if TYPE_CHECKING:
        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...

    def __repr__(self) -> str:
        return "<poolkeeper.CursorProxy open>"


class MonitoredCursor(CursorProxy):
    """A cursor of a checkout the resource monitor recorded.

    It has no record of its own while it only runs statements and closes (the common case
    costs the monitor nothing past :meth:`MonitoredConnection.cursor`): its statements show
    on its checkout's record, and the monitor's views find it open through its watch in its
    checkout's list of cursors (``Checkout.cursors``) and make its record then. Closing
    switches it to :class:`ClosedCursor`, so ``__del__`` runs only for a cursor dropped
    unclosed.

    A leak, listed in ``MONITOR.collected()``: a cursor still open when its checkout goes
    back (the pool closes it), one collected after its checkout was dropped unreturned, one
    open longer than its threshold (the pool's ``leak_threshold``, else the monitor's
    ``cursor_leak_s``). No leak: one CPython frees while its checkout is held (counted).
    """

    __slots__ = ()

    def __del__(self) -> None:
        cursor_freed(self._mon, self._co, self._pool.name)  # without close()

    def _drop(self, close_raw: bool = True) -> None:
        # Still referenced and open when its checkout goes back (or is reclaimed): it outlived
        # its checkout, a leak for the monitor; the pool closes it as any other. Only the open
        # cursors of a returning checkout come here: a closed one costs the monitor nothing.
        MONITOR.cursor_outlived(self._mon, self._co, self._pool.name)
        CursorProxy._drop(self, close_raw)


class ClosedCursor(_CursorState):
    """What a :class:`CursorProxy` becomes once closed: every use raises."""

    __slots__ = ()

    def _gone(self) -> ConnectionReturned:
        conn: _ConnectionState = self._conn  # switched to ReturnedConnection on return
        if conn.__class__ is ReturnedConnection:  # closed with its connection
            return conn._returned()
        closed = as_driver_error(ConnectionReturned, self._pool.driver.closed_cursor_error)
        return closed(f"pool {self._pool.name!r}: this cursor is closed; open a new one with "
                      "connection.cursor()")

    def _raise(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise self._gone()

    execute = executemany = fetchone = fetchmany = fetchall = __iter__ = __next__ = _raise

    @property
    def raw(self) -> NoReturn:
        raise self._gone()

    @property
    def description(self) -> NoReturn:
        raise self._gone()

    @property
    def rowcount(self) -> NoReturn:
        raise self._gone()

    @property
    def closed(self) -> bool:
        return True

    def close(self) -> None:
        """Closing twice is harmless."""

    def _drop(self) -> None:
        pass

    def __enter__(self) -> NoReturn:
        raise self._gone()

    def __exit__(self, *exc: object) -> None:
        pass

    def __getattr__(self, name: str) -> NoReturn:
        raise self._gone()

    def __repr__(self) -> str:
        return "<poolkeeper.CursorProxy closed>"


def _watch_rows(conn: _ConnectionState, rows: Iterator[Any]) -> Iterator[Any]:
    """``rows`` (pulled from the driver) with an escaping exception judged by the pool: a
    non-driver one (a row factory's, a decoder's, KeyboardInterrupt) discards the connection.
    """
    try:
        yield from rows
    except GeneratorExit:  # the caller stopped iterating: nothing went wrong
        raise
    except BaseException as exc:
        ConnectionProxy._failed(conn, exc)  # type: ignore[arg-type]
        raise


def _watch_result(conn: _ConnectionState, result: Any) -> Any:
    """What a watched driver method returned, watched in turn where it calls the driver
    again later: a generator of rows (psycopg's ``stream()``, sqlite's ``iterdump()``), or a
    ``with`` block whose object talks to the server (psycopg's ``copy()``, ``pipeline()``)."""
    cls = result.__class__
    if cls is GeneratorType:
        return _watch_rows(conn, result)
    if cls is contextlib._GeneratorContextManager:
        return _WatchedContext(conn, result)
    return result


class _WatchedContext:
    """A driver's ``with`` block (psycopg's ``cursor.copy()``) whose object is watched."""

    __slots__ = ("_cm", "_conn")

    def __init__(self, conn: _ConnectionState, cm: Any) -> None:
        self._conn = conn
        self._cm = cm

    def __enter__(self) -> Any:
        try:
            entered = self._cm.__enter__()
        except BaseException as exc:
            ConnectionProxy._failed(self._conn, exc)  # type: ignore[arg-type]
            raise
        return entered if entered is None else _Watched(self._conn, entered)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        try:
            return bool(self._cm.__exit__(exc_type, exc, tb))
        except BaseException as failure:
            # The body's own exception coming back through the driver's block is the body's;
            # only a new one came from inside the driver (finishing the COPY, say).
            if failure is not exc:
                ConnectionProxy._failed(self._conn, failure)  # type: ignore[arg-type]
            raise


class _Watched:
    """The object of a watched ``with`` block (psycopg's ``Copy``): its methods watched."""

    __slots__ = ("_conn", "_obj")

    def __init__(self, conn: _ConnectionState, obj: Any) -> None:
        self._conn = conn
        self._obj = obj

    def _driver_call(self, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            result = method(*args, **kwargs)
        except BaseException as exc:
            ConnectionProxy._failed(self._conn, exc)  # type: ignore[arg-type]
            raise
        return _watch_result(self._conn, result)

    def __getattr__(self, name: str) -> Any:
        obj = self._obj
        value = getattr(obj, name)
        if name.startswith("_") or not is_method(obj, name):
            return value
        driver_call = self._driver_call

        def call(*args: Any, **kwargs: Any) -> Any:
            return driver_call(value, args, kwargs)

        call.__name__ = call.__qualname__ = name
        return call

    def __iter__(self) -> Iterator[Any]:
        return _watch_rows(self._conn, iter(self._obj))

    def __repr__(self) -> str:
        return repr(self._obj)


# The per-driver-class subclasses (poolkeeper.pool.delegate), looked up by a C dict read on every
# cursor: a miss builds one.
ConnectionProxy._cursor_classes = delegate_table(CursorProxy)
ConnectionProxy._cursor_base = CursorProxy
MonitoredConnection._cursor_classes = delegate_table(MonitoredCursor)
MonitoredConnection._cursor_base = MonitoredCursor
# the frames MonitoredConnection.cursor looks past for a cursor's site
_EXECUTE_CODE = ConnectionProxy.execute.__code__
_EXECUTEMANY_CODE = ConnectionProxy.executemany.__code__
#: the codes whose caller is a cursor's site (watch_cursor)
_ENTRY_CODES = (_EXECUTE_CODE, _EXECUTEMANY_CODE)


def proxy_class(raw: Any, monitored: bool = False) -> type[ConnectionProxy]:
    """The proxy class for a driver connection ``raw``: ConnectionProxy (or, for a checkout
    the monitor records, MonitoredConnection) with ``raw``'s attributes as properties."""
    return delegating_class(MonitoredConnection if monitored else ConnectionProxy, raw)

