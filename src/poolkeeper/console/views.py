"""What each console page shows, as plain JSON-ready data (the pages' JSON twins).

Every view reads the pools and the observability parts at the moment it is called, through
public API only: ``pool.stats()``, ``pool.connections_info()``, and where a pool has them
``pool.sql_stats()``, ``pool.statement_cache_info()`` / ``statement_cache_policy()``; the
views of :mod:`poolkeeper.observe` (monitor, memory ledger, admin tables). A pool without one
of the optional methods (a pool-like object that offers only ``stats()``) yields
``{"enabled": False, "reason": ...}`` on that page instead of an error.

Secrets and data never leave through here: DSNs are masked (:func:`poolkeeper.config.mask_dsn`)
and every value that may hold SQL is folded again (:func:`poolkeeper.sql.fingerprint.redact`)
even when its producer already folded it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import mask_dsn
from ..observe import admin
from ..observe.memory import LEDGER, counted_bytes, read_memory_limit, read_rss
from ..observe.monitor import MONITOR, by_site, registered_pools
from ..sql.fingerprint import redact
from .history import History

__all__ = [
    "GAUGE_KEYS",
    "Sources",
    "caches_view",
    "connections_view",
    "memory_view",
    "named_pools",
    "overview_view",
    "query_view",
    "resources_view",
    "safe_sql",
    "sql_entries",
    "sql_view",
]

#: stats keys shown as gauges (current values) on the overview; the rest are counters
GAUGE_KEYS = ("pool_size", "pool_max", "pool_min", "pool_active", "pool_available",
              "pool_parked", "requests_waiting", "connections_opening",
              "connections_opened_last_hour")
#: most rows a table of the console shows (the JSON twin says how many were left out)
MAX_ROWS = 500
# Keys whose values may hold SQL text, in rows reported by other components.
_SQL_KEYS = ("sql", "query", "statement", "fingerprint", "text")
_SQL_SORT_DEFAULTS = ("total_ms", "total_time_ms", "time_total_ms", "time_ms", "total_s",
                      "executions", "count", "calls")
_CACHE_WORDS = ("cache", "prepare", "stmt", "fetch_size")
_SQL_STAT_WORDS = ("sql_", "stats_", "fingerprint", "slow_quer")


@dataclass
class Sources:
    """Where the console reads from. ``pools``: a pool, a list, or a callable returning them."""

    pools: Any
    history: History = field(default_factory=History)
    monitor: Any = None  #: a Monitor (default: the process-wide one, MONITOR)
    ledger: Any = None  #: a MemoryLedger (default: the process-wide one, LEDGER)
    watchdog: Any = None  #: a MemoryWatchdog whose history feeds the memory trend

    def pool_list(self) -> list[Any]:
        source = self.pools
        if source is None:
            return list(registered_pools())
        if callable(source) and not hasattr(source, "stats"):
            source = source()
        if hasattr(source, "stats"):
            return [source]
        return list(source)

    def get_monitor(self) -> Any:
        return self.monitor if self.monitor is not None else MONITOR

    def get_ledger(self) -> Any:
        return self.ledger if self.ledger is not None else LEDGER


def named_pools(pools: Iterable[Any]) -> list[tuple[str, Any]]:
    """``(name, pool)`` pairs with names made unique (a second "app" becomes "app-2")."""
    seen: dict[str, int] = {}
    out = []
    for pool in pools:
        name = str(getattr(pool, "name", "") or "pool")
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}-{seen[name]}", pool))
    return out


# ----------------------------------------------------------------------------- helpers
def safe_sql(text: Any, limit: int = 2000) -> str | None:
    """SQL with every literal folded to ``?``; None stays None."""
    if text is None:
        return None
    try:
        return redact(text if isinstance(text, str | bytes) else str(text), limit)
    except Exception:  # noqa: BLE001 - what cannot be folded is hidden, never shown raw
        return "(statement hidden: it could not be folded)"


def jsonable(value: Any) -> Any:
    """Plain JSON types for dataclasses, mappings, tuples, sets and non-finite floats."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


def _rows(value: Any, key_name: str = "key") -> list[dict[str, Any]]:
    """Normalise what a component reports into a list of dicts."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        out = []
        for key, item in value.items():
            row = _as_dict(item)
            if row is None:
                row = {"value": item}
            row.setdefault(key_name, key)
            out.append(row)
        return out
    rows = []
    for item in value:
        row = _as_dict(item)
        rows.append(row if row is not None else {"value": item})
    return rows


def _as_dict(item: Any) -> dict[str, Any] | None:
    if isinstance(item, Mapping):
        return dict(item)
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
    as_dict = getattr(item, "_asdict", None) or getattr(item, "as_dict", None)
    if callable(as_dict):
        result = as_dict()
        return dict(result) if isinstance(result, Mapping) else None
    return None


def _scrub(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with SQL-bearing values folded and everything JSON-ready."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        k = str(key)
        if isinstance(value, str | bytes) and any(w in k.lower() for w in _SQL_KEYS):
            out[k] = safe_sql(value)
        else:
            out[k] = jsonable(value)
    return out


def _stats(pool: Any) -> dict[str, Any]:
    try:
        return dict(pool.stats())
    except Exception as exc:  # noqa: BLE001 - shown on the page instead of failing it
        return {"error": f"stats() failed: {type(exc).__name__}: {exc}"}


def _call(obj: Any, name: str) -> tuple[bool, Any]:
    """(present, value): the attribute called when callable, or its value."""
    attr = getattr(obj, name, None)
    if attr is None:
        return False, None
    return True, attr() if callable(attr) else attr


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _pool_header(name: str, pool: Any) -> dict[str, Any]:
    config = getattr(pool, "config", None)
    dsn = getattr(config, "dsn", None)
    return {
        "name": name,
        "driver": getattr(getattr(pool, "driver", None), "name", None),
        "dsn": mask_dsn(dsn) if isinstance(dsn, str) else None,
        "closed": bool(getattr(pool, "closed", False)),
    }


# ----------------------------------------------------------------------------- overview
def overview_view(src: Sources) -> dict[str, Any]:
    """Each pool's gauges, counters, wait / usage histograms, config and recent history."""
    pools = []
    for name, pool in named_pools(src.pool_list()):
        stats = _stats(pool)
        bounds = list(stats.get("histogram_bounds_ms") or ())
        config = getattr(pool, "config", None)
        masked = getattr(config, "masked", None)
        entry = _pool_header(name, pool)
        entry.update({
            "gauges": {k: stats[k] for k in GAUGE_KEYS if k in stats},
            "counters": {k: v for k, v in stats.items()
                         if k not in GAUGE_KEYS and (_is_number(v) or isinstance(v, bool))},
            "histograms": {
                kind: {"bounds_ms": bounds, "counts": list(stats.get(f"{kind}_ms_histogram")
                                                           or ())}
                for kind in ("wait", "usage") if f"{kind}_ms_histogram" in stats},
            "stats": jsonable(stats),
            "config": jsonable(masked()) if callable(masked) else None,
            "history": src.history.series(name),
        })
        if "error" in stats:
            entry["error"] = stats["error"]
        pools.append(entry)
    return {"generated_at": time.time(), "pools": pools,
            "history": {"seconds": src.history.seconds, "interval_s": src.history.interval}}


# ----------------------------------------------------------------------------- SQL
def sql_entries(pool: Any) -> tuple[bool, list[dict[str, Any]], dict[str, Any]]:
    """(enabled, rows, totals) of a pool's SQL statistics (``pool.sql_stats()``): one row per
    fingerprint, most total time first; enabled is False for a pool without statistics."""
    sql_stats = getattr(pool, "sql_stats", None)
    if not callable(sql_stats):
        return False, [], {}
    value = dict(sql_stats())
    rows = _rows(value.pop("statements", None), key_name="fingerprint")
    return True, rows, value


def _order_columns(rows: Sequence[Mapping[str, Any]], first: Sequence[str]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    ordered = [c for c in first if c in columns]
    return ordered + [c for c in columns if c not in ordered]


def sql_view(src: Sources, sort: str | None = None, limit: int = MAX_ROWS) -> dict[str, Any]:
    """Per-pool SQL fingerprints: sortable by any numeric column (total time by default)."""
    pools = []
    for name, pool in named_pools(src.pool_list()):
        entry = _pool_header(name, pool)
        try:
            enabled, rows, counters = sql_entries(pool)
        except Exception as exc:  # noqa: BLE001 - one failing part must not hide the page
            entry.update(enabled=False, reason=f"sql_stats() failed: {type(exc).__name__}: "
                                               f"{exc}")
            pools.append(entry)
            continue
        stats = _stats(pool)
        counters.update({k: v for k, v in stats.items()
                         if any(w in k for w in _SQL_STAT_WORDS) and not isinstance(v, list)})
        if not enabled:
            entry.update(enabled=False, counters=jsonable(counters), reason=(
                "SQL statistics are not enabled for this pool (no pool.sql_stats): they "
                "arrive with poolkeeper.sql.stats; start the pool with stats=True"))
            pools.append(entry)
            continue
        if counters.get("enabled") is False and not rows:
            entry.update(enabled=False, counters=jsonable(counters), reason=(
                "SQL statistics are switched off for this pool (stats=False); "
                "pool.stats_enabled = True turns them on at runtime"))
            pools.append(entry)
            continue
        scrubbed = [_scrub(r) for r in rows]
        columns = _order_columns(scrubbed, ("fingerprint", "sql", "executions", "count",
                                            "calls", "errors", "total_ms", "mean_ms", "avg_ms",
                                            "max_ms", "histogram", "rows_fetched",
                                            "rows_affected", "rows_max", "running_max",
                                            "last_execution", "last_error"))
        numeric = [c for c in columns if any(_is_number(r.get(c)) for r in scrubbed)]
        histograms = [c for c in columns
                      if any(isinstance(r.get(c), list) for r in scrubbed)]
        key = sort if sort in numeric else next(
            (c for c in _SQL_SORT_DEFAULTS if c in numeric), numeric[0] if numeric else None)
        if key is not None:
            scrubbed.sort(key=lambda r: -(r.get(key) or 0) if _is_number(r.get(key)) else 0)
        bounds = next((r.get("histogram_bounds_ms") for r in scrubbed
                       if isinstance(r.get("histogram_bounds_ms"), list)),
                      counters.get("histogram_bounds_ms"))
        entry.update(enabled=True, sort=key, sortable=numeric, columns=columns,
                     histogram_columns=histograms, histogram_bounds_ms=jsonable(bounds),
                     total=len(scrubbed), rows=scrubbed[:limit], counters=jsonable(counters))
        pools.append(entry)
    return {"generated_at": time.time(), "pools": pools}


# ----------------------------------------------------------------------------- caches
def caches_view(src: Sources, limit: int = MAX_ROWS) -> dict[str, Any]:
    """Statement caches: their counters, cached statements, and their ledger entries."""
    ledger = src.get_ledger()
    ledger_rows: list[dict[str, Any]] = []
    if ledger is not None:
        ledger_rows = [jsonable(e) for e in ledger.entries()
                       if any(w in (e.category + " " + e.name).lower()
                              for w in ("cache", "statement", "stmt"))]
    pools = []
    for name, pool in named_pools(src.pool_list()):
        entry = _pool_header(name, pool)
        stats = _stats(pool)
        counters = {k: v for k, v in stats.items()
                    if any(w in k for w in _CACHE_WORDS) and not isinstance(v, list)}
        try:
            present, info = _call(pool, "statement_cache_info")
            if isinstance(info, Mapping) and not any(
                    isinstance(v, Mapping | list | tuple) for v in info.values()):
                # counters only (no cached statements listed): shown with the others
                counters.update(info)
                info = None
            elif isinstance(info, Mapping):
                counters.update({k: v for k, v in info.items()
                                 if not isinstance(v, Mapping | list | tuple)})
                info = next((v for v in info.values() if isinstance(v, list | tuple)), None)
            rows = [_scrub(r) for r in _rows(info)] if present else []
        except Exception as exc:  # noqa: BLE001 - shown on the page
            present, rows = True, []
            entry["error"] = f"statement_cache_info() failed: {type(exc).__name__}: {exc}"
        config = getattr(pool, "config", None)
        entry["config"] = {k: getattr(config, k) for k in (
            "statement_cache_size", "statement_cache_bytes", "fetch_size") if hasattr(config, k)}
        has_policy, policy = _call(pool, "statement_cache_policy")
        entry["policy"] = jsonable(policy) if has_policy else None
        entry["enabled"] = bool(present or counters or has_policy)
        if not entry["enabled"]:
            entry["reason"] = ("statement caches are not enabled for this pool (no cache "
                               "counters in pool.stats() and no pool.statement_cache_info): "
                               "they arrive with poolkeeper.sql's statement cache")
        entry.update(counters=jsonable(counters), columns=_order_columns(rows, ("fingerprint",)),
                     total=len(rows), rows=rows[:limit])
        pools.append(entry)
    return {"generated_at": time.time(), "pools": pools, "ledger": ledger_rows}


# ----------------------------------------------------------------------------- connections
_CONNECTION_COLUMNS = ("id", "state", "age_s", "idle_s", "uses", "held_s", "holder_thread",
                       "borrow_site", "executing", "sql", "expires_in_s", "generation",
                       "session_id")


def connections_view(src: Sources, limit: int = MAX_ROWS) -> dict[str, Any]:
    """Each physical connection: age, uses, state, holder and where it was borrowed, SQL."""
    pools = []
    for name, pool in named_pools(src.pool_list()):
        entry = _pool_header(name, pool)
        try:
            present, info = _call(pool, "connections_info")
            rows = [_scrub(r) for r in _rows(info)] if present else []
        except Exception as exc:  # noqa: BLE001 - shown on the page
            present, rows = True, []
            entry["error"] = f"connections_info() failed: {type(exc).__name__}: {exc}"
        states: dict[str, int] = {}
        for row in rows:
            state = str(row.get("state"))
            states[state] = states.get(state, 0) + 1
        entry.update(enabled=present, states=states, total=len(rows), rows=rows[:limit],
                     columns=_order_columns(rows, _CONNECTION_COLUMNS))
        pools.append(entry)
    return {"generated_at": time.time(), "pools": pools}


# ----------------------------------------------------------------------------- resources
def _resource(r: Any) -> dict[str, Any]:
    return {
        "id": r.id, "kind": r.kind, "pool": r.pool, "size_bytes": r.size,
        "age_s": r.age_s, "thread": r.thread, "site": r.site,
        "stack": [f"{f[0]}:{f[1]} in {f[2]}" for f in r.stack],
        "sql": safe_sql(r.sql), "parent_id": r.parent_id,
    }


def resources_view(src: Sources, min_age: float = 1.0, per_site: int = 5,
                   limit: int = 200) -> dict[str, Any]:
    """Live resources grouped by call site (with example stacks), and collected leftovers."""
    monitor = src.get_monitor()
    stats = jsonable(monitor.stats())
    live = monitor.live(min_age)
    collected = monitor.collected()
    if not stats.get("enabled") and not stats.get("pools_enabled") and not live \
            and not collected:
        return {"enabled": False, "stats": stats, "reason": (
            "the resource monitor is off: start the pool with monitor=True, or call "
            "poolkeeper.observe.monitor.enable() (about a frame walk per resource while on)")}
    groups = by_site(live)
    examples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in live:
        bucket = examples.setdefault((r.kind, r.site), [])
        if len(bucket) < per_site:
            bucket.append(_resource(r))
    sites = [{"kind": g.kind, "site": g.site, "count": g.count, "bytes": g.bytes,
              "oldest_s": g.oldest_s, "pools": list(g.pools),
              "examples": examples.get((g.kind, g.site), [])} for g in groups[:limit]]
    return {"generated_at": time.time(), "enabled": True, "min_age_s": min_age, "stats": stats,
            "live": len(live), "sites": sites, "sites_total": len(groups),
            "collected": [dict(_resource(r), collected_at=r.collected_at, leak=r.leak)
                          for r in collected[-limit:]],
            "collected_total": len(collected)}


# ----------------------------------------------------------------------------- memory
def memory_view(src: Sources) -> dict[str, Any]:
    """The ledger (bytes and budget per bounded structure), process memory and its trend."""
    out: dict[str, Any] = {"generated_at": time.time()}
    ledger = src.get_ledger()
    entries = ledger.entries()
    out["ledger"] = {"enabled": True, "entries": jsonable(entries),
                     "by_category": ledger.by_category(entries),
                     "total_bytes": counted_bytes(entries), "stats": jsonable(ledger.stats())}
    rss = read_rss()
    limit, source = read_memory_limit()
    out["process"] = {"rss_bytes": rss, "limit_bytes": limit, "limit_source": source,
                      "percent": round(rss / limit * 100.0, 3) if rss and limit else None}
    dog = src.watchdog
    if dog is not None:
        out["trend_source"] = "watchdog"
        out["trend"] = [{"t": s.time, "rss_bytes": s.rss_bytes, "ledger_bytes": s.ledger_bytes}
                        for s in dog.history()]
        out["watchdog"] = jsonable(dog.stats())
    else:
        out["trend_source"] = "console"
        out["trend"] = src.history.memory()
    out["monitor"] = jsonable(src.get_monitor().stats())
    out["console"] = src.history.stats()
    return out


# ----------------------------------------------------------------------------- admin SQL
def query_view(src: Sources, sql: str | None, max_rows: int = MAX_ROWS,
               timeout: float = 2.0) -> dict[str, Any]:
    """Run one read-only SELECT over the admin tables (poolkeeper.observe.admin)."""
    tables = {name: [c for c, _ in cols] for name, cols in admin.TABLES.items()}
    out: dict[str, Any] = {"enabled": True, "sql": sql, "tables": tables, "error": None}
    if not sql or not sql.strip():
        return out
    try:
        result = admin.query(sql, pools=src.pool_list(), monitor=src.get_monitor(),
                             ledger=src.get_ledger(), watchdog=src.watchdog,
                             max_rows=max_rows, timeout=timeout)
    except ValueError as exc:  # AdminQueryError is a ValueError: refused or failed
        out["error"] = str(exc)
        return out
    out.update(columns=list(result.columns), rows=jsonable([list(r) for r in result.rows]),
               truncated=bool(result.truncated), truncated_by=result.truncated_by,
               elapsed_ms=result.elapsed_ms)
    return out
