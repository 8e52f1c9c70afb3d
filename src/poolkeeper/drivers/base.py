"""The adapter protocol: everything the pool needs to know about one DB-API driver.

An adapter is the only place that imports a driver or knows its quirks. The pool asks it
questions that must be answered **without a round trip** on the hot path (is a transaction
open? did that error break the connection?) and delegates the rare I/O (connect, ping, cancel).
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Mapping
from typing import Any

from ..core.stmtpolicy import StatementCacheMirror, StatementCachePolicy, check_cache_sizes
from ..dsn import secrets_of
from ..errors import PoolError
from ..sql.querytext import query_text
from .cancel import Canceller, make_canceller

__all__ = ["AdapterBase", "Driver", "ErrorKind"]


class ErrorKind(enum.Enum):
    """How an error from the driver should be handled."""

    BROKEN = "broken"  #: the connection is unusable: discard it
    TRANSIENT = "transient"  #: retrying the same work may succeed (deadlock, serialization)
    DATA = "data"  #: the statement or its data is wrong: retrying will fail again
    OTHER = "other"  #: anything else (syntax, permission, ...)


class AdapterBase:
    """What every adapter answers without I/O, the sync :class:`Driver` and the asyncio
    :class:`~poolkeeper.drivers.aiobase.AsyncDriver` alike: options, secrets, transaction
    state, error classification, statement texts, the statement-cache policy.

    ``params`` are the keyword arguments of the driver's connect(); ``connect`` replaces the
    driver's connect() when the user passed ``Pool(connect=...)`` (for an asyncio adapter a
    callable that returns an awaitable).
    """

    name = "generic"
    #: whether this driver can report an open transaction without a round trip
    knows_transaction_state = False

    def __init__(self, params: Mapping[str, Any], *, connect: Callable[[], Any] | None = None,
                 autocommit: bool | None = None, connect_timeout: float = 10.0,
                 statement_cache_size: int = 100,
                 statement_cache_bytes: int | None = None) -> None:
        self.params = dict(params)
        self._connect_fn = connect
        self.autocommit = autocommit
        self.connect_timeout = connect_timeout
        self.statement_cache_size = statement_cache_size
        #: the pool's statement_cache_bytes (None: bounded by count only)
        self.statement_cache_bytes = statement_cache_bytes
        #: the password and DSN in ``params``, masked in every driver message poolkeeper repeats
        self.secrets = secrets_of(self.params)
        self._setup()

    def _setup(self) -> None:
        """What an adapter sets up once its options are in place (import its driver, read
        its classes): each class does its part and calls ``super()._setup()`` first, so the
        driver mixins and the sync / asyncio bases need not repeat the constructor."""

    def forget_connection_of(self, exc: BaseException) -> None:
        """Drop what a connect error keeps of the failed connection (it may hold the password)."""

    # ---------------------------------------------------------------- state, no round trip
    def in_transaction(self, raw: Any) -> bool | None:
        """True/False when known for sure; None when the state is unknown or unsafe.

        The generic answer is True: without driver knowledge, a rollback is the only way to
        be sure nothing leaks into the next borrower.
        """
        return True

    def transaction_probe(self) -> tuple[Callable[[Any], Any], Any]:
        """A fast getter of the transaction state and the value it returns for "none open".

        The pool calls the getter on every return; a driver whose state is one attribute away
        returns a C-level ``operator.attrgetter`` (no Python frame); any other value than the
        "none open" one sends the return down the careful path (:meth:`in_transaction`).
        """
        return self.in_transaction, False

    def is_broken(self, raw: Any, exc: BaseException | None = None) -> bool:
        """Whether the connection is unusable, judged from local state and the error seen."""
        return exc is not None and self.left_mid_call(exc)

    #: the driver's DB-API ``Error`` base class(es); subclasses set it when they import the driver
    error_types: tuple[type[BaseException], ...] = ()
    #: what the raw driver raises when a closed connection / closed cursor is used, and when
    #: a statement is cancelled: poolkeeper's own errors in those places are also of these
    #: classes (errors.as_driver_error), so DB-API code that catches the driver's keeps working
    closed_connection_error: type[BaseException] | None = None
    closed_cursor_error: type[BaseException] | None = None
    cancelled_error: type[BaseException] | None = None

    def left_mid_call(self, exc: BaseException) -> bool:
        """Whether ``exc`` may have left the connection mid-protocol: anything raised inside a
        driver call that is neither the driver's own DB-API error nor poolkeeper's (a
        ``RuntimeError`` from PyMySQL's local-infile guard, a ``UnicodeDecodeError`` or a row
        factory's / converter's exception mid-result, ``KeyboardInterrupt``). Such a connection
        is discarded, never lent again: the next borrower would read the rest of the old reply.
        """
        return not isinstance(exc, self.error_types) and not isinstance(exc, PoolError)

    def classify_error(self, exc: BaseException) -> ErrorKind:
        """Sort a driver error into broken / transient / data / other."""
        return ErrorKind.OTHER

    def session_id(self, raw: Any) -> Any:
        """The server's id for this session (backend pid, thread id), when known locally."""
        return None

    def describe(self) -> str:
        """Where this adapter connects, with secrets masked."""
        return self.name

    @property
    def dialect(self) -> str:
        """The server's SQL dialect: the adapter's name, except where two adapters speak to
        one server (asyncpg: "postgresql")."""
        return self.name

    # ---------------------------------------------------------------- statements (for hooks)
    # What the hooks (statistics, statement cache, fetch size) need to know of a driver's
    # cursors and statement cache: asked here, so that no hook knows a driver.

    #: ``result_bytes(cursor) -> int``, the memory of the result a driver cursor holds (0:
    #: none or tiny), for a driver whose *connection* keeps a buffer as large as the largest
    #: message it received (libpq's input buffer: PostgreSQL). The proxies call it when a
    #: result is dropped (the cursor executes again, closes, or goes back with its connection)
    #: and the pool retires a connection above ``max_idle_result_bytes`` at return. None (the
    #: default) when the buffer goes with the result: sqlite3 steps rows out of the database
    #: file page by page, PyMySQL reads every packet into a fresh bytes object and its
    #: connection-held result is dropped on return (``release_results``).
    result_bytes: Callable[[Any], int] | None = None

    #: driver cursor classes that stream their result in round trips of a settable size
    #: (psycopg's server-side cursors): the fetch-size hook sizes them (set_fetch_size)
    streaming_cursor_types: tuple[type, ...] = ()

    def set_fetch_size(self, cursor: Any, rows: int) -> None:
        """Fetch ``rows`` rows per round trip on a cursor of ``streaming_cursor_types``."""

    def rowcount(self, cursor: Any) -> int:
        """The DB-API ``rowcount`` of a driver cursor after a statement; -1 when unknown.

        The public attribute, for every driver: reading psycopg's private ``_rowcount``
        instead saved ~0.05 us per statement (47 ns vs 100 ns, timeit on CPython 3.11), under
        the 0.2 us an optimisation needs to stay.
        """
        try:
            rows = cursor.rowcount
        except Exception:  # noqa: BLE001 - a closed or exotic cursor: rows unknown
            return -1
        return rows if type(rows) is int else -1

    def query_text(self, query: Any, cursor: Any) -> str:
        """The SQL text of a query passed to ``cursor.execute`` (``str``, ``bytes``, or this
        driver's own query objects), for fingerprints; never its ``repr()``."""
        return query_text(query)

    def statement_cache_policy(self, statement_cache_size: int,
                               statement_cache_bytes: int) -> StatementCachePolicy:
        """How this driver's statement cache is governed from the pool's options."""
        check_cache_sizes(statement_cache_size, statement_cache_bytes)
        return StatementCachePolicy(
            self.name, False, "none", 0, 0, 0, None, "none",
            f"poolkeeper knows no statement cache of the {self.name} driver: nothing is "
            "governed or counted")

    def governs_statements(self, policy: StatementCachePolicy) -> bool:
        """Whether the statement-cache hook has work per statement under ``policy`` (False:
        it stays out of the statement path and only reports the policy)."""
        return False

    def statement_cache_mirror(self, policy: StatementCachePolicy,
                               raw: Any) -> StatementCacheMirror:
        """A new mirror of the statement cache of connection ``raw`` (applies the policy to
        it); called once per connection, only when :meth:`governs_statements`."""
        raise NotImplementedError(f"{self.name}: no statement cache to mirror")


class Driver(AdapterBase):
    """Base sync adapter. Subclasses override what their driver can do better."""

    # ---------------------------------------------------------------- life cycle
    def connect(self) -> Any:
        """Open one physical connection (blocking I/O; never called under the pool lock).

        A failure is the driver's own exception, its message scrubbed of the password and the
        DSN (libpq quotes either in some messages), so every log and error that repeats it is
        safe.
        """
        try:
            raw = self._connect_fn() if self._connect_fn is not None else self._connect()
        except BaseException as exc:
            self.secrets.scrub_exception(exc)
            self.forget_connection_of(exc)
            raise
        if self.autocommit is not None:
            self.set_autocommit(raw, self.autocommit)
        return raw

    def _connect(self) -> Any:
        raise NotImplementedError(f"{self.name}: pass connect= to the pool")

    def close(self, raw: Any) -> None:
        """Close a physical connection; never raises (it is often already dead)."""
        # A dead connection may fail to close; it is gone anyway.
        with contextlib.suppress(Exception):
            raw.close()

    def dispose(self) -> None:
        """Release anything the adapter itself holds (called once, when the pool closes)."""

    #: ``release_results(raw) -> bool`` for a driver whose *connection* keeps the last result
    #: (PyMySQL's ``Connection._result``): called on every return, drops it without a round
    #: trip and returns False when the result is still being read (the connection is in
    #: doubt). None (the default) when results belong to cursors only: nothing to pay per return.
    release_results: Callable[[Any], bool] | None = None


    # ---------------------------------------------------------------- I/O
    def rollback(self, raw: Any) -> None:
        raw.rollback()

    def commit(self, raw: Any) -> None:
        raw.commit()

    def ping(self, raw: Any, timeout: float) -> None:
        """A cheap round trip that raises if the connection is dead (or slower than timeout)."""
        cur = raw.cursor()
        try:
            cur.execute("SELECT 1")
            cur.fetchall()
        finally:
            cur.close()

    def canceller(self, timeout: float = 5.0) -> Canceller:
        """What cancels a running statement on the server for this driver (query timeouts).

        For MariaDB it owns one control connection (opened on first use) that sends
        ``KILL QUERY``; the caller closes it.
        """
        return make_canceller(self.name, connect=self.connect, timeout=timeout,
                              connect_timeout=self.connect_timeout)

    def set_autocommit(self, raw: Any, on: bool) -> None:
        raw.autocommit = on

    def get_autocommit(self, raw: Any) -> bool:
        return bool(raw.autocommit)
