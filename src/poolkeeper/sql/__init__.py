"""SQL fingerprints, per-fingerprint statistics, statement caches and adaptive fetch size.

Nothing here imports a driver: drivers are told apart by the name the pool passes in
(``"postgresql"``, ``"mysql"``, ``"sqlite"``), and driver objects are used by duck typing.

* :mod:`.fingerprint`: :func:`fingerprint`, :func:`redact`, :class:`FingerprintCache`
* :mod:`.stats`: :class:`SqlStatsRegistry` (bounded by bytes and entries, slow-statement log)
* :mod:`.hook`: :class:`StatsHook`, the execute hook feeding the registry
* :mod:`.stmtcache`: :class:`StatementCache` (LRU by count and bytes), the per-driver
  :func:`statement_cache_policy`, :class:`StatementCacheHook`, :class:`AdaptiveFetchSize`
"""

from __future__ import annotations

from .fingerprint import DIALECTS, FingerprintCache, fingerprint, redact
from .hook import StatsHook
from .stats import HISTOGRAM_BOUNDS_MS, SqlStatsRegistry, describe_params, error_text
from .stmtcache import (
    AdaptiveFetchSize,
    StatementCache,
    StatementCacheHook,
    StatementCachePolicy,
    sqlite_cached_statements,
    statement_cache_policy,
)

__all__ = [
    "DIALECTS",
    "HISTOGRAM_BOUNDS_MS",
    "AdaptiveFetchSize",
    "FingerprintCache",
    "SqlStatsRegistry",
    "StatementCache",
    "StatementCacheHook",
    "StatementCachePolicy",
    "StatsHook",
    "describe_params",
    "error_text",
    "fingerprint",
    "redact",
    "sqlite_cached_statements",
    "statement_cache_policy",
]
