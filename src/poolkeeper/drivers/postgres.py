"""psycopg 3 adapter (PostgreSQL).

The transaction state comes from libpq's local ``PQtransactionStatus``: knowing whether a
rollback is needed costs no round trip. The ping sends an empty query through libpq and waits
on the socket with a deadline, so a validation can never hang longer than validation_timeout.
"""

from __future__ import annotations

import math
import operator
import select
from collections.abc import Callable, Mapping
from typing import Any

from ..config import mask_dsn
from .base import Driver, ErrorKind

__all__ = ["PostgresDriver"]

# libpq PGTransactionStatusType
_IDLE, _ACTIVE, _INTRANS, _INERROR, _UNKNOWN = range(5)
# SQLSTATE classes: 40001 serialization_failure, 40P01 deadlock_detected, 55P03 lock_not_available.
# Not 57014 query_canceled: that is usually our own query timeout, and a retry would time out
# again.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
# 08 connection exception, 57P01..03 admin/crash shutdown, cannot connect now
_BROKEN_SQLSTATE_PREFIXES = ("08", "57P0")


class PostgresDriver(Driver):
    """Adapter for psycopg 3."""

    name = "postgresql"
    knows_transaction_state = True

    def __init__(self, params: Mapping[str, Any], *, connect: Callable[[], Any] | None = None,
                 autocommit: bool | None = None, connect_timeout: float = 10.0,
                 statement_cache_size: int = 100) -> None:
        super().__init__(params, connect=connect, autocommit=autocommit,
                         connect_timeout=connect_timeout,
                         statement_cache_size=statement_cache_size)
        import psycopg  # imported here so that `import poolkeeper` needs no driver

        self._psycopg = psycopg
        self.error_types = (psycopg.Error,)
        self.closed_connection_error = psycopg.OperationalError  # "the connection is closed"
        self.closed_cursor_error = psycopg.InterfaceError  # "the cursor is closed"
        self.cancelled_error = psycopg.errors.QueryCanceled  # an OperationalError

    def _connect(self) -> Any:
        kwargs = dict(self.params)
        conninfo = kwargs.pop("conninfo", "")
        kwargs.setdefault("connect_timeout", max(1, math.ceil(self.connect_timeout)))
        return self._psycopg.connect(conninfo, **kwargs)

    def set_autocommit(self, raw: Any, on: bool) -> None:
        raw.autocommit = on

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
            sqlstate = getattr(exc, "sqlstate", None) or ""
            return sqlstate.startswith(_BROKEN_SQLSTATE_PREFIXES)
        return False

    def classify_error(self, exc: BaseException) -> ErrorKind:
        errors = self._psycopg.errors
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if sqlstate.startswith(_BROKEN_SQLSTATE_PREFIXES):
            return ErrorKind.BROKEN
        if sqlstate in _TRANSIENT_SQLSTATES:
            return ErrorKind.TRANSIENT
        if isinstance(exc, errors.DataError | errors.IntegrityError):
            return ErrorKind.DATA
        if isinstance(exc, self._psycopg.OperationalError) and not sqlstate:
            return ErrorKind.BROKEN  # no SQLSTATE: the error came from the client side
        return ErrorKind.OTHER

    def session_id(self, raw: Any) -> Any:
        return raw.pgconn.backend_pid

    def ping(self, raw: Any, timeout: float) -> None:
        if raw.closed or raw.broken:
            raise self._psycopg.OperationalError("the connection is closed")
        pgconn = raw.pgconn
        if pgconn.transaction_status != _IDLE:
            raise self._psycopg.OperationalError("the connection is not idle")
        # An empty query is the cheapest full round trip PostgreSQL answers.
        pgconn.send_query(b"")
        sock = pgconn.socket
        pq = self._psycopg.pq
        while True:
            pgconn.consume_input()
            if not pgconn.is_busy():
                break
            ready, _, _ = select.select([sock], [], [], timeout)
            if not ready:
                raise self._psycopg.OperationalError(
                    f"no answer to the validation query within {timeout:g} s")
        failed = None
        while (result := pgconn.get_result()) is not None:
            if result.status == pq.ExecStatus.FATAL_ERROR:
                failed = result.get_error_message().decode(errors="replace")
        if failed or pgconn.status != pq.ConnStatus.OK:
            raise self._psycopg.OperationalError(failed or "the connection is bad")


    def describe(self) -> str:
        return f"postgresql {mask_dsn(str(self.params.get('conninfo', '')))}"
