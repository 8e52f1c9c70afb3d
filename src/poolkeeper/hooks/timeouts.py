"""Query timeouts that cancel on the server and leave nothing behind.

:class:`TimeoutHook` is a statement hook (``pool.add_hook``, see :mod:`.context`). For every
statement with an effective timeout its ``before`` puts one entry in the shared
:mod:`~poolkeeper.scheduler` and its ``after`` removes it when the statement returns, so
memory follows the statements in flight, never the statements run (seed 004: Connector/J kept
290,000 cancelled timer tasks, 2 GB). When a deadline passes first, the statement is cancelled
**on the server** (:mod:`poolkeeper.drivers.cancel`) and the caller gets
:class:`~poolkeeper.errors.QueryTimeout`, chained to the driver's error, after the connection
was rolled back (or marked for discard).

The effective timeout of a statement, first match wins:

1. a :class:`statement_timeout` scope naming this statement's connection or no connection
   (the innermost scope first; ``None`` disables the timeout inside it)::

       with statement_timeout(2.5):
           cur.execute("SELECT slow_report()")

2. the pool's ``query_timeout``;
3. and, when ``transaction_timeout`` is set, never beyond the end of the transaction's time.

The race between a deadline and the statement's own completion is settled by who gets there
first: the statement's ``Deadline.cancel()`` returning True means the deadline can never fire.
Otherwise a small state machine, guarded by one lock per hook, decides: a cancel not yet sent
is abandoned; a cancel being sent is waited for, so the statement's thread cannot start its
next statement on the connection before the cancel is over, and a late cancel can only find
an idle session (PostgreSQL ignores it, MariaDB's ``KILL QUERY ID`` misses, sqlite3's
``interrupt()`` is a no-op, except on rows the statement left to fetch: then the rows are
drained and the timeout reported, since every later statement would be interrupted too).

Nothing here assumes the statement runs synchronously between ``before`` and ``after``: the
deadline's callback cancels through the statement's context (its raw connection and session
id), from the scheduler's or the canceller's thread, whichever shell awaits the statement. One
wait remains in ``after``: a statement returning while its cancel is being delivered waits
(at most the canceller's bound) for the delivery to end, so that no cancel can reach the
connection's next statement.

The deadline covers the driver's ``execute()``/``executemany()``: all of the statement for
psycopg and PyMySQL's default (buffered) cursors; for sqlite3 the work up to the first row.
Fetching from server-side or unbuffered cursors is not timed.

Cancels needing network I/O (PostgreSQL, MariaDB) run on one ``poolkeeper-<pool>-canceller``
thread per hook, started on the first timeout, so a slow or unreachable server never delays
the scheduler's other deadlines; sqlite3 interrupts inline.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import re
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from ..errors import ConfigError, PoolError, QueryTimeout, as_driver_error
from ..scheduler import SchedulerLease, acquire_scheduler, scheduler_stats
from ..sql.errortext import error_text
from .context import StatementContext

__all__ = ["Canceller", "TimeoutHook", "statement_timeout"]

logger = logging.getLogger("poolkeeper.timeouts")
_monotonic = time.monotonic


class Canceller(Protocol):
    """What cancels a running statement on the server (``Driver.canceller()``, see
    ``drivers/cancel.py``): the hook knows it by this shape only."""

    #: whether cancel() may block on network I/O (then it runs on the canceller thread)
    blocking: bool
    #: the longest one cancel() may take, seconds
    max_duration_s: float
    #: a cancel arriving just after the statement returned still poisons its pending rows
    poisons_pending_rows: bool

    def cancel(self, raw: Any, session_id: Any) -> bool | None: ...

    def stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...

# Statement states (ints: compared on the slow path only, but cheap to set on the fast one).
_RUNNING = 0  # executing; its deadline is pending or just fired
_QUEUED = 1  # the deadline fired; a cancel waits for the canceller thread
_SENDING = 2  # a cancel is being delivered: the statement's thread waits for it to end
_SENT = 3  # the cancel was delivered
_MISSED = 4  # the canceller found nothing running any more; nothing was killed
_FAILED = 5  # the cancel could not be delivered; the statement ran on
_SKIPPED = 6  # the statement finished before a cancel was sent

_MAX_TIMEOUT_S = 365 * 86_400.0
# A failing cancel is logged at most this often per hook (each failure is counted).
_LOG_EVERY_S = 10.0


def _check_timeout(name: str, seconds: float | None) -> float | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ConfigError(f"{name}={seconds!r} must be a number of seconds (or None to disable)")
    if not (0.001 <= seconds <= _MAX_TIMEOUT_S) or math.isnan(seconds):
        raise ConfigError(f"{name}={seconds!r} is out of range: allowed 0.001..{_MAX_TIMEOUT_S:g}"
                          " s (or None to disable)")
    return float(seconds)


# --------------------------------------------------------------------------- scopes
class _Scope:
    __slots__ = ("connection", "parent", "seconds")

    def __init__(self, connection: Any, seconds: float | None, parent: _Scope | None) -> None:
        self.connection = connection
        self.seconds = seconds
        self.parent = parent


_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
    "poolkeeper_statement_timeout", default=None)


class statement_timeout:  # lower case: used like a function, as contextlib's helpers are
    """Set the timeout of the statements run inside a ``with`` block (this thread/task only).

    ``connection`` limits it to one pooled connection (a ``ConnectionProxy``); ``None`` means
    every connection of every pool with a :class:`TimeoutHook`. ``seconds=None`` disables the
    timeout inside the block. Scopes nest; the innermost matching one wins. Example::

        with pool.connection() as conn, statement_timeout(0.5, conn):
            conn.execute("SELECT 1")   # cancelled on the server after 0.5 s
    """

    __slots__ = ("_connection", "_seconds", "_token")

    def __init__(self, seconds: float | None, connection: Any = None) -> None:
        self._seconds = _check_timeout("timeout", seconds)
        self._connection = connection
        self._token: contextvars.Token[_Scope | None] | None = None

    def __enter__(self) -> statement_timeout:
        self._token = _SCOPE.set(_Scope(self._connection, self._seconds, _SCOPE.get()))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        token, self._token = self._token, None
        if token is not None:
            _SCOPE.reset(token)


def _resolve(scope: _Scope | None, connection: Any, default: float | None) -> float | None:
    while scope is not None:
        target = scope.connection
        if target is None or target is connection:
            return scope.seconds
        scope = scope.parent
    return default


# --------------------------------------------------------------------------- one statement
class _Statement:
    """One timed execution; it is also the scheduler callback (no bound method to allocate)."""

    __slots__ = ("ctx", "handle", "hit", "hook", "start", "state", "timeout", "txn")

    hook: TimeoutHook
    ctx: StatementContext
    handle: Any  # the scheduler's entry
    timeout: float
    start: float
    state: int
    txn: bool  # the deadline is the transaction's, not the statement's
    hit: bool | None

    def __call__(self) -> None:
        self.hook._fire(self)


_STATEMENT_BYTES = sys.getsizeof(_Statement())


class _CancelWorker:
    """One daemon thread delivering a hook's cancels, started on first use.

    Its queue holds at most one entry per statement in flight, so it is bounded by the pool's
    connections.
    """

    def __init__(self, name: str, run: Callable[[_Statement], None]) -> None:
        self._name = f"poolkeeper-{name}-canceller"
        self._run = run
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Statement] = deque()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(self, stmt: _Statement) -> bool:
        with self._cond:
            if self._stopping:
                return False
            self._queue.append(stmt)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
            return True

    def stop(self, timeout: float) -> bool:
        with self._cond:
            self._stopping = True
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                stmt = self._queue.popleft()
            try:
                self._run(stmt)
            except Exception:
                logger.exception("%s: delivering a cancel failed unexpectedly", self._name)


# --------------------------------------------------------------------------- the hook
class TimeoutHook:
    """Statement hook enforcing query and transaction timeouts with server-side cancels.

    Example::

        hook = TimeoutHook.for_pool(pool)      # reads query_timeout / transaction_timeout
        pool.add_hook(hook)
        ...
        pool.remove_hook(hook); hook.close()   # stops its threads, releases the scheduler

    ``driver`` is the pool's adapter (``name``, ``in_transaction``, ``rollback``,
    ``is_broken``, ``connect``, ``connect_timeout``); ``canceller`` replaces the driver's
    cancel mechanism (tests inject faults this way); ``cancel_timeout`` bounds one cancel.
    """

    def __init__(self, driver: Any, *, query_timeout: float | None = None,
                 transaction_timeout: float | None = None, name: str = "",
                 cancel_timeout: float = 5.0, canceller: Canceller | None = None) -> None:
        self._driver = driver
        self._query_timeout = _check_timeout("query_timeout", query_timeout)
        self._transaction_timeout = _check_timeout("transaction_timeout", transaction_timeout)
        if not (0.01 <= cancel_timeout <= 3600):
            raise ConfigError(f"cancel_timeout={cancel_timeout!r} is out of range: allowed "
                              "0.01..3600 s")
        self.name = name or getattr(driver, "name", "pool")
        if canceller is None:
            canceller = driver.canceller(cancel_timeout)
        self._canceller = canceller
        # How long a statement's thread waits for a cancel being delivered before it gives
        # up on the connection (a cancel still in flight could hit its next statement).
        self._send_bound = canceller.max_duration_s + 1.0
        self._cond = threading.Condition(threading.Lock())
        self._lease: SchedulerLease | None = None
        self._closed = False
        self._worker = _CancelWorker(self.name, self._send)
        self._txn_starts: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._last_log = -math.inf
        self._unlogged = 0
        self._reset_counters()

    @classmethod
    def for_pool(cls, pool: Any, **kwargs: Any) -> TimeoutHook:
        """A hook configured from ``pool.config`` (query_timeout, transaction_timeout)."""
        return cls(pool.driver, query_timeout=pool.config.query_timeout,
                   transaction_timeout=pool.config.transaction_timeout, name=pool.name,
                   **kwargs)

    def _reset_counters(self) -> None:
        self._fired = 0
        self._sent = 0
        self._failed = 0
        self._missed = 0
        self._raised = 0
        self._late = 0
        self._txn_expired = 0
        self._discarded = 0

    @property
    def query_timeout(self) -> float | None:
        return self._query_timeout

    @property
    def transaction_timeout(self) -> float | None:
        return self._transaction_timeout

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def threads(self) -> list[threading.Thread]:
        """The threads this hook started (its canceller; the scheduler's is shared)."""
        thread = self._worker.thread
        return [thread] if thread is not None else []

    # ------------------------------------------------------------------ per statement
    def before(self, ctx: StatementContext) -> _Statement | None:
        """Arm the statement's deadline (None: it has no timeout)."""
        scope = _SCOPE.get()
        timeout = (self._query_timeout if scope is None
                   else _resolve(scope, ctx.scope, self._query_timeout))
        txn = False
        if self._transaction_timeout is not None:
            timeout, txn = self._transaction_bound(ctx, timeout)
        if timeout is None:
            return None
        lease = self._lease or self._acquire()
        if lease is None:  # the hook was closed under a live pool: no timeouts any more
            return None
        stmt = _Statement()
        stmt.hook = self
        stmt.ctx = ctx
        stmt.timeout = timeout
        stmt.txn = txn
        stmt.state = _RUNNING
        stmt.start = now = _monotonic()
        stmt.handle = lease.call_at(now + timeout, stmt)
        return stmt

    def after(self, ctx: StatementContext, stmt: _Statement | None, result: Any,
              error: BaseException | None) -> None:
        """Disarm the deadline; if it fired, settle the race (may raise QueryTimeout)."""
        if stmt is None or stmt.handle.cancel():
            return
        timeout = self._finish_fired(stmt, error)
        if timeout is None:
            return
        if error is not None:
            raise timeout from error
        raise timeout

    # ------------------------------------------------------------------ slow paths
    def _acquire(self) -> SchedulerLease | None:
        with self._cond:
            if self._closed:
                return None
            if self._lease is None:
                self._lease = acquire_scheduler(self.name)
            return self._lease

    def _fire(self, stmt: _Statement) -> None:
        """The deadline passed (scheduler thread): queue the cancel, never block here."""
        with self._cond:
            if stmt.state != _RUNNING or self._closed:
                return
            stmt.state = _QUEUED
            self._fired += 1
        if not self._canceller.blocking:
            self._send(stmt)
        elif not self._worker.submit(stmt):
            with self._cond:
                if stmt.state == _QUEUED:
                    stmt.state = _SKIPPED

    def _send(self, stmt: _Statement) -> None:
        """Deliver one cancel (canceller thread, or inline when it cannot block)."""
        with self._cond:
            if stmt.state != _QUEUED:
                return  # the statement finished while the cancel waited in the queue
            stmt.state = _SENDING
        try:
            hit = self._canceller.cancel(stmt.ctx.connection, stmt.ctx.session_id)
        except Exception as exc:  # noqa: BLE001 - counted and logged; the statement runs on
            with self._cond:
                stmt.state = _FAILED
                self._failed += 1
                self._cond.notify_all()
            self._log_failure(stmt, exc)
            return
        with self._cond:
            stmt.hit = hit
            if hit is False:
                stmt.state = _MISSED
                self._missed += 1
            else:
                stmt.state = _SENT
                self._sent += 1
            self._cond.notify_all()

    def _finish_fired(self, stmt: _Statement, exc: BaseException | None) -> QueryTimeout | None:
        """The statement returned after its deadline fired: settle the race.

        Returns the QueryTimeout to raise, or None to pass the driver's outcome through.
        """
        with self._cond:
            state = stmt.state
            if state in (_RUNNING, _QUEUED):
                # The statement won: no cancel was sent and none will be.
                stmt.state = state = _SKIPPED
            elif state == _SENDING:
                end = _monotonic() + self._send_bound
                while stmt.state == _SENDING:
                    remaining = end - _monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                state = stmt.state
            poisoned = (state == _SENT and exc is None and not stmt.hit
                        and self._canceller.poisons_pending_rows and _has_rows(stmt.ctx.cursor))
            if not poisoned and (state in (_SKIPPED, _MISSED)
                                 or (state == _SENT and exc is None and not stmt.hit)):
                self._late += 1  # the statement finished first: its own outcome stands
        if state == _SENDING:
            # A cancel still in flight could land on this connection's next statement.
            self._discard(_context_discard(stmt.ctx), f"a cancel was still being delivered "
                          f"after {self._send_bound:g} s")
            return None
        if poisoned:
            # sqlite3: the interrupt reached a statement whose rows wait to be fetched. The
            # fetch would fail with "interrupted", and while that statement stays active every
            # new one on the connection is interrupted too: finish it now, report the timeout.
            exc = _drain(stmt.ctx.cursor)
            error = self._timeout_error(stmt, exc)
            error.__cause__ = exc
            return error
        if state != _SENT or not (exc is not None or stmt.hit):
            return None
        if exc is not None and not isinstance(exc, Exception):
            return None  # KeyboardInterrupt and friends pass through untouched
        return self._timeout_error(stmt, exc)

    def _timeout_error(self, stmt: _Statement, exc: BaseException | None) -> QueryTimeout:
        elapsed = _monotonic() - stmt.start
        ctx = stmt.ctx
        outcome = self._clean(ctx.connection, ctx.scope, exc, _context_discard(ctx))
        sql = _describe(ctx.query, getattr(self._driver, "name", None))
        if stmt.txn:
            limit = (f"the transaction reached transaction_timeout="
                     f"{self._transaction_timeout:g} s")
        else:
            limit = f"timeout {stmt.timeout:g} s"
        returned = "" if exc is not None else " (the driver returned a truncated result)"
        with self._cond:
            self._raised += 1
            if stmt.txn:
                self._txn_expired += 1
        return as_driver_error(QueryTimeout, getattr(self._driver, "cancelled_error", None))(
            f"pool {self.name!r}: statement cancelled on the server after {elapsed:.3f} s "
            f"({limit}){returned}: {sql}; {outcome}. If it needs longer, raise the timeout "
            "for this statement (statement_timeout / timeout=) or the pool's query_timeout; "
            "otherwise make it faster",
            sql=sql, timeout_s=stmt.timeout, elapsed_s=elapsed)

    def _clean(self, raw: Any, scope: Any, exc: BaseException | None,
               discard: Callable[[], None]) -> str:
        """Leave the connection clean after a timeout: roll back, or mark it for discard.

        ``raw``: the driver's connection; ``scope``: the checkout (transaction_timeout's key);
        ``discard()`` marks the connection to be retired when it comes back.
        """
        driver = self._driver
        try:
            if exc is not None and driver.is_broken(raw, exc):
                return self._discard(discard, "it broke while being cancelled")
            state = driver.in_transaction(raw)
            if state is None:
                return self._discard(discard, "its transaction state is unknown")
            if state:
                driver.rollback(raw)
                self.transaction_ended(scope)
                return "the transaction was rolled back"
            return "no transaction was open"
        except Exception as err:  # noqa: BLE001 - any failure here means: discard
            return self._discard(discard,
                                 f"the rollback failed ({type(err).__name__}: {err})")

    def _discard(self, discard: Callable[[], None], why: str) -> str:
        discard()
        with self._cond:
            self._discarded += 1
        return f"the connection will be discarded when returned: {why}"

    def _log_failure(self, stmt: _Statement, exc: BaseException) -> None:
        now = _monotonic()
        with self._cond:
            if now - self._last_log < _LOG_EVERY_S:
                self._unlogged += 1
                return
            self._last_log = now
            unlogged, self._unlogged = self._unlogged, 0
        logger.warning(
            "pool %r: could not cancel a statement past its %g s timeout, it runs on: %s "
            "(statement: %s)%s", self.name, stmt.timeout, error_text(exc),
            _describe(stmt.ctx.query, getattr(self._driver, "name", None)),
            f"; {unlogged} more failures since the last message" if unlogged else "")

    # ------------------------------------------------------------------ transaction_timeout
    def _transaction_bound(self, ctx: StatementContext,
                           timeout: float | None) -> tuple[float | None, bool]:
        """The statement's timeout, capped by what is left of its transaction's time.

        A transaction starts with the first statement run while the driver reports none open
        (no round trip: every adapter knows it locally). A statement starting after the
        transaction's time is up is not run: the transaction is rolled back and QueryTimeout
        raised.
        """
        limit = self._transaction_timeout
        assert limit is not None
        conn = ctx.scope
        now = _monotonic()
        if not self._driver.in_transaction(ctx.connection):
            self._txn_starts[conn] = now
            remaining = limit
        else:
            started = self._txn_starts.get(conn)
            if started is None:
                self._txn_starts[conn] = started = now
            remaining = started + limit - now
            if remaining <= 0:
                raise self._transaction_expired(ctx.connection, conn, ctx.query, now - started,
                                                _context_discard(ctx))
        if timeout is None or remaining < timeout:
            return remaining, True
        return timeout, False

    def transaction_ended(self, connection: Any) -> None:
        """The transaction on ``connection`` was committed or rolled back: stop its clock.

        Needed because not every driver shows a transaction's end in its local state: with
        autocommit off, MariaDB reports a transaction that has only read as none at all, so the
        MySQL adapter answers "possibly open" and the start is reset here instead.
        """
        if self._transaction_timeout is not None:
            self._txn_starts.pop(connection, None)

    def check_transaction(self, connection: Any) -> None:
        """Refuse to commit a transaction that outlived ``transaction_timeout``.

        For the pool to call before ``commit()`` (explicit, or at the end of a ``with``
        block): raises QueryTimeout after rolling the transaction back when it has been open
        too long, does nothing otherwise (or when transaction_timeout is off).
        """
        limit = self._transaction_timeout
        if limit is None:
            return
        started = self._txn_starts.get(connection)
        if started is None or not self._driver.in_transaction(connection.raw):
            return
        age = _monotonic() - started
        if age > limit:
            raise self._transaction_expired(connection.raw, connection, None, age,
                                            _checkout_discard(connection))

    def _transaction_expired(self, raw: Any, scope: Any, query: Any, age: float,
                             discard: Callable[[], None]) -> QueryTimeout:
        outcome = self._clean(raw, scope, None, discard)
        with self._cond:
            self._raised += 1
            self._txn_expired += 1
        if query is None:
            sql = ""
            what = "it was not committed"
        else:
            sql = _describe(query, getattr(self._driver, "name", None))
            what = f"the statement was not run: {sql}"
        return as_driver_error(QueryTimeout, getattr(self._driver, "cancelled_error", None))(
            f"pool {self.name!r}: the transaction has been open {age:.3f} s, past "
            f"transaction_timeout={self._transaction_timeout:g} s; {what}; {outcome}. Commit "
            "sooner, split the work into shorter transactions, or raise transaction_timeout",
            sql=sql, timeout_s=self._transaction_timeout or 0.0, elapsed_s=age)

    # ------------------------------------------------------------------ management
    def stats(self, reset: bool = False) -> dict[str, Any]:
        """Counters (merged into ``pool.stats()``); names carry their unit."""
        lease = self._lease
        sched = lease.stats(reset) if lease is not None else {}
        with self._cond:
            out: dict[str, Any] = {
                "timeouts_entries_now": sched.get("entries_now", 0),
                "timeouts_scheduled_num": sched.get("scheduled_num", 0),
                "timeouts_cancelled_on_time_num": sched.get("cancelled_num", 0),
                "timeouts_fired_num": self._fired,
                "timeouts_server_cancels_sent_num": self._sent,
                "timeouts_server_cancels_failed_num": self._failed,
                "timeouts_server_cancels_missed_num": self._missed,
                "timeouts_raised_num": self._raised,
                "timeouts_late_num": self._late,
                "timeouts_transaction_num": self._txn_expired,
                "timeouts_connections_discarded_num": self._discarded,
            }
            if reset:
                self._reset_counters()
        # Each entry in flight holds one _Statement besides the scheduler's own entry.
        out["timeouts_bytes"] = max(out["timeouts_entries_now"], 0) * _STATEMENT_BYTES
        out.update(self._canceller.stats())
        glob = scheduler_stats()
        out["scheduler_entries_now"] = glob["scheduler_entries_now"]
        out["scheduler_cancelled_pending"] = glob["scheduler_cancelled_pending"]
        out["scheduler_bytes"] = glob["scheduler_bytes"]
        return out

    def memory_usage(self) -> tuple[int, int | None]:
        """``(bytes, budget)`` for the memory ledger: this hook's statements in flight."""
        lease = self._lease
        pending = lease.stats()["entries_now"] if lease is not None else 0
        return max(pending, 0) * _STATEMENT_BYTES, None

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the canceller thread, close the control connection, release the scheduler.

        Statements still running keep running, without a deadline. Returns False when a
        thread did not stop within ``timeout``.
        """
        with self._cond:
            if self._closed:
                return True
            self._closed = True
            lease, self._lease = self._lease, None
        stopped = self._worker.stop(timeout)
        self._canceller.close()
        if lease is not None:
            stopped = lease.release(timeout) and stopped
        return stopped

    def __repr__(self) -> str:
        return (f"<poolkeeper.TimeoutHook {self.name!r} query_timeout={self._query_timeout} "
                f"transaction_timeout={self._transaction_timeout}"
                f"{' closed' if self._closed else ''}>")


# Fallback only (the fingerprint module unavailable): quoted strings and numbers become "?".
_LITERALS = re.compile(r"'(?:[^']|'')*'?|\b\d+(?:\.\d+)?\b")


def _context_discard(ctx: StatementContext) -> Callable[[], None]:
    """Retire the statement's connection when it comes back (the shell reads the flag)."""
    def discard() -> None:
        ctx.discard = True
    return discard


def _checkout_discard(connection: Any) -> Callable[[], None]:
    """The same for a checkout outside a statement (commit, end of a ``with`` block), through
    the connection proxy's public ``slot``."""
    def discard() -> None:
        with contextlib.suppress(PoolError):  # already returned: nothing left to mark
            connection.slot.broken = True
    return discard


def _drain(cursor: Any) -> BaseException | None:
    """Fetch what is left of an interrupted result on the driver's cursor (this resets the
    driver's statement)."""
    try:
        cursor.fetchall()
    except Exception as exc:  # noqa: BLE001 - the interruption we expect, returned as cause
        return exc
    return None


def _has_rows(cursor: Any) -> bool:
    try:
        return cursor.description is not None
    except Exception:  # noqa: BLE001 - a closed cursor has no rows left to poison
        return False


def _describe(query: Any, dialect: str | None) -> str:
    """The statement without literals (fingerprint), cut to 200 characters."""
    text = query.decode("utf-8", "replace") if isinstance(query, bytes) else str(query)
    try:
        from ..sql.fingerprint import MESSAGE_READ_CHARS, redact

        # not the whole text: a timed-out statement must not cost a second full fingerprint
        return redact(text, 200, dialect=dialect, read_chars=MESSAGE_READ_CHARS)
    except Exception:  # noqa: BLE001 - an error message must not fail on its own formatting
        text = _LITERALS.sub("?", text[:4096])
        return text[:200] + ("..." if len(text) > 200 else "")
