"""Issue #14 item 6: the ledger compares each connection's statement cache with its own
budget, not the sum of all connections with one connection's budget (~1 s, PostgreSQL)."""

from __future__ import annotations

from poolkeeper import Pool
from poolkeeper.observe.memory import pool_entries


def test_four_connections_at_27_percent_each_do_not_read_over_100_percent(pg_dsn: str) -> None:
    budget = 8 * 1024 * 1024
    with Pool(pg_dsn, max_size=4, name="ledger-pct", statement_cache_bytes=budget,
              statement_cache_size=8) as pool:
        conns = [pool.getconn() for _ in range(4)]
        try:
            for n, conn in enumerate(conns):
                for i in range(5):
                    text = f"SELECT {n * 10 + i}, length('{'x' * 450_000}')"
                    for _ in range(6):
                        conn.execute(text).fetchall()
        finally:
            for conn in conns:
                pool.putconn(conn)
        stats = pool.stats()
        entries = {e.name: e for e in pool_entries(pool)}
    per_conn = stats["stmt_cache_conn_bytes"] / budget
    assert 0.2 < per_conn < 0.4, stats
    total = entries["stmt_cache:ledger-pct"]
    fullest = entries["stmt_cache_conn:ledger-pct"]
    assert total.fraction is not None and fullest.fraction is not None
    assert total.fraction < 0.9 and fullest.fraction < 0.9, (total, fullest)
    assert fullest.budget_bytes == budget
