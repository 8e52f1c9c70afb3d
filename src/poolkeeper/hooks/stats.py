"""The statistics hook: times each statement and records it under its fingerprint.

Installed by every pool (``pool.add_hook(StatsHook.from_config(pool.config))`` for a second
one). ``before`` finds the statement's entry and takes the start time; ``after`` records the
time, the driver's row count (``Driver.rowcount``) and the error, if any. Per statement it
costs a look in the connection's memo of its last texts (a hit skips the fingerprint cache),
else a fingerprint-cache lookup (a text is parsed only the first time it is seen), two
``perf_counter`` calls and two acquisitions of the registry's lock (``begin`` / ``end``).
With ``registry.enabled`` False it only checks that flag.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

from ..sql.fingerprint import FingerprintCache
from ..sql.querytext import MEMO_MAX_CHARS, MEMO_MAX_TEXTS, remember
from ..sql.stats import SqlStatsRegistry
from .context import StatementContext

if TYPE_CHECKING:
    from ..config import PoolConfig
    from .fetchsize import AdaptiveFetchSize

__all__ = ["MEMO_MAX_BYTES", "StatsHook"]

#: What one connection's memo can keep alive at most, for ``poolkeeper doctor``: 8 texts of
#: 1 KiB (ASCII) and their entries, evicted from the registry meanwhile (an entry and its
#: fingerprint, at most as long as the text). Usually far less: the texts are most often the
#: application's own string constants, and entries still in the registry are counted there.
MEMO_MAX_BYTES = MEMO_MAX_TEXTS * (2 * (MEMO_MAX_CHARS + 49)
                                   + SqlStatsRegistry.ENTRY_OVERHEAD_BYTES)


class StatsHook:
    """Statement hook recording per-fingerprint statistics into a :class:`SqlStatsRegistry`.

    ``cache``: the fingerprint cache (one per pool; its dialect decides how text is read).
    ``fetch``: an optional :class:`~poolkeeper.hooks.fetchsize.AdaptiveFetchSize`; the hook
    sizes streaming cursors' fetch from it before they run (``Driver.set_fetch_size``) and
    teaches it the rows every statement returned.

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

        ``driver``: the dialect's name (``pool.driver.name``). The fingerprint cache gets an
        eighth of ``stats_max_bytes`` (at least 64 KiB), so the two structures together stay
        within ~1.125x the configured statistics budget.
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

    # ------------------------------------------------------------------ per statement
    def before(self, ctx: StatementContext) -> Any:
        registry = self.registry
        if not registry.enabled:
            return None
        query = ctx.query
        # The statements run recently on this connection, with their entries: one run again
        # skips the fingerprint cache and the registry's key lookup.
        texts = ctx.memo.get(self)
        entry: Any = None
        if texts is not None:
            try:  # noqa: SIM105 - a `with contextlib.suppress` costs ~0.3 us per statement
                entry = texts.get(query)
            except TypeError:  # unhashable (psycopg's sql.Composed)
                pass
            if entry is not None and not registry.resume(entry):
                del texts[query]  # evicted or reset since: looked up again below
                entry = None
        if entry is None:
            if type(query) is str:
                entry = registry.begin(self.cache.fingerprint(query))
                if texts is None:
                    texts = ctx.memo[self] = {}
                remember(texts, query, entry)
            else:
                text = ctx.driver.query_text(query, ctx.cursor)
                entry = registry.begin(self.cache.fingerprint(text))
        fetch = self.fetch
        cursor = ctx.cursor
        if fetch is not None and isinstance(cursor, ctx.driver.streaming_cursor_types):
            ctx.driver.set_fetch_size(cursor, fetch.fetch_size(entry.fingerprint))
        return entry, perf_counter()

    def after(self, ctx: StatementContext, token: Any, result: Any,
              error: BaseException | None) -> None:
        if token is None:
            return
        entry, start = token
        elapsed = perf_counter() - start
        # DB-API rowcount (-1: unknown). Whether it counts rows returned or changed is decided
        # once per fingerprint: reading psycopg's `description` builds objects.
        rows = -1 if error is not None else ctx.driver.rowcount(ctx.cursor)
        if rows < 0 and error is None and ctx.cursor is None:
            rows = ctx.result_rows(result)  # no cursor (asyncpg): the rows from the result
        grew = self.registry.end(entry, elapsed, rows, error, ctx.params, ctx.many)
        # The fetch size learns each statement's most rows; the entry keeps the same
        # maximum, so only an execution that raised it has anything to teach.
        if grew and self.fetch is not None:
            self.fetch.observe(entry.fingerprint, rows)

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
