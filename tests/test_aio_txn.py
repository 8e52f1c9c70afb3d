"""``transaction_timeout`` on AsyncPool, each asyncio backend: the semantics and errors of
tests/test_timeouts.py's transaction cases (a statement's deadline never goes past the
transaction's end)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from poolkeeper.errors import QueryTimeout
from poolkeeper.pool.aio import AsyncPool

from ._db import unique_table

LONG_S = 10.0


@pytest.fixture(params=["sqlite", "postgresql", "asyncpg", "mysql"])
def adsn(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'txn.db'}"
    if request.param == "mysql":
        return str(request.getfixturevalue("mysql_dsn"))
    dsn = str(request.getfixturevalue("pg_dsn"))
    if request.param == "asyncpg":
        return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    return dsn


async def sql(conn: Any, text: str) -> Any:
    """Run ``text`` through the proxy, in the driver's own style; its first value if any."""
    if hasattr(conn, "fetchval"):  # asyncpg
        return await conn.fetchval(text)
    cur = await conn.execute(text)
    row = await cur.fetchone() if cur.description is not None else None
    return None if row is None else row[0]


async def begin(conn: Any) -> None:
    """Open a transaction: asyncpg runs each statement in autocommit unless told."""
    if hasattr(conn, "fetchval"):
        await conn.execute("BEGIN")


def sleep_sql(pool: AsyncPool, seconds: float) -> str:
    dialect = pool.driver.dialect
    if dialect == "postgresql":
        return f"SELECT pg_sleep({seconds})"
    if dialect == "mysql":
        return f"SELECT SLEEP({seconds})"
    n = int(seconds * 3_000_000)  # sqlite: a long recursive CTE (interruptible)
    return (f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) "
            "SELECT max(x) FROM c")


class Table:
    """A table made and counted through a pool without timeouts."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.name = unique_table("pk_atxn")

    async def __aenter__(self) -> Table:
        async with AsyncPool(self.dsn, max_size=1, name="atxn-admin") as admin, \
                admin.connection() as conn:
            await sql(conn, f"CREATE TABLE {self.name} (id INTEGER PRIMARY KEY, v TEXT)")
        return self

    async def count(self) -> int:
        async with AsyncPool(self.dsn, max_size=1, name="atxn-count") as admin, \
                admin.connection() as conn:
            return int(await sql(conn, f"SELECT COUNT(*) FROM {self.name}"))

    async def __aexit__(self, *exc: object) -> None:
        async with AsyncPool(self.dsn, max_size=1, name="atxn-admin") as admin, \
                admin.connection() as conn:
            await sql(conn, f"DROP TABLE IF EXISTS {self.name}")


def test_a_statement_that_outlives_the_transaction_is_cut_and_it_rolled_back(adsn: str) -> None:
    async def main() -> None:
        async with Table(adsn) as table, AsyncPool(adsn, max_size=1, name="atxn-cut",
                                                    transaction_timeout=0.3) as pool:
            async with pool.connection() as conn:
                await begin(conn)
                await sql(conn, f"INSERT INTO {table.name} (id, v) VALUES (1, 'x')")
                with pytest.raises(QueryTimeout, match=r"transaction_timeout=0\.3 s") as err:
                    await sql(conn, sleep_sql(pool, LONG_S))
                assert "rolled back" in str(err.value) or "checks the connection" in str(
                    err.value), err.value
                assert err.value.sql  # the statement, literals folded
            assert await table.count() == 0
            assert pool.stats()["timeouts_transaction_num"] == 1
    asyncio.run(main())


def test_a_statement_after_the_transaction_time_is_up_is_not_run(adsn: str) -> None:
    async def main() -> None:
        async with Table(adsn) as table, AsyncPool(adsn, max_size=1, name="atxn-late",
                                                    transaction_timeout=0.2) as pool:
            async with pool.connection() as conn:
                await begin(conn)
                await sql(conn, f"INSERT INTO {table.name} (id, v) VALUES (1, 'x')")
                await asyncio.sleep(0.3)  # idle in transaction past its limit
                with pytest.raises(QueryTimeout, match="the statement was not run") as err:
                    await sql(conn, f"INSERT INTO {table.name} (id, v) VALUES (2, 'y')")
                assert "the transaction was rolled back" in str(err.value)
                # rolled back: the next statement opens a fresh transaction with a fresh clock
                await sql(conn, f"INSERT INTO {table.name} (id, v) VALUES (3, 'z')")
            assert await table.count() == 1
            assert pool.stats()["timeouts_transaction_num"] == 1
    asyncio.run(main())


def test_a_clean_exit_past_the_transaction_time_is_not_committed(adsn: str) -> None:
    async def main() -> None:
        async with Table(adsn) as table, AsyncPool(adsn, max_size=1, name="atxn-exit",
                                                    transaction_timeout=0.2) as pool:
            with pytest.raises(QueryTimeout, match="it was not committed"):
                async with pool.connection() as conn:
                    await begin(conn)
                    await sql(conn, f"INSERT INTO {table.name} (id, v) VALUES (1, 'x')")
                    await asyncio.sleep(0.3)
            assert await table.count() == 0
            async with pool.connection() as conn:  # the connection went back clean
                assert await sql(conn, "SELECT 1") == 1
            assert pool.stats()["pool_size"] == 1
    asyncio.run(main())


def test_an_explicit_commit_past_the_transaction_time_is_refused_and_rolled_back(
        adsn: str) -> None:
    if "asyncpg" in adsn:
        pytest.skip("asyncpg has no commit(): its transactions end in transaction() blocks")

    async def main() -> None:
        async with Table(adsn) as table, AsyncPool(adsn, max_size=1, name="atxn-commit",
                                                    transaction_timeout=0.2) as pool:
            async with pool.connection() as conn:
                await sql(conn, f"INSERT INTO {table.name} (id, v) VALUES (1, 'x')")
                await asyncio.sleep(0.3)
                with pytest.raises(QueryTimeout, match=r"not committed.*rolled back"):
                    await conn.commit()
                await conn.commit()  # nothing left to commit
            assert await table.count() == 0
    asyncio.run(main())


def test_the_transaction_clock_restarts_after_each_commit(adsn: str) -> None:
    if "asyncpg" in adsn:
        pytest.skip("asyncpg has no commit(): its transactions end in transaction() blocks")

    async def main() -> None:
        async with Table(adsn) as table, AsyncPool(adsn, max_size=1, name="atxn-restart",
                                                    transaction_timeout=0.3) as pool:
            async with pool.connection() as conn:
                for i in range(4):
                    await sql(conn, f"SELECT COUNT(*) FROM {table.name}")
                    await sql(conn, f"INSERT INTO {table.name} (id, v) VALUES ({i}, 'x')")
                    await conn.commit()
                    await asyncio.sleep(0.12)
            assert await table.count() == 4
            assert pool.stats()["timeouts_transaction_num"] == 0
    asyncio.run(main())


def test_without_the_option_no_clock_is_installed(sqlite_dsn: str) -> None:
    async def main() -> None:
        async with AsyncPool(sqlite_dsn, max_size=1, name="atxn-off") as pool:
            assert pool._txn_clock is None
            assert "timeouts_transaction_num" not in pool.stats()
    asyncio.run(main())
