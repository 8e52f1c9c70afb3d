"""Small helpers for tests that speak to the three backends in their own dialects."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from poolkeeper import Pool


def placeholder(pool: Pool) -> str:
    return "?" if pool.driver.name == "sqlite" else "%s"


def unique_table(prefix: str = "pk") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def create_table(pool: Pool, table: str, columns: str = "id INTEGER PRIMARY KEY, v TEXT") -> None:
    with pool.connection() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} ({columns})")


def drop_table(pool: Pool, table: str) -> None:
    with pool.connection() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def count_rows(pool: Pool, table: str) -> int:
    with pool.connection() as conn:
        row = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        return int(row[0])


def sleep_sql(pool: Pool, seconds: float) -> str:
    """A statement that runs for about ``seconds`` on the server."""
    if pool.driver.name == "postgresql":
        return f"SELECT pg_sleep({seconds})"
    if pool.driver.name == "mysql":
        return f"SELECT SLEEP({seconds})"
    # sqlite: a recursive CTE long enough to take a while (interruptible)
    n = int(seconds * 3_000_000)
    return (f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) "
            "SELECT max(x) FROM c")


def kill_session(admin_dsn_pool: Pool, session_id: Any) -> None:
    """Terminate a server session from another connection (PostgreSQL or MariaDB)."""
    with admin_dsn_pool.connection() as conn:
        if admin_dsn_pool.driver.name == "postgresql":
            conn.execute("SELECT pg_terminate_backend(%s)", (session_id,))
        else:
            conn.execute(f"KILL {int(session_id)}")


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition that a background thread makes true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def driver_errors() -> tuple[type[BaseException], ...]:
    """The error classes psycopg and PyMySQL raise for a dead connection."""
    import psycopg
    import pymysql

    return (psycopg.OperationalError, pymysql.err.OperationalError, pymysql.err.InterfaceError)
