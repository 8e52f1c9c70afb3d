"""abort() and a close() out of time interrupt the running statement on the server (#14.9).

Another session holds a lock on the table, so the loader's COPY / LOAD DATA / INSERT waits on
the server; the loader must cancel it there (a client-side timeout would leave the server
session waiting and the worker thread stuck). About 1 s per case.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pymysql
import pytest

from poolkeeper import LoaderError, Pool
from poolkeeper.loader import Loader

from .test_loader_support import create, drop, unique, until


@contextlib.contextmanager
def _table_locked(pool: Pool, dsn: str, table: str) -> Iterator[None]:
    """Another session of ours holds an exclusive lock on ``table`` inside a transaction."""
    if pool.driver.name == "postgresql":
        with psycopg.connect(dsn) as pg:
            pg.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # opens a transaction
            try:
                yield
            finally:
                pg.rollback()
        return
    my = pymysql.connect(**dict(pool.driver.params))
    try:
        with my.cursor() as cur:
            cur.execute("SET autocommit = 0")
            cur.execute("START TRANSACTION")
            cur.execute(f"LOCK TABLES {table} WRITE")
        yield
    finally:
        with contextlib.suppress(Exception), my.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        my.close()


def _sessions(pool: Pool, table: str, *, waiting: bool) -> int:
    """Server sessions (not this one) running a statement on ``table``: all, or only those
    waiting for a lock."""
    with pool.connection() as conn:
        if pool.driver.name == "postgresql":
            sql = ("SELECT COUNT(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                   "AND state = 'active' AND query ILIKE %s")
            if waiting:
                sql += " AND wait_event_type = 'Lock'"
            return int(conn.execute(sql, (f"%copy%{table}%",)).fetchone()[0])
        sql = ("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
               "AND COMMAND = 'Query' AND (INFO LIKE %s OR INFO LIKE %s)")
        if waiting:
            sql += " AND STATE LIKE 'Waiting for table%%'"
        return int(conn.execute(sql, (f"LOAD DATA%{table}%", f"INSERT INTO `{table}`%"))
                   .fetchone()[0])


_CASES = [("postgresql", {}), ("mysql", {}), ("mysql", {"mysql_local_infile": False})]


@pytest.fixture(params=_CASES, ids=["copy", "load_data", "insert"])
def case(request: pytest.FixtureRequest, pg_dsn: str, mysql_dsn: str) -> tuple[str, dict[str, Any]]:
    backend, options = request.param
    return (pg_dsn if backend == "postgresql" else mysql_dsn), dict(options)


def _blocked_loader(pool: Pool, table: str, options: dict[str, Any]) -> Loader:
    loader = Loader(pool, batch_rows=10, max_age_s=None, columns={table: ("id",)},
                    close_timeout_s=0.5, **options)
    for i in range(10):  # one batch: sealed at once, and its statement waits for the lock
        loader.write(table, (i,))
    assert until(lambda: _sessions(pool, table, waiting=True) == 1, 10), \
        "the loader's statement never waited for the lock: the test proves nothing"
    return loader


@pytest.mark.parametrize("how", ["abort", "close"])
def test_a_statement_blocked_by_a_lock_is_cancelled_on_the_server(
        case: tuple[str, dict[str, Any]], how: str) -> None:
    dsn, options = case
    with Pool(dsn, max_size=4) as pool:
        table = unique("locked")
        create(pool, table, "id INTEGER NOT NULL")
        try:
            with _table_locked(pool, dsn, table):
                loader = _blocked_loader(pool, table, options)
                threads = loader.threads
                assert threads and all(t.is_alive() for t in threads)
                if how == "abort":
                    loader.abort()
                else:
                    with pytest.raises(LoaderError, match="cancelled the statement on the server"):
                        loader.close()  # close_timeout_s=0.5
                # every worker is gone when abort()/close() returns, and nothing of the
                # loader's still runs or waits on the server
                assert [t.name for t in threads if t.is_alive()] == []
                assert _sessions(pool, table, waiting=False) == 0
                stats = loader.stats()
                assert stats["cancels_sent"] >= 1 and stats["cancel_failures"] == 0
        finally:
            drop(pool, table)
