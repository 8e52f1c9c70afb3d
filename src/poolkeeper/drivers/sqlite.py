"""sqlite3 adapter: the embedded default.

Connections are opened with ``check_same_thread=False`` because a pool hands a connection to
whichever thread borrows it next (never to two at once). ``sqlite://:memory:`` becomes one
in-memory database per pool (SQLite's memdb VFS), kept alive by an anchor connection until the pool
closes, so every pooled connection sees the same tables.
"""

from __future__ import annotations

import itertools
import sqlite3
import weakref
from typing import Any

from ..core.stmtpolicy import StatementCacheMirror, StatementCachePolicy
from .base import AdapterBase, Driver, ErrorKind
from .sqlite_stmtcache import SqliteMirror, sqlite_cached_statements, sqlite_policy

__all__ = ["SqliteAdapter", "SqliteDriver"]

_memory_ids = itertools.count(1)
_TRANSIENT_MESSAGES = ("database is locked", "database table is locked", "busy")


class SqliteAdapter(AdapterBase):
    """What a sqlite3 connection answers, directly or through aiosqlite's proxy of it (which
    forwards ``in_transaction`` and ``isolation_level``): transaction
    state, errors, the statement cache's size, the shared in-memory database. Mixed into
    :class:`SqliteDriver` and the asyncio adapter
    (:class:`~poolkeeper.drivers.aio_sqlite.AiosqliteDriver`)."""

    name = "sqlite"
    knows_transaction_state = True
    error_types: tuple[type[BaseException], ...] = (sqlite3.Error,)
    closed_connection_error: type[BaseException] | None = sqlite3.ProgrammingError
    closed_cursor_error: type[BaseException] | None = sqlite3.ProgrammingError
    cancelled_error: type[BaseException] | None = sqlite3.OperationalError  # "interrupted"
    #: what reading a closed connection's state raises
    closed_errors: tuple[type[BaseException], ...] = (sqlite3.ProgrammingError,)

    def _setup(self) -> None:
        super()._setup()
        self._anchor: sqlite3.Connection | None = None
        database = str(self.params.get("database", ":memory:"))
        if self._connect_fn is None and database == ":memory:":
            # A private in-memory database shared by this pool's connections. The memdb VFS
            # (SQLite >= 3.36) locks like a file, so writers wait out busy_timeout; the older
            # shared-cache mode fails at once with "database table is locked".
            n = next(_memory_ids)
            self.params["database"] = (
                f"file:/poolkeeper-mem-{n}?vfs=memdb" if sqlite3.sqlite_version_info >= (3, 36)
                else f"file:poolkeeper-mem-{n}?mode=memory&cache=shared")
            self.params["uri"] = True
            self._anchor = self._open()
            # a driver dropped without dispose() (one made outside a pool) still closes it:
            # CPython 3.13 warns of every sqlite3 connection freed unclosed
            self._anchor_finalizer = weakref.finalize(self, self._anchor.close)

    def _open_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.params)
        kwargs.setdefault("check_same_thread", False)
        # sqlite's "timeout" is how long a statement waits for a lock held by another connection.
        kwargs.setdefault("timeout", self.connect_timeout)
        # The statement cache is sqlite3's own LRU of compiled statements; sized from the pool's
        # statement_cache_size (and, given, statement_cache_bytes: sqlite3 counts statements
        # only) so one setting governs every driver.
        size = max(self.statement_cache_size, 0)
        if self.statement_cache_bytes is not None:
            size = sqlite_cached_statements(size, self.statement_cache_bytes)
        kwargs.setdefault("cached_statements", size)
        return kwargs

    def _open(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = sqlite3.connect(**self._open_kwargs())
        return conn

    def _close_anchor(self) -> None:
        if self._anchor is not None:
            self._anchor_finalizer()  # closes it, once
            self._anchor = None

    def get_autocommit(self, raw: Any) -> bool:
        return raw.isolation_level is None

    def in_transaction(self, raw: Any) -> bool | None:
        try:
            return bool(raw.in_transaction)
        except self.closed_errors:  # closed
            return None

    def is_broken(self, raw: Any, exc: BaseException | None = None) -> bool:
        if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
            return True
        if exc is not None and self.left_mid_call(exc):
            return True
        try:
            self._touch(raw)
        except self.closed_errors:
            return True
        return False

    def _touch(self, raw: Any) -> None:
        """Read the connection's state in a way that raises once it is closed."""
        raw.total_changes  # noqa: B018

    def classify_error(self, exc: BaseException) -> ErrorKind:
        if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
            return ErrorKind.DATA
        if isinstance(exc, sqlite3.OperationalError):
            message = str(exc).lower()
            if any(m in message for m in _TRANSIENT_MESSAGES):
                return ErrorKind.TRANSIENT
        if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
            return ErrorKind.BROKEN
        return ErrorKind.OTHER

    def statement_cache_policy(self, statement_cache_size: int,
                               statement_cache_bytes: int) -> StatementCachePolicy:
        return sqlite_policy(statement_cache_size, statement_cache_bytes)

    def describe(self) -> str:
        return f"sqlite {self.params.get('database')}"


class SqliteDriver(SqliteAdapter, Driver):
    """Adapter for the standard library's sqlite3."""

    def _connect(self) -> Any:
        return self._open()

    def dispose(self) -> None:
        self._close_anchor()

    def set_autocommit(self, raw: Any, on: bool) -> None:
        # Python 3.11: isolation_level None is autocommit; "" restores the implicit BEGIN.
        raw.isolation_level = None if on else ""

    def ping(self, raw: Any, timeout: float) -> None:
        # No server to lose: checking that the handle is open is the whole test.
        raw.total_changes  # noqa: B018

    def push_statements(self, raw: Any, texts: list[str]) -> None:
        """Run ``texts`` on a cursor of their own: each enters sqlite3's statement cache (an
        LRU of ``cached_statements`` entries) and pushes its oldest entry out. sqlite3 has no
        public flush; this is how the pool keeps the cache within its byte budget."""
        cur = raw.cursor()
        try:
            for text in texts:
                cur.execute(text)
        finally:
            cur.close()

    def governs_statements(self, policy: StatementCachePolicy) -> bool:
        return policy.max_statements > 0

    def statement_cache_mirror(self, policy: StatementCachePolicy,
                               raw: Any) -> StatementCacheMirror:
        return SqliteMirror(policy, self.push_statements)
