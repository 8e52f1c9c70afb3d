"""Observability of poolkeeper's own state: the resource monitor, the memory watchdog and
ledger, and read-only SQL over both (:func:`poolkeeper.observe.admin.query`).

Nothing here knows a driver or the console; pools and other components report to it through
duck-typed calls (``track()``, ledger providers, ``stats()`` / ``connections_info()``).
"""

from __future__ import annotations

from .admin import AdminQueryError, QueryResult, format_table, query
from .memory import (
    LEDGER,
    LedgerEntry,
    MemoryLedger,
    MemorySample,
    MemoryWatchdog,
    read_memory_limit,
    read_rss,
)
from .monitor import (
    KINDS,
    MONITOR,
    NULL_TOKEN,
    Monitor,
    MonitorSnapshot,
    Probe,
    Resource,
    SiteGroup,
    Token,
    get_monitor,
    register_pool,
    registered_pools,
)

__all__ = [
    "KINDS",
    "LEDGER",
    "MONITOR",
    "NULL_TOKEN",
    "AdminQueryError",
    "LedgerEntry",
    "MemoryLedger",
    "MemorySample",
    "MemoryWatchdog",
    "Monitor",
    "MonitorSnapshot",
    "Probe",
    "QueryResult",
    "Resource",
    "SiteGroup",
    "Token",
    "format_table",
    "get_monitor",
    "query",
    "read_memory_limit",
    "read_rss",
    "register_pool",
    "registered_pools",
]
