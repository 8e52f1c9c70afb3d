"""Read-only SQL over poolkeeper's own state.

:func:`query` copies the state of the given pools, the resource monitor and the memory ledger
into tables of a private in-memory SQLite database, all read at one instant, and runs one
``SELECT`` (or ``WITH ... SELECT``) over them. Anything else (INSERT, UPDATE, DELETE, DDL,
PRAGMA, ATTACH, a second statement) is refused with :class:`AdminQueryError`: an authorizer
allows only reads and the database is ``query_only``. SQL functions are an allow-list
(:data:`ALLOWED_FUNCTIONS`: aggregates, window, string, math, date and JSON functions); the
rest (``fts3_tokenizer``, which reads and overwrites a native pointer, ``randomblob``,
``zeroblob``, ``load_extension``, ...) is refused by name. A query runs at most ``timeout``
seconds, builds no string or blob over 1 MiB, and returns at most ``max_rows`` rows and about
``max_bytes`` bytes (a truncated result says which bound cut it). Example::

    from poolkeeper.admin import query

    print(query("select site, count(*), max(age_s) from resources "
                "where kind='checkout' and age_s > 10 group by site", pools=[pool]).format())

Times are epoch seconds (REAL; ``datetime(created, 'unixepoch')`` shows them), durations
``*_s`` seconds, sizes ``*_bytes`` bytes. SQL text is always shown with literals folded.

Tables
------
``resources``: live resources recorded by the monitor (empty while it was never enabled).
    id, kind (checkout, cursor, connection, scheduler_entry, loader_buffer, spill_file,
    thread), pool, size_bytes, created, age_s, thread (name of the creating thread),
    site (``file:line in function``, first frame outside poolkeeper), file, line, function,
    stack (the kept frames, one ``file:line in function`` per line, innermost first),
    sql (current or last statement, at most 1 KB), parent_id (a cursor's checkout).
``collected_resources``: the monitor's leaks (bounded list): resources garbage-collected
    without being closed, checkouts dropped unreturned, cursors that outlived their checkout
    or stayed open past their threshold. The columns of ``resources`` without age_s, plus
    collected (when it was listed), lived_s and leak (why, e.g. "checkout dropped
    unreturned", "cursor open when its checkout ended", "cursor open past 60 s").
``pools``: one row per pool.
    name, driver, dsn (password masked), min_idle, max_size, size (open connections),
    idle, active (checked out), waiting (callers queued), opening, monitor (1 when the
    pool's resources are being recorded).
``pool_stats``: every counter and gauge of ``pool.stats()``, one row each.
    pool, name, value.
``connections``: one row per physical connection (``pool.connections_info()``).
    pool, id, session_id, state (idle, in_use, parked, reserved, closed), created, last_used
    (NULL while in use), age_s, idle_s, expires_in_s, uses, generation, sql, executing,
    holder_thread, borrow_site, held_s; plus any other key the pool reports.
``sql_stats``: per-statement statistics, from ``pool.sql_stats()`` when the pool has it.
    pool, then the keys each statement reports: fingerprint, executions, errors,
    errors_by_class (JSON), total_ms, mean_ms, min_ms, max_ms, histogram (JSON), rows_fetched,
    rows_affected, rows_max, running, running_max, slow, last_execution, last_error, nbytes,
    fetch_size. Pool-level totals are the ``sql_*`` rows of ``pool_stats``.
``statement_cache``: the statement cache, from ``pool.statement_cache_info()`` when present:
    one row per pool (or per entry, if the pool reports a list). pool, supported,
    max_statements, budget_bytes, statements, bytes, hits, misses, accesses, evictions,
    discarded, bypassed (the ``stmt_cache_`` prefix dropped).
``memory``: the memory ledger, one row per bounded structure (registered providers, and
    each registered pool's ``*_bytes`` / ``*_budget_bytes`` statistics).
    name, category, bytes, budget_bytes, fraction (bytes / budget_bytes), error.
``memory_samples``: process memory: the watchdog's history when one is given, else one row
    read now. time, rss_bytes, limit_bytes, limit_source, percent, ledger_bytes, pools,
    checkouts.
``monitor_stats``: the monitor's own counters (records, dropped_full, collected_total, ...).
    name, value.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import mask_dsn
from ..errors import AdminQueryError
from .memory import (
    LEDGER,
    MemoryLedger,
    MemoryWatchdog,
    counted_bytes,
    read_memory_limit,
    read_rss,
)
from .monitor import MONITOR, Monitor, Resource, fold_sql, registered_pools

__all__ = ["ALLOWED_FUNCTIONS", "DEFAULT_MAX_BYTES", "FUNCTION_GROUPS", "MAX_VALUE_BYTES",
           "TABLES", "AdminQueryError", "AdminSnapshot", "QueryResult", "format_table", "query",
           "snapshot"]


#: the fixed columns of each table: (name, SQLite type)
TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "resources": (
        ("id", "INTEGER"), ("kind", "TEXT"), ("pool", "TEXT"), ("size_bytes", "INTEGER"),
        ("created", "REAL"), ("age_s", "REAL"), ("thread", "TEXT"), ("site", "TEXT"),
        ("file", "TEXT"), ("line", "INTEGER"), ("function", "TEXT"), ("stack", "TEXT"),
        ("sql", "TEXT"), ("parent_id", "INTEGER"),
    ),
    "collected_resources": (
        ("id", "INTEGER"), ("kind", "TEXT"), ("pool", "TEXT"), ("size_bytes", "INTEGER"),
        ("created", "REAL"), ("collected", "REAL"), ("lived_s", "REAL"), ("thread", "TEXT"),
        ("site", "TEXT"), ("file", "TEXT"), ("line", "INTEGER"), ("function", "TEXT"),
        ("stack", "TEXT"), ("sql", "TEXT"), ("parent_id", "INTEGER"), ("leak", "TEXT"),
    ),
    "pools": (
        ("name", "TEXT"), ("driver", "TEXT"), ("dsn", "TEXT"), ("min_idle", "INTEGER"),
        ("max_size", "INTEGER"), ("size", "INTEGER"), ("idle", "INTEGER"),
        ("active", "INTEGER"), ("waiting", "INTEGER"), ("opening", "INTEGER"),
        ("monitor", "INTEGER"),
    ),
    "pool_stats": (("pool", "TEXT"), ("name", "TEXT"), ("value", "")),
    "connections": (
        ("pool", "TEXT"), ("id", "INTEGER"), ("session_id", ""), ("state", "TEXT"),
        ("created", "REAL"), ("last_used", "REAL"), ("age_s", "REAL"), ("idle_s", "REAL"),
        ("expires_in_s", "REAL"), ("uses", "INTEGER"), ("generation", "INTEGER"),
        ("sql", "TEXT"), ("executing", "INTEGER"), ("holder_thread", "TEXT"),
        ("borrow_site", "TEXT"), ("held_s", "REAL"),
    ),
    "sql_stats": (("pool", "TEXT"),),
    "statement_cache": (("pool", "TEXT"),),
    "memory": (
        ("name", "TEXT"), ("category", "TEXT"), ("bytes", "INTEGER"),
        ("budget_bytes", "INTEGER"), ("fraction", "REAL"), ("error", "TEXT"),
    ),
    "memory_samples": (
        ("time", "REAL"), ("rss_bytes", "INTEGER"), ("limit_bytes", "INTEGER"),
        ("limit_source", "TEXT"), ("percent", "REAL"), ("ledger_bytes", "INTEGER"),
        ("pools", "INTEGER"), ("checkouts", "INTEGER"),
    ),
    "monitor_stats": (("name", "TEXT"), ("value", "")),
}

# Columns holding statement text in tables filled from other components: folded again on
# the way in, so a component that forgot to fold cannot leak literals through here.
_SQL_COLUMNS = frozenset({"sql", "query", "statement", "fingerprint", "text"})
_LEADING = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)
_READ_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE})

#: the SQL functions an admin query may call, by kind. Anything else is refused by name: the
#: SQLite build may carry functions that read or overwrite native pointers
#: (``fts3_tokenizer``), allocate without bound (``randomblob``, ``zeroblob``), load code
#: (``load_extension``) or write to the engine's log (``sqlite_log``).
FUNCTION_GROUPS: dict[str, tuple[str, ...]] = {
    "aggregate": ("avg", "count", "group_concat", "max", "min", "sum", "total"),
    "window": ("cume_dist", "dense_rank", "first_value", "lag", "last_value", "lead",
               "nth_value", "ntile", "percent_rank", "rank", "row_number"),
    "string": ("char", "coalesce", "format", "glob", "hex", "ifnull", "iif", "instr", "length",
               "like", "likelihood", "likely", "lower", "ltrim", "nullif", "printf", "quote",
               "replace", "rtrim", "substr", "substring", "trim", "typeof", "unicode",
               "unlikely", "upper"),
    "math": ("abs", "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil",
             "ceiling", "cos", "cosh", "degrees", "exp", "floor", "ln", "log", "log10", "log2",
             "mod", "pi", "pow", "power", "radians", "round", "sign", "sin", "sinh", "sqrt",
             "tan", "tanh", "trunc"),
    "date": ("current_date", "current_time", "current_timestamp", "date", "datetime",
             "julianday", "strftime", "time", "unixepoch"),
    "json": ("->", "->>", "json", "json_array", "json_array_length", "json_extract",
             "json_group_array", "json_group_object", "json_object", "json_quote", "json_type",
             "json_valid"),
}
ALLOWED_FUNCTIONS: frozenset[str] = frozenset(
    name for names in FUNCTION_GROUPS.values() for name in names)
#: SQLITE_LIMIT_LENGTH of the admin database: no string or blob a query builds may be larger
#: (``length(randomblob(200000000))`` cost ~190 MB per request before). The tables' own
#: values are far smaller (SQL text is cut at 1 KB, stacks at a few KB).
MAX_VALUE_BYTES = 1 << 20
_MAX_SQL_BYTES = 1 << 20
#: the default bound on one result's rows, in bytes (text and blobs by length)
DEFAULT_MAX_BYTES = 8 << 20


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of one admin query. ``str()`` gives a text table."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    truncated: bool = False  #: more rows matched than max_rows or max_bytes let through
    elapsed_ms: float = 0.0
    truncated_by: str | None = None  #: "rows" or "bytes": which bound cut the result
    nbytes: int = 0  #: the rows' estimated size
    max_bytes: int = 0  #: the byte bound the query ran with

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def as_dicts(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by column name (for JSON)."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def format(self, max_width: int = 60) -> str:
        """A text table; cells wider than ``max_width`` are cut with an ellipsis."""
        text = format_table(self.columns, self.rows, max_width=max_width)
        if self.truncated_by == "bytes":
            text += (f"\n(truncated at {len(self.rows)} rows, {self.nbytes} bytes: the result "
                     f"would exceed max_bytes={self.max_bytes}; select fewer or narrower "
                     "columns, or add a LIMIT or a WHERE)")
        elif self.truncated:
            text += f"\n(truncated at {len(self.rows)} rows: add a LIMIT or a WHERE)"
        return text

    def __str__(self) -> str:
        return self.format()


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                 max_width: int = 60) -> str:
    """Align ``rows`` under ``columns`` as plain text; numbers right-aligned, NULL shown."""
    if max_width < 4:
        raise ValueError(f"max_width={max_width!r} must be at least 4")
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    numeric = [all(isinstance(r[i], int | float) and not isinstance(r[i], bool)
                   for r in rows if r[i] is not None) and any(r[i] is not None for r in rows)
               for i in range(len(columns))]
    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()
    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def _cell(value: Any, max_width: int) -> str:
    if value is None:
        text = "NULL"
    elif isinstance(value, float):
        text = f"{value:.3f}"
    elif isinstance(value, bytes):
        text = value.hex()
    else:
        text = str(value)
    text = text.replace("\r", "").replace("\n", " | ")
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


# ----------------------------------------------------------------------------- snapshot
@dataclass
class _State:
    """Everything read from the sources, before any table is built."""

    now: float
    resources: Sequence[Resource] = ()
    collected: Sequence[Resource] = ()
    monitor_stats: Mapping[str, Any] = field(default_factory=dict)
    pools: list[dict[str, Any]] = field(default_factory=list)
    pool_stats: list[tuple[str, str, Any]] = field(default_factory=list)
    connections: list[dict[str, Any]] = field(default_factory=list)
    sql_stats: list[dict[str, Any]] = field(default_factory=list)
    statement_cache: list[dict[str, Any]] = field(default_factory=list)
    memory: list[tuple[Any, ...]] = field(default_factory=list)
    memory_samples: list[tuple[Any, ...]] = field(default_factory=list)


class AdminSnapshot:
    """A read-only in-memory database holding the state read at one instant.

    Build once, query several times (the console does), then :meth:`close`::

        with snapshot(pools=[pool]) as snap:
            snap.query("select state, count(*) from connections group by state")
    """

    def __init__(self, state: _State) -> None:
        self.taken_at = state.now
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            _fill(self._db, state)
        except BaseException:
            self._db.close()
            raise
        self._db.execute("PRAGMA query_only = ON")
        self._db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        self._db.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, _MAX_SQL_BYTES)
        self._authorize = _Authorizer()
        self._db.set_authorizer(self._authorize)
        # One query at a time: the authorizer's record and the progress handler are the
        # connection's, so two threads querying one snapshot would mix them up.
        self._lock = threading.Lock()

    def tables(self) -> dict[str, list[str]]:
        """Every table and its columns (dynamic tables included)."""
        out: dict[str, list[str]] = {}
        self._db.set_authorizer(None)
        try:
            for name in TABLES:
                out[name] = [r[1] for r in self._db.execute(f'PRAGMA table_info("{name}")')]
        finally:
            self._db.set_authorizer(self._authorize)
        return out

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = (), *,
              max_rows: int = 10_000, timeout: float = 5.0,
              max_bytes: int = DEFAULT_MAX_BYTES) -> QueryResult:
        """Run one read-only SELECT; see :func:`query`."""
        _check_select(sql)
        if not 1 <= max_rows <= 10_000_000:
            raise ValueError(f"max_rows={max_rows!r} is out of range: allowed 1..10000000")
        if not 0 < timeout <= 3_600:
            raise ValueError(f"timeout={timeout!r} is out of range: allowed 0..3600 s")
        if not 1024 <= max_bytes <= 1 << 32:
            raise ValueError(f"max_bytes={max_bytes!r} is out of range: allowed 1024..{1 << 32}")
        with self._lock:
            start = time.monotonic()
            deadline = start + timeout
            self._authorize.denied = None
            self._db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
            try:
                cur = self._db.execute(sql, params)
                rows, size, cut_by = _fetch(cur, max_rows, max_bytes)
            except (sqlite3.DatabaseError, sqlite3.Warning) as exc:
                raise _explain(exc, timeout, self._authorize.denied) from exc
            finally:
                self._db.set_progress_handler(None, 0)
            columns = tuple(d[0] for d in cur.description or ())
            cur.close()
        return QueryResult(columns, rows, cut_by is not None,
                           round((time.monotonic() - start) * 1000.0, 3), truncated_by=cut_by,
                           nbytes=size, max_bytes=max_bytes)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AdminSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fetch(cur: sqlite3.Cursor, max_rows: int,
           max_bytes: int) -> tuple[list[tuple[Any, ...]], int, str | None]:
    """Rows in batches up to ``max_rows`` rows and about ``max_bytes`` bytes; what cut them."""
    rows: list[tuple[Any, ...]] = []
    size = 0
    while True:
        batch = cur.fetchmany(min(256, max_rows + 1 - len(rows)))
        if not batch:
            return rows, size, None
        for row in batch:
            if len(rows) == max_rows:
                return rows, size, "rows"
            row_size = _row_bytes(row)
            if size + row_size > max_bytes:
                return rows, size, "bytes"
            rows.append(row)
            size += row_size


def _row_bytes(row: tuple[Any, ...]) -> int:
    """What a row costs as Python objects, roughly: text and blobs by length, 8 per number."""
    return 56 + sum(len(v) if isinstance(v, str | bytes) else 8 for v in row)


def snapshot(pools: Any = None, *, monitor: Monitor | None = None,
             ledger: MemoryLedger | None = None,
             watchdog: MemoryWatchdog | None = None) -> AdminSnapshot:
    """Read every source now and build the tables (see the module docstring).

    ``pools``: a pool, an iterable of pools, or None for every pool registered with
    :func:`poolkeeper.observe.register_pool`. A pool is anything with ``name``, ``stats()``
    and ``connections_info()``; ``sql_stats()`` and ``statement_cache_info()`` are used when
    present.
    """
    return AdminSnapshot(_read_state(pools, monitor or MONITOR, ledger or LEDGER, watchdog))


def query(sql: str, pools: Any = None, *, params: Sequence[Any] | Mapping[str, Any] = (),
          monitor: Monitor | None = None, ledger: MemoryLedger | None = None,
          watchdog: MemoryWatchdog | None = None, max_rows: int = 10_000,
          timeout: float = 5.0, max_bytes: int = DEFAULT_MAX_BYTES) -> QueryResult:
    """Run one read-only SELECT over a snapshot of poolkeeper's state.

    Example::

        result = query("select pool, state, count(*) from connections group by 1, 2",
                       pools=[pool])
        print(result.format())

    Raises :class:`AdminQueryError` (a ``ValueError``) when the statement is not a single
    SELECT/WITH, calls a function outside :data:`ALLOWED_FUNCTIONS`, names an unknown table
    or column, builds a value over :data:`MAX_VALUE_BYTES`, or runs past ``timeout`` seconds.
    The result stops at ``max_rows`` rows or about ``max_bytes`` bytes, whichever comes
    first (``truncated`` and ``truncated_by`` say so).
    """
    _check_select(sql)
    with snapshot(pools, monitor=monitor, ledger=ledger, watchdog=watchdog) as snap:
        return snap.query(sql, params, max_rows=max_rows, timeout=timeout,
                          max_bytes=max_bytes)


# ----------------------------------------------------------------------------- checks
def _check_select(sql: object) -> None:
    if not isinstance(sql, str):
        raise AdminQueryError(f"admin query must be a str, not {type(sql).__name__}")
    body = sql[_LEADING.match(sql).end():]  # type: ignore[union-attr]
    word = body.split(None, 1)[0].rstrip("(").lower() if body.strip() else ""
    if word not in ("select", "with"):
        shown = word.upper() or "an empty statement"
        raise AdminQueryError(
            f"admin query refused: {shown} is not allowed; the admin views are read-only, "
            "only a single SELECT (or WITH ... SELECT) runs")


class _Authorizer:
    """Reads only, functions from the allow-list only; remembers the function it refused."""

    __slots__ = ("denied",)

    def __init__(self) -> None:
        self.denied: str | None = None

    def __call__(self, action: int, arg1: str | None, arg2: str | None, dbname: str | None,
                 source: str | None) -> int:
        if action == sqlite3.SQLITE_FUNCTION:  # arg2 is the function's name
            if (arg2 or "").lower() in ALLOWED_FUNCTIONS:
                return sqlite3.SQLITE_OK
            self.denied = arg2 or "?"
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


def _explain(exc: Exception, timeout: float, denied_function: str | None = None) -> AdminQueryError:
    text = str(exc)
    if denied_function is not None and "not authorized" in text:
        allowed = "; ".join(f"{kind}: {', '.join(names)}"
                            for kind, names in FUNCTION_GROUPS.items())
        return AdminQueryError(
            f"admin query refused: function {denied_function}() is not allowed in the admin "
            f"views ({len(ALLOWED_FUNCTIONS)} functions are; use one of them). Allowed - "
            f"{allowed}")
    if "too big" in text:
        return AdminQueryError(
            f"admin query refused: a string or blob it builds would exceed "
            f"{MAX_VALUE_BYTES} bytes, the admin views' limit per value; select less "
            "(substr(), a WHERE) instead")
    if "one statement at a time" in text:
        return AdminQueryError(
            "admin query refused: the admin views are read-only and run one statement per "
            "call; send a single SELECT (or WITH ... SELECT)")
    if "not authorized" in text:
        return AdminQueryError(
            "admin query refused: the admin views are read-only; only a single SELECT "
            f"(or WITH ... SELECT) runs ({text})")
    if "interrupted" in text:
        return AdminQueryError(
            f"admin query ran past timeout={timeout:g} s and was stopped; narrow it with a "
            "WHERE or a LIMIT, or pass a larger timeout")
    tables = ", ".join(TABLES)
    return AdminQueryError(f"admin query failed: {text}. Tables: {tables} "
                           "(columns in the poolkeeper.observe.admin docstring)")


# ----------------------------------------------------------------------------- reading
def _pool_list(pools: Any) -> list[Any]:
    if pools is None:
        return registered_pools()
    if hasattr(pools, "connections_info") or hasattr(pools, "stats"):
        return [pools]
    return list(pools)


def _read_state(pools: Any, monitor: Monitor, ledger: MemoryLedger,
                watchdog: MemoryWatchdog | None) -> _State:
    now = time.time()
    state = _State(now=now)
    snap = monitor.snapshot()
    state.resources, state.collected = snap.resources, snap.collected
    state.monitor_stats = snap.stats
    pool_objs = _pool_list(pools)
    checkouts = 0
    for pool in pool_objs:
        name = str(getattr(pool, "name", "") or repr(pool))
        stats = _call(pool, "stats")
        stats = dict(stats) if isinstance(stats, Mapping) else {}
        checkouts += int(stats.get("pool_active", 0) or 0)
        config = getattr(pool, "config", None)
        driver = getattr(getattr(pool, "driver", None), "name", None)
        dsn = getattr(config, "dsn", None)
        probe = getattr(pool, "monitor", None)
        state.pools.append({
            "name": name, "driver": driver,
            "dsn": mask_dsn(dsn) if isinstance(dsn, str) else None,
            "min_idle": getattr(config, "min_idle", stats.get("pool_min")),
            "max_size": getattr(config, "max_size", stats.get("pool_max")),
            "size": stats.get("pool_size"), "idle": stats.get("pool_available"),
            "active": stats.get("pool_active"), "waiting": stats.get("requests_waiting"),
            "opening": stats.get("connections_opening"),
            "monitor": (int(bool(probe.enabled)) if probe is not None
                        and hasattr(probe, "enabled") else None),
        })
        state.pool_stats += [(name, str(k), _scalar(v)) for k, v in stats.items()]
        for info in _rows(_call(pool, "connections_info")):
            row = {"pool": name, **info}
            age, idle = row.get("age_s"), row.get("idle_s")
            if isinstance(age, int | float):
                row.setdefault("created", round(now - age, 6))
            if isinstance(idle, int | float) and row.get("state") != "in_use":
                row.setdefault("last_used", round(now - idle, 6))
            state.connections.append(row)
        sql_stats = _call(pool, "sql_stats")
        if isinstance(sql_stats, Mapping) and isinstance(sql_stats.get("statements"), list):
            sql_stats = sql_stats["statements"]  # pool-level totals are in pool_stats
        state.sql_stats += [{"pool": name, **r} for r in _rows(sql_stats,
                                                                key_name="fingerprint")]
        state.statement_cache += [{"pool": name, **_unprefixed(r, "stmt_cache_")}
                                  for r in _rows(_call(pool, "statement_cache_info"))]
    entries = ledger.entries()
    state.memory = [(e.name, e.category, e.bytes, e.budget_bytes, e.fraction, e.error)
                    for e in entries]
    if watchdog is not None:
        state.memory_samples = [
            (s.time, s.rss_bytes, s.limit_bytes, s.limit_source, s.percent, s.ledger_bytes,
             s.pools, s.checkouts) for s in watchdog.history()]
    else:
        rss = read_rss()
        limit, source = read_memory_limit()
        percent = round(rss / limit * 100.0, 3) if rss is not None and limit else None
        state.memory_samples = [(now, rss, limit, source, percent,
                                 counted_bytes(entries), len(pool_objs), checkouts)]
    return state


def _call(obj: Any, method: str) -> Any:
    fn = getattr(obj, method, None)
    if fn is None or not callable(fn):
        return None
    return fn()


def _rows(value: Any, key_name: str = "key") -> list[dict[str, Any]]:
    """Normalise what a component reports into a list of dicts."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        if value and all(isinstance(v, Mapping) for v in value.values()):
            return [{key_name: k, **v} if key_name not in v else dict(v)
                    for k, v in value.items()]
        return [dict(value)]
    out = []
    for item in value:
        if isinstance(item, Mapping):
            out.append(dict(item))
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            out.append(dataclasses.asdict(item))
        elif hasattr(item, "_asdict"):
            out.append(dict(item._asdict()))
        else:
            out.append({"value": item})
    return out


def _unprefixed(row: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {(k[len(prefix):] if isinstance(k, str) and k.startswith(prefix) else k): v
            for k, v in row.items()}


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, str | bytes | float):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if -(1 << 63) <= value < (1 << 63) else float(value)
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


# ----------------------------------------------------------------------------- building
def _fill(db: sqlite3.Connection, state: _State) -> None:
    _create(db, "resources", TABLES["resources"])
    db.executemany(_insert("resources", len(TABLES["resources"])),
                   [(r.id, r.kind, r.pool, r.size, r.created, r.age_s, r.thread, r.site,
                     r.file, r.line, r.function, _stack(r), r.sql, r.parent_id)
                    for r in state.resources])
    _create(db, "collected_resources", TABLES["collected_resources"])
    db.executemany(_insert("collected_resources", len(TABLES["collected_resources"])),
                   [(r.id, r.kind, r.pool, r.size, r.created, r.collected_at, r.age_s, r.thread,
                     r.site, r.file, r.line, r.function, _stack(r), r.sql, r.parent_id, r.leak)
                    for r in state.collected])
    pool_cols = TABLES["pools"]
    _create(db, "pools", pool_cols)
    db.executemany(_insert("pools", len(pool_cols)),
                   [tuple(_scalar(p.get(c)) for c, _ in pool_cols) for p in state.pools])
    _create(db, "pool_stats", TABLES["pool_stats"])
    db.executemany(_insert("pool_stats", 3), state.pool_stats)
    # The pool folds its connections' SQL itself (and marks cut text with "(+N chars)",
    # which folding again would garble).
    _fill_dynamic(db, "connections", state.connections, fold=False)
    dialects = {p["name"]: p["driver"] for p in state.pools if isinstance(p["driver"], str)}
    _fill_dynamic(db, "sql_stats", state.sql_stats, dialects=dialects)
    _fill_dynamic(db, "statement_cache", state.statement_cache, dialects=dialects)
    _create(db, "memory", TABLES["memory"])
    db.executemany(_insert("memory", 6), state.memory)
    _create(db, "memory_samples", TABLES["memory_samples"])
    db.executemany(_insert("memory_samples", 8), state.memory_samples)
    _create(db, "monitor_stats", TABLES["monitor_stats"])
    db.executemany(_insert("monitor_stats", 2),
                   [(k, _scalar(v)) for k, v in state.monitor_stats.items()])
    db.commit()


def _fill_dynamic(db: sqlite3.Connection, table: str, rows: list[dict[str, Any]], *,
                  fold: bool = True, dialects: Mapping[str, str] | None = None) -> None:
    """Fixed columns first, then every other key the rows carry, in first-seen order."""
    columns = list(TABLES[table])
    known = {c for c, _ in columns}
    for row in rows:
        for key in row:
            name = str(key)
            if name not in known:
                known.add(name)
                columns.append((name, ""))
    _create(db, table, columns)
    names = [c for c, _ in columns]
    db.executemany(_insert(table, len(names)),
                   [tuple(_value(c, row.get(c), (dialects or {}).get(row.get("pool", "")))
                          if fold else _scalar(row.get(c)) for c in names) for row in rows])


def _value(column: str, value: Any, dialect: str | None) -> Any:
    if value is not None and column in _SQL_COLUMNS and isinstance(value, str | bytes):
        return fold_sql(value, dialect=dialect)
    return _scalar(value)


def _create(db: sqlite3.Connection, table: str, columns: Iterable[tuple[str, str]]) -> None:
    cols = ", ".join(f"{_quote(name)} {kind}".rstrip() for name, kind in columns)
    db.execute(f"CREATE TABLE {_quote(table)} ({cols})")


def _insert(table: str, n: int) -> str:
    return f"INSERT INTO {_quote(table)} VALUES ({', '.join('?' * n)})"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _stack(r: Resource) -> str:
    return "\n".join(f"{f}:{ln} in {fn}" for f, ln, fn in r.stack)
