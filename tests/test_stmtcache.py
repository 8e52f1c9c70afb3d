"""Statement caches stay within count and byte bounds; psycopg's prepared statements obey them."""

from __future__ import annotations

import gc
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from poolkeeper import Pool
from poolkeeper.core.stmtpolicy import StatementCachePolicy
from poolkeeper.drivers.base import Driver
from poolkeeper.drivers.postgres import PostgresDriver
from poolkeeper.drivers.postgres_stmtcache import apply_psycopg_policy, psycopg_policy
from poolkeeper.drivers.sqlite_stmtcache import (
    SQLITE_STATEMENT_BYTES,
    sqlite_cached_statements,
    sqlite_policy,
)
from poolkeeper.errors import ConfigError
from poolkeeper.hooks.fetchsize import AdaptiveFetchSize
from poolkeeper.hooks.stmtcache import StatementCacheHook
from poolkeeper.sql.lru import LRU

from ._hooks import Conn, execute, run_hook

StatementCache = LRU  # the one LRU every cache uses


def _pg_hook(size: int, nbytes: int) -> tuple[StatementCacheHook, Any]:
    """A statement-cache hook for psycopg and the runner of one statement through it."""
    driver = PostgresDriver({})
    hook = StatementCacheHook(driver, psycopg_policy(size, nbytes))
    return hook, run_hook(hook, execute, driver)


# ----------------------------------------------------------------------------- the LRU
def test_lru_is_bounded_by_count_and_counts_everything() -> None:
    cache: StatementCache[str, int] = StatementCache(max_entries=2, max_bytes=1_000)
    cache.put("a", 1, 10)
    cache.put("b", 2, 10)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3, 10)  # evicts b
    assert cache.get("b") is None
    assert "a" in cache and "c" in cache and len(cache) == 2
    s = cache.stats()
    assert (s["size"], s["bytes"], s["hits"], s["misses"], s["accesses"], s["evictions"]) == \
        (2, 20, 1, 1, 2, 1)


def test_lru_is_bounded_by_bytes() -> None:
    cache: StatementCache[int, str] = StatementCache(max_entries=1_000, max_bytes=100)
    for i in range(50):
        cache.put(i, "x", 30)
        assert cache.nbytes <= cache.budget_bytes
    assert len(cache) == 3 and cache.evictions == 47
    assert not cache.put(999, "too big", 101)
    assert cache.rejected == 1 and 999 not in cache


def test_replacing_a_key_does_not_double_count_its_bytes() -> None:
    cache: StatementCache[str, int] = StatementCache(max_entries=10, max_bytes=100)
    cache.put("a", 1, 40)
    cache.put("a", 2, 50)
    assert cache.nbytes == 50 and cache.peek("a") == 2 and cache.stats()["accesses"] == 0


def test_on_evict_sees_every_evicted_entry_and_may_use_the_cache() -> None:
    evicted: list[tuple[str, int]] = []
    cache: StatementCache[str, int] = StatementCache(max_entries=2, max_bytes=1_000)

    def on_evict(key: str, value: int) -> None:
        evicted.append((key, value))
        cache.get(key)  # runs outside the lock: no deadlock

    cache.on_evict = on_evict
    for i in range(4):
        cache.put(f"k{i}", i, 1)
    assert evicted == [("k0", 0), ("k1", 1)]
    assert cache.pop("k3") == 3 and cache.pop("k3") is None
    assert evicted == [("k0", 0), ("k1", 1)]  # pop is not an eviction
    assert cache.discarded == 1
    assert cache.clear() == [("k2", 2)]
    assert evicted == [("k0", 0), ("k1", 1)] and len(cache) == 0 and cache.nbytes == 0


def test_zero_sized_cache_holds_nothing() -> None:
    cache: StatementCache[str, int] = StatementCache(max_entries=0, max_bytes=0)
    assert not cache.put("a", 1, 0)
    assert len(cache) == 0 and cache.rejected == 1


def test_lru_rejects_bad_bounds() -> None:
    with pytest.raises(ConfigError, match="max_bytes=-1"):
        StatementCache(max_entries=1, max_bytes=-1)


def test_lru_is_consistent_under_threads() -> None:
    cache: StatementCache[int, int] = StatementCache(max_entries=50, max_bytes=400)

    def work(k: int) -> None:
        for i in range(3_000):
            key = (i * k) % 97
            if cache.get(key) is None:
                cache.put(key, key, 1 + key % 9)

    threads = [threading.Thread(target=work, args=(k,)) for k in (1, 2, 5, 7)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert cache.stats()["accesses"] == 12_000
    assert len(cache) <= 50 and cache.nbytes <= 400
    assert cache.nbytes == sum(size for _, size in cache._map.values())


# ----------------------------------------------------------------------------- policies
def test_psycopg_policy_keeps_its_text_within_the_byte_budget() -> None:
    p = psycopg_policy(100, 1 << 20)
    assert p.supported and p.max_statements == 100 and p.prepare_threshold == 5
    # psycopg holds at most 2 * prepared_max + 1 texts, each no longer than the cap
    assert (2 * p.max_statements + 1) * p.max_statement_bytes <= p.max_bytes
    assert p.bounded_by == "count and bytes"
    off = psycopg_policy(0, 1 << 20)
    assert off.max_statements == 0 and off.prepare_threshold is None


def test_sqlite_policy_sizes_cached_statements_from_both_bounds() -> None:
    assert sqlite_cached_statements(100, 1 << 20) == 100
    assert sqlite_cached_statements(100, 10 * SQLITE_STATEMENT_BYTES) == 10
    assert sqlite_cached_statements(0, 1 << 20) == 0
    p = sqlite_policy(100, 40 * SQLITE_STATEMENT_BYTES)
    assert p.max_statements == 40 and p.bounded_by == "count and bytes"
    assert p.max_bytes == 40 * SQLITE_STATEMENT_BYTES
    conn = sqlite3.connect(":memory:", cached_statements=p.max_statements)
    conn.close()


def test_sqlite_cache_is_bounded_in_bytes_and_counted(tmp_path: Any) -> None:
    """Issue #14 item 2: 100 distinct ~1 MB statements on one pooled sqlite connection stay
    within the byte budget (Python's side, tracemalloc) and the counters say what sqlite3's
    LRU did. ~1 s."""
    import tracemalloc

    with Pool(f"sqlite:///{tmp_path / 'c.db'}", min_idle=1, max_size=1) as pool:
        with pool.connection() as conn:
            conn.execute("SELECT 1").fetchall()
            conn.execute("SELECT 1").fetchall()
        info = pool.statement_cache_info()
        assert (info["stmt_cache_hits"], info["stmt_cache_misses"]) == (1, 1)
        budget = pool.config.statement_cache_bytes
        slots = pool.config.statement_cache_size
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            with pool.connection() as conn:
                for i in range(100):
                    sql = f"SELECT length('{'x' * (1 << 20)}'), {i}"
                    assert conn.execute(sql).fetchall() == [(1 << 20, i)]
                    del sql
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert grown < budget + (1 << 20), f"traced +{grown:,} B"
        info = pool.statement_cache_info()
        assert info["stmt_cache_misses"] == 101
        assert 0 < info["stmt_cache_bytes"] <= budget
        assert info["stmt_cache_statements"] <= slots
        # every 1 MB text alone is over the 1 MiB budget (it counts twice: the key and
        # SQLite's copy): each one is pushed out with all the entries older than it
        assert info["stmt_cache_evictions"] >= 100 * slots
        with pool.connection() as conn:  # the short statement is gone too, and works
            assert conn.execute("SELECT 1").fetchall() == [(1,)]
        assert pool.statement_cache_info()["stmt_cache_misses"] == 102


def test_pymysql_policy_says_it_is_not_supported() -> None:
    from poolkeeper.drivers.mysql import MysqlDriver

    driver = MysqlDriver({})
    p = driver.statement_cache_policy(100, 1 << 20)
    assert not p.supported and p.max_statements == 0
    assert "no server-side prepared statements" in p.note
    hook = StatementCacheHook(driver, p)
    assert not hook.per_statement  # nothing to govern: the pool leaves it out of the path
    assert hook.stats()["stmt_cache_supported"] == 0


def test_policy_of_an_unknown_driver_governs_nothing_and_bad_sizes_are_refused() -> None:
    p = Driver({}).statement_cache_policy(1, 1)
    assert isinstance(p, StatementCachePolicy) and not p.supported and p.mechanism == "none"
    with pytest.raises(ConfigError, match="statement_cache_size=-1"):
        sqlite_policy(-1, 1)
    with pytest.raises(ConfigError, match="statement_cache_bytes=-1"):
        psycopg_policy(1, -1)


# ----------------------------------------------------------------------------- fetch size
def test_fetch_size_is_max_seen_plus_one_capped_by_configured() -> None:
    fetch = AdaptiveFetchSize(configured=100)
    fp = "SELECT * FROM orders WHERE id = ?"
    assert fetch.fetch_size(fp) == 100  # never seen
    fetch.observe(fp, 0)
    assert fetch.fetch_size(fp) == 1
    fetch.observe(fp, 1)
    fetch.observe(fp, 0)  # a smaller result does not shrink what was learned
    assert fetch.fetch_size(fp) == 2
    fetch.observe(fp, 5_000)
    assert fetch.fetch_size(fp) == 100
    assert fetch.current(fp) == 100
    assert fetch.stats()["adapted"] == 2


def test_fetch_size_memory_is_bounded() -> None:
    fetch = AdaptiveFetchSize(configured=10, max_entries=1_000, max_bytes=20_000)
    for i in range(2_000):
        fetch.observe(f"SELECT c FROM t{i} WHERE x = ?", 1)
        assert fetch.nbytes <= fetch.budget_bytes
    assert fetch.stats()["evictions"] > 0
    assert fetch.fetch_size("SELECT c FROM t0 WHERE x = ?") == 10  # evicted: the default


def test_fetch_size_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="fetch_size=0"):
        AdaptiveFetchSize(configured=0)


# ----------------------------------------------------------------------------- psycopg
@pytest.fixture
def pg_conn(pg_dsn: str) -> Iterator[Any]:
    import psycopg

    conn = psycopg.connect(pg_dsn, autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


def _server_prepared(conn: Any) -> list[str]:
    rows = conn.execute("SELECT statement FROM pg_prepared_statements", prepare=False).fetchall()
    return [r[0] for r in rows]


def _psycopg_texts(conn: Any) -> list[bytes]:
    # psycopg's private maps are read only here, to prove what it retains
    manager = conn._prepared
    return [key[0] for key in [*manager._names, *manager._counts]]


def test_psycopg_keeps_at_most_statement_cache_size_prepared(pg_conn: Any) -> None:
    hook, run = _pg_hook(3, 1 << 20)
    cur = pg_conn.cursor()
    for i in range(8):
        for _ in range(10):
            run(None, cur, f"SELECT {i} + %s", (1,), False)
    run(None, cur, "SELECT 1", None, False)  # psycopg deallocates on the next execute
    held = PostgresDriver.prepared_statements(pg_conn)  # before psycopg counts the next one
    prepared = _server_prepared(pg_conn)
    assert 1 <= len(prepared) <= 3, prepared
    assert pg_conn.prepared_max == 3
    stats = hook.connection_stats(pg_conn)
    assert stats is not None
    assert stats["prepared"] == len(held["prepared"]) == len(prepared)
    assert stats["counted"] == len(held["counted"]) and stats["bytes"] == held["bytes"]
    assert stats["deallocated"] == 5 and stats["hits"] == 8 * 9


def test_oversize_statements_are_never_prepared_nor_remembered(pg_conn: Any) -> None:
    hook, run = _pg_hook(10, 20_000)
    policy = hook.policy
    cur = pg_conn.cursor()
    n = 1_000
    big = "SELECT 1 WHERE 1 IN (" + ", ".join(["%s"] * n) + ")"
    assert len(big) > policy.max_statement_bytes
    for _ in range(10):
        run(None, cur, big, list(range(n)), False)
    pg_conn.execute("CREATE TEMP TABLE pk_many (a int)")
    big_many = "INSERT INTO pk_many SELECT %s WHERE " + " AND ".join(["1 = 1"] * 1_000)
    run(None, cur, big_many, [(i,) for i in range(3)], True)
    assert not any("IN (" in s or "pk_many" in s for s in _server_prepared(pg_conn))
    assert all(len(t) <= policy.max_statement_bytes for t in _psycopg_texts(pg_conn))
    assert pg_conn.prepare_threshold == 5  # restored after each oversize statement
    assert hook.stats()["stmt_cache_bypassed"] == 11


def test_a_failing_statement_is_dropped_not_cached(pg_conn: Any) -> None:
    import psycopg

    hook, run = _pg_hook(10, 1 << 20)
    cur = pg_conn.cursor()
    for _ in range(3):
        with pytest.raises(psycopg.errors.UndefinedTable):
            run(None, cur, "SELECT * FROM pk_no_such_table", None, False)
    stats = hook.connection_stats(pg_conn)
    assert stats is not None
    assert stats["size"] == 0 and stats["discarded"] == 3 and stats["hits"] == 0


def test_statement_cache_size_zero_prepares_nothing(pg_conn: Any) -> None:
    _hook, run = _pg_hook(0, 1 << 20)
    cur = pg_conn.cursor()
    for _ in range(10):
        run(None, cur, "SELECT 42 + %s", (1,), False)
    assert pg_conn.prepare_threshold is None
    assert _server_prepared(pg_conn) == []


def test_apply_policy_sets_psycopg_attributes(pg_conn: Any) -> None:
    apply_psycopg_policy(pg_conn, psycopg_policy(7, 1 << 20))
    assert (pg_conn.prepared_max, pg_conn.prepare_threshold) == (7, 5)


def test_counters_survive_the_connection_closing(pg_dsn: str) -> None:
    import psycopg

    hook, run = _pg_hook(5, 1 << 20)
    conn = psycopg.connect(pg_dsn, autocommit=True)
    cur = conn.cursor()
    for _ in range(4):
        run(None, cur, "SELECT 1", None, False)
    conn.close()
    del conn, cur
    gc.collect()
    s = hook.stats()
    assert s["stmt_cache_statements"] == 0  # the mirror went with the connection
    assert s["stmt_cache_hits"] == 3 and s["stmt_cache_misses"] == 1


def test_governance_through_a_real_pool(pg_dsn: str) -> None:
    with Pool(pg_dsn, max_size=1, min_idle=0, statement_cache_size=2) as pool:
        hook = StatementCacheHook.from_config(pool.config, pool.driver)
        pool.add_hook(hook)
        for i in range(5):
            with pool.connection() as conn:
                for _ in range(8):
                    conn.execute(f"SELECT {i} + %s", (1,)).fetchall()
        with pool.connection() as conn:
            raw = conn.raw
            count = "SELECT count(*) FROM pg_prepared_statements"
            # psycopg closes an evicted statement after the *next* statement's result, so the
            # server may hold one over prepared_max until then
            assert raw.execute(count, prepare=False).fetchone()[0] <= 3
            assert raw.execute(count, prepare=False).fetchone()[0] <= 2
            assert raw.prepared_max == 2
        stats = pool.stats()
        # psycopg prepares a counted text without rotating; the next new text deallocates
        # the oldest prepared one: 3 held after text 2, one deallocated by texts 3 and 4
        assert stats["stmt_cache_hits"] == 5 * 7 and stats["stmt_cache_evictions"] == 2
        assert stats["stmt_cache_deallocated"] == 2
        assert hook.describe()["mechanism"] == "psycopg prepared statements"


def test_repeated_statement_counts_through_the_connection_memo(pg_dsn: str) -> None:
    # A statement repeated on a connection takes the hook's memo path (no state lookup, no
    # LRU move): the counters must come out as on the full path, and a failure still drops it.
    import psycopg

    with Pool(pg_dsn, max_size=1, min_idle=0) as pool:
        before = pool.stats()
        for _ in range(3):
            with pool.connection() as conn:
                for _ in range(4):
                    assert conn.execute("SELECT 7 + %s", (1,)).fetchone() == (8,)
        after = pool.stats()
        assert after["stmt_cache_misses"] - before["stmt_cache_misses"] == 1
        assert after["stmt_cache_hits"] - before["stmt_cache_hits"] == 11
        with pool.connection() as conn:
            conn.execute("SELECT 1 / %s", (1,)).fetchone()
            conn.commit()
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT 1 / %s", (0,))  # a memo hit that fails: psycopg keeps it
            conn.rollback()
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT 2 / %s", (0,))  # a new text that fails: dropped
            conn.rollback()  # psycopg forgets every statement: so does the mirror
            held = PostgresDriver.prepared_statements(conn.raw)
            conn.execute("SELECT 1").fetchone()
        failed = pool.stats()
        assert failed["stmt_cache_discarded"] - after["stmt_cache_discarded"] == 1
        assert held["counted"] == held["prepared"] == []
        assert failed["stmt_cache_statements"] == 1  # SELECT 1
        with pool.connection() as conn:
            conn.execute("SELECT 2 / %s", (2,)).fetchone()  # dropped: a miss again
        assert pool.stats()["stmt_cache_misses"] - failed["stmt_cache_misses"] == 1


def _mirror_order(hook: StatementCacheHook, conn: Any) -> list[Any]:
    mirror: Any = hook._states[id(conn)].mirror  # a PsycopgMirror
    return [*mirror.counts.keys(), "|", *mirror.names.keys()]


def test_the_connection_memo_counts_and_orders_as_the_full_path(pg_dsn: str) -> None:
    # A unit of work alternating statements runs on the memo path (remembered texts, an LRU
    # move unless the text ran last); the same sequence without a memo (no slot) must give
    # the same counters and the same mirror order, evictions included.
    import psycopg

    texts = [f"SELECT {i} + %s" for i in range(5)]
    texts.append("SELECT 5 + %s -- " + "x" * 1_100)  # cached, but too long to remember
    sequence = [0, 1, 2, 0, 0, 3, 1, 4, 4, 2, 0, 5, 0, 1, 0, 3, 3, 2] * 3
    results = []
    for with_memo in (True, False):
        hook, run = _pg_hook(3, 1 << 20)
        cursor = Conn() if with_memo else None
        orders = []  # the mirror's LRU order after each statement
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            cur = conn.cursor()
            for i in sequence:
                run(cursor, cur, texts[i], (1,), False)
                assert cur.fetchone() == (i + 1,)
                orders.append(_mirror_order(hook, conn))
            with pytest.raises(psycopg.errors.DivisionByZero):  # a new text that fails: dropped
                run(cursor, cur, "SELECT 1 / %s", (0,), False)
            run(cursor, cur, texts[2], (1,), False)
            order = _mirror_order(hook, conn)
            stats = hook.connection_stats(conn)
        assert stats is not None
        results.append((orders, order,
                        {k: stats[k] for k in ("hits", "misses", "evictions", "size")}))
        if with_memo:
            assert cursor is not None and len(cursor.memo[hook].recent) == 6  # and 1 / %s
    assert results[0] == results[1]
    assert results[0][2]["evictions"] > 0 and results[0][2]["hits"] > 0


def _held(pool: Pool) -> tuple[Any, ...]:
    """(counted, prepared, bytes) as poolkeeper reports them and as psycopg holds them."""
    hook = pool._stmt_cache
    with pool.connection() as conn:
        raw = conn.raw
        mine = hook.connection_stats(raw)
        held = PostgresDriver.prepared_statements(raw)
    assert mine is not None and held["counted"] is not None
    # texts held, their bytes first (what the ledger reads), then how they split
    return ((mine["size"], mine["bytes"], mine.get("counted"), mine.get("prepared")),
            (len(held["counted"]) + len(held["prepared"]), held["bytes"],
             len(held["counted"]), len(held["prepared"])))


@pytest.mark.parametrize("seed", range(6))
def test_the_mirror_reports_what_psycopg_holds_after_every_step(pg_dsn: str, seed: int) -> None:
    # Issue #14 item 5: random sequences over a few texts (repeats that reach psycopg's
    # threshold, executemany, known and new texts that fail, ROLLBACK / DISCARD ALL / DROP,
    # rollbacks after an error, oversize texts), compared with psycopg's own maps each step.
    import random

    import psycopg

    rng = random.Random(seed)
    texts = [f"SELECT {i} + %s" for i in range(7)] + [f"SELECT {i} -- {'x' * 300}"
                                                      for i in range(3)]
    autocommit = seed % 2 == 1  # DISCARD ALL runs only outside a transaction
    with Pool(pg_dsn, max_size=1, min_idle=0, statement_cache_size=3, autocommit=autocommit,
              statement_cache_bytes=20_000, name=f"mirror-{seed}") as pool:
        with pool.connection() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS pk_mirror (a int)")
        steps = []
        for _ in range(150):
            kind = rng.choices(["text", "many", "fail", "clear", "big"],
                               [70, 8, 8, 4, 2])[0]
            with pool.connection() as conn:
                if kind == "text":
                    text = rng.choice(texts)
                    conn.execute(text, (1,) if "%s" in text else None).fetchone()
                elif kind == "many":
                    with conn.cursor() as cur:
                        cur.executemany(f"INSERT INTO pk_mirror VALUES (%s + {rng.randrange(3)})",
                                        [(1,), (2,)])
                elif kind == "fail":
                    text = rng.choice(["SELECT 1 / %s", "SELECT 2 / %s", "SELECT * FROM pk_none"])
                    with pytest.raises(psycopg.Error):
                        conn.execute(text, (0,) if "%s" in text else None)
                    if rng.random() < 0.5:
                        conn.rollback()
                elif kind == "clear":
                    conn.execute(rng.choice(["ROLLBACK", "DROP TABLE IF EXISTS pk_mirror_none"]
                                            + ["DISCARD ALL"] * autocommit))
                else:
                    conn.execute("SELECT 1 WHERE 1 IN (" + ", ".join(["2"] * 4_000) + ")")
            steps.append(kind)
            mine, held = _held(pool)
            assert mine[:2] == held[:2], (seed, " ".join(steps), mine, held)
            assert mine == held, (seed, " ".join(steps), mine, held)
        stats = pool.statement_cache_info()
    assert stats["stmt_cache_hits"] > 0 and stats["stmt_cache_evictions"] > 0, stats


def test_prepared_statements_falls_back_to_the_public_settings() -> None:
    # A psycopg keeping its maps elsewhere (no PrepareManager at conn._prepared): only what
    # the public API says, and the maps as unknown, never an AttributeError.
    class _OtherPsycopg:
        prepare_threshold = 5
        prepared_max = 3

    held = PostgresDriver.prepared_statements(_OtherPsycopg())
    assert held == {"prepare_threshold": 5, "prepared_max": 3, "counted": None,
                    "prepared": None, "bytes": None}
