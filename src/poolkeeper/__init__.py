"""poolkeeper: a database connection pool that cannot leak.

Every structure that grows with the workload has a bound and a counter of what it dropped;
every connection it hands out is tracked back to the line that took it.

    >>> from poolkeeper import Pool
    >>> with Pool("sqlite://:memory:") as pool:
    ...     with pool.connection() as conn:
    ...         conn.execute("SELECT 1").fetchone()
    (1,)
"""

from __future__ import annotations

from . import admin
from .config import ConfigWarning, PoolConfig, mask_dsn, parse_dsn
from .errors import (
    AdminQueryError,
    ConfigError,
    ConnectError,
    ConnectionReclaimed,
    ConnectionReturned,
    LoaderBackpressure,
    LoaderError,
    PoolClosed,
    PoolError,
    PoolTimeout,
    QueryTimeout,
    TooManyWaiting,
)
from .hooks.fetchsize import AdaptiveFetchSize
from .hooks.stats import StatsHook
from .hooks.stmtcache import StatementCacheHook
from .hooks.timeouts import TimeoutHook, statement_timeout
from .loader import Loader, load_files
from .observe.memory import MemoryWatchdog
from .observe.monitor import MONITOR, register_pool
from .pool import AsyncPool, CloseReason, Pool
from .pool.proxies import ConnectionProxy, CursorProxy
from .sql.fingerprint import fingerprint, redact
from .sql.stats import SqlStatsRegistry

__version__ = "0.1.0"

__all__ = [
    "MONITOR",
    "AdaptiveFetchSize",
    "AdminQueryError",
    "AsyncPool",
    "CloseReason",
    "ConfigError",
    "ConfigWarning",
    "ConnectError",
    "ConnectionProxy",
    "ConnectionReclaimed",
    "ConnectionReturned",
    "CursorProxy",
    "Loader",
    "LoaderBackpressure",
    "LoaderError",
    "MemoryWatchdog",
    "Pool",
    "PoolClosed",
    "PoolConfig",
    "PoolError",
    "PoolTimeout",
    "QueryTimeout",
    "SqlStatsRegistry",
    "StatementCacheHook",
    "StatsHook",
    "TimeoutHook",
    "TooManyWaiting",
    "__version__",
    "admin",
    "fingerprint",
    "load_files",
    "mask_dsn",
    "parse_dsn",
    "redact",
    "register_pool",
    "statement_timeout",
]
