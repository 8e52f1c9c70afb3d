"""PyMySQL adapter (MariaDB / MySQL).

The transaction state comes from the status flags the server sends with every OK packet, so
deciding whether to roll back costs no round trip. One blind spot: MariaDB sets
SERVER_STATUS_IN_TRANS only once a transaction has written; a transaction that has only read
(holding its snapshot and metadata locks) is invisible. So with autocommit off a connection is
treated as possibly inside a transaction and ended on return (one round trip); with
``autocommit=True`` no round trip is needed. The ping is COM_PING with the
socket's timeout set to validation_timeout for its duration. Cancelling a statement needs
``KILL QUERY <thread id>`` on *another* connection; see :mod:`poolkeeper.drivers.cancel`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from ..config import ConfigWarning
from ..core.stmtpolicy import StatementCachePolicy, check_cache_sizes
from .base import AdapterBase, Driver, ErrorKind

__all__ = ["MysqlAdapter", "MysqlDriver", "private_fields_ok"]

_IN_TRANS = 1  # pymysql.constants.SERVER_STATUS.SERVER_STATUS_IN_TRANS
_AUTOCOMMIT = 2  # SERVER_STATUS_AUTOCOMMIT
# Client errors: 2006 server gone away, 2013 lost connection during query, 2014 commands out of
# sync, 2045/2055 lost connection; server: 1927 connection killed, 4031 idle timeout disconnect,
# 1053 server shutdown in progress.
_BROKEN_CODES = frozenset({2006, 2013, 2014, 2045, 2055, 1927, 4031, 1053})
# 1213 deadlock, 1205 lock wait timeout
_TRANSIENT_CODES = frozenset({1213, 1205})
# 1062 duplicate key, 1048 column cannot be null, 1264 out of range, 1366 incorrect value,
# 1406 data too long, 1292 truncated incorrect value, 1452/1451 foreign key
_DATA_CODES = frozenset({1062, 1048, 1264, 1366, 1406, 1292, 1452, 1451, 1265, 3819})


class MysqlAdapter(AdapterBase):
    """What PyMySQL's and aiomysql's connections answer alike, without I/O: both keep the
    server's status flags from the last OK packet, the thread id, and raise PyMySQL's errors
    (aiomysql re-exports ``pymysql.err``). Mixed into :class:`MysqlDriver` and the asyncio
    adapter (:class:`~poolkeeper.drivers.aio_mysql.AiomysqlDriver`)."""

    name = "mysql"
    knows_transaction_state = True
    #: the driver's name in messages
    driver_label = "PyMySQL"

    def _setup(self) -> None:
        super()._setup()
        import pymysql  # imported here so that `import poolkeeper` needs no driver

        self._pymysql = pymysql
        self.error_types = (pymysql.err.MySQLError,)
        self.closed_connection_error = pymysql.err.InterfaceError  # (0, '')
        self.closed_cursor_error = pymysql.err.ProgrammingError  # "Cursor closed"
        self.cancelled_error = pymysql.err.OperationalError  # 1317 / 3024
        if _truthy(self.params.get("local_infile")):
            # Said once, at construction (user -> Pool -> create_driver -> here).
            warnings.warn(
                "local_infile=True (in connect_kwargs or ?local_infile=true in the DSN) lets "
                "any SQL run through this pool read any file this process can read: a "
                f"LOAD DATA LOCAL INFILE '/path' statement makes {self.driver_label} send the "
                "file the server names, whoever wrote the statement. poolkeeper's loader does "
                "not need it (it sends only its own temp file); drop local_infile unless your "
                "own SQL must load local files, and then never run untrusted SQL on this pool",
                ConfigWarning, stacklevel=6)

    def _is_open(self, raw: Any) -> bool:
        """Whether the driver still holds the connection's socket (no I/O)."""
        return bool(raw.open)

    def get_autocommit(self, raw: Any) -> bool:
        return bool(raw.get_autocommit())

    def in_transaction(self, raw: Any) -> bool | None:
        if not self._is_open(raw):
            return None
        status = raw.server_status
        # In a transaction for sure, or possibly in a read-only one (see the module docstring).
        return bool(status & _IN_TRANS or not status & _AUTOCOMMIT)

    def _code(self, exc: BaseException | None) -> int | None:
        if exc is None or not exc.args or not isinstance(exc.args[0], int):
            return None
        return exc.args[0]

    def is_broken(self, raw: Any, exc: BaseException | None = None) -> bool:
        if not self._is_open(raw):
            return True
        if exc is None:
            return False
        if isinstance(exc, self._pymysql.err.InterfaceError) or self.left_mid_call(exc):
            return True
        return self._code(exc) in _BROKEN_CODES

    def classify_error(self, exc: BaseException) -> ErrorKind:
        code = self._code(exc)
        if code in _BROKEN_CODES or isinstance(exc, self._pymysql.err.InterfaceError):
            return ErrorKind.BROKEN
        if code in _TRANSIENT_CODES:
            return ErrorKind.TRANSIENT
        if code in _DATA_CODES or isinstance(
                exc, self._pymysql.err.DataError | self._pymysql.err.IntegrityError):
            return ErrorKind.DATA
        return ErrorKind.OTHER

    def session_id(self, raw: Any) -> Any:
        return raw.thread_id()

    def statement_cache_policy(self, statement_cache_size: int,
                               statement_cache_bytes: int) -> StatementCachePolicy:
        check_cache_sizes(statement_cache_size, statement_cache_bytes)
        return StatementCachePolicy(
            "mysql", False, "none", 0, 0, 0, None, "none",
            f"{self.driver_label} sends every statement as text (COM_QUERY) and has no "
            "server-side prepared statements: nothing is cached")

    def describe(self) -> str:
        p = self.params
        text = f"mysql {p.get('user')}@{p.get('host')}:{p.get('port')}/{p.get('database') or ''}"
        return self.secrets.scrub(text)


class MysqlDriver(MysqlAdapter, Driver):
    """Adapter for PyMySQL."""

    def _setup(self) -> None:
        super()._setup()
        #: PyMySQL's private fields this adapter reads (``_result``, ``_sock``,
        #: ``_read_timeout``), checked once here on a connection object that never connects;
        #: a PyMySQL keeping them elsewhere gets the public API only (see private_fields_ok)
        self.private_fields = private_fields_ok(self._pymysql.connections.Connection)
        if self.private_fields:
            self.release_results = self._release_results

    def _connect(self) -> Any:
        kwargs = dict(self.params)
        kwargs.setdefault("connect_timeout", self.connect_timeout)
        return self._pymysql.connect(**kwargs)

    def set_autocommit(self, raw: Any, on: bool) -> None:
        raw.autocommit(on)

    def _release_results(self, raw: Any) -> bool:
        # PyMySQL keeps the last result set on the connection (Connection._result) until the
        # next statement: a 12 MB SELECT stayed pinned by an idle connection in autocommit.
        result = raw._result
        if result is None:
            return True
        if result.unbuffered_active:  # an SSCursor's rows still on the wire: mid-protocol
            return False
        raw._result = None
        return True

    def ping(self, raw: Any, timeout: float) -> None:
        if not self.private_fields:  # the public ping, bounded by the connection's timeouts
            if not raw.open:
                raise self._pymysql.err.InterfaceError(0, "the connection is closed")
            raw.ping(reconnect=False)
            return
        sock = raw._sock
        if sock is None:
            raise self._pymysql.err.InterfaceError(0, "the connection is closed")
        sock.settimeout(timeout)
        try:
            raw.ping(reconnect=False)
        finally:
            if raw._sock is not None:
                raw._sock.settimeout(raw._read_timeout)

    def connect_for_local_files(self, connect_timeout: float) -> Any:
        """A connection of this pool's parameters that can run LOAD DATA LOCAL INFILE through
        :meth:`execute_sending_file` only (see :mod:`.mysql_infile`)."""
        from .mysql_infile import connect_for_local_files

        try:
            return connect_for_local_files(self.params, connect_timeout)
        except BaseException as exc:
            self.secrets.scrub_exception(exc)
            raise

    def execute_sending_file(self, raw: Any, sql: str, path: str, *,
                             on_refused: Callable[[], None] | None = None,
                             packet_bytes: int = 16 * 1024) -> int:
        """Run ``sql`` answering the server's LOCAL INFILE request with ``path`` only."""
        from .mysql_infile import guarded_execute

        return guarded_execute(raw, sql, path, on_refused=on_refused, packet_bytes=packet_bytes)


def private_fields_ok(connection_class: Any) -> bool:
    """Whether ``connection_class`` (PyMySQL's ``Connection``, 1.x) has the private fields the
    adapter reads, with the types it expects: ``_result`` (None on a new connection),
    ``_sock`` (None before connecting) and ``_read_timeout`` (a number or None). Checked on
    an instance made with ``defer_connect=True``: no I/O. Without them the adapter falls back
    to the public API: the last result stays on an idle connection until its next statement
    (PyMySQL's own behaviour), and the ping's deadline is the connection's own timeouts.
    """
    try:
        probe = connection_class(defer_connect=True)
    except Exception:  # noqa: BLE001 - a PyMySQL we do not know: the public API only
        return False
    fields = vars(probe)
    timeout = fields.get("_read_timeout", "missing")
    return ("_result" in fields and fields["_result"] is None
            and hasattr(probe, "_sock") and getattr(probe, "_sock", "missing") is None
            and (timeout is None or type(timeout) in (int, float)))


def _truthy(value: Any) -> bool:
    """PyMySQL's own reading of local_infile: any true value, so even the text "no" turns it on."""
    return bool(value)
