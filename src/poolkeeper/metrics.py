"""Prometheus exposition of pool statistics (optional extra: ``pip install poolkeeper[metrics]``).

A custom collector reads ``pool.stats()`` at scrape time, so nothing is counted twice and a
pool that is never scraped pays nothing. The set follows HikariCP's (acquire, usage and
creation times, timeouts, total / idle / active / pending / max / min connections) plus what
poolkeeper adds: churn, leaks, abandoned and orphaned connections, validations, hand-offs and
whatever the execute hooks report (query timeouts, SQL statistics, statement caches).

Names follow the Prometheus conventions: ``poolkeeper_`` prefix, base units in the name
(``_seconds``, ``_bytes``), ``_total`` on counters. Labels are bounded: ``pool`` (the pool's
name) on every series, plus ``reason`` on ``poolkeeper_connections_closed_total``, whose values
come from the fixed list :data:`poolkeeper.pool.CloseReason.ALL`. SQL text is never a label.

Example::

    from prometheus_client import REGISTRY, start_http_server
    from poolkeeper.metrics import PoolCollector

    REGISTRY.register(PoolCollector([pool]))
    start_http_server(9187, addr="127.0.0.1")

The console serves the same exposition at ``/metrics``. Counters read from ``pool.stats()``
drop when someone calls ``pool.pop_stats()``; Prometheus treats that as a counter reset.
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["CONTENT_TYPE", "PoolCollector", "exposition", "metric_names", "register"]

#: the Prometheus text format's content type (what ``/metrics`` answers with)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_PREFIX = "poolkeeper_"

# stats key -> (metric name without prefix, help). Gauges: values that go up and down.
_GAUGES: dict[str, tuple[str, str]] = {
    "pool_size": ("connections", "Open physical connections (idle, parked, in use, reserved)."),
    "pool_available": ("connections_idle", "Idle connections ready to be borrowed."),
    "pool_active": ("connections_active", "Connections borrowed by callers."),
    "requests_waiting": ("connections_pending", "Callers waiting for a connection."),
    "pool_max": ("connections_max", "Configured max_size."),
    "pool_min": ("connections_min", "Configured min_idle."),
    "pool_parked": ("connections_parked", "Connections parked for a thread's lease."),
    "connections_opening": ("connections_opening", "Connection attempts under way."),
    "connections_opened_last_hour": (
        "connections_opened_last_hour", "Connections opened in the last hour (churn)."),
}

# stats key -> (metric name without prefix and without _total, help). Monotonic counters.
_COUNTERS: dict[str, tuple[str, str]] = {
    "requests_num": ("connections_requests", "Connection requests (borrows attempted)."),
    "requests_queued": ("connections_requests_queued", "Requests that had to wait."),
    "requests_timeouts": ("connections_timeout", "Requests that timed out waiting (max_wait)."),
    "requests_rejected": ("connections_requests_rejected",
                          "Requests turned away: max_waiting callers already waited, or the "
                          "pool was closed."),
    "handoffs_num": ("connections_handoffs", "Connections handed directly to a waiter."),
    "lease_parks_num": ("connections_lease_parks", "Connections parked for a thread's lease."),
    "lease_reuses_num": ("connections_lease_reuses", "Borrows served from a thread's lease."),
    "returns_num": ("connections_returns", "Connections given back."),
    "connections_num": ("connections_created", "Physical connections opened."),
    "connections_errors": ("connections_create_errors", "Failed connection attempts."),
    "validations_num": ("connections_validations", "Pings on borrow."),
    "keepalives_num": ("connections_keepalives", "Keepalive pings of idle connections."),
    "leaks_detected": ("connections_leaks_detected",
                       "Checkouts held past leak_threshold (possible leaks)."),
    "leaks_returned": ("connections_leaks_returned",
                       "Reported leaks that came back late ('unleaked')."),
    "abandoned_reclaimed": ("connections_abandoned",
                            "Checkouts reclaimed after abandoned_timeout."),
    "orphans_returned": ("connections_orphans_returned",
                         "Checkouts garbage-collected without being returned."),
}

# Keys folded into other series (histograms, the reason label) or duplicates of one.
_CONSUMED = frozenset({
    "histogram_bounds_ms", "wait_ms_histogram", "usage_ms_histogram", "requests_wait_ms",
    "usage_ms", "connections_ms", "connections_lost",
})
_CLOSED_PREFIX = "connections_closed_"
_NAME_OK = re.compile(r"[^a-zA-Z0-9_]")
# Hook keys (SQL statistics, query timeouts, statement caches) are exported by their names:
# a key is a gauge when one of its words says it is a level, else a counter.
_GAUGE_WORDS = frozenset({"now", "running", "bytes", "budget", "max", "min", "entries",
                          "statements", "fingerprints", "supported", "pending", "size",
                          "current", "open", "idle", "active", "waiting", "threads", "fraction",
                          "percent", "limit", "enabled"})
# Hook keys given a clearer name than the generic rule would.
_RENAMED: dict[str, str] = {
    "timeouts_raised_num": "query_timeouts",
    "timeouts_entries_now": "query_timeouts_pending",
    "sql_ms": "sql_time_seconds",
}
PoolSource = Any  # a pool, an iterable of pools, or a zero-argument callable returning one


class _HeldWeakly:
    """Pools given to a collector once (one, or a list): held weakly, so a registered collector
    never keeps a pool alive, and a closed pool leaves the scrape (its series go with it)."""

    __slots__ = ("_strong", "_weak")

    def __init__(self, pools: list[Any]) -> None:
        self._weak: list[weakref.ref[Any]] = []
        self._strong: list[Any] = []  # stand-ins without weak references: held as given
        for pool in pools:
            try:
                self._weak.append(weakref.ref(pool))
            except TypeError:
                self._strong.append(pool)

    def __call__(self) -> list[Any]:
        return [p for p in [ref() for ref in self._weak] + self._strong
                if p is not None and not getattr(p, "closed", False)]


def _pools(source: PoolSource) -> list[Any]:
    if callable(source) and not hasattr(source, "stats"):
        source = source()
    if hasattr(source, "stats"):
        return [source]
    return list(source)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def _extra_name(key: str) -> tuple[str, str, float]:
    """Name, kind ("counter" | "gauge") and scale for a stats key not listed above.

    Hooks add their own keys to ``pool.stats()``; their names carry their unit (``_ms``,
    ``_bytes``, ``_num``), which decides the exported name: ``_ms`` becomes ``_seconds``
    (scaled), a ``_num`` / ``_total`` / ``_count`` suffix goes (counters get ``_total``).
    """
    name = _NAME_OK.sub("_", key).strip("_").lower()
    scale = 0.001 if name.endswith("_ms") else 1.0
    words = set(name.split("_"))
    kind = "gauge" if words & _GAUGE_WORDS else "counter"
    if key in _RENAMED:
        return _RENAMED[key], kind, scale
    if name.endswith("_ms"):
        name = name[:-3] + "_seconds"
    elif name.endswith("_s"):
        name = name[:-2] + "_seconds"
    for suffix in ("_num", "_total", "_count"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name, kind, scale


def _buckets(bounds_ms: list[float], counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts over ``bounds_ms`` (last bucket open-ended) to cumulative ``le`` pairs."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(bounds_ms, counts, strict=False):
        running += int(n)
        out.append((_le(bound / 1000.0), float(running)))
    running += sum(int(n) for n in counts[len(bounds_ms):])
    out.append(("+Inf", float(running)))
    return out


def _le(seconds: float) -> str:
    return f"{seconds:g}"


class PoolCollector:
    """A ``prometheus_client`` collector over pools, reading ``pool.stats()`` at each scrape.

    ``pools``: a pool, a list of pools, or a zero-argument callable returning them (e.g.
    :func:`poolkeeper.observe.registered_pools`), read at each scrape. ``ledger``: a
    :class:`~poolkeeper.observe.memory.MemoryLedger` whose total bytes are exported as
    ``poolkeeper_ledger_bytes`` (pass ``None`` to leave it out).
    """

    def __init__(self, pools: PoolSource, *, ledger: Any = "default") -> None:
        if hasattr(pools, "stats"):
            pools = _HeldWeakly([pools])
        elif isinstance(pools, list | tuple):
            pools = _HeldWeakly(list(pools))
        self._source = pools
        if ledger == "default":
            try:
                from .observe.memory import LEDGER
            except Exception:  # noqa: BLE001 - the ledger is optional; metrics still work
                ledger = None
            else:
                ledger = LEDGER
        self._ledger = ledger
        #: scrapes in which a pool's stats() raised (that pool is left out of the scrape)
        self.errors = 0

    def describe(self) -> list[Any]:
        # Returning nothing keeps registration from running a full collect() up front.
        return []

    def collect(self) -> Iterator[Any]:
        """Yield the metric families (called by prometheus_client at scrape time)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            SummaryMetricFamily,
        )

        families: dict[str, Any] = {}

        def family(kind: str, name: str, doc: str, labels: tuple[str, ...] = ("pool",)) -> Any:
            full = _PREFIX + name
            fam = families.get(full)
            if fam is None:
                cls = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily,
                       "histogram": HistogramMetricFamily, "summary": SummaryMetricFamily}[kind]
                fam = cls(full, doc, labels=list(labels))
                families[full] = fam
            return fam

        seen: dict[str, int] = {}
        for pool in _pools(self._source):
            try:
                stats = dict(pool.stats())
            except Exception:  # noqa: BLE001 - one failing pool must not hide the others
                self.errors += 1
                continue
            name = str(getattr(pool, "name", "") or "pool")
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:  # two pools with one name: keep the series distinct
                name = f"{name}-{seen[name]}"
            self._collect_pool(name, stats, family)
        if self._ledger is not None:
            from .observe.memory import counted_bytes

            try:
                entries = list(self._ledger.entries())
            except Exception:  # noqa: BLE001 - a broken ledger provider is reported there
                entries = []
            used = family("gauge", "ledger_bytes",
                          "Bytes held by poolkeeper's bounded structures (memory ledger).", ())
            used.add_metric([], float(counted_bytes(entries)))
            budget = family("gauge", "ledger_budget_bytes",
                            "Sum of the byte budgets of the memory ledger's structures.", ())
            budget.add_metric([], float(sum(e.budget_bytes or 0 for e in entries)))
        errors = family("counter", "scrape_errors",
                        "Scrapes in which a pool's stats() raised.", ())
        errors.add_metric([], float(self.errors))
        yield from families.values()

    @staticmethod
    def _collect_pool(name: str, stats: Mapping[str, Any],
                      family: Callable[..., Any]) -> None:
        labels = [name]
        for key, (metric, doc) in _GAUGES.items():
            value = _number(stats.get(key))
            if value is not None:
                family("gauge", metric, doc).add_metric(labels, value)
        for key, (metric, doc) in _COUNTERS.items():
            value = _number(stats.get(key))
            if value is not None:
                family("counter", metric, doc).add_metric(labels, value)
        bounds = list(stats.get("histogram_bounds_ms") or ())
        for key, total_key, metric, doc in (
                ("wait_ms_histogram", "requests_wait_ms", "connections_acquire_seconds",
                 "Time callers waited for a connection."),
                ("usage_ms_histogram", "usage_ms", "connections_usage_seconds",
                 "Time connections were held by callers, borrow to return.")):
            counts = stats.get(key)
            if bounds and isinstance(counts, list | tuple):
                total_s = (_number(stats.get(total_key)) or 0.0) / 1000.0
                family("histogram", metric, doc).add_metric(
                    labels, _buckets(bounds, list(counts)), total_s)
        created = _number(stats.get("connections_num"))
        creating_ms = _number(stats.get("connections_ms"))
        if created is not None and creating_ms is not None:
            family("summary", "connections_creation_seconds",
                   "Time spent opening physical connections.").add_metric(
                labels, created, creating_ms / 1000.0)
        closed = family("counter", "connections_closed",
                        "Physical connections closed, by reason.", ("pool", "reason"))
        for key, value in stats.items():
            if key.startswith(_CLOSED_PREFIX):
                number = _number(value)
                if number is not None:
                    closed.add_metric([name, key[len(_CLOSED_PREFIX):]], number)
        for key, value in stats.items():
            if key in _GAUGES or key in _COUNTERS or key in _CONSUMED \
                    or key.startswith(_CLOSED_PREFIX):
                continue
            number = _number(value)
            if number is None:
                continue
            metric, kind, scale = _extra_name(key)
            if not metric:
                continue
            family(kind, metric, f"pool.stats()[{key!r}]").add_metric(labels, number * scale)


def register(pools: PoolSource, registry: Any = None, **kwargs: Any) -> PoolCollector:
    """Register a :class:`PoolCollector` (default registry: ``prometheus_client.REGISTRY``)."""
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    collector = PoolCollector(pools, **kwargs)
    registry.register(collector)
    return collector


def exposition(pools: PoolSource, **kwargs: Any) -> bytes:
    """The Prometheus text exposition of ``pools`` (what ``/metrics`` serves).

    Raises ImportError naming the extra to install when prometheus-client is missing.
    """
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError as exc:
        raise ImportError("Prometheus metrics need prometheus-client: "
                          "pip install 'poolkeeper[metrics]'") from exc
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(pools, **kwargs))
    return bytes(generate_latest(registry))


def metric_names(text: str | bytes) -> set[str]:
    """The sample names in an exposition (for tests and ``doctor``-style checks)."""
    if isinstance(text, bytes):
        text = text.decode()
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names
