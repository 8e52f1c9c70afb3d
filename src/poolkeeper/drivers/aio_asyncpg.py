"""asyncpg adapter (PostgreSQL, ``postgresql+asyncpg://``).

asyncpg has no DB-API and no cursors to execute on: a pool keeps asyncpg's own API on its
proxy (:data:`STATEMENT_METHODS`: ``fetch``, ``fetchrow``, ``fetchval``, ``execute``,
``executemany``, ``prepare``, ``copy_records_to_table``, ...; ``transaction()``), and asks this
adapter what a statement was (:meth:`AsyncpgDriver.statement_text`) and how many rows it
touched (:meth:`AsyncpgDriver.result_rows`, from asyncpg's command tag: ``"INSERT 0 5"`` -> 5).

* Transaction state: ``Connection.is_in_transaction()``, the status of the last ReadyForQuery
  kept client-side (no round trip). While a statement runs it is the state before it.
* Errors: asyncpg's carry the SQLSTATE; it is read by the same rules as psycopg's
  (:func:`~poolkeeper.drivers.postgres.classify_sqlstate`).
* Statement cache: asyncpg prepares every statement and keeps the last
  ``statement_cache_size`` per connection, each at most ``max_cacheable_statement_size``
  characters; both are set from the pool's options (:meth:`AsyncpgDriver.statement_cache_policy`)
  so the cache's text stays within ``statement_cache_bytes``.
* Cancel: when the task awaiting a statement is cancelled, asyncpg itself sends a protocol
  cancel request and makes the connection's next statement wait until the server answered
  (tests/test_aio_drivers.py checks against the server that the backend stops running the
  statement). For a statement another task awaits (a query timeout) asyncpg has no public
  cancel, so :meth:`AsyncpgDriver.cancel` sends ``pg_cancel_backend(pid)`` for that backend,
  only while ``pg_stat_activity`` shows it active, over the adapter's one control connection.
* Autocommit: asyncpg has no setting; a statement outside ``transaction()`` (or an explicit
  ``BEGIN``) commits on its own, so ``autocommit=False`` is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ..core.stmtpolicy import StatementCachePolicy, check_cache_sizes
from ..dsn import mask_dsn
from ..errors import ConfigError
from .aiobase import AsyncDriver
from .aiocontrol import AsyncControl
from .base import ErrorKind
from .postgres import classify_sqlstate, rows_of_status, sqlstate_breaks

__all__ = ["STATEMENT_METHODS", "AsyncpgDriver", "asyncpg_policy"]

#: asyncpg ``Connection`` coroutines that run a statement (the proxy wraps them with the
#: statement hooks); their first argument is the SQL text, or a table name for the copy ones
STATEMENT_METHODS = frozenset({
    "execute", "executemany", "fetch", "fetchrow", "fetchval", "fetchmany", "prepare",
    "copy_records_to_table", "copy_to_table", "copy_from_table", "copy_from_query",
})
#: of those, the ones whose first argument is a table name, not SQL
_COPY_TABLE = {"copy_records_to_table": "FROM", "copy_to_table": "FROM",
               "copy_from_table": "TO"}
#: asyncpg's own default ``max_cacheable_statement_size`` (15 KiB), kept when the pool sets
#: no byte bound
ASYNCPG_MAX_CACHEABLE = 15 * 1024
#: only while the backend runs a statement: a cancel arriving after it finished would hit
#: the next one
_CANCEL_IF_ACTIVE = ("SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                     "WHERE pid = $1 AND state = 'active'")


def asyncpg_policy(statement_cache_size: int, statement_cache_bytes: int) -> StatementCachePolicy:
    """asyncpg's statement cache from the pool's options: at most ``statement_cache_size``
    statements, each at most ``statement_cache_bytes // statement_cache_size`` long, so
    their text stays within the byte budget. A budget too small for one statement turns the
    cache off (asyncpg reads ``max_cacheable_statement_size=0`` as "no limit")."""
    check_cache_sizes(statement_cache_size, statement_cache_bytes)
    size = statement_cache_size
    cap = statement_cache_bytes // size if size else 0
    if cap == 0:
        return StatementCachePolicy(
            "asyncpg", True, "asyncpg statement cache", 0, 0, 0, None, "none",
            "asyncpg's statement cache is off (statement_cache_size=0): every statement is "
            "prepared unnamed and dropped")
    return StatementCachePolicy(
        "asyncpg", True, "asyncpg statement cache", size, statement_cache_bytes, cap, 1,
        "count and bytes",
        f"asyncpg prepares every statement and keeps the last {size} per connection, each "
        f"of at most {cap:,} characters (max_cacheable_statement_size; asyncpg counts "
        "characters, so non-ASCII text may take more bytes); longer ones are never cached")


class AsyncpgDriver(AsyncDriver):
    """Adapter for asyncpg (``postgresql+asyncpg://``)."""

    name = "asyncpg"
    knows_transaction_state = True
    dbapi = False  # no cursors to execute on: the proxy keeps asyncpg's own API

    def _setup(self) -> None:
        if self.autocommit is False:
            raise ConfigError(
                "autocommit=False cannot be set for asyncpg: it has no autocommit mode; a "
                "statement outside conn.transaction() commits on its own. Drop autocommit "
                "(or pass True) and use conn.transaction() for transactions")
        # asyncpg has no setting to send: True is what it does anyway
        self.autocommit = None
        super()._setup()
        import asyncpg  # imported here so that `import poolkeeper` needs no driver

        self._asyncpg = asyncpg
        errors = asyncpg.exceptions
        self.error_types = (errors.PostgresError, errors.InterfaceError,
                            errors.InternalClientError)
        self.closed_connection_error = errors.InterfaceError  # "connection is closed"
        self.closed_cursor_error = errors.InterfaceError
        self.cancelled_error = errors.QueryCanceledError
        self.control = AsyncControl(
            "the PostgreSQL control connection for pg_cancel_backend", open=self.connect,
            kill=_cancel_backend, close=self.close, timeout=self.cancel_timeout,
            connect_timeout=self.connect_timeout)

    @property
    def dialect(self) -> str:
        return "postgresql"

    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.params)
        kwargs.setdefault("timeout", self.connect_timeout)
        if self.statement_cache_bytes is None:
            kwargs.setdefault("statement_cache_size", max(self.statement_cache_size, 0))
            kwargs.setdefault("max_cacheable_statement_size", ASYNCPG_MAX_CACHEABLE)
        else:
            policy = asyncpg_policy(self.statement_cache_size, self.statement_cache_bytes)
            kwargs.setdefault("statement_cache_size", policy.max_statements)
            if policy.max_statements:
                kwargs.setdefault("max_cacheable_statement_size", policy.max_statement_bytes)
        return kwargs

    async def _connect(self) -> Any:
        return await self._asyncpg.connect(**self._connect_kwargs())

    async def _close(self, raw: Any) -> None:
        await raw.close()

    def abort(self, raw: Any) -> None:
        with contextlib.suppress(Exception):
            raw.terminate()

    # ---------------------------------------------------------------- state, no round trip
    def in_transaction(self, raw: Any) -> bool | None:
        if raw.is_closed():
            return None
        return bool(raw.is_in_transaction())

    def is_broken(self, raw: Any, exc: BaseException | None = None) -> bool:
        if raw.is_closed():
            return True
        if exc is None:
            return False
        if self.left_mid_call(exc):
            return True
        return sqlstate_breaks(getattr(exc, "sqlstate", None) or "")

    def classify_error(self, exc: BaseException) -> ErrorKind:
        sqlstate = getattr(exc, "sqlstate", None) or ""
        kind = classify_sqlstate(sqlstate)
        if kind is not None:
            return kind
        if sqlstate.startswith(("22", "23")):  # data exception, integrity violation
            return ErrorKind.DATA
        errors = self._asyncpg.exceptions
        if isinstance(exc, errors.InternalClientError) or (
                isinstance(exc, errors.InterfaceError) and "closed" in str(exc)):
            # the protocol lost its state (a server's FATAL message arriving while idle
            # leaves "cannot switch to state ..."), or the connection is gone
            return ErrorKind.BROKEN
        return ErrorKind.OTHER

    def session_id(self, raw: Any) -> Any:
        return raw.get_server_pid()

    def get_autocommit(self, raw: Any) -> bool | None:
        return True

    def describe(self) -> str:
        return f"asyncpg {mask_dsn(str(self.params.get('dsn', '')))}"

    # ---------------------------------------------------------------- I/O
    async def commit(self, raw: Any) -> None:
        # outside a transaction every statement committed already; in a failed one the
        # server answers COMMIT with a rollback
        if raw.is_in_transaction():
            await raw.execute("COMMIT")

    async def rollback(self, raw: Any) -> None:
        if raw.is_in_transaction():
            await raw.execute("ROLLBACK")

    async def set_autocommit(self, raw: Any, on: bool) -> None:
        if not on:
            raise ConfigError("asyncpg has no autocommit mode to turn off: use "
                              "conn.transaction()")

    async def ping(self, raw: Any, timeout: float) -> None:
        if raw.is_closed():
            raise self._asyncpg.exceptions.InterfaceError("the connection is closed")
        try:
            async with asyncio.timeout(timeout):
                await raw.execute("SELECT 1")
        except TimeoutError:
            raise self._asyncpg.exceptions.InterfaceError(
                f"no answer to the validation query within {timeout:g} s") from None

    async def cancel(self, raw: Any, session_id: Any = None) -> bool | None:
        if session_id is None:
            if raw.is_closed():
                return False
            session_id = raw.get_server_pid()
        return await self.control.cancel(int(session_id))

    async def recover_from_cancel(self, raw: Any, timeout: float) -> bool:
        # asyncpg sent the cancel request when the awaiting future was cancelled; its next
        # statement waits for the server's answer first
        return not raw.is_closed()

    def cancel_bound(self) -> float:
        return self.control.max_duration_s

    def cancel_stats(self) -> dict[str, int]:
        return self.control.stats()

    async def dispose(self) -> None:
        await self.control.close()
        await super().dispose()

    # ---------------------------------------------------------------- statements (for hooks)
    def rowcount(self, cursor: Any) -> int:
        """Rows of asyncpg's command tag (``execute``'s result, ``"INSERT 0 5"`` -> 5)."""
        return rows_of_status(cursor) if isinstance(cursor, str) else -1

    def result_rows(self, method: str, result: Any) -> int:
        """The rows a :data:`STATEMENT_METHODS` call touched or returned; -1 when unknown."""
        if isinstance(result, str):  # execute, copy_*: a command tag
            return rows_of_status(result)
        if method in ("fetch", "fetchmany") and isinstance(result, list):
            return len(result)
        if method == "fetchrow":
            return 0 if result is None else 1
        return -1

    def statement_text(self, method: str, args: tuple[Any, ...]) -> str:
        """The SQL a :data:`STATEMENT_METHODS` call runs, for statistics and fingerprints
        (``copy_records_to_table("t", ...)``: ``COPY t FROM STDIN``)."""
        first = args[0] if args else ""
        if method in _COPY_TABLE:
            return f"COPY {first} {_COPY_TABLE[method]} STDIN"
        return self.query_text(first, None)

    def statement_cache_policy(self, statement_cache_size: int,
                               statement_cache_bytes: int) -> StatementCachePolicy:
        return asyncpg_policy(statement_cache_size, statement_cache_bytes)


async def _cancel_backend(conn: Any, session_id: int) -> bool | None:
    """Cancel what backend ``session_id`` runs, if it runs something, from ``conn``."""
    sent = await conn.fetchval(_CANCEL_IF_ACTIVE, session_id)
    return None if sent else False
