"""The statistics execute hook: times each statement and records it under its fingerprint.

Install it on a pool (``pool.add_hook(StatsHook.from_config(pool.config, pool.driver.name))``);
the pool calls ``wrap(inner)`` once when the hook chain is built, and the returned function for
every ``execute`` / ``executemany``. Per statement it costs a fingerprint-cache lookup (the text
is parsed only the first time it is seen, and a hit takes no lock), two acquisitions of the
registry's lock and two ``perf_counter`` calls. With ``registry.enabled`` False it only checks
that flag.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from .fingerprint import FingerprintCache
from .stats import _BOUNDS_S, SqlStatsRegistry

if TYPE_CHECKING:
    from ..config import PoolConfig
    from .stmtcache import AdaptiveFetchSize

__all__ = ["Execute", "StatsHook", "query_text"]

#: (cursor proxy, driver cursor, query, params, many) -> driver result; see poolkeeper.proxy
Execute = Callable[[Any, Any, Any, Any, bool], Any]

#: Longest statement text remembered per connection (``Slot.stats_memo``): the memo keeps the
#: text alive while the connection lives, so a 10 MB batch statement is never kept.
MEMO_MAX_CHARS = 1024


class StatsHook:
    """Execute hook recording per-fingerprint statistics into a :class:`SqlStatsRegistry`.

    ``cache``: the fingerprint cache (one per pool; its dialect decides how text is read).
    ``fetch``: an optional :class:`~poolkeeper.sql.stmtcache.AdaptiveFetchSize`; the hook
    sizes server-side cursors' ``itersize`` from it before they run and teaches it the rows
    every statement returned.

    Example::

        hook = StatsHook(SqlStatsRegistry(max_bytes=1 << 20), dialect="postgresql")
        pool.add_hook(hook)
        ...
        hook.sql_stats()["statements"]
    """

    def __init__(self, registry: SqlStatsRegistry | None = None,
                 cache: FingerprintCache | None = None, *, dialect: str | None = None,
                 fetch: AdaptiveFetchSize | None = None) -> None:
        self.registry = registry if registry is not None else SqlStatsRegistry()
        self.cache = cache if cache is not None else FingerprintCache(dialect=dialect)
        self.fetch = fetch

    @classmethod
    def from_config(cls, config: PoolConfig, driver: str | None = None,
                    fetch: AdaptiveFetchSize | None = None) -> StatsHook:
        """A hook sized from the pool's options (``stats``, ``stats_max_bytes``, ...).

        The fingerprint cache gets an eighth of ``stats_max_bytes`` (at least 64 KiB), so the
        two structures together stay within ~1.125x the configured statistics budget.
        """
        registry = SqlStatsRegistry(
            max_bytes=config.stats_max_bytes, max_entries=config.stats_max_entries,
            enabled=config.stats, slow_query_ms=config.slow_query_ms,
            log_params=config.log_params, name=config.name)
        cache = FingerprintCache(max_entries=max(64, config.stats_max_entries // 4),
                                 max_bytes=max(64 << 10, config.stats_max_bytes // 8),
                                 dialect=driver)
        return cls(registry, cache, fetch=fetch)

    @property
    def enabled(self) -> bool:
        """Whether statements are recorded; switch at runtime."""
        return self.registry.enabled

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self.registry.enabled = on

    def wrap(self, inner: Execute) -> Execute:
        # The per-statement path, written as one frame: a Python call costs ~600 instructions
        # here, as much as everything the registry does for a statement, so begin() and the
        # success half of end() are inlined below (keep them in step with
        # SqlStatsRegistry.begin / end; tests/test_sql_stats.py compares the two).
        registry = self.registry
        fingerprint = self.cache.fingerprint
        begin = registry.begin
        end = registry.end
        lock = registry._lock
        acquire = lock.acquire  # acquire/release rather than `with`: see registry.begin()
        release = lock.release
        move_to_end = registry._entries.move_to_end
        end_detached = registry._end_detached
        bounds = _BOUNDS_S
        first, second = bounds[0], bounds[1]
        fetch = self.fetch
        # Driver cursor types found not to stream (no `itersize`), so that the usual cursor
        # costs a set lookup rather than a failed hasattr() per statement.
        plain_cursors: set[type] = set()

        def execute(cursor: Any, raw: Any, query: Any, params: Any, many: bool) -> Any:
            if not registry._enabled:
                return inner(cursor, raw, query, params, many)
            # The statement run last on this connection, with its entry: a loop running the
            # same text skips the fingerprint cache and the registry's key lookup.
            try:
                slot = cursor._slot
                memo = slot.stats_memo
            except AttributeError:  # not one of the pool's cursors (a test, a custom chain)
                slot = memo = None
            entry: Any = None
            # (a pool may run two statistics hooks: each checks the memo is its own)
            if memo is not None and memo[0] == query and memo[2] is registry:
                entry = memo[1]
                acquire()
                if entry.detached:  # evicted since: look it up again below
                    entry = None
                else:
                    move_to_end(entry.fingerprint)  # keeps the LRU order exact
                    running = entry.running = entry.running + 1
                    if running > entry.running_max:  # noqa: PLR1730 - cheaper than max()
                        entry.running_max = running
                release()
            if entry is None:
                if type(query) is str:
                    entry = begin(fingerprint(query))
                    if slot is not None and len(query) <= MEMO_MAX_CHARS:
                        slot.stats_memo = (query, entry, registry)
                else:
                    entry = begin(fingerprint(query_text(query, raw)))
            if fetch is not None and raw.__class__ not in plain_cursors:
                if hasattr(raw, "itersize"):  # psycopg's server-side cursors
                    raw.itersize = fetch.fetch_size(entry.fingerprint)
                elif len(plain_cursors) < 64:
                    plain_cursors.add(raw.__class__)
            start = perf_counter()
            try:
                result = inner(cursor, raw, query, params, many)
            except BaseException as exc:
                end(entry, perf_counter() - start, -1, exc, params, many)
                raise
            stop = perf_counter()  # also the entry's last-execution stamp
            elapsed = stop - start
            # DB-API rowcount (-1: unknown). Whether it counts rows returned or changed is
            # decided once per fingerprint: reading psycopg's `description` builds objects.
            try:
                rows = raw.rowcount
            except Exception:  # noqa: BLE001 - a closed or exotic cursor: rows unknown
                rows = -1
            if type(rows) is not int:
                rows = -1
            slow_s = registry._slow_s
            slow = slow_s is not None and elapsed >= slow_s
            grew = False
            acquire()
            try:
                entry.running -= 1
                if entry.detached:
                    end_detached(entry, elapsed, rows, slow)
                else:
                    entry.executions += 1
                    entry.total_s += elapsed
                    if elapsed < entry.min_s:  # noqa: PLR1730 - a branch is cheaper than min()
                        entry.min_s = elapsed
                    if elapsed > entry.max_s:  # noqa: PLR1730
                        entry.max_s = elapsed
                    # Most statements land in the first two buckets: two float compares cost
                    # a tenth of bisect_left's call (bucket i: bounds[i-1] < x <= bounds[i]).
                    entry.histogram[(0 if elapsed <= first else 1) if elapsed <= second
                                    else bisect_left(bounds, elapsed)] += 1
                    entry.last_exec = stop
                    if rows > 0:
                        if entry.returns_rows:
                            entry.rows_fetched += rows
                            if rows > entry.rows_max:
                                entry.rows_max = rows
                                grew = True
                        else:
                            entry.rows_affected += rows
                    if slow:
                        entry.slow += 1
            finally:
                release()
            if slow:
                registry._log_slow(entry.fingerprint, elapsed, rows, entry.returns_rows, None,
                                   params, many)
            # The fetch size learns each statement's most rows; the entry keeps the same
            # maximum, so only an execution that raised it has anything to teach.
            if grew and fetch is not None:
                fetch.observe(entry.fingerprint, rows)
            return result

        return execute

    # ------------------------------------------------------------------ reading
    def stats(self, reset: bool = False) -> dict[str, Any]:
        """Flat ``sql_*`` counters for ``pool.stats()`` (the pool merges every hook's)."""
        out = self.registry.stats(reset)
        cache = self.cache.stats()
        out["sql_fingerprint_cache_entries"] = cache["entries"]
        out["sql_fingerprint_cache_bytes"] = cache["bytes"]
        out["sql_fingerprint_cache_hits"] = cache["hits"]
        out["sql_fingerprint_cache_misses"] = cache["misses"]
        out["sql_fingerprint_cache_evictions"] = cache["evictions"]
        out["sql_fingerprint_cache_uncacheable"] = cache["uncacheable"]
        return out

    def sql_stats(self, limit: int | None = None) -> dict[str, Any]:
        """The registry's snapshot, plus the fingerprint cache's counters and fetch sizes."""
        return self._decorate(self.registry.snapshot(limit))

    def pop_sql_stats(self, limit: int | None = None) -> dict[str, Any]:
        """Snapshot and reset (log-and-reset)."""
        return self._decorate(self.registry.pop(limit))

    def _decorate(self, data: dict[str, Any]) -> dict[str, Any]:
        data["fingerprint_cache"] = self.cache.stats()
        fetch = self.fetch
        if fetch is not None:
            for s in data["statements"]:
                s["fetch_size"] = fetch.current(s["fingerprint"])
            data["fetch"] = fetch.stats()
        return data


def query_text(query: Any, raw_cursor: Any = None) -> str:
    """The SQL text of a query object: ``str``, ``bytes``, or a composed query (psycopg's
    ``sql.Composed`` renders with ``as_string``; its literals are folded by the fingerprint).
    Never ``repr()``, which could show literal values."""
    if isinstance(query, str):
        return query
    if isinstance(query, bytes | bytearray | memoryview):
        return bytes(query).decode("utf-8", "replace")
    as_string = getattr(query, "as_string", None)
    if as_string is not None:
        try:
            return str(as_string(getattr(raw_cursor, "connection", None)))
        except Exception:  # noqa: BLE001 - a query we cannot render is still counted
            pass
    return f"<{type(query).__name__} query>"
