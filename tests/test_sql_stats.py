"""The statistics registry stays within its bounds, records what ran, and never keeps a value."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from poolkeeper import Pool
from poolkeeper.errors import ConfigError
from poolkeeper.sql.fingerprint import FingerprintCache
from poolkeeper.sql.hook import ROWCOUNT_FIELD, STREAMS, StatsHook, cursor_kind, query_text
from poolkeeper.sql.stats import (
    HISTOGRAM_BOUNDS_MS,
    SqlStatsRegistry,
    StatementStats,
    describe_params,
    error_text,
    returns_rows,
)
from poolkeeper.sql.stmtcache import AdaptiveFetchSize


def _only(reg: SqlStatsRegistry) -> dict[str, Any]:
    statements = reg.snapshot()["statements"]
    assert len(statements) == 1
    return statements[0]  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- recording
def test_executions_time_histogram_and_rows_are_recorded() -> None:
    reg = SqlStatsRegistry()
    fp = "SELECT * FROM t WHERE id = ?"
    reg.record(fp, 0.002, rows=1)
    reg.record(fp, 0.0003, rows=5)
    reg.record(fp, 0.120, rows=0)
    reg.record("UPDATE t SET a = ?", 0.001, rows=7)
    snap = reg.snapshot()
    assert snap["executions"] == 4
    assert snap["rows_fetched"] == 6 and snap["rows_affected"] == 7
    s = next(s for s in snap["statements"] if s["fingerprint"] == fp)
    assert s["executions"] == 3
    assert s["min_ms"] == pytest.approx(0.3) and s["max_ms"] == pytest.approx(120)
    assert s["total_ms"] == pytest.approx(122.3)
    assert s["rows_fetched"] == 6 and s["rows_max"] == 5
    assert sum(s["histogram"]) == 3
    assert len(s["histogram"]) == len(HISTOGRAM_BOUNDS_MS) + 1
    assert s["histogram"][HISTOGRAM_BOUNDS_MS.index(0.5)] == 1  # 0.3 ms: <= 0.5 ms
    assert s["histogram"][HISTOGRAM_BOUNDS_MS.index(5)] == 1  # 2 ms
    assert s["histogram"][HISTOGRAM_BOUNDS_MS.index(500)] == 1  # 120 ms
    assert s["last_execution"] == pytest.approx(time.time(), abs=60)


def test_errors_are_counted_by_class_with_a_value_free_message() -> None:
    reg = SqlStatsRegistry()
    fp = "INSERT INTO users(name) VALUES (?)"
    reg.record(fp, 0.001, error=ValueError(
        "Duplicate entry 'alice@example.com' for key 'users.email'\nDETAIL: Key (id)=(5)"))
    reg.record(fp, 0.001, error=ValueError("again 'bob'"))
    reg.record(fp, 0.001, error=KeyError("x"))
    reg.record(fp, 0.001)
    s = _only(reg)
    assert s["errors"] == 3 and s["executions"] == 4
    assert s["errors_by_class"] == {"ValueError": 2, "KeyError": 1}
    assert s["last_error"] == "KeyError: '?'"
    everything = json.dumps(reg.snapshot())
    assert "alice" not in everything and "bob" not in everything and "(5)" not in everything


def test_error_text_keeps_the_class_and_first_line_only() -> None:
    exc = RuntimeError('invalid input syntax for type integer: "abc"\nLINE 1: SELECT 1 + \'abc\'')
    assert error_text(exc) == 'RuntimeError: invalid input syntax for type integer: "?"'
    assert error_text(RuntimeError()) == "RuntimeError"
    long = error_text(RuntimeError("x" * 1000))
    assert len(long) == 200 and long.endswith("...")


def test_concurrent_executions_are_tracked() -> None:
    reg = SqlStatsRegistry()
    entries = [reg.begin("SELECT pg_sleep(?)") for _ in range(3)]
    assert _only(reg)["running"] == 3
    for e in entries:
        reg.end(e, 0.01)
    s = _only(reg)
    assert s["running"] == 0 and s["running_max"] == 3 and s["executions"] == 3
    assert reg.snapshot()["running_max"] == 3


def test_an_execution_outliving_its_evicted_entry_stays_in_running_until_it_ends() -> None:
    reg = SqlStatsRegistry(max_entries=2)
    slow = reg.begin("SELECT pg_sleep(?)")
    for i in range(3):  # evicts the sleeping statement's entry
        reg.record(f"SELECT c{i} FROM t", 0.001)
    assert slow.detached
    assert reg.snapshot()["running"] == 1
    reg.end(slow, 0.5)
    snap = reg.snapshot()
    assert snap["running"] == 0 and snap["untracked_executions"] == 1


def test_running_max_is_exact_when_executions_overlap_and_end_in_any_order() -> None:
    reg = SqlStatsRegistry()
    a, b = reg.begin("SELECT 1"), reg.begin("SELECT 1")
    reg.end(b, 0.001)
    c = reg.begin("SELECT 1")
    d = reg.begin("SELECT 1")  # a, c, d in flight together: 3
    for e in (d, a, c):
        reg.end(e, 0.001)
    assert _only(reg)["running_max"] == 3 and _only(reg)["running"] == 0


# ----------------------------------------------------------------------------- bounds
def test_least_recently_used_entries_are_evicted_by_count() -> None:
    reg = SqlStatsRegistry(max_entries=3)
    for i in range(3):
        for _ in range(i + 1):
            reg.record(f"SELECT c{i} FROM t", 0.001)
    reg.record("SELECT c0 FROM t", 0.001)  # c0 is now the most recent
    reg.record("SELECT c3 FROM t", 0.001)  # pushes out c1 (2 executions)
    fps = {s["fingerprint"] for s in reg.snapshot()["statements"]}
    assert fps == {"SELECT c0 FROM t", "SELECT c2 FROM t", "SELECT c3 FROM t"}
    snap = reg.snapshot()
    assert snap["evictions"] == 1 and snap["evicted_executions"] == 2
    assert snap["executions"] == 8  # totals survive eviction


def test_tracked_bytes_never_exceed_the_budget() -> None:
    reg = SqlStatsRegistry(max_bytes=64 << 10, max_entries=1_000_000)
    for i in range(5_000):
        reg.record(f"SELECT col_{i}, {'x' * (i % 300)} FROM table_{i} WHERE a = ?", 0.001,
                   error=RuntimeError("boom " * 50) if i % 7 == 0 else None)
        assert reg.nbytes <= reg.budget_bytes
    assert reg.snapshot()["evictions"] > 0
    assert sum(s["nbytes"] for s in reg.snapshot()["statements"]) == reg.nbytes


def test_a_giant_fingerprint_is_kept_short_and_still_distinct() -> None:
    reg = SqlStatsRegistry(max_bytes=1 << 20, max_fingerprint_chars=1_000)
    a = "SELECT " + ", ".join(f"a{i}" for i in range(10_000)) + " FROM t"
    b = "SELECT " + ", ".join(f"b{i}" for i in range(10_000)) + " FROM t"
    reg.record(a, 0.001)
    reg.record(a, 0.001)
    reg.record(b, 0.001)
    stmts = reg.snapshot()["statements"]
    assert len(stmts) == 2
    for s in stmts:
        assert len(s["fingerprint"]) <= 1_000
        assert "chars, #" in s["fingerprint"]
    assert sorted(s["executions"] for s in stmts) == [1, 2]
    assert reg.max_rows(a) == 0


def test_the_entry_overhead_estimate_covers_the_real_memory() -> None:
    reg = SqlStatsRegistry(max_bytes=1 << 30, max_entries=100_000)
    fps = [f"SELECT c FROM t{i} WHERE x = ?" for i in range(5_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for fp in fps:
            reg.record(fp, 0.001, rows=3)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # The fingerprint strings existed before; the registry only references them, so the
    # estimate (which also counts them) must be above what was really allocated.
    assert reg.nbytes >= used, f"estimated {reg.nbytes} bytes, allocated {used}"
    assert reg.nbytes - sum(sys.getsizeof(fp) for fp in fps) < 3 * used


def test_bad_bounds_are_rejected_with_the_field_name() -> None:
    with pytest.raises(ConfigError, match="max_bytes=10"):
        SqlStatsRegistry(max_bytes=10)
    with pytest.raises(ConfigError, match="max_entries=0"):
        SqlStatsRegistry(max_entries=0)
    with pytest.raises(ConfigError, match="slow_query_ms=-1"):
        SqlStatsRegistry(slow_query_ms=-1)


# ----------------------------------------------------------------------------- reading
def test_snapshot_is_plain_json_sorted_by_total_time() -> None:
    reg = SqlStatsRegistry()
    reg.record("SELECT ?", 0.001)
    reg.record("SELECT a FROM t", 0.5)
    snap = reg.snapshot()
    json.dumps(snap)
    assert [s["fingerprint"] for s in snap["statements"]] == ["SELECT a FROM t", "SELECT ?"]
    assert len(reg.snapshot(limit=1)["statements"]) == 1


def test_pop_returns_everything_and_starts_over() -> None:
    reg = SqlStatsRegistry()
    reg.record("SELECT ?", 0.001)
    running = reg.begin("SELECT ?")
    popped = reg.pop()
    assert popped["executions"] == 1 and len(popped["statements"]) == 1
    assert reg.snapshot()["executions"] == 0 and len(reg) == 0 and reg.nbytes == 0
    reg.end(running, 0.001)  # began before the reset: counted in totals, not in an entry
    snap = reg.snapshot()
    assert snap["executions"] == 1 and snap["untracked_executions"] == 1
    assert snap["statements"] == []


def test_log_and_reset_logs_a_summary_and_the_top_statements(
        caplog: pytest.LogCaptureFixture) -> None:
    reg = SqlStatsRegistry(name="app")
    reg.record("SELECT a FROM t WHERE b = ?", 0.002)
    with caplog.at_level(logging.INFO, logger="poolkeeper.sql"):
        data = reg.log_and_reset()
    assert data["executions"] == 1
    assert "1 executions" in caplog.text and "SELECT a FROM t WHERE b = ?" in caplog.text
    assert reg.snapshot()["executions"] == 0


def test_flat_stats_reset_totals_but_keep_entries() -> None:
    reg = SqlStatsRegistry()
    reg.record("SELECT ?", 0.001)
    flat = reg.stats(reset=True)
    assert flat["sql_executions"] == 1 and flat["sql_fingerprints"] == 1
    assert reg.stats()["sql_executions"] == 0
    assert len(reg) == 1


# ----------------------------------------------------------------------------- slow log
def test_slow_statements_log_types_and_count_but_never_values(
        caplog: pytest.LogCaptureFixture) -> None:
    reg = SqlStatsRegistry(slow_query_ms=100, name="app")
    with caplog.at_level(logging.WARNING, logger="poolkeeper.sql"):
        reg.record("SELECT * FROM t WHERE a = ?", 0.050, params=("fast-secret",))
        reg.record("SELECT * FROM t WHERE a = ? AND b = ?", 0.250, rows=3,
                   params=("s3cret", 42))
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "250.0 ms" in line and "rows fetched=3" in line
    assert "SELECT * FROM t WHERE a = ? AND b = ?" in line
    assert "2 (str, int)" in line
    assert "s3cret" not in line and "42" not in line
    assert caplog.records[0].name == "poolkeeper.sql"
    assert reg.snapshot()["slow_statements"] == 1


def test_log_params_opts_in_to_values(caplog: pytest.LogCaptureFixture) -> None:
    reg = SqlStatsRegistry(slow_query_ms=0, log_params=True)
    with caplog.at_level(logging.WARNING, logger="poolkeeper.sql"):
        reg.record("SELECT ?", 0.001, params=("visible",))
    assert "visible" in caplog.text


def test_slow_threshold_switches_at_runtime(caplog: pytest.LogCaptureFixture) -> None:
    reg = SqlStatsRegistry()
    with caplog.at_level(logging.WARNING, logger="poolkeeper.sql"):
        reg.record("SELECT ?", 1.0)
        reg.slow_query_ms = 10
        reg.record("SELECT ?", 1.0)
    assert len(caplog.records) == 1


def test_describe_params_shows_shapes_only() -> None:
    assert describe_params(None) == "none"
    assert describe_params((1, "x", None)) == "3 (int, str, NoneType)"
    assert describe_params({"id": 5, "name": "bob"}) == "2 named (id: int, name: str)"
    assert describe_params([(1, "a")] * 1000, many=True) == "1000 rows of 2 (int, str)"
    assert describe_params(iter([(1,)]), many=True) == "an iterable of rows"
    assert describe_params(tuple(range(25))).endswith(", +5)")


# ----------------------------------------------------------------------------- threads
def test_totals_stay_exact_under_threads() -> None:
    reg = SqlStatsRegistry(max_entries=20)
    per_thread, threads = 3_000, 4
    deadline = time.monotonic() + 60

    def work(k: int) -> None:
        for i in range(per_thread):
            if time.monotonic() > deadline:
                return
            e = reg.begin(f"SELECT c{(i * k) % 30} FROM t")
            reg.end(e, 0.0001, rows=1)

    pool = [threading.Thread(target=work, args=(k,)) for k in range(1, threads + 1)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(90)
    snap = reg.snapshot()
    assert snap["executions"] == per_thread * threads
    assert snap["rows_fetched"] == per_thread * threads
    assert snap["running"] == 0
    kept = sum(s["executions"] for s in snap["statements"])
    assert kept + snap["evicted_executions"] + snap["untracked_executions"] == snap["executions"]
    assert len(snap["statements"]) <= 20


# ----------------------------------------------------------------------------- the hook
def test_hook_records_statements_through_a_real_pool(any_dsn: str) -> None:
    table = f"pk_stats_{uuid.uuid4().hex[:10]}"
    with Pool(any_dsn, max_size=2, min_idle=0) as pool:
        hook = StatsHook.from_config(pool.config, pool.driver.name)
        pool.add_hook(hook)
        mark = "%s" if pool.driver.name != "sqlite" else "?"
        try:
            with pool.connection() as conn:
                conn.execute(f"CREATE TABLE {table} (id INT, name VARCHAR(40))")
            with pool.connection() as conn:
                conn.executemany(f"INSERT INTO {table} (id, name) VALUES ({mark}, {mark})",
                                 [(i, f"secret-{i}") for i in range(10)])
                for i in (1, 2, 3):
                    conn.execute(f"SELECT id, name FROM {table} WHERE id < {i}").fetchall()
            # each driver raises its own class
            with pool.connection() as conn, pytest.raises(Exception):  # noqa: B017
                conn.execute(f"SELECT no_such_column FROM {table} WHERE name = 'hidden'")
        finally:
            with pool.connection() as conn:
                conn.execute(f"DROP TABLE {table}")
        snap = hook.sql_stats()
        by_fp = {s["fingerprint"]: s for s in snap["statements"]}
        select = by_fp[f"SELECT id, name FROM {table} WHERE id < ?"]
        assert select["executions"] == 3
        insert = by_fp[f"INSERT INTO {table}(id, name) VALUES (?, ?)"]
        assert insert["rows_affected"] == 10
        if pool.driver.name != "sqlite":  # sqlite3 reports no row count for SELECT
            assert select["rows_fetched"] == 1 + 2 + 3 and select["rows_max"] == 3
        failed = by_fp[f"SELECT no_such_column FROM {table} WHERE name = ?"]
        assert failed["errors"] == 1 and failed["last_error"]
        text = json.dumps(snap)
        assert "secret-" not in text and "hidden" not in text
        flat = pool.stats()
        assert flat["sql_executions"] >= 6 and flat["sql_errors"] == 1


def test_hook_switches_off_and_on_at_runtime(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, max_size=1, min_idle=0) as pool:
        hook = StatsHook(SqlStatsRegistry(), dialect="sqlite")
        pool.add_hook(hook)
        with pool.connection() as conn:
            conn.execute("SELECT 1")
            hook.enabled = False
            conn.execute("SELECT 2")
            hook.enabled = True
            conn.execute("SELECT 3")
        assert hook.sql_stats()["executions"] == 2


def test_hook_teaches_the_adaptive_fetch_size(pg_dsn: str) -> None:
    with Pool(pg_dsn, max_size=1, min_idle=0) as pool:
        fetch = AdaptiveFetchSize(configured=100)
        hook = StatsHook.from_config(pool.config, pool.driver.name, fetch=fetch)
        pool.add_hook(hook)
        with pool.connection() as conn:
            conn.execute("SELECT generate_series(1, 3)").fetchall()
        fp = "SELECT generate_series(?, ?)"
        assert fetch.fetch_size(fp) == 4
        assert hook.sql_stats()["statements"][0]["fetch_size"] == 4
        with pool.connection() as conn:
            cur = conn.cursor(name=f"pk_{uuid.uuid4().hex[:8]}")  # server-side cursor
            cur.execute("SELECT generate_series(1, 3)")
            assert cur.raw.itersize == 4
            assert len(cur.fetchall()) == 3


def test_query_text_never_uses_repr() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "Opaque('secret')"

    assert query_text(b"SELECT 1") == "SELECT 1"
    assert query_text(Opaque()) == "<Opaque query>"


def test_hook_counts_cache_hits_so_repeated_text_is_parsed_once() -> None:
    calls: list[str] = []
    reg = SqlStatsRegistry()
    hook = StatsHook(reg, FingerprintCache())

    class Cursor:
        rowcount = 1
        description = ("x",)

    def inner(cursor: Any, raw: Any, query: Any, params: Any, many: bool) -> Any:
        calls.append(query)
        return raw

    run = hook.wrap(inner)
    for _ in range(5):
        run(None, Cursor(), "SELECT x FROM t WHERE id = 1", None, False)
    assert len(calls) == 5
    assert hook.cache.hits == 4 and hook.cache.misses == 1
    assert _only(reg)["rows_fetched"] == 5


def test_row_counts_are_fetched_for_queries_and_affected_for_changes() -> None:
    assert returns_rows("SELECT ?") and returns_rows("WITH x AS (SELECT ?) SELECT * FROM x")
    assert returns_rows("(SELECT a FROM t) UNION (SELECT b FROM u)")
    assert returns_rows("INSERT INTO t(a) VALUES (?) RETURNING id")
    assert not returns_rows("UPDATE t SET a = ?") and not returns_rows("DELETE FROM t")


def test_statement_stats_as_dict_on_a_fresh_entry() -> None:
    d = StatementStats("SELECT ?", 100).as_dict()
    assert d["executions"] == 0 and d["min_ms"] == 0.0 and d["last_execution"] is None


def test_composed_psycopg_queries_are_rendered_then_folded(pg_dsn: str) -> None:
    from psycopg import sql

    with Pool(pg_dsn, max_size=1, min_idle=0) as pool:
        hook = StatsHook.from_config(pool.config, pool.driver.name)
        pool.add_hook(hook)
        query = sql.SQL("SELECT {} AS {}").format(sql.Literal("composed-secret"),
                                                   sql.Identifier("col"))
        with pool.connection() as conn:
            cur = conn.cursor()
            cur.execute(query)
            assert cur.fetchone() == ("composed-secret",)
        fps = [s["fingerprint"] for s in hook.sql_stats()["statements"]]
        assert fps == ['SELECT ? AS "col"']


# ----------------------------------------------------------------------------- the hook's own path
class _Slot:
    """What the hook reads of a pool connection: its one-statement memo."""

    def __init__(self) -> None:
        self.stats_memo: Any = None


class _Cursor:
    """A pool cursor as the hook sees it: the connection's slot and the driver's rowcount."""

    def __init__(self, slot: _Slot) -> None:
        self._slot = slot
        self.rowcount = -1


def test_hook_records_exactly_what_the_registry_records(monkeypatch: pytest.MonkeyPatch) -> None:
    # The hook inlines begin() and end(); run the same executions through both, on a fake
    # clock, and every figure must agree (guards the two copies against drifting apart).
    clock = [100.0]
    monkeypatch.setattr("poolkeeper.sql.hook.perf_counter", lambda: clock[0])
    runs = [(5e-05, 1), (0.0003, 0), (0.002, 7), (0.07, 3), (2.0, -1), (9e-05, 2)]
    slot = _Slot()
    cursor = _Cursor(slot)
    hooked = SqlStatsRegistry(slow_query_ms=1000)
    hook = StatsHook(hooked, dialect="postgresql")

    measured: list[float] = []  # what the hook computes (stop - start), float error included

    steps = iter(runs)

    def inner(cur: Any, raw: Any, query: Any, params: Any, many: bool) -> Any:
        elapsed, rows = next(steps)
        before = clock[0]
        clock[0] += elapsed
        measured.append(clock[0] - before)
        raw.rowcount = rows
        return raw

    run = hook.wrap(inner)
    for _ in runs:
        run(cursor, cursor, "SELECT a FROM t WHERE id = 1", None, False)
    assert slot.stats_memo is not None and list(slot.stats_memo[1]) == [
        "SELECT a FROM t WHERE id = 1"]
    direct = SqlStatsRegistry(slow_query_ms=1000)
    for elapsed, (_, rows) in zip(measured, runs, strict=True):
        direct.record("SELECT a FROM t WHERE id = ?", elapsed, rows=rows)
    a, b = _only(hooked), _only(direct)
    for key in ("last_execution", "nbytes"):
        a.pop(key), b.pop(key)
    assert a == b
    assert a["executions"] == 6 and a["slow"] == 1 and a["running"] == 0
    assert sum(a["histogram"]) == 6 and a["histogram"][0] == 2 and a["histogram"][1] == 1


def test_hook_memo_follows_evictions_resets_and_a_second_hook() -> None:
    reg = SqlStatsRegistry(max_entries=1)
    hook = StatsHook(reg, dialect="postgresql")
    slot = _Slot()
    cursor = _Cursor(slot)

    def inner(cur: Any, raw: Any, query: Any, params: Any, many: bool) -> Any:
        return raw

    run = hook.wrap(inner)
    run(cursor, cursor, "SELECT 1", None, False)
    reg.record("SELECT other", 0.001)  # evicts "SELECT ?" while the slot still remembers it
    run(cursor, cursor, "SELECT 1", None, False)  # the memo's entry is gone: looked up again
    assert _only(reg)["fingerprint"] == "SELECT ?" and _only(reg)["executions"] == 1
    # both evicted in turn ("SELECT ?", then "SELECT other" to make room again)
    assert reg.stats()["sql_stats_evicted_executions"] == 2
    reg.reset()
    run(cursor, cursor, "SELECT 1", None, False)
    assert _only(reg)["executions"] == 1
    # A second statistics hook on the same connections keeps its own counts.
    other = SqlStatsRegistry()
    run_other = StatsHook(other, dialect="postgresql").wrap(inner)
    run_other(cursor, cursor, "SELECT 1", None, False)
    run(cursor, cursor, "SELECT 1", None, False)
    assert _only(other)["executions"] == 1 and _only(reg)["executions"] == 2


# ----------------------------------------------------------------------------- the memo path
def test_cursor_kind_reads_psycopg_rowcount_field_only_when_the_property_just_returns_it(
        pg_dsn: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        plain, named = conn.cursor(), conn.cursor(name="pk_kind")
        assert cursor_kind(plain) == ROWCOUNT_FIELD
        assert cursor_kind(named) == ROWCOUNT_FIELD | STREAMS
        named.close()
        plain.execute("SELECT generate_series(1, 3)")
        assert plain._rowcount == plain.rowcount == 3

    class Computed:  # a driver whose property does more than return the field
        _rowcount = 5

        @property
        def rowcount(self) -> int:
            return self._rowcount - 1

    class Plain:
        rowcount = 2

    assert cursor_kind(Computed()) == 0 and cursor_kind(Plain()) == 0


def test_concurrent_memo_executions_count_in_running_and_running_max() -> None:
    # Two connections repeat the same text on two threads: the lock-free memo path must still
    # see both running at once.
    reg = SqlStatsRegistry()
    hook = StatsHook(reg, dialect="postgresql")
    inside = threading.Barrier(3, timeout=10)  # two statements and this test
    release = threading.Event()
    blocking = [False]

    def inner(cur: Any, raw: Any, query: Any, params: Any, many: bool) -> Any:
        if blocking[0]:
            inside.wait()
            assert release.wait(10)
        raw.rowcount = 1
        return raw

    run = hook.wrap(inner)
    cursors = [_Cursor(_Slot()), _Cursor(_Slot())]
    for cur in cursors:  # warm each connection's memo
        run(cur, cur, "SELECT v FROM t WHERE id = 1", None, False)
    blocking[0] = True
    threads = [threading.Thread(target=run, args=(c, c, "SELECT v FROM t WHERE id = 1",
                                                  None, False)) for c in cursors]
    for t in threads:
        t.start()
    inside.wait()  # both are inside the driver now
    assert _only(reg)["running"] == 2
    release.set()
    for t in threads:
        t.join(10)
    s = _only(reg)
    assert s["running"] == 0 and s["running_max"] == 2 and s["executions"] == 4


def test_a_memo_execution_outliving_its_evicted_entry_is_counted_untracked() -> None:
    reg = SqlStatsRegistry(max_entries=1)
    hook = StatsHook(reg, dialect="postgresql")
    cur = _Cursor(_Slot())

    calls = [0]

    def inner(c: Any, raw: Any, query: Any, params: Any, many: bool) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            reg.record("SELECT other", 0.001)  # evicts "SELECT ?" while it runs
            assert reg.snapshot()["running"] == 1
        raw.rowcount = 1
        return raw

    run = hook.wrap(inner)
    run(cur, cur, "SELECT 2", None, False)  # not memoized yet: through begin()
    run(cur, cur, "SELECT 2", None, False)  # the memo path: its entry is evicted mid-way
    snap = reg.snapshot()
    assert snap["running"] == 0 and snap["untracked_executions"] == 1
    assert snap["executions"] == 3  # two "SELECT 2" (one untracked) and one "SELECT other"


# ----------------------------------------------------------------------------- the solo path
def _hook_offsets(run: Any) -> list[int]:
    """Every bytecode offset of the hook's per-statement function."""
    import dis

    return [i.offset for i in dis.get_instructions(run)]


@contextlib.contextmanager
def _interrupted_at(run: Any, offset: int, action: Any) -> Iterator[list[bool]]:
    """Inside the block, ``action()`` runs once when the hook's frame reaches bytecode
    ``offset``: an eviction or reset landing between any two instructions of a statement's end.
    Yields a one-item list: whether it ran."""
    code = run.__code__
    fired = [False]
    if sys.version_info >= (3, 12):
        # PEP 669's per-code instruction events. sys.settrace's opcode events need
        # f_trace_opcodes set on the frame, which 3.12.1 honours only if some frame set it
        # before settrace() and 3.13 only once the frame's f_trace is set: neither in the way.
        monitoring = sys.monitoring
        tool, instruction = monitoring.DEBUGGER_ID, monitoring.events.INSTRUCTION

        def at(code_: Any, at_offset: int) -> None:
            if at_offset == offset and not fired[0]:
                fired[0] = True
                action()

        monitoring.use_tool_id(tool, "poolkeeper-tests")
        try:
            monitoring.register_callback(tool, instruction, at)
            monitoring.set_local_events(tool, code, instruction)
            yield fired
        finally:
            monitoring.set_local_events(tool, code, 0)
            monitoring.register_callback(tool, instruction, None)
            monitoring.free_tool_id(tool)
        return

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "opcode" and frame.f_lasti == offset and not fired[0]:
            fired[0] = True
            action()
        return local

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is code:
            frame.f_trace_opcodes = True
            return local
        return None

    sys.settrace(tracer)
    try:
        yield fired
    finally:
        sys.settrace(None)


@pytest.mark.parametrize("what", ["evict", "pop"])
def test_a_solo_statement_is_counted_once_whatever_instruction_an_eviction_or_reset_lands_on(
        what: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The hook records a connection's repeated statement without the lock when it is the
    # statement's only execution running (the solo counters). An eviction or a pop() taking
    # the counters may land between any two of its instructions: run one statement per
    # bytecode offset of the hook, interrupted there, and every figure must come out exactly
    # once (evict: in the pool totals; pop: in the popped snapshot or in what follows).
    clock = [0.0]
    monkeypatch.setattr("poolkeeper.sql.hook.perf_counter", lambda: clock[0])
    sql = "SELECT v FROM t WHERE id = 1"

    def inner(cur: Any, raw: Any, query: Any, params: Any, many: bool) -> Any:
        clock[0] += 0.25  # exact in binary: sums compare exactly
        raw.rowcount = 2
        return raw

    probe = StatsHook(SqlStatsRegistry(), dialect="postgresql").wrap(inner)
    fired_anywhere = 0
    for offset in _hook_offsets(probe):
        reg = SqlStatsRegistry(max_entries=1)
        run = StatsHook(reg, dialect="postgresql").wrap(inner)
        cursor = _Cursor(_Slot())
        run(cursor, cursor, sql, None, False)  # the first: looked up, remembered
        run(cursor, cursor, sql, None, False)  # solo from here on
        popped: list[dict[str, Any]] = []

        def action(reg: SqlStatsRegistry = reg, popped: list[dict[str, Any]] = popped) -> None:
            if reg._lock.locked():  # the hook holds it: a real evictor would wait
                return
            if what == "evict":
                reg.record("SELECT other", 0.5)
            else:
                popped.append(reg.pop())

        with _interrupted_at(run, offset, action) as fired:
            run(cursor, cursor, sql, None, False)
        fired_anywhere += fired[0]
        totals = reg.stats()
        if what == "evict":
            assert totals["sql_executions"] == 3 + fired[0], offset
            assert totals["sql_ms"] == 750.0 + 500.0 * fired[0], offset
            assert totals["sql_rows_fetched"] == 6, offset
        else:
            before = popped[0] if popped else {"executions": 0, "total_ms": 0.0,
                                               "rows_fetched": 0}
            assert before["executions"] + totals["sql_executions"] == 3, offset
            assert before["total_ms"] + totals["sql_ms"] == 750.0, offset
            assert before["rows_fetched"] + totals["sql_rows_fetched"] == 6, offset
        assert reg.stats()["sql_running"] == 0
    assert fired_anywhere > 50  # the tracer did reach the hook's instructions


def test_solo_and_locked_executions_add_up_in_every_view(monkeypatch: pytest.MonkeyPatch) -> None:
    # One execution on the locked path (two running at once), the others solo: the snapshot,
    # the pool totals and max_rows() must all see both halves.
    reg = SqlStatsRegistry()
    hook = StatsHook(reg, dialect="postgresql")
    rows = iter([5, 1, 9, 2])

    def inner(cur: Any, raw: Any, query: Any, params: Any, many: bool) -> Any:
        raw.rowcount = next(rows)
        return raw

    run = hook.wrap(inner)
    a, b = _Cursor(_Slot()), _Cursor(_Slot())
    sql = "SELECT v FROM t WHERE id = 1"
    run(a, a, sql, None, False)  # locked (looked up)
    run(a, a, sql, None, False)  # solo
    entry = a._slot.stats_memo[1][sql]
    entry.inflight.append(None)  # another execution running: the next one takes the lock
    run(a, a, sql, None, False)
    entry.inflight.pop()
    run(b, b, sql, None, False)  # b's first: locked
    assert entry.s_executions == 1 and entry.executions == 3
    s = _only(reg)
    assert s["executions"] == 4 and s["rows_fetched"] == 17 and s["rows_max"] == 9
    assert sum(s["histogram"]) == 4 and s["running"] == 0
    assert reg.stats()["sql_executions"] == 4 and reg.max_rows("SELECT v FROM t WHERE id = ?") == 9


@pytest.mark.parametrize(("order", "evicted"), [
    ("ABA", "SELECT b FROM t"), ("ABBA", "SELECT b FROM t"), ("ABAB", "SELECT a FROM t"),
    ("AAB", "SELECT a FROM t"), ("BAAA", "SELECT b FROM t")])
def test_the_hook_keeps_the_lru_order_exact_on_its_memo_path(order: str, evicted: str) -> None:
    # Two connections, each repeating its own statement (the memo path, which skips the LRU
    # move for the entry begun last): a third statement evicts the least recently run.
    reg = SqlStatsRegistry(max_entries=2)
    run = StatsHook(reg, dialect="postgresql").wrap(lambda c, r, q, p, m: r)
    cursors = {"A": _Cursor(_Slot()), "B": _Cursor(_Slot())}
    texts = {"A": "SELECT a FROM t", "B": "SELECT b FROM t"}
    for name in order:
        run(cursors[name], cursors[name], texts[name], None, False)
    run(_Cursor(_Slot()), None, "SELECT c FROM t", None, False)
    kept = {s["fingerprint"] for s in reg.snapshot()["statements"]}
    assert evicted not in kept and "SELECT c FROM t" in kept and len(kept) == 2


def test_every_execution_is_counted_once_under_threads_evictions_and_pops() -> None:
    # Threads repeat statements on their own connections (solo and locked ends mixed) while
    # the registry evicts (two entries for three statements) and another thread pops: the
    # popped snapshots plus what is left must hold every execution and every row exactly once.
    reg = SqlStatsRegistry(max_entries=2)
    run = StatsHook(reg, dialect="postgresql").wrap(_rows_inner)
    texts = ["SELECT a FROM t WHERE id = 1", "SELECT b FROM t WHERE id = 2",
             "SELECT c FROM t WHERE id = 3"]
    per_thread, threads_n = 3_000, 6
    popped: list[dict[str, Any]] = []
    done = threading.Event()
    # Halfway, each worker waits for the popper's sixth pop: the pops then fall inside the
    # run however fast it is (a faster fingerprinter made the run end after 5 pops).
    midway = threading.Event()

    def worker(n: int) -> None:
        cursor = _Cursor(_Slot())
        for i in range(per_thread):
            if i == per_thread // 2:
                midway.wait(10)
            # long runs of one text (the memo path) with a switch now and then
            run(cursor, cursor, texts[(n + i // 97) % 3], None, False)

    def popper() -> None:
        while not done.wait(0.002):
            popped.append(reg.pop())
            if len(popped) > 5:
                midway.set()

    pop_thread = threading.Thread(target=popper)
    pop_thread.start()
    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython will
    try:
        for t in workers:
            t.start()
        for t in workers:
            t.join(60)
    finally:
        sys.setswitchinterval(switch)
        done.set()
        pop_thread.join(10)
    final = reg.stats()
    total = threads_n * per_thread
    assert sum(p["executions"] for p in popped) + final["sql_executions"] == total
    assert sum(p["rows_fetched"] for p in popped) + final["sql_rows_fetched"] == 2 * total
    assert final["sql_running"] == 0
    assert len(popped) > 5


def _rows_inner(cur: Any, raw: Any, query: Any, params: Any, many: bool) -> Any:
    raw.rowcount = 2
    return raw


def test_a_connection_remembers_its_last_eight_statements_and_skips_their_lookup() -> None:
    reg = SqlStatsRegistry()
    begun: list[str] = []
    begin = reg.begin

    def counting_begin(fingerprint: str) -> Any:
        begun.append(fingerprint)
        return begin(fingerprint)

    reg.begin = counting_begin  # type: ignore[method-assign]
    run = StatsHook(reg, dialect="postgresql").wrap(lambda c, r, q, p, m: r)
    cursor = _Cursor(_Slot())
    texts = [f"SELECT c{i} FROM t WHERE id = %s" for i in range(9)]
    for _ in range(3):  # a unit of work of three statements, repeated
        for text in texts[:3]:
            run(cursor, cursor, text, None, False)
    assert len(begun) == 3  # looked up once each, then found in the connection's memo
    for text in texts:  # nine texts: the oldest is forgotten
        run(cursor, cursor, text, None, False)
    remembered = cursor._slot.stats_memo[1]
    assert len(remembered) == 8 and texts[0] not in remembered and texts[8] in remembered
    long_text = "SELECT x FROM t WHERE note = '" + "y" * 2_000 + "'"
    run(cursor, cursor, long_text, None, False)
    run(cursor, cursor, long_text, None, False)
    assert long_text not in cursor._slot.stats_memo[1]  # never kept: looked up each time
    assert begun.count("SELECT x FROM t WHERE note = ?") == 2
    stmts = {s["fingerprint"]: s["executions"] for s in reg.snapshot()["statements"]}
    assert stmts["SELECT c0 FROM t WHERE id = ?"] == 4
    assert stmts["SELECT c8 FROM t WHERE id = ?"] == 1


def test_an_unhashable_query_object_is_counted_beside_remembered_texts() -> None:
    class Composed:  # like psycopg's sql.Composed: __eq__ without __hash__
        __hash__ = None  # type: ignore[assignment]

        def __eq__(self, other: object) -> bool:
            return False

        def as_string(self, context: Any) -> str:
            return "SELECT 'secret' AS x"

    reg = SqlStatsRegistry()
    run = StatsHook(reg, dialect="postgresql").wrap(lambda c, r, q, p, m: r)
    cursor = _Cursor(_Slot())
    run(cursor, cursor, "SELECT 1", None, False)
    run(cursor, cursor, Composed(), None, False)
    run(cursor, cursor, Composed(), None, False)
    stmts = {s["fingerprint"]: s["executions"] for s in reg.snapshot()["statements"]}
    assert stmts == {"SELECT ?": 1, "SELECT ? AS x": 2}
