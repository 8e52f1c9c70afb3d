"""Per-fingerprint SQL statistics, bounded in bytes and entries, with a slow-statement log.

Druid's ``sqlStatMap`` kept 1,000 entries keyed by raw SQL and counted the ones it dropped
(``skipSqlCount``); 1,000 entries of 2 MB statements are 2 GB, so a count is not a bound. This
registry is keyed by :func:`~poolkeeper.sql.fingerprint.fingerprint` (literals folded, lists
collapsed), and bounded twice: by ``max_entries`` and by ``max_bytes``, an estimate of what the
entries hold (see :data:`SqlStatsRegistry.ENTRY_OVERHEAD_BYTES`). The least recently executed
entries go first; ``evictions`` and ``evicted_executions`` say what was dropped.

Per fingerprint: executions, errors by exception class, total / min / max time, a latency
histogram with fixed bounds (:data:`HISTOGRAM_BOUNDS_MS`), rows fetched and affected, the most
rows one execution returned, the most concurrent executions, the time of the last execution and
the last error (exception class and the first line of its message with quoted text folded, so
no parameter value is kept). Pool-level totals survive eviction: they are derived when read
(live entries + what evicted entries carried), so the hot path updates only its own entry.

Example::

    reg = SqlStatsRegistry(max_bytes=1 << 20, slow_query_ms=500)
    entry = reg.begin("SELECT * FROM t WHERE id = ?")
    ...  # run the statement
    reg.end(entry, 0.0021, rows=1)
    reg.snapshot()["statements"][0]["executions"]   # 1

Cost on the hot path: two acquisitions of one lock (``begin`` / ``end``), no allocation for an
existing fingerprint besides two floats (~0.7 us for both calls on CPython 3.11). The
slow-statement log formats its line only when a statement is slow, outside the lock. Every
counter changes under the lock (no lock-free path: correct without the GIL too).
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Mapping
from time import perf_counter
from typing import Any

from ..errors import ConfigError
from .errortext import error_text

__all__ = ["HISTOGRAM_BOUNDS_MS", "SqlStatsRegistry", "StatementStats", "describe_params",
           "error_text", "returns_rows"]

logger = logging.getLogger("poolkeeper.sql")

#: upper bounds (ms) of the latency histogram buckets; one more bucket counts the slower ones.
#: The pool's wait histogram steps (1-5-10), extended to a minute for long statements.
HISTOGRAM_BOUNDS_MS: tuple[float, ...] = (
    0.1, 0.5, 1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 60_000)
_BOUNDS_S = tuple(b / 1000.0 for b in HISTOGRAM_BOUNDS_MS)
_FIRST_S, _SECOND_S = _BOUNDS_S[0], _BOUNDS_S[1]
_BUCKETS = len(HISTOGRAM_BOUNDS_MS) + 1
_INF = float("inf")  # one object for every entry's first minimum

_LOG_FINGERPRINT_CHARS = 1_000
_LOG_PARAMS_CHARS = 1_000


class StatementStats:
    """The counters of one fingerprint (read them through :meth:`SqlStatsRegistry.snapshot`)."""

    __slots__ = ("detached", "error_classes", "errors", "executions", "fingerprint",
                 "histogram", "last_error", "last_exec", "max_s", "min_s", "nbytes",
                 "returns_rows", "rows_affected", "rows_fetched", "rows_max", "running",
                 "running_max", "slow", "total_s")

    def __init__(self, fingerprint: str, nbytes: int) -> None:
        self.fingerprint = fingerprint
        self.nbytes = nbytes
        #: a query (its row count is rows fetched) rather than a change (rows affected)
        self.returns_rows = returns_rows(fingerprint)
        self.executions = 0
        self.errors = 0
        self.error_classes: dict[str, int] | None = None
        self.total_s = 0.0
        self.min_s = _INF
        self.max_s = 0.0
        self.histogram = [0] * _BUCKETS
        self.rows_fetched = 0
        self.rows_affected = 0
        self.rows_max = 0
        #: executions of this statement running now
        self.running = 0
        self.running_max = 0
        self.slow = 0
        self.last_exec = 0.0  #: perf_counter() at the end of the last execution
        self.last_error: str | None = None
        #: evicted or reset while a statement was running: its end is not recorded here
        self.detached = False

    def as_dict(self, clock_offset: float = 0.0) -> dict[str, Any]:
        """Plain data; ``clock_offset`` turns the perf_counter stamp into Unix time."""
        n = self.executions
        return {
            "fingerprint": self.fingerprint,
            "executions": n,
            "errors": self.errors,
            "errors_by_class": dict(self.error_classes or {}),
            "total_ms": round(self.total_s * 1000.0, 3),
            "mean_ms": round(self.total_s * 1000.0 / n, 3) if n else 0.0,
            "min_ms": round(self.min_s * 1000.0, 3) if n else 0.0,
            "max_ms": round(self.max_s * 1000.0, 3),
            "histogram": list(self.histogram),
            "rows_fetched": self.rows_fetched,
            "rows_affected": self.rows_affected,
            "rows_max": self.rows_max,
            "running": self.running,
            "running_max": self.running_max,
            "slow": self.slow,
            "last_execution": (round(self.last_exec + clock_offset, 6) if self.last_exec
                               else None),
            "last_error": self.last_error,
            "nbytes": self.nbytes,
        }


class _Totals:
    """Pool-level sums kept apart from the live entries (evicted ones, a reset baseline)."""

    __slots__ = ("errors", "executions", "rows_affected", "rows_fetched", "slow", "total_s")

    def __init__(self) -> None:
        self.executions = 0
        self.errors = 0
        self.total_s = 0.0
        self.rows_fetched = 0
        self.rows_affected = 0
        self.slow = 0

    def add_entry(self, e: _Totals, sign: int = 1) -> None:
        self.executions += sign * e.executions
        self.errors += sign * e.errors
        self.total_s += sign * e.total_s
        self.rows_fetched += sign * e.rows_fetched
        self.rows_affected += sign * e.rows_affected
        self.slow += sign * e.slow

    def add_stats(self, e: StatementStats) -> None:
        """Add an entry's figures."""
        self.executions += e.executions
        self.errors += e.errors
        self.total_s += e.total_s
        self.rows_fetched += e.rows_fetched
        self.rows_affected += e.rows_affected
        self.slow += e.slow


class SqlStatsRegistry:
    """Statistics per SQL fingerprint, bounded by ``max_bytes`` and ``max_entries``.

    ``slow_query_ms``: statements at least this slow are logged (logger ``poolkeeper.sql``,
    WARNING) with their fingerprint, time, rows and the count and types of their parameters;
    values only when ``log_params`` is True. ``max_fingerprint_chars``: longer fingerprints are
    kept as their first characters plus their length and a hash, so one giant statement shape
    cannot take the whole budget (capped at a quarter of ``max_bytes``).
    """

    #: estimated bytes of one entry besides its fingerprint string: the StatementStats object
    #: with its floats, its histogram list, and its OrderedDict node (tests/test_sql_stats.py
    #: checks, with tracemalloc, that the estimate stays above what an entry takes).
    ENTRY_OVERHEAD_BYTES = 960
    #: estimated bytes added by the first error class of an entry (its dict) and by each more
    ERROR_CLASSES_BYTES = 240
    ERROR_CLASS_BYTES = 100

    def __init__(self, *, max_bytes: int = 4 << 20, max_entries: int = 5_000,
                 enabled: bool = True, slow_query_ms: float | None = None,
                 log_params: bool = False, max_fingerprint_chars: int = 4_096,
                 name: str = "") -> None:
        _check_int("max_bytes", max_bytes, 1024)
        _check_int("max_entries", max_entries, 1)
        _check_int("max_fingerprint_chars", max_fingerprint_chars, 64)
        if slow_query_ms is not None and (isinstance(slow_query_ms, bool)
                                          or not isinstance(slow_query_ms, int | float)
                                          or not slow_query_ms >= 0):
            raise ConfigError(f"slow_query_ms={slow_query_ms!r} must be a number of "
                              "milliseconds >= 0, or None to disable the slow-statement log")
        self.name = name
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.max_fingerprint_chars = min(max_fingerprint_chars, max_bytes // 4)
        self.log_params = bool(log_params)
        self._slow_s = None if slow_query_ms is None else slow_query_ms / 1000.0
        self._enabled = bool(enabled)
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, StatementStats] = OrderedDict()
        self._nbytes = 0
        # Pool-level totals are not updated per statement (that would double the hot path's
        # writes): they are the live entries' sums, plus what evicted entries carried away
        # (_gone), minus a baseline taken by stats(reset=True) (_base).
        self._gone = _Totals()
        self._base = _Totals()
        self._evictions = 0
        self._evicted_executions = 0
        self._untracked = 0
        #: evicted or reset entries with executions still running (pruned when read): their
        #: executions count in "running" until they end
        self._detached_live: set[StatementStats] = set()

    # ------------------------------------------------------------------ switches
    @property
    def enabled(self) -> bool:
        """Whether hooks should record; switch at runtime (recorded data is kept)."""
        return self._enabled

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self._enabled = bool(on)

    @property
    def slow_query_ms(self) -> float | None:
        """The slow-statement threshold in ms (None: no slow-statement log); settable."""
        return None if self._slow_s is None else self._slow_s * 1000.0

    @slow_query_ms.setter
    def slow_query_ms(self, ms: float | None) -> None:
        if ms is not None and not ms >= 0:
            raise ConfigError(f"slow_query_ms={ms!r} must be >= 0 or None")
        self._slow_s = None if ms is None else ms / 1000.0

    @property
    def nbytes(self) -> int:
        """Estimated bytes held by the entries (for the memory ledger)."""
        return self._nbytes

    @property
    def budget_bytes(self) -> int:
        """The byte bound, ``max_bytes``."""
        return self.max_bytes

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ hot path
    def begin(self, fingerprint: str) -> StatementStats:
        """Count one statement as running; returns the entry to pass to :meth:`end`."""
        if len(fingerprint) > self.max_fingerprint_chars:
            fingerprint = self._shorten(fingerprint)
        # acquire/release rather than `with`: half the cost on CPython 3.11 (~70 ns vs ~140)
        lock = self._lock
        lock.acquire()
        try:
            entry = self._entries.get(fingerprint)
            if entry is None:
                entry = self._insert(fingerprint)
            else:
                self._entries.move_to_end(fingerprint)
            entry.running = running = entry.running + 1
            if running > entry.running_max:  # noqa: PLR1730 - a branch is cheaper than max()
                entry.running_max = running
        finally:
            lock.release()
        return entry

    def resume(self, entry: StatementStats) -> bool:
        """:meth:`begin` for an entry the caller kept from an earlier one (the statistics
        hook's per-connection memo): False, and nothing counted, if it was evicted or reset
        since (look the fingerprint up again with :meth:`begin`)."""
        lock = self._lock
        lock.acquire()
        try:
            if entry.detached:
                return False
            self._entries.move_to_end(entry.fingerprint)
            entry.running = running = entry.running + 1
            if running > entry.running_max:  # noqa: PLR1730
                entry.running_max = running
        finally:
            lock.release()
        return True

    def end(self, entry: StatementStats, elapsed_s: float, rows: int = -1,
            error: BaseException | None = None, params: Any = None,
            many: bool = False) -> bool:
        """Record one finished execution of ``entry`` (from :meth:`begin`); returns whether
        it raised the entry's most rows (``rows_max``).

        ``rows``: the driver's row count (-1 when unknown), counted as rows fetched for a query
        and rows affected for a change (:attr:`StatementStats.returns_rows`, decided once per
        fingerprint, so the hook never has to build the cursor's ``description``). ``params``
        and ``many`` are read only when the statement is slow, to describe the parameters.
        """
        # The hot path: no wall-clock call (the last execution is kept on the perf_counter
        # clock and converted when read), no allocation for a known fingerprint.
        now = perf_counter()
        # Most statements land in the first two buckets: two float compares cost a tenth of
        # bisect_left's call (bucket i: bounds[i-1] < x <= bounds[i]).
        bucket = ((0 if elapsed_s <= _FIRST_S else 1) if elapsed_s <= _SECOND_S
                  else bisect_left(_BOUNDS_S, elapsed_s))
        slow_s = self._slow_s
        slow = slow_s is not None and elapsed_s >= slow_s
        fetched = entry.returns_rows
        grew = False
        lock = self._lock
        lock.acquire()  # rather than `with`: see begin()
        try:
            entry.running -= 1
            if entry.detached:
                self._end_detached(entry, elapsed_s, rows, slow)
            else:
                entry.executions += 1
                entry.total_s += elapsed_s
                if elapsed_s < entry.min_s:  # noqa: PLR1730 - a branch is cheaper than min()
                    entry.min_s = elapsed_s
                if elapsed_s > entry.max_s:  # noqa: PLR1730
                    entry.max_s = elapsed_s
                entry.histogram[bucket] += 1
                entry.last_exec = now
                if rows > 0:
                    if fetched:
                        entry.rows_fetched += rows
                        if rows > entry.rows_max:
                            entry.rows_max = rows
                            grew = True
                    else:
                        entry.rows_affected += rows
                if slow:
                    entry.slow += 1
        finally:
            lock.release()
        message = None
        if error is not None:
            message = error_text(error)
            with self._lock:
                if entry.detached:
                    self._gone.errors += 1
                else:
                    self._record_error(entry, type(error).__name__, message)
        if slow:
            self._log_slow(entry.fingerprint, elapsed_s, rows, fetched, message, params, many)
        return grew

    def record(self, fingerprint: str, elapsed_s: float, **kwargs: Any) -> None:
        """:meth:`begin` + :meth:`end` for a statement already finished (no concurrency)."""
        self.end(self.begin(fingerprint), elapsed_s, **kwargs)

    def add_rows_fetched(self, fingerprint: str, rows: int) -> None:
        """Add rows counted after execute (streaming cursors, drivers without rowcount)."""
        if rows <= 0:
            return
        if len(fingerprint) > self.max_fingerprint_chars:
            fingerprint = self._shorten(fingerprint)
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is None:
                self._gone.rows_fetched += rows
            else:
                entry.rows_fetched += rows
                entry.rows_max = max(entry.rows_max, rows)

    def max_rows(self, fingerprint: str) -> int | None:
        """The most rows one execution of this statement returned, or None if never seen."""
        if len(fingerprint) > self.max_fingerprint_chars:
            fingerprint = self._shorten(fingerprint)
        entry = self._entries.get(fingerprint)
        return None if entry is None else entry.rows_max

    # ------------------------------------------------------------------ internals
    def _insert(self, fingerprint: str) -> StatementStats:
        """Create an entry and evict the least recently used ones over a bound (lock held)."""
        entry = StatementStats(fingerprint,
                               sys.getsizeof(fingerprint) + self.ENTRY_OVERHEAD_BYTES)
        entries = self._entries
        entries[fingerprint] = entry
        self._nbytes += entry.nbytes
        while (self._nbytes > self.max_bytes or len(entries) > self.max_entries) \
                and len(entries) > 1:
            _, old = entries.popitem(last=False)
            self._evict(old)
        return entry

    def _evict(self, old: StatementStats) -> None:
        self._detach(old)
        self._nbytes -= old.nbytes
        self._evictions += 1
        self._evicted_executions += old.executions
        self._gone.add_stats(old)

    def _detach(self, old: StatementStats) -> None:
        """Take an entry out of service (evicted or reset; lock held): executions still
        running end in the pool totals only (_end_detached)."""
        old.detached = True
        if old.running:  # keep it, so "running" counts its executions until they end
            live = self._detached_live
            if len(live) >= 64:  # bounded by the executions running now, once pruned
                live.difference_update([e for e in live if not e.running])
            live.add(old)

    def _end_detached(self, entry: StatementStats, elapsed_s: float, rows: int,
                      slow: bool) -> None:
        """An execution that began before its entry was evicted or reset (lock held)."""
        gone = self._gone
        gone.executions += 1
        gone.total_s += elapsed_s
        if rows > 0:
            if entry.returns_rows:
                gone.rows_fetched += rows
            else:
                gone.rows_affected += rows
        if slow:
            gone.slow += 1
        self._untracked += 1

    def _record_error(self, entry: StatementStats, cls: str, message: str) -> None:
        classes = entry.error_classes
        grow = 0
        if classes is None:
            classes = entry.error_classes = {}
            grow += self.ERROR_CLASSES_BYTES
        if cls not in classes:
            classes[cls] = 0
            grow += self.ERROR_CLASS_BYTES + sys.getsizeof(cls)
        classes[cls] += 1
        entry.errors += 1
        before = sys.getsizeof(entry.last_error) if entry.last_error is not None else 0
        entry.last_error = message
        grow += sys.getsizeof(message) - before
        entry.nbytes += grow
        self._nbytes += grow
        # An error can push the total over budget; make room without dropping this entry.
        entries = self._entries
        while self._nbytes > self.max_bytes and len(entries) > 1:
            key = next(iter(entries))
            if key == entry.fingerprint:
                break
            self._evict(entries.pop(key))

    def _shorten(self, fingerprint: str) -> str:
        digest = hashlib.blake2b(fingerprint.encode("utf-8", "surrogatepass"),
                                 digest_size=8).hexdigest()
        keep = self.max_fingerprint_chars - 48
        return f"{fingerprint[:keep]} ... [{len(fingerprint)} chars, #{digest}]"

    def _log_slow(self, fingerprint: str, elapsed_s: float, rows: int, fetched: bool,
                  error: str | None, params: Any, many: bool) -> None:
        if not logger.isEnabledFor(logging.WARNING):
            return
        if self.log_params:
            shown = repr(params)
            if len(shown) > _LOG_PARAMS_CHARS:
                shown = shown[:_LOG_PARAMS_CHARS] + f"... (+{len(shown) - _LOG_PARAMS_CHARS})"
            params_text = f"params={shown}"
        else:
            params_text = f"params: {describe_params(params, many)}"
        text = fingerprint if len(fingerprint) <= _LOG_FINGERPRINT_CHARS else (
            fingerprint[:_LOG_FINGERPRINT_CHARS] + "...")
        pool = f"pool {self.name!r}: " if self.name else ""
        failed = f", failed: {error}" if error else ""
        logger.warning(
            "%sslow statement: %.1f ms (slow_query_ms=%g), rows %s=%s, %s%s: %s",
            pool, elapsed_s * 1000.0, self.slow_query_ms, "fetched" if fetched else "affected",
            rows if rows >= 0 else "?",
            params_text, failed, text)

    # ------------------------------------------------------------------ reading
    def snapshot(self, limit: int | None = None) -> dict[str, Any]:
        """Plain data: pool-level totals and one dict per fingerprint, slowest total first.

        ``limit``: keep only that many statements (the ones with the most total time).
        """
        offset = time.time() - perf_counter()
        with self._lock:
            entries = self._live()
            statements = [e.as_dict(offset) for e in entries]
            totals = self._totals(entries)
        statements.sort(key=lambda s: -s["total_ms"])
        if limit is not None:
            statements = statements[:limit]
        totals["statements"] = statements
        return totals

    def _live(self) -> list[StatementStats]:
        """The entries (lock held), copied: callers evict or clear while they walk them."""
        return list(self._entries.values())

    def _sums(self, entries: list[StatementStats]) -> _Totals:
        """Pool-level totals since the last reset (lock held; O(entries), not hot)."""
        t = _Totals()
        for e in entries:
            t.add_stats(e)
        t.add_entry(self._gone)
        t.add_entry(self._base, -1)
        return t

    def _running_now(self, entries: list[StatementStats]) -> tuple[int, int]:
        live = self._detached_live
        if live:
            live.difference_update([e for e in live if not e.running])
        running = sum(e.running for e in live)
        most = 0
        for e in entries:
            running += e.running
            if e.running_max > most:  # noqa: PLR1730
                most = e.running_max
        return running, most

    def _totals(self, entries: list[StatementStats]) -> dict[str, Any]:
        t = self._sums(entries)
        running, most = self._running_now(entries)
        return {
            "enabled": self._enabled,
            "executions": t.executions,
            "errors": t.errors,
            "total_ms": round(t.total_s * 1000.0, 3),
            "rows_fetched": t.rows_fetched,
            "rows_affected": t.rows_affected,
            "slow_statements": t.slow,
            "running": running,
            "running_max": most,
            "fingerprints": len(self._entries),
            "max_entries": self.max_entries,
            "nbytes": self._nbytes,
            "budget_bytes": self.max_bytes,
            "evictions": self._evictions,
            "evicted_executions": self._evicted_executions,
            "untracked_executions": self._untracked,
            "histogram_bounds_ms": list(HISTOGRAM_BOUNDS_MS),
        }

    def stats(self, reset: bool = False) -> dict[str, Any]:
        """Flat pool-level counters named ``sql_*`` (for ``pool.stats()``).

        ``reset`` (``pool.pop_stats()``) starts these totals over; per-fingerprint entries are
        kept: they are reset by :meth:`pop` / :meth:`reset` only. ``sql_running_max`` is the
        most concurrent executions any one statement reached.
        """
        with self._lock:
            entries = self._live()
            t = self._sums(entries)
            running, most = self._running_now(entries)
            out = {
                "sql_executions": t.executions,
                "sql_errors": t.errors,
                "sql_ms": round(t.total_s * 1000.0, 3),
                "sql_rows_fetched": t.rows_fetched,
                "sql_rows_affected": t.rows_affected,
                "sql_slow": t.slow,
                "sql_running": running,
                "sql_running_max": most,
                "sql_fingerprints": len(self._entries),
                "sql_stats_bytes": self._nbytes,
                "sql_stats_budget_bytes": self.max_bytes,
                "sql_stats_evictions": self._evictions,
                "sql_stats_evicted_executions": self._evicted_executions,
            }
            if reset:
                self._base.add_entry(t)
                self._evictions = self._evicted_executions = self._untracked = 0
        return out

    def pop(self, limit: int | None = None) -> dict[str, Any]:
        """:meth:`snapshot` then :meth:`reset`, atomically: nothing recorded in between is lost."""
        offset = time.time() - perf_counter()
        with self._lock:
            entries = self._live()
            statements = [e.as_dict(offset) for e in entries]
            totals = self._totals(entries)
            self._clear()
        statements.sort(key=lambda s: -s["total_ms"])
        totals["statements"] = statements if limit is None else statements[:limit]
        return totals

    def reset(self) -> None:
        """Drop every entry and zero the totals (statements running now finish untracked)."""
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        for entry in self._live():
            self._detach(entry)
        self._entries.clear()
        self._nbytes = 0
        self._gone = _Totals()
        self._base = _Totals()
        self._evictions = self._evicted_executions = self._untracked = 0

    def log_and_reset(self, top: int = 20, log: logging.Logger | None = None) -> dict[str, Any]:
        """Log a summary and the ``top`` statements by total time at INFO, then reset.

        Druid's ``timeBetweenLogStatsMillis``: call it on a timer to keep a history in the logs
        while the registry itself stays small. Returns what was logged.
        """
        data = self.pop()
        out = log or logger
        pool = f"pool {self.name!r}: " if self.name else ""
        out.info("%ssql stats: %d executions, %d errors, %.1f ms, %d fingerprints, "
                 "%d evictions (%d executions dropped with them)", pool, data["executions"],
                 data["errors"], data["total_ms"], data["fingerprints"], data["evictions"],
                 data["evicted_executions"])
        for s in data["statements"][:top]:
            out.info("%s  %d x, %.1f ms total, max %.1f ms, %d errors, rows %d/%d: %s", pool,
                     s["executions"], s["total_ms"], s["max_ms"], s["errors"],
                     s["rows_fetched"], s["rows_affected"],
                     s["fingerprint"][:_LOG_FINGERPRINT_CHARS])
        return data


_ROW_RETURNING = ("SELECT", "WITH", "SHOW", "VALUES", "EXPLAIN", "PRAGMA", "DESCRIBE", "DESC",
                  "TABLE", "FETCH")


def returns_rows(fingerprint: str) -> bool:
    """Whether a statement's row count is rows *returned* (a query, or ``... RETURNING``).

    Decided from the fingerprint, whose keywords are upper-cased: ``SELECT``, ``WITH``,
    ``SHOW``, ``VALUES``, ``EXPLAIN``, ``PRAGMA``, ``DESCRIBE``, ``TABLE``, ``FETCH``, or any
    statement with a ``RETURNING`` clause.
    """
    head = fingerprint.lstrip("( ")
    return head.startswith(_ROW_RETURNING) or " RETURNING " in fingerprint


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} must be a whole number >= {minimum}")


def describe_params(params: Any, many: bool = False) -> str:
    """The count and types of statement parameters, never their values.

    Example::

        >>> describe_params((1, "x", None))
        '3 (int, str, NoneType)'
        >>> describe_params({"id": 5})
        '1 named (id: int)'
    """
    if params is None:
        return "none"
    if many:
        if isinstance(params, list | tuple):
            if not params:
                return "0 rows"
            return f"{len(params)} rows of {describe_params(params[0])}"
        return "an iterable of rows"
    if isinstance(params, Mapping):
        items = list(params.items())
        shown = ", ".join(f"{k}: {type(v).__name__}" for k, v in items[:20])
        more = f", +{len(items) - 20}" if len(items) > 20 else ""
        return f"{len(items)} named ({shown}{more})"
    if isinstance(params, list | tuple):
        shown = ", ".join(type(v).__name__ for v in params[:20])
        more = f", +{len(params) - 20}" if len(params) > 20 else ""
        return f"{len(params)} ({shown}{more})"
    return f"1 ({type(params).__name__})"
