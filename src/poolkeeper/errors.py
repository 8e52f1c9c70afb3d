"""Every exception poolkeeper raises, in one tree.

::

    PoolError (Exception)                  anything the pool itself reports
     ├── ConfigError (also ValueError)     an option is out of range or of the wrong type
     ├── PoolClosed                        the pool was closed before or while you waited
     ├── PoolTimeout                       no connection within max_wait (message lists holders)
     ├── TooManyWaiting                    max_waiting callers already queue for a connection
     ├── ConnectError                      the database refused or failed a new connection
     ├── ConnectionReturned                a proxy was used after it went back to the pool
     │    └── ConnectionReclaimed          ... because the pool reclaimed it as abandoned
     ├── QueryTimeout                      a statement ran past its deadline and was cancelled
     ├── AdminQueryError (also ValueError) an admin query was refused (not read-only) or failed
     └── LoaderError                       the bulk loader could not load or accept rows
          └── LoaderBackpressure           write() blocked at the hard memory limit too long

Errors raised by the driver (psycopg, PyMySQL, sqlite3) pass through unchanged, so code
written against the driver keeps catching what it caught; poolkeeper chains them as the
cause (``__cause__``) where it wraps one. Where poolkeeper itself raises in the middle of a
DB-API call (a returned connection or closed cursor used again, a statement timed out), the
error is also an instance of the class the driver raises in that case (PEP 249 requires an
``Error`` of the driver's module after ``close()``): ``ConnectionReturned`` is then also a
``sqlite3.ProgrammingError``, ``psycopg.OperationalError`` / ``InterfaceError`` or
``pymysql.err.InterfaceError`` / ``ProgrammingError``, and ``QueryTimeout`` also the driver's
``OperationalError`` (psycopg's ``QueryCanceled``). See :func:`as_driver_error`.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = [
    "AdminQueryError",
    "ConfigError",
    "ConnectError",
    "ConnectionReclaimed",
    "ConnectionReturned",
    "LoaderBackpressure",
    "LoaderError",
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "QueryTimeout",
    "TooManyWaiting",
    "as_driver_error",
]

_E = TypeVar("_E", bound=BaseException)

# (poolkeeper class, driver class) -> their common subclass. Bounded: both halves are classes
# named in poolkeeper's and the drivers' source (a few per driver), never built from data.
_DUAL_CLASSES: dict[tuple[type[BaseException], type[BaseException]], type[BaseException]] = {}


def as_driver_error(base: type[_E], driver_class: type[BaseException] | None) -> type[_E]:
    """A subclass of poolkeeper's ``base`` that is also the driver's ``driver_class``.

    ``except ConnectionReturned`` and ``except psycopg.OperationalError`` (or the driver's
    ``Error``) both catch it. Made once per pair and cached; with no driver class (a generic
    driver) the poolkeeper class itself.
    """
    if driver_class is None or issubclass(base, driver_class):
        return base
    key = (base, driver_class)
    dual = _DUAL_CLASSES.get(key)
    if dual is None:
        name = f"{base.__name__}[{driver_class.__module__}.{driver_class.__qualname__}]"
        dual = type(name, (base, driver_class), {"__module__": base.__module__})
        _DUAL_CLASSES[key] = dual
    return dual  # type: ignore[return-value]


class PoolError(Exception):
    """Base of every error poolkeeper raises itself."""


class ConfigError(PoolError, ValueError):
    """An option is invalid; the message names the option, the value and the allowed range."""


class PoolClosed(PoolError):
    """The pool is closed: no connection can be borrowed from it any more."""


class PoolTimeout(PoolError):
    """No connection became available within ``max_wait``.

    The message carries the pool's counts (total, active, idle, waiting, opening), the last
    connection error and the callers holding connections, with where they borrowed them.
    """


class TooManyWaiting(PoolError):
    """``max_waiting`` callers are already queued; this one was turned away at once."""


class ConnectError(PoolError):
    """Opening a new physical connection failed; the driver's error is the ``__cause__``."""


class ConnectionReturned(PoolError):
    """A connection proxy was used after it was returned to the pool.

    The proxy is inert from the moment it is returned, so a stale reference can never run a
    statement on a connection that now belongs to someone else.
    """


class ConnectionReclaimed(ConnectionReturned):
    """The pool closed this checkout's connection because it was held past abandoned_timeout."""


class QueryTimeout(PoolError):
    """A statement ran past its deadline and was cancelled on the server.

    Attributes ``sql`` (literals folded), ``timeout_s`` and ``elapsed_s`` say which statement
    and how long it ran; the driver's own error is the ``__cause__``.
    """

    def __init__(self, message: str, *, sql: str = "", timeout_s: float = 0.0,
                 elapsed_s: float = 0.0) -> None:
        super().__init__(message)
        self.sql = sql
        self.timeout_s = timeout_s
        self.elapsed_s = elapsed_s


class AdminQueryError(PoolError, ValueError):
    """An admin query was refused (not a read-only SELECT) or failed; the message says why."""


class LoaderError(PoolError):
    """The bulk loader failed to load rows or refused new ones; no acknowledged row is lost."""


class LoaderBackpressure(LoaderError):
    """``write()`` waited at the hard memory limit longer than its timeout."""
