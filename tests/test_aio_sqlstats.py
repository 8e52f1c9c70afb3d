"""SQL statistics rows and result bytes of an AsyncPool, next to a sync Pool's for the same
statements on the same server (issue #17)."""

from __future__ import annotations

import asyncio
from typing import Any

from poolkeeper import Pool
from poolkeeper.pool.aio import AsyncPool

from ._db import unique_table


def _rows(stats: dict[str, Any]) -> dict[str, tuple[int, int, int, int]]:
    return {r["fingerprint"]: (r["executions"], r["rows_fetched"], r["rows_affected"],
                               r["rows_max"]) for r in stats["statements"]}


def test_asyncpg_statements_count_their_rows_as_the_sync_pool_does(pg_dsn: str) -> None:
    table = unique_table("pk_arows")
    statements = [f"CREATE TABLE {table} (x int)",
                  f"INSERT INTO {table} SELECT generate_series(1, 5)",
                  f"SELECT x FROM {table} ORDER BY x",
                  f"UPDATE {table} SET x = x + 1 WHERE x > 2",
                  f"DELETE FROM {table} WHERE x = 1",
                  f"DROP TABLE {table}"]
    with Pool(pg_dsn, max_size=1, name="rows-sync", autocommit=True) as spool, \
            spool.connection() as conn:
        for sql in statements:
            conn.execute(sql)
        expected = _rows(spool.sql_stats())

    async def main() -> dict[str, Any]:
        dsn = pg_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
        async with AsyncPool(dsn, max_size=1, name="rows-asyncpg") as pool, \
                pool.connection() as aconn:
            for sql in statements:
                if sql.startswith("SELECT"):
                    assert len(await aconn.fetch(sql)) == 5
                else:
                    await aconn.execute(sql)
            stats: dict[str, Any] = pool.sql_stats()
            return stats
    got = _rows(asyncio.run(main()))
    assert got == expected
    insert = next(v for k, v in got.items() if k.startswith("INSERT"))
    select = next(v for k, v in got.items() if k.startswith("SELECT"))
    assert (insert[2], select[1], select[3]) == (5, 5, 5)


def test_asyncpg_fetchrow_fetchval_and_prepared_fetches_count_rows(pg_dsn: str) -> None:
    async def main() -> dict[str, tuple[int, int, int, int]]:
        dsn = pg_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
        async with AsyncPool(dsn, max_size=1, name="rows-asyncpg2") as pool, \
                pool.connection() as conn:
            await conn.fetchrow("SELECT generate_series(1, 3)")
            assert await conn.fetchrow("SELECT 1 WHERE false") is None
            prepared = await conn.prepare("SELECT generate_series(1, 4)")
            assert len(await prepared.fetch()) == 4
            return _rows(pool.sql_stats())
    got = asyncio.run(main())
    assert got["SELECT generate_series(?, ?)"][1] == 1 + 4  # a record, then four
    assert got["SELECT ? WHERE ?"][1] == 0


def _large_result(conn: Any) -> Any:
    return conn.execute("SELECT repeat('x', 2 * 1024 * 1024)")


def test_psycopg_async_result_bytes_are_measured_and_retire_as_in_the_sync_pool(
        pg_dsn: str) -> None:
    limit = 1 << 20
    with Pool(pg_dsn, max_size=1, name="bytes-sync", max_idle_result_bytes=limit) as spool:
        with spool.connection() as conn:
            _large_result(conn).fetchall()
            sync_bytes = spool.connections_info()[0]["largest_result_bytes"]
        sync_stats = spool.stats()

    async def main() -> tuple[int, dict[str, Any], int]:
        async with AsyncPool(pg_dsn, max_size=1, name="bytes-aio",
                             max_idle_result_bytes=limit) as pool:
            async with pool.connection() as conn:
                cur = await _large_result(conn)
                await cur.fetchall()
                await cur.close()
                measured = pool.connections_info()[0]["largest_result_bytes"]
            stats = pool.stats()
            async with pool.connection() as conn:  # small results stay pooled
                await (await conn.execute("SELECT 1")).fetchall()
            return measured, stats, pool.stats()["idle_pinned_bytes"]
    measured, stats, pinned = asyncio.run(main())
    assert sync_bytes > 2 * 1024 * 1024
    assert measured > 2 * 1024 * 1024
    assert abs(measured - sync_bytes) < 64 * 1024, (measured, sync_bytes)
    assert stats["connections_closed_large_result"] == 1 == \
        sync_stats["connections_closed_large_result"]
    assert stats["idle_pinned_budget_bytes"] == limit == sync_stats["idle_pinned_budget_bytes"]
    assert 0 < pinned < limit
