"""SQL fingerprints, per-fingerprint statistics, one bounded LRU.

Nothing here imports a driver or knows one: dialects are told apart by the name the pool
passes in (``"postgresql"``, ``"mysql"``, ``"sqlite"``).

* :mod:`.fingerprint`: :func:`fingerprint`, :func:`redact`, :class:`FingerprintCache`
* :mod:`.stats`: :class:`SqlStatsRegistry` (bounded by bytes and entries, slow-statement log)
* :mod:`.lru`: :class:`LRU`, bounded by count and bytes, every operation under its lock
* :mod:`.querytext`: the text of a query object; what a connection's memo remembers

The statement hooks feeding them are in :mod:`poolkeeper.hooks`.
"""

from __future__ import annotations

from .fingerprint import DIALECTS, FingerprintCache, fingerprint, redact
from .lru import LRU
from .stats import HISTOGRAM_BOUNDS_MS, SqlStatsRegistry, describe_params, error_text

__all__ = [
    "DIALECTS",
    "HISTOGRAM_BOUNDS_MS",
    "LRU",
    "FingerprintCache",
    "SqlStatsRegistry",
    "describe_params",
    "error_text",
    "fingerprint",
    "redact",
]
