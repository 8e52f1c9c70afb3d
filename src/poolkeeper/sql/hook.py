"""The statistics execute hook: times each statement and records it under its fingerprint.

Install it on a pool (``pool.add_hook(StatsHook.from_config(pool.config, pool.driver.name))``);
the pool calls ``wrap(inner)`` once when the hook chain is built, and the returned function for
every ``execute`` / ``executemany``. Per statement it costs a fingerprint-cache lookup (the text
is parsed only the first time it is seen, and a hit takes no lock), two acquisitions of the
registry's lock and two ``perf_counter`` calls. With ``registry.enabled`` False it only checks
that flag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any

from .fingerprint import FingerprintCache
from .stats import SqlStatsRegistry

if TYPE_CHECKING:
    from ..config import PoolConfig
    from .stmtcache import AdaptiveFetchSize

__all__ = ["Execute", "StatsHook", "query_text"]

#: (cursor proxy, driver cursor, query, params, many) -> driver result; see poolkeeper.proxy
Execute = Callable[[Any, Any, Any, Any, bool], Any]


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
        registry = self.registry
        fingerprint = self.cache.fingerprint
        begin = registry.begin
        end = registry.end
        end_ok = registry._end_ok
        fetch = self.fetch
        # AdaptiveFetchSize.observe's lock-free early exit, inlined: a fingerprint's value
        # only grows while it is held, so a value >= rows leaves nothing to learn.
        seen: Mapping[str, tuple[int, int]] = fetch._seen._map if fetch is not None else {}

        def execute(cursor: Any, raw: Any, query: Any, params: Any, many: bool) -> Any:
            if not registry._enabled:
                return inner(cursor, raw, query, params, many)
            fp = fingerprint(query if type(query) is str else query_text(query, raw))
            if fetch is not None and hasattr(raw, "itersize"):
                raw.itersize = fetch.fetch_size(fp)  # psycopg server-side cursors
            entry = begin(fp)
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
                count = raw.rowcount
            except Exception:  # noqa: BLE001 - a closed or exotic cursor: rows unknown
                count = -1
            if type(count) is not int:
                count = -1
            end_ok(entry, elapsed, count, stop, params, many)
            if fetch is not None and count >= 0 and entry.returns_rows:
                known = seen.get(fp)
                if known is None or count > known[0]:
                    fetch.observe(fp, count)
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
