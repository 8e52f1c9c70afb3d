"""psycopg 3 adapter (PostgreSQL).

The transaction state comes from libpq's local ``PQtransactionStatus``: knowing whether a
rollback is needed costs no round trip. The ping sends an empty query through libpq and waits
on the socket with a deadline, so a validation can never hang longer than validation_timeout.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import logging
import math
import operator
import os
import select
from collections.abc import Callable
from typing import Any

from ..core.stmtpolicy import StatementCacheMirror, StatementCachePolicy
from ..dsn import mask_dsn
from .base import AdapterBase, Driver, ErrorKind
from .postgres_copy import CopyTextFormat
from .postgres_stmtcache import PsycopgMirror, psycopg_policy

__all__ = ["PostgresDriver", "PsycopgAdapter", "classify_sqlstate", "rows_of_status",
           "sqlstate_breaks"]

logger = logging.getLogger("poolkeeper.drivers.postgres")

# libpq PGTransactionStatusType
_IDLE, _ACTIVE, _INTRANS, _INERROR, _UNKNOWN = range(5)
PQ_ACTIVE = _ACTIVE  #: a query is in flight
# SQLSTATE classes: 40001 serialization_failure, 40P01 deadlock_detected, 55P03 lock_not_available.
# Not 57014 query_canceled: that is usually our own query timeout, and a retry would time out
# again.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
# 08 connection exception, 57P01..03 admin/crash shutdown, cannot connect now
_BROKEN_SQLSTATE_PREFIXES = ("08", "57P0")


def sqlstate_breaks(sqlstate: str) -> bool:
    """Whether a SQLSTATE says the session is gone (class 08, 57P01..03)."""
    return sqlstate.startswith(_BROKEN_SQLSTATE_PREFIXES)


def classify_sqlstate(sqlstate: str) -> ErrorKind | None:
    """BROKEN / TRANSIENT for the SQLSTATEs that say so (psycopg and asyncpg alike); None
    when the code alone does not tell."""
    if sqlstate_breaks(sqlstate):
        return ErrorKind.BROKEN
    if sqlstate in _TRANSIENT_SQLSTATES:
        return ErrorKind.TRANSIENT
    return None


_STATUS_ROWS = frozenset({"INSERT", "UPDATE", "DELETE", "SELECT", "MERGE", "COPY", "FETCH",
                          "MOVE"})


def rows_of_status(status: str) -> int:
    """The row count a PostgreSQL command tag carries (``"INSERT 0 5"`` -> 5,
    ``"UPDATE 3"`` -> 3), or -1 for a tag without one (``"CREATE TABLE"``)."""
    words = status.split()
    if len(words) >= 2 and words[0] in _STATUS_ROWS and words[-1].isdigit():
        return int(words[-1])
    return -1


class PsycopgAdapter(AdapterBase):
    """What psycopg's sync and async connections answer alike, without I/O: both keep libpq's
    transaction status, ``closed`` / ``broken``, the same errors and prepared statements.
    Mixed into :class:`PostgresDriver` and the asyncio adapter
    (:class:`~poolkeeper.drivers.aio_psycopg.AsyncPsycopgDriver`)."""

    name = "postgresql"
    knows_transaction_state = True

    def _setup(self) -> None:
        super()._setup()
        import psycopg  # imported here so that `import poolkeeper` needs no driver

        self._psycopg = psycopg
        self.error_types = (psycopg.Error,)
        self.closed_connection_error = psycopg.OperationalError  # "the connection is closed"
        self.closed_cursor_error = psycopg.InterfaceError  # "the cursor is closed"
        self.cancelled_error = psycopg.errors.QueryCanceled  # an OperationalError
        self._memory_size = _result_memory_size(psycopg)
        if self._memory_size is not None:
            self.result_bytes = self._result_bytes

    def _conninfo_kwargs(self) -> tuple[str, dict[str, Any]]:
        """``(conninfo, keywords)`` for psycopg's connect(), with libpq's connect_timeout."""
        kwargs = dict(self.params)
        conninfo = kwargs.pop("conninfo", "")
        kwargs.setdefault("connect_timeout", max(1, math.ceil(self.connect_timeout)))
        return conninfo, kwargs

    def forget_connection_of(self, exc: BaseException) -> None:
        # psycopg's error keeps the failed PGconn, whose repr lists every conninfo option,
        # the password included (and its error_message, unscrubbed). psycopg clears the same
        # field when it pickles an error, so None is a state it supports.
        seen = 0
        e: BaseException | None = exc
        while e is not None and seen < 16:
            if isinstance(e, self._psycopg.Error) and getattr(e, "_pgconn", None) is not None:
                e._pgconn = None
            e, seen = e.__cause__ or e.__context__, seen + 1

    def in_transaction(self, raw: Any) -> bool | None:
        status = raw.pgconn.transaction_status
        if status == _IDLE:
            return False
        if status in (_INTRANS, _INERROR):
            return True
        return None  # a query still running (ACTIVE) or a lost connection (UNKNOWN)

    def transaction_probe(self) -> tuple[Callable[[Any], Any], Any]:
        # libpq's status as a C-level attribute read: IDLE (0) means nothing to reset; a
        # closed connection reads UNKNOWN and takes the careful path.
        return operator.attrgetter("pgconn.transaction_status"), _IDLE

    def is_broken(self, raw: Any, exc: BaseException | None = None) -> bool:
        if raw.closed or raw.broken:
            return True
        if exc is not None:
            if self.left_mid_call(exc):
                return True
            return sqlstate_breaks(getattr(exc, "sqlstate", None) or "")
        return False

    def classify_error(self, exc: BaseException) -> ErrorKind:
        errors = self._psycopg.errors
        sqlstate = getattr(exc, "sqlstate", None) or ""
        kind = classify_sqlstate(sqlstate)
        if kind is not None:
            return kind
        if isinstance(exc, errors.DataError | errors.IntegrityError):
            return ErrorKind.DATA
        if isinstance(exc, self._psycopg.OperationalError) and not sqlstate:
            return ErrorKind.BROKEN  # no SQLSTATE: the error came from the client side
        return ErrorKind.OTHER

    def session_id(self, raw: Any) -> Any:
        return raw.pgconn.backend_pid

    def _result_bytes(self, cursor: Any) -> int:
        # libpq keeps the connection's input buffer at its largest message (a row) until the
        # connection closes; the result's memory bounds that message from above. psycopg 3.3
        # has no accessor, so libpq's PQresultMemorySize is called through ctypes: ~210 ns,
        # paid only when a result with rows is dropped (not per fetch). A result without
        # rows (a command, an error, an empty SELECT) is a few hundred bytes: no call (~35 ns).
        result = cursor.pgresult
        if result is None or not result.ntuples:
            return 0
        return int(self._memory_size(result.pgresult_ptr))  # type: ignore[misc]

    def _ends_with_rollback(self, raw: Any) -> bool:
        """Whether a commit must be sent as a rollback: the server ends a failed transaction
        with a rollback whatever it is sent. Saying so makes psycopg forget its statements as
        on every rollback, which is what the statement cache mirror assumes after a failed
        transaction (issue #14 item 5)."""
        return bool(raw.pgconn.transaction_status == _INERROR)

    def _ping_start(self, raw: Any) -> Any:
        """Send the validation query (an empty one: the cheapest full round trip PostgreSQL
        answers) on an idle connection; its pgconn, to wait on and finish."""
        if raw.closed or raw.broken:
            raise self._psycopg.OperationalError("the connection is closed")
        pgconn = raw.pgconn
        if pgconn.transaction_status != _IDLE:
            raise self._psycopg.OperationalError("the connection is not idle")
        pgconn.send_query(b"")
        return pgconn

    def _ping_timed_out(self, timeout: float) -> BaseException:
        return self._psycopg.OperationalError(
            f"no answer to the validation query within {timeout:g} s")

    def _ping_finish(self, pgconn: Any) -> None:
        """Read the validation query's results; raise when it failed or the link is bad."""
        pq = self._psycopg.pq
        failed = None
        while (result := pgconn.get_result()) is not None:
            if result.status == pq.ExecStatus.FATAL_ERROR:
                failed = result.get_error_message().decode(errors="replace")
        if failed or pgconn.status != pq.ConnStatus.OK:
            raise self._psycopg.OperationalError(failed or "the connection is bad")

    def set_fetch_size(self, cursor: Any, rows: int) -> None:
        cursor.itersize = rows

    def query_text(self, query: Any, cursor: Any) -> str:
        # psycopg's composed queries (sql.SQL, sql.Composed, ...) render with as_string; the
        # fingerprint folds the literals they hold
        if isinstance(query, self._psycopg.sql.Composable):
            try:
                return str(query.as_string(getattr(cursor, "connection", None)))
            except Exception:  # noqa: BLE001 - a query we cannot render is still counted
                pass
        return super().query_text(query, cursor)

    def statement_cache_policy(self, statement_cache_size: int,
                               statement_cache_bytes: int) -> StatementCachePolicy:
        return psycopg_policy(statement_cache_size, statement_cache_bytes)

    def governs_statements(self, policy: StatementCachePolicy) -> bool:
        # even with preparation off: oversize statements are still counted as bypassed
        return policy.supported

    def statement_cache_mirror(self, policy: StatementCachePolicy,
                               raw: Any) -> StatementCacheMirror:
        return PsycopgMirror(policy, raw, self.query_text)

    @staticmethod
    def prepared_statements(raw: Any) -> dict[str, Any]:
        """What psycopg holds for its prepared statements on ``raw``, to check the statement
        cache mirror against: ``counted`` (texts seen fewer than ``prepare_threshold``
        times, oldest first, with their count), ``prepared`` (texts prepared, oldest first),
        ``bytes`` (their texts' length) and the public settings.

        psycopg has no public accessor for its maps, so they are read from its private
        ``PrepareManager`` (psycopg 3.1 to 3.3), here only. A psycopg keeping them elsewhere
        gives the public settings alone, with ``counted`` / ``prepared`` / ``bytes`` None.
        """
        out: dict[str, Any] = {"prepare_threshold": raw.prepare_threshold,
                               "prepared_max": raw.prepared_max,
                               "counted": None, "prepared": None, "bytes": None}
        manager = getattr(raw, "_prepared", None)
        counts = getattr(manager, "_counts", None)
        names = getattr(manager, "_names", None)
        if not isinstance(counts, dict) or not isinstance(names, dict):
            return out
        try:
            counted = [(bytes(key[0]), int(n)) for key, n in counts.items()]
            prepared = [bytes(key[0]) for key in names]
        except (TypeError, IndexError, ValueError):  # keys of another shape
            return out
        out.update(counted=counted, prepared=prepared,
                   bytes=sum(len(t) for t, _ in counted) + sum(len(t) for t in prepared))
        return out

    def copy_text_format(self) -> CopyTextFormat:
        """psycopg's ``COPY`` text formatter, for rows encoded before any connection is
        borrowed (the loader's): see :mod:`.postgres_copy`. A new one per call: its dumpers
        are psycopg's as registered now."""
        return CopyTextFormat()

    def describe(self) -> str:
        return f"postgresql {mask_dsn(str(self.params.get('conninfo', '')))}"


class PostgresDriver(PsycopgAdapter, Driver):
    """Adapter for psycopg 3."""

    def _setup(self) -> None:
        super()._setup()
        #: server-side cursors stream their rows ``itersize`` at a time (set_fetch_size)
        self.streaming_cursor_types = (self._psycopg.ServerCursor,)

    def _connect(self) -> Any:
        conninfo, kwargs = self._conninfo_kwargs()
        return self._psycopg.connect(conninfo, **kwargs)

    def set_autocommit(self, raw: Any, on: bool) -> None:
        raw.autocommit = on

    def commit(self, raw: Any) -> None:
        if self._ends_with_rollback(raw):
            raw.rollback()
        else:
            raw.commit()

    def ping(self, raw: Any, timeout: float) -> None:
        pgconn = self._ping_start(raw)
        sock = pgconn.socket
        while True:
            pgconn.consume_input()
            if not pgconn.is_busy():
                break
            ready, _, _ = select.select([sock], [], [], timeout)
            if not ready:
                raise self._ping_timed_out(timeout)
        self._ping_finish(pgconn)


@functools.cache  # one libpq per process: its symbol is looked up once, not per pool
def _result_memory_size(psycopg: Any) -> Callable[[int], int] | None:
    """libpq's ``PQresultMemorySize`` from the libpq psycopg itself uses, or None.

    The binary wheel bundles its own libpq (``psycopg_binary.libs``); the C and the Python
    implementations use the system's (the Python one has it loaded already).
    """
    impl = psycopg.pq.__impl__
    lib: Any = None
    try:
        if impl == "python":
            from psycopg.pq import _pq_ctypes

            lib = getattr(_pq_ctypes, "pq")  # noqa: B009 - private, untyped
        else:
            path = None
            if impl == "binary":
                import psycopg_binary

                found = glob.glob(os.path.join(os.path.dirname(psycopg_binary.__file__), "..",
                                               "psycopg_binary.libs", "libpq*"))
                path = found[0] if found else None
            path = path or ctypes.util.find_library("pq")
            lib = ctypes.CDLL(path) if path else None
        func = lib.PQresultMemorySize if lib is not None else None
    except (ImportError, OSError, AttributeError) as exc:  # libpq < 12, or not found
        logger.info("libpq's PQresultMemorySize is not available (%s): result sizes of "
                    "PostgreSQL connections are not tracked (max_idle_result_bytes)", exc)
        return None
    if func is None:
        return None
    func.argtypes = [ctypes.c_void_p]
    func.restype = ctypes.c_size_t
    return func  # type: ignore[no-any-return]
