"""SQL over poolkeeper's own state: WHERE, ORDER BY, GROUP BY and joins work over a snapshot;
anything but a single read-only SELECT is refused with a clear error."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from poolkeeper import Pool
from poolkeeper.errors import PoolError
from poolkeeper.observe.admin import TABLES, AdminQueryError, format_table, query, snapshot
from poolkeeper.observe.memory import MemoryLedger, MemoryWatchdog
from poolkeeper.observe.monitor import Monitor, Probe, Token

HERE = __file__


class Bounded:
    def __init__(self, used: int, budget: int) -> None:
        self.used, self.budget = used, budget

    def memory_usage(self) -> tuple[int, int]:
        return self.used, self.budget


@pytest.fixture
def mon() -> Monitor:
    return Monitor()


@pytest.fixture
def pool(sqlite_dsn: str) -> Iterator[Pool]:
    with Pool(sqlite_dsn, max_size=3, min_idle=1, name="orders") as p:
        yield p


def take_checkout(probe: Probe) -> tuple[Token, int]:
    return probe.track("checkout", sql="SELECT 1"), sys._getframe().f_lineno


def take_buffer(probe: Probe, size: int) -> Token:
    return probe.track("loader_buffer", size=size)


# --------------------------------------------------------------------------- queries
def test_readme_example_groups_checkouts_by_site(mon: Monitor, pool: Pool) -> None:
    probe = mon.probe("orders", enabled=True)
    held = [take_checkout(probe) for _ in range(3)]
    line = held[0][1]
    result = query("select site, count(*), max(age_s) from resources "
                   "where kind='checkout' and age_s > 10 group by site", pools=[pool],
                   monitor=mon)
    assert result.columns == ("site", "count(*)", "max(age_s)")
    assert result.rows == []  # nothing is 10 s old yet
    result = query("select site, count(*), max(age_s) from resources "
                   "where kind='checkout' and age_s >= 0 group by site", pools=[pool],
                   monitor=mon)
    [(site, count, oldest)] = result.rows
    assert site == f"{HERE}:{line} in take_checkout"
    assert count == 3 and oldest >= 0
    for token, _ in held:
        token.close()


def test_where_order_by_and_group_by(mon: Monitor) -> None:
    probe = mon.probe("loader", enabled=True)
    tokens = [take_buffer(probe, size) for size in (300, 100, 200)]
    tokens.append(probe.track("spill_file", size=5000))
    result = query("select size_bytes from resources where kind = 'loader_buffer' "
                   "order by size_bytes desc", pools=[], monitor=mon)
    assert result.rows == [(300,), (200,), (100,)]
    result = query("select kind, count(*) n, sum(size_bytes) b from resources "
                   "group by kind order by b", pools=[], monitor=mon)
    assert result.rows == [("loader_buffer", 3, 600), ("spill_file", 1, 5000)]
    assert result.as_dicts()[0] == {"kind": "loader_buffer", "n": 3, "b": 600}
    for t in tokens:
        t.close()


def test_join_resources_with_pools_and_connections(mon: Monitor, pool: Pool) -> None:
    probe = mon.probe(pool.name, enabled=True)
    with pool.connection() as conn:
        conn.execute("SELECT 1").fetchone()
        token = probe.track("checkout", conn)
        result = query(
            "select p.name, p.max_size, r.kind, c.state "
            "from resources r join pools p on p.name = r.pool "
            "join connections c on c.pool = p.name and c.state = 'in_use'",
            pools=[pool], monitor=mon)
        assert result.rows == [("orders", 3, "checkout", "in_use")]
        token.close()


def test_connections_table_reflects_the_real_pool(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=2, min_idle=1, name="conn-table") as pool:
        pool.wait_ready()
        with pool.connection() as conn:
            conn.execute("SELECT 42").fetchone()
            result = query("select state, uses, sql, borrow_site, created <= last_used "
                           "from connections where pool = 'conn-table' and state = 'in_use'",
                           pools=pool)
        [(state, uses, sql, site, _)] = result.rows
        assert (state, uses) == ("in_use", 1)
        assert sql == "SELECT ?"  # the literal never shows
        assert site.startswith(f"{HERE}:")
        result = query("select size, active, idle, driver from pools", pools=[pool])
        assert result.rows[0][3] == pool.driver.name
        result = query("select value from pool_stats where pool = ? and name = 'pool_max'",
                       pools=[pool], params=("conn-table",))
        assert result.rows == [(2,)]


def test_sql_stats_and_statement_cache_tables_come_from_the_pool(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, name="stats") as pool:
        with pool.connection() as conn:
            for _ in range(3):
                conn.execute("SELECT 'secret' WHERE 1 = 1").fetchone()
            conn.execute("SELECT 2").fetchone()
        result = query("select pool, fingerprint, executions from sql_stats "
                       "order by executions desc", pools=[pool])
        assert result.rows == [("stats", "SELECT ? WHERE ? = ?", 3), ("stats", "SELECT ?", 1)]
        result = query("select s.fingerprint, p.max_size from sql_stats s "
                       "join pools p on p.name = s.pool where s.executions > 1", pools=[pool])
        assert result.rows == [("SELECT ? WHERE ? = ?", 10)]
        result = query("select pool, supported, budget_bytes > 0 from statement_cache",
                       pools=[pool])
        assert result.rows == [("stats", 1, 1)]


def test_memory_tables(mon: Monitor) -> None:
    ledger = MemoryLedger()
    keep = Bounded(900, 1000)
    ledger.register("stats:orders", keep, category="stats")
    dog = MemoryWatchdog(limit_bytes=1 << 40, ledger=ledger, pools=[], log_interval=None)
    dog.sample()
    dog.sample()
    result = query("select name, category, bytes, budget_bytes, fraction from memory "
                   "where fraction > 0.5", pools=[], ledger=ledger, monitor=mon)
    assert result.rows == [("stats:orders", "stats", 900, 1000, 0.9)]
    result = query("select count(*), min(rss_bytes) > 0 from memory_samples", pools=[],
                   ledger=ledger, watchdog=dog, monitor=mon)
    assert result.rows == [(2, 1)]
    result = query("select limit_source, rss_bytes > 0 from memory_samples", pools=[],
                   ledger=ledger, monitor=mon)
    assert len(result.rows) == 1 and result.rows[0][1] == 1


def test_collected_resources_and_monitor_stats(mon: Monitor) -> None:
    probe = mon.probe("p", enabled=True)
    probe.track("cursor").collected()
    result = query("select kind, lived_s >= 0, function from collected_resources",
                   pools=[], monitor=mon)
    assert result.rows == [("cursor", 1, "test_collected_resources_and_monitor_stats")]
    result = query("select value from monitor_stats where name = 'collected_total'",
                   pools=[], monitor=mon)
    assert result.rows == [(1,)]


def test_snapshot_is_consistent_across_queries(mon: Monitor) -> None:
    probe = mon.probe("p", enabled=True)
    token = probe.track("checkout")
    with snapshot([], monitor=mon) as snap:
        token.close()  # the state changes; the snapshot does not
        assert snap.query("select count(*) from resources").rows == [(1,)]
        assert "site" in snap.tables()["resources"]
    assert query("select count(*) from resources", pools=[], monitor=mon).rows == [(0,)]


def test_every_documented_table_exists(pool: Pool) -> None:
    with snapshot([pool]) as snap:
        tables = snap.tables()
    assert set(tables) == set(TABLES)
    for name, columns in TABLES.items():
        assert [c for c, _ in columns] == tables[name][: len(columns)]


def test_results_format_as_a_text_table(mon: Monitor) -> None:
    probe = mon.probe("p", enabled=True)
    token = take_buffer(probe, 12345)
    text = query("select kind, size_bytes, sql from resources", pools=[], monitor=mon).format()
    lines = text.splitlines()
    assert lines[0].split() == ["kind", "size_bytes", "sql"]
    assert "loader_buffer" in lines[2] and "12345" in lines[2] and "NULL" in lines[2]
    assert lines[-1] == "(1 row)"
    token.close()
    assert format_table(["a"], [("x" * 100,)], max_width=10).splitlines()[2] == "x" * 9 + "…"


def test_max_rows_truncates_and_says_so(mon: Monitor) -> None:
    result = query("with recursive n(i) as (select 1 union all select i + 1 from n "
                   "where i < 50) select i from n", pools=[], monitor=mon, max_rows=10)
    assert len(result) == 10 and result.truncated
    assert "truncated at 10 rows" in result.format()


def test_runaway_query_is_stopped_at_its_timeout(mon: Monitor) -> None:
    with pytest.raises(AdminQueryError, match=r"ran past timeout=0\.2 s"):
        query("with recursive n(i) as (select 1 union all select i + 1 from n) "
              "select count(*) from n", pools=[], monitor=mon, timeout=0.2)


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("sql", [
    "insert into resources (id) values (1)",
    "UPDATE pools SET max_size = 100",
    "delete from connections",
    "drop table pools",
    "create table x (a int)",
    "pragma query_only = off",
    "attach database ':memory:' as other",
    "  /* comment first */ DELETE FROM memory",
    "-- line comment\nreplace into memory (name) values ('x')",
    "",
])
def test_write_and_other_statements_are_refused(mon: Monitor, sql: str) -> None:
    with pytest.raises(AdminQueryError, match="read-only") as info:
        query(sql, pools=[], monitor=mon)
    assert isinstance(info.value, ValueError) and isinstance(info.value, PoolError)


def test_write_hidden_behind_with_is_refused_by_the_authorizer(mon: Monitor) -> None:
    with pytest.raises(AdminQueryError, match=r"read-only.*not authorized"):
        query("with x as (select 1) insert into memory (name) select * from x",
              pools=[], monitor=mon)


def test_second_statement_is_refused(mon: Monitor) -> None:
    with pytest.raises(AdminQueryError, match="read-only and run one statement per call"):
        query("select 1; drop table pools", pools=[], monitor=mon)


def test_unknown_table_lists_the_tables(mon: Monitor) -> None:
    with pytest.raises(AdminQueryError, match=r"no such table: nope.*Tables: resources"):
        query("select * from nope", pools=[], monitor=mon)


def test_registered_pools_are_the_default_source(sqlite_dsn: str) -> None:
    from poolkeeper.observe.monitor import register_pool

    pool = Pool(sqlite_dsn, name="registered-pool")
    try:
        register_pool(pool)
        rows = query("select name from pools where name = 'registered-pool'").rows
        assert rows == [("registered-pool",)]
    finally:
        pool.close()
    assert query("select name from pools where name = 'registered-pool'").rows == []


# --------------------------------------------------------------------------- functions, bounds
@pytest.mark.parametrize(("sql", "function"), [
    ("select hex(fts3_tokenizer('simple'))", "fts3_tokenizer"),  # reads a native pointer
    ("select fts3_tokenizer('simple', x'0000000000000000')", "fts3_tokenizer"),  # writes one
    ("select length(randomblob(200000000))", "randomblob"),  # ~190 MB per request
    ("select length(zeroblob(200000000))", "zeroblob"),
    ("select load_extension('/tmp/x.so')", "load_extension"),
    ("select name from pools where sqlite_log(1, name) is null", "sqlite_log"),
    ("with x(a) as (select 1) select count(*), RANDOMBLOB(4) from x", "randomblob"),
])
def test_functions_outside_the_allow_list_are_refused_by_name(mon: Monitor, sql: str,
                                                              function: str) -> None:
    with pytest.raises(AdminQueryError) as info:
        query(sql, pools=[], monitor=mon)
    text = str(info.value)
    assert f"function {function}() is not allowed" in text.replace(function.upper(), function)
    assert "aggregate: avg, count" in text and "date:" in text  # says what is allowed


def test_allowed_functions_of_every_kind_run(mon: Monitor, pool: Pool) -> None:
    from poolkeeper.observe.admin import ALLOWED_FUNCTIONS, FUNCTION_GROUPS

    assert {"count", "upper", "round", "datetime", "json_extract"} <= ALLOWED_FUNCTIONS
    assert set(FUNCTION_GROUPS) >= {"aggregate", "string", "math", "date"}
    row = query("select count(*), upper(name), round(max_size * 1.5), "
                "datetime(0, 'unixepoch'), json_extract('{\"a\": 2}', '$.a'), "
                "row_number() over (), name like 'ord%', coalesce(null, 1) from pools",
                pools=[pool], monitor=mon).rows[0]
    assert row == (1, "ORDERS", 5.0, "1970-01-01 00:00:00", 2, 1, 1, 1)


def test_a_value_over_the_length_limit_is_refused(mon: Monitor) -> None:
    from poolkeeper.observe.admin import MAX_VALUE_BYTES

    with pytest.raises(AdminQueryError, match=rf"would exceed {MAX_VALUE_BYTES} bytes"):
        query("with recursive n(i) as (select 1 union all select i + 1 from n where i < 5000) "
              "select length(group_concat(printf('%.300c', 'x'), '')) from n",
              pools=[], monitor=mon)


def test_max_bytes_truncates_a_wide_result_and_says_so(mon: Monitor) -> None:
    sql = ("with recursive n(i) as (select 1 union all select i + 1 from n where i < 2000) "
           "select i, printf('%.1000c', 'x') from n")
    result = query(sql, pools=[], monitor=mon, max_bytes=100_000)
    assert result.truncated and result.truncated_by == "bytes"
    assert 0 < len(result) < 100 and result.nbytes <= 100_000
    assert "would exceed max_bytes=100000" in result.format()
    rows_cut = query(sql, pools=[], monitor=mon, max_rows=5)
    assert rows_cut.truncated_by == "rows" and len(rows_cut) == 5
    whole = query("select 1", pools=[], monitor=mon)
    assert not whole.truncated and whole.truncated_by is None
    with pytest.raises(ValueError, match=r"max_bytes=10 is out of range"):
        query("select 1", pools=[], monitor=mon, max_bytes=10)
