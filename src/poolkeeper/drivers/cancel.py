"""Cancelling a running statement on the server, one implementation per driver.

Each canceller is called from a thread other than the one running the statement, with the
driver's own connection, and answers what it knows about the effect:

* ``True``: the statement that was running was interrupted (MariaDB: ``KILL QUERY ID`` of the
  exact query found running);
* ``None``: a cancel was delivered, its effect is unknown (PostgreSQL, sqlite3: the statement's
  own error tells);
* ``False``: nothing was running any more, so nothing was sent;
* an exception: the cancel could not be delivered (the statement simply runs on).

Drivers:

* sqlite3: ``Connection.interrupt()``; non-blocking, safe on any thread, a no-op when no
  statement runs, so it runs inline on the scheduler thread.
* psycopg 3: ``Connection.cancel_safe(timeout=...)``, a protocol cancel request over a new
  short-lived socket; PostgreSQL ignores a cancel that reaches a backend waiting for its next
  command.
* PyMySQL (MariaDB/MySQL): ``KILL QUERY`` must come from *another* connection. One control
  connection per pool (:class:`MysqlControl`), opened on the first cancel and kept, reconnected
  with exponential backoff when down; never one connection per cancel. On MariaDB the query id
  running on the target session is read from ``information_schema.PROCESSLIST`` and killed with
  ``KILL QUERY ID``, so a kill arriving late can only miss (error 1957), never hit the *next*
  statement. MySQL has no ``KILL QUERY ID``: the session is checked to be running a query just
  before ``KILL QUERY <id>``, which narrows the window without closing it.

The pool's driver adapters are expected to take these over (``Driver.cancel``); the functions
keep no state except the MariaDB control connection.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import ConnectError

__all__ = [
    "CANCEL_FUNCTIONS",
    "PROCESSLIST_QUERY",
    "Backoff",
    "Canceller",
    "ControlCounters",
    "MysqlControl",
    "cancel_postgresql",
    "cancel_sqlite",
    "kill_missed",
    "kill_statement",
    "lost_connection",
    "make_canceller",
]

logger = logging.getLogger("poolkeeper.timeouts")
_monotonic = time.monotonic

# MariaDB/MySQL error codes: 1094 unknown thread id, 1957 unknown query id.
_UNKNOWN_THREAD = 1094
_UNKNOWN_QUERY = 1957
_RUNNING_COMMANDS = frozenset({"Query", "Execute"})


#: the query id and command of a session (MariaDB / MySQL), to kill only a running statement
PROCESSLIST_QUERY = ("SELECT QUERY_ID, COMMAND FROM information_schema.PROCESSLIST "
                     "WHERE ID = %s")


def kill_statement(row: Any, session_id: int, *, mariadb: bool) -> str | None:
    """The statement that stops what session ``session_id`` runs, given its PROCESSLIST
    ``(QUERY_ID, COMMAND)`` row; None when it runs nothing (or is gone): nothing to send.

    MariaDB kills the exact query (``KILL QUERY ID``), so a late kill can only miss; MySQL
    has only ``KILL QUERY <session>``."""
    if row is None or row[1] not in _RUNNING_COMMANDS:
        return None
    return f"KILL QUERY ID {int(row[0])}" if mariadb else f"KILL QUERY {int(session_id)}"


def kill_missed(exc: BaseException) -> bool:
    """Whether a KILL failed only because the statement (or session) had already ended."""
    code = exc.args[0] if exc.args else None
    return code in (_UNKNOWN_QUERY, _UNKNOWN_THREAD)


def lost_connection(exc: BaseException) -> bool:
    """Whether a control connection's error says the connection itself is gone."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    # 2006 gone away, 2013 lost during query, 2014 out of sync, 0 PyMySQL interface error
    return code in (0, 2006, 2013, 2014, 2055) or type(exc).__name__ == "InterfaceError" \
        or isinstance(exc, OSError)


class ControlCounters:
    """The counters of one control connection (``_conn`` while open), and their snapshot."""

    _conn: Any = None
    connects = 0
    connect_failures = 0
    kills = 0
    missed = 0

    @property
    def connected(self) -> bool:
        """Whether the control connection is open now."""
        return self._conn is not None

    def stats(self) -> dict[str, int]:
        return {
            "timeouts_control_connections": 1 if self._conn is not None else 0,
            "timeouts_control_connects_num": self.connects,
            "timeouts_control_connect_failures_num": self.connect_failures,
            "timeouts_kills_num": self.kills,
        }


class Backoff:
    """When a control connection may be opened again after failures: a delay doubling from
    ``backoff_min`` up to ``backoff_max`` seconds, jittered to between half and all of it."""

    def __init__(self, what: str, backoff_min: float, backoff_max: float) -> None:
        self.what = what
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.failures_in_row = 0
        self._next_try = 0.0
        self._rand = random.Random()

    def check(self) -> None:
        """Raise a :class:`ConnectError` while the backoff forbids an attempt."""
        now = _monotonic()
        if now < self._next_try:
            raise ConnectError(
                f"{self.what} is down ({self.failures_in_row} failed attempts in a row); "
                f"next attempt in {self._next_try - now:.2f} s; the statement runs on "
                "uncancelled")

    def failed(self, exc: BaseException) -> ConnectError:
        """Count a failed attempt; the error to raise for it (chain ``exc`` to it)."""
        self.failures_in_row += 1
        delay = min(self.backoff_max, self.backoff_min * 2 ** (self.failures_in_row - 1))
        self._next_try = _monotonic() + delay * (0.5 + self._rand.random() / 2)
        return ConnectError(
            f"could not open {self.what} ({self.failures_in_row} failed attempts in a row, "
            f"next attempt in {delay:.2f} s or sooner): {type(exc).__name__}: {exc}")

    def succeeded(self) -> None:
        self.failures_in_row = 0
        self._next_try = 0.0


def cancel_sqlite(raw: Any) -> bool | None:
    """Interrupt the statement running on a sqlite3 connection (no-op when none runs)."""
    raw.interrupt()
    return None


def cancel_postgresql(raw: Any, *, timeout: float = 5.0) -> bool | None:
    """Send a protocol cancel request for the statement running on a psycopg connection.

    Raises ``psycopg.errors.CancellationTimeout`` when the server does not answer within
    ``timeout`` seconds.
    """
    raw.cancel_safe(timeout=timeout)
    return None


class Canceller(Protocol):
    """What the timeout hook needs from a driver's cancel mechanism."""

    #: True when cancel() does network I/O (it then runs off the scheduler thread)
    blocking: bool
    #: the longest one cancel() can take, in seconds, before it raises
    max_duration_s: float
    #: True when a cancel arriving just after the statement returned still poisons the rows
    #: it left to fetch (sqlite3: interrupt() hits a statement with rows pending)
    poisons_pending_rows: bool

    def cancel(self, raw: Any, session_id: Any) -> bool | None:
        """Stop what runs on ``raw`` now (see the module docstring for the answer)."""

    def stats(self) -> dict[str, int]:
        """The canceller's own counters (control connection state)."""

    def close(self) -> None:
        """Release what the canceller holds (the MariaDB control connection)."""


class _SqliteCanceller:
    blocking = False
    max_duration_s = 0.1
    poisons_pending_rows = True

    def cancel(self, raw: Any, session_id: Any) -> bool | None:
        return cancel_sqlite(raw)

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


class _PostgresCanceller:
    blocking = True
    poisons_pending_rows = False

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.max_duration_s = timeout

    def cancel(self, raw: Any, session_id: Any) -> bool | None:
        return cancel_postgresql(raw, timeout=self.timeout)

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


class MysqlControl(ControlCounters):
    """The one control connection a pool uses to send ``KILL QUERY`` (bounded: at most one).

    ``connect`` opens a connection to the same server (the pool's own connect). Calls are
    serialised by a lock; socket reads and writes are bounded by ``timeout`` seconds. When the
    server cannot be reached, a cancel fails at once until the backoff (doubling from
    ``backoff_min`` up to ``backoff_max`` seconds) lets the next attempt through.
    """

    blocking = True
    poisons_pending_rows = False

    def __init__(self, connect: Callable[[], Any], *, timeout: float = 5.0,
                 connect_timeout: float = 10.0, backoff_min: float = 0.1,
                 backoff_max: float = 10.0) -> None:
        self._connect = connect
        self.timeout = timeout
        # connect + one stale-connection retry + two round trips
        self.max_duration_s = 2 * connect_timeout + 3 * timeout
        self._lock = threading.Lock()
        self._conn: Any = None
        self._mariadb = True
        self._backoff = Backoff("the MariaDB control connection for KILL QUERY",
                                backoff_min, backoff_max)
        self._closed = False

    def cancel(self, raw: Any, session_id: Any) -> bool | None:
        """Kill the query running on the session ``session_id`` (PyMySQL ``thread_id()``)."""
        if session_id is None:
            session_id = raw.thread_id()
        with self._lock:
            if self._closed:
                raise ConnectError("the MariaDB control connection is closed (pool closing)")
            fresh = self._conn is None
            conn = self._control()
            try:
                return self._kill(conn, int(session_id))
            except Exception as exc:
                if fresh or not self._is_connection_error(exc):
                    raise
            # The kept connection went stale (server restart, wait_timeout): one retry on a
            # new connection, then give up until the backoff allows another attempt.
            self._drop()
            return self._kill(self._control(), int(session_id))

    def _control(self) -> Any:
        conn = self._conn
        if conn is not None:
            return conn
        self._backoff.check()
        try:
            conn = self._connect()
        except Exception as exc:
            self.connect_failures += 1
            raise self._backoff.failed(exc) from exc
        self.connects += 1
        self._backoff.succeeded()
        with contextlib.suppress(Exception):
            conn.autocommit(True)
        with contextlib.suppress(Exception):
            self._mariadb = "mariadb" in str(conn.get_server_info()).lower()
        self._conn = conn
        return conn

    def _kill(self, conn: Any, session_id: int) -> bool | None:
        sock = getattr(conn, "_sock", None)
        if sock is not None:
            sock.settimeout(self.timeout)
        try:
            with conn.cursor() as cur:
                cur.execute(PROCESSLIST_QUERY, (session_id,))
                kill = kill_statement(cur.fetchone(), session_id, mariadb=self._mariadb)
                if kill is None:
                    self.missed += 1
                    return False  # the session finished its statement (or is gone)
                try:
                    cur.execute(kill)
                except Exception as exc:
                    if kill_missed(exc):
                        self.missed += 1
                        return False  # finished between the two statements
                    raise
                self.kills += 1
                return True if self._mariadb else None
        finally:
            sock = getattr(conn, "_sock", None)
            if sock is not None:
                sock.settimeout(getattr(conn, "_read_timeout", None))

    _is_connection_error = staticmethod(lost_connection)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # it is broken already
                conn.close()

    @property
    def session_id(self) -> int | None:
        """The server's id of the control connection (None while it is closed)."""
        conn = self._conn
        return None if conn is None else int(conn.thread_id())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()


#: cancel functions keyed by driver name, each taking the driver's connection
CANCEL_FUNCTIONS: dict[str, Callable[..., bool | None]] = {
    "sqlite": cancel_sqlite,
    "postgresql": cancel_postgresql,
}


def make_canceller(driver: str, *, connect: Callable[[], Any] | None = None,
                   timeout: float = 5.0, connect_timeout: float = 10.0,
                   backoff_max: float = 10.0) -> Canceller:
    """The canceller for a driver name ("sqlite", "postgresql", "mysql").

    ``connect`` (MariaDB only) opens the control connection; ``timeout`` bounds one cancel.
    """
    if driver == "sqlite":
        return _SqliteCanceller()
    if driver == "postgresql":
        return _PostgresCanceller(timeout)
    if driver == "mysql":
        if connect is None:
            raise ValueError("make_canceller('mysql') needs connect=, the factory of the "
                             "control connection used to send KILL QUERY")
        return MysqlControl(connect, timeout=timeout, connect_timeout=connect_timeout,
                            backoff_max=backoff_max)
    raise ValueError(f"no cancel mechanism for driver {driver!r}: use sqlite, postgresql or mysql")
