"""The statistics execute hook: times each statement and records it under its fingerprint.

Install it on a pool (``pool.add_hook(StatsHook.from_config(pool.config, pool.driver.name))``);
the pool calls ``wrap(inner)`` once when the hook chain is built, and the returned function for
every ``execute`` / ``executemany``. Per statement it costs a fingerprint-cache lookup (the text
is parsed only the first time it is seen, and a hit takes no lock), two ``perf_counter``
calls and two acquisitions of the registry's lock; when the connection runs the same text as
its last statement, one acquisition, and none when it is also the statement's only execution
running (the solo path, see ``wrap``). With ``registry.enabled`` False it only checks that
flag.
"""

from __future__ import annotations

import dis
import inspect
from bisect import bisect_left
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from .fingerprint import FingerprintCache
from .stats import _BOUNDS_S, INFLIGHT_PAD, SqlStatsRegistry

if TYPE_CHECKING:
    from ..config import PoolConfig
    from .stmtcache import AdaptiveFetchSize

__all__ = ["MEMO_MAX_BYTES", "ROWCOUNT_FIELD", "STREAMS", "Execute", "StatsHook", "cursor_kind",
           "query_text"]

#: (cursor proxy, driver cursor, query, params, many) -> driver result; see poolkeeper.proxy
Execute = Callable[[Any, Any, Any, Any, bool], Any]

#: Longest statement text remembered per connection (``Slot.stats_memo``): the memo keeps the
#: text alive while the connection lives, so a 10 MB batch statement is never kept.
MEMO_MAX_CHARS = 1024
#: Statement texts remembered per connection, the oldest forgotten first: enough for the
#: statements a unit of work repeats (at most 8 x 1 KiB of text per connection).
MEMO_MAX_TEXTS = 8
#: What one connection's memo can keep alive at most, for ``poolkeeper doctor``: 8 texts of
#: 1 KiB (ASCII) and their entries, evicted from the registry meanwhile (an entry and its
#: fingerprint, at most as long as the text). Usually far less: the texts are most often the
#: application's own string constants, and entries still in the registry are counted there.
MEMO_MAX_BYTES = MEMO_MAX_TEXTS * (2 * (MEMO_MAX_CHARS + 49)
                                   + SqlStatsRegistry.ENTRY_OVERHEAD_BYTES)


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
        solo_detached = registry.solo_detached
        bounds = _BOUNDS_S
        first, second = bounds[0], bounds[1]
        fetch = self.fetch
        inflight_pad = INFLIGHT_PAD
        # What each driver cursor class needs, as (streams, rowcount field) from cursor_kind(),
        # so that the usual cursor costs a dict lookup rather than a hasattr() and a property
        # call per statement (two booleans: CPython 3.11 does not specialise `int & int`).
        kinds: dict[type, tuple[bool, bool]] = {}

        def execute(cursor: Any, raw: Any, query: Any, params: Any, many: bool) -> Any:
            if not registry._enabled:
                return inner(cursor, raw, query, params, many)
            # The statements run last on this connection, with their entries: one run again
            # skips the fingerprint cache, the registry's key lookup and the lock.
            try:
                slot = cursor._slot
                memo = slot.stats_memo
            except AttributeError:  # not one of the pool's cursors (a test, a custom chain)
                slot = memo = None
            entry: Any = None
            running = 0  # counted here on the memo path; begin() takes its own maximum
            # (a pool may run two statistics hooks: each checks the memo is its own)
            if memo is not None and memo[0] is registry:
                try:  # noqa: SIM105 - a `with` per statement costs more
                    entry = memo[1][query]
                except (KeyError, TypeError):  # not remembered; or unhashable (sql.Composed)
                    pass
            if entry is not None:
                # begin() without its lock, as the statement cache's hit: list.append and
                # move_to_end are each atomic under the GIL.
                inflight = entry.inflight
                inflight.append(None)
                running = len(inflight) - inflight_pad
                # Checked after the append: an eviction or reset marks the entry detached,
                # then reads whether it runs (registry._detach), so either this sees the mark
                # or the registry counts this execution in "running" until it ends.
                if entry.detached:  # evicted since: look it up again below
                    inflight.pop()
                    memo[1].pop(query, None)
                    entry = None
                elif registry._last is not entry:  # already last in LRU order otherwise
                    registry._last = entry
                    try:  # noqa: SIM105 - contextlib.suppress costs a `with` per statement
                        move_to_end(entry.fingerprint)  # keeps the LRU order exact
                    except KeyError:
                        pass
            if entry is None:
                if type(query) is str:
                    entry = begin(fingerprint(query))
                    if slot is not None and len(query) <= MEMO_MAX_CHARS:
                        if memo is None or memo[0] is not registry:
                            slot.stats_memo = memo = (registry, {})
                        texts = memo[1]
                        if len(texts) >= MEMO_MAX_TEXTS:  # forget the oldest (None: raced)
                            texts.pop(next(iter(texts), None), None)
                        texts[query] = entry
                else:
                    entry = begin(fingerprint(query_text(query, raw)))
            cls = type(raw)  # type(): specialised; `raw.__class__` is a descriptor call
            try:
                streams, field = kinds[cls]
            except KeyError:
                kind = cursor_kind(raw)
                streams, field = bool(kind & STREAMS), bool(kind & ROWCOUNT_FIELD)
                if len(kinds) < 64:  # a cache: a 65th driver class is classified per statement
                    kinds[cls] = (streams, field)
            if streams and fetch is not None:  # psycopg's server-side cursors
                raw.itersize = fetch.fetch_size(entry.fingerprint)
            start = perf_counter()
            try:
                result = inner(cursor, raw, query, params, many)
            except BaseException as exc:
                end(entry, perf_counter() - start, -1, exc, params, many, running)
                raise
            stop = perf_counter()  # also the entry's last-execution stamp
            elapsed = stop - start
            # DB-API rowcount (-1: unknown). Whether it counts rows returned or changed is
            # decided once per fingerprint: reading psycopg's `description` builds objects.
            if field:  # psycopg's int field behind its rowcount property
                rows = raw._rowcount
            else:
                try:
                    rows = raw.rowcount
                except Exception:  # noqa: BLE001 - a closed or exotic cursor: rows unknown
                    rows = -1
                if type(rows) is not int:
                    rows = -1
            slow_s = registry._slow_s
            slow = slow_s is not None and elapsed >= slow_s
            grew = False
            if running == 1:
                # Solo: this statement's only execution running when it began (the memo path
                # counted it above). Its item stays in `inflight` until the very end, so any
                # execution beginning meanwhile counts 2 or more and takes the lock instead:
                # at most one solo writer per entry at a time, and the solo counters need no
                # lock. Readers add them to the locked ones, under the lock (about 1,000
                # instructions saved per statement, a sixth of this hook). The locked branch
                # below writes the same figures into the locked counters: written out twice,
                # as a shared function would cost a Python call (tests/test_sql_stats.py runs
                # both against registry.record()).
                entry.s_executions += 1
                entry.s_total_s += elapsed
                if elapsed < entry.s_min_s:  # noqa: PLR1730
                    entry.s_min_s = elapsed
                if elapsed > entry.s_max_s:  # noqa: PLR1730
                    entry.s_max_s = elapsed
                entry.s_histogram[(0 if elapsed <= first else 1) if elapsed <= second
                                  else bisect_left(bounds, elapsed)] += 1
                entry.s_last_exec = stop
                if rows > 0:
                    if entry.returns_rows:
                        entry.s_rows_fetched += rows
                        if rows > entry.s_rows_max:
                            entry.s_rows_max = rows
                            grew = rows > entry.rows_max
                    else:
                        entry.s_rows_affected += rows
                if slow:
                    entry.s_slow += 1
                # Before the pop: evicted or reset meanwhile, the registry took the solo
                # counters while this execution still counted as running, and this adds
                # what it wrote after (once, under the lock).
                if entry.detached:
                    solo_detached(entry)
                entry.inflight.pop()
            else:
                acquire()
                try:
                    entry.inflight.pop()
                    if entry.detached:
                        end_detached(entry, elapsed, rows, slow)
                    else:
                        if running > entry.running_max:  # noqa: PLR1730
                            entry.running_max = running
                        entry.executions += 1
                        entry.total_s += elapsed
                        if elapsed < entry.min_s:  # noqa: PLR1730 - cheaper than min()
                            entry.min_s = elapsed
                        if elapsed > entry.max_s:  # noqa: PLR1730
                            entry.max_s = elapsed
                        # Most statements land in the first two buckets: two float compares
                        # cost a tenth of bisect_left's call (bucket i: bounds[i-1] < x <=
                        # bounds[i]).
                        entry.histogram[(0 if elapsed <= first else 1) if elapsed <= second
                                        else bisect_left(bounds, elapsed)] += 1
                        entry.last_exec = stop
                        if rows > 0:
                            if entry.returns_rows:
                                entry.rows_fetched += rows
                                if rows > entry.rows_max:
                                    entry.rows_max = rows
                                    grew = rows > entry.s_rows_max
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


#: cursor_kind() bits: the cursor streams (psycopg's server-side cursors: ``itersize``)
STREAMS = 1
#: ``rowcount`` is a Python property that only returns ``self._rowcount`` (psycopg): reading
#: the field spares a Python call per statement
ROWCOUNT_FIELD = 2


def cursor_kind(raw_cursor: Any) -> int:
    """What the statistics hook needs to know of a driver cursor's class (bits above)."""
    kind = STREAMS if hasattr(raw_cursor, "itersize") else 0
    prop = inspect.getattr_static(type(raw_cursor), "rowcount", None)
    if isinstance(prop, property) and _returns_int_field(prop.fget, "_rowcount") \
            and type(getattr(raw_cursor, "_rowcount", None)) is int:
        kind |= ROWCOUNT_FIELD
    return kind


def _returns_int_field(getter: Any, name: str) -> bool:
    """Whether ``getter`` is exactly ``def f(self): return self.<name>``: checked on its
    bytecode, so that a driver release computing the value differently is read through the
    property again rather than through a field that no longer means the same."""
    code = getattr(getter, "__code__", None)
    if code is None or code.co_argcount != 1:
        return False
    ops = [(i.opname, i.argval) for i in dis.get_instructions(getter)
           if i.opname not in ("RESUME", "CACHE", "NOP")]
    this = code.co_varnames[0]
    return ops == [("LOAD_FAST", this), ("LOAD_ATTR", name), ("RETURN_VALUE", None)]


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
