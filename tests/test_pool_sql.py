"""SQL statistics and the statement cache, seen through a real pool on each backend."""

from __future__ import annotations

from poolkeeper import Pool

from ._db import create_table, drop_table, placeholder, unique_table


def test_literal_variants_share_one_fingerprint_through_the_pool(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=2) as pool:
        table = unique_table()
        create_table(pool, table)
        try:
            pool.pop_sql_stats()
            for n in (1, 5, 50, 500):
                ids = ", ".join(str(i) for i in range(n))
                with pool.connection() as conn:
                    conn.execute(f"SELECT v FROM {table} WHERE id IN ({ids})").fetchall()
                    conn.execute(f"UPDATE {table} SET v = 'secret-{n}' WHERE id = {n}")
            snapshot = pool.sql_stats()
            shapes = {s["fingerprint"]: s for s in snapshot["statements"]}
            select = next(s for fp, s in shapes.items() if fp.startswith("SELECT"))
            update = next(s for fp, s in shapes.items() if fp.startswith("UPDATE"))
            assert select["executions"] == 4 and update["executions"] == 4
            assert "secret" not in repr(snapshot)  # literals never reach the statistics
            assert len(shapes) == 2
        finally:
            drop_table(pool, table)


def test_errors_are_counted_by_class_without_their_values(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=1) as pool:
        table = unique_table()
        create_table(pool, table)
        ph = placeholder(pool)
        try:
            pool.pop_sql_stats()
            for _ in range(2):
                try:
                    with pool.connection() as conn:
                        conn.execute(f"INSERT INTO {table} (id, v) VALUES ({ph}, {ph})",
                                     (1, "dup-value-xyz"))
                        conn.execute(f"INSERT INTO {table} (id, v) VALUES ({ph}, {ph})",
                                     (1, "dup-value-xyz"))
                except Exception:  # noqa: BLE001 - the duplicate key is the point
                    pass
            insert = next(s for s in pool.sql_stats()["statements"]
                          if s["fingerprint"].startswith("INSERT"))
            assert insert["errors"] == 2
            assert "dup-value-xyz" not in repr(pool.sql_stats())
        finally:
            drop_table(pool, table)


def test_statistics_switch_off_and_on_at_runtime(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, max_size=1) as pool:
        pool.pop_sql_stats()
        pool.stats_enabled = False
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        assert pool.sql_stats()["statements"] == []
        pool.stats_enabled = True
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        assert [s["executions"] for s in pool.sql_stats()["statements"]] == [1]


def test_statement_cache_is_reported_honestly_per_driver(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=1, statement_cache_size=5) as pool:
        for i in range(20):
            with pool.connection() as conn:
                conn.execute(f"SELECT {i % 8} + 1").fetchall()
        info = pool.statement_cache_info()
        if pool.driver.name == "mysql":
            assert info["stmt_cache_supported"] == 0  # PyMySQL has no server-side statements
        else:
            assert info["stmt_cache_supported"] == 1
        if pool.driver.name == "postgresql":
            assert info["stmt_cache_statements"] <= 5
            assert info["stmt_cache_accesses"] == 20
