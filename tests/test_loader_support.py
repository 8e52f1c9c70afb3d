"""Helpers shared by the loader tests (no tests here): tables per dialect, counting, killing."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from poolkeeper import Pool

__all__ = [
    "TYPED_COLUMNS",
    "count",
    "create",
    "drop",
    "ids",
    "kill_sessions_running",
    "typed_ddl",
    "typed_expected",
    "typed_rows",
    "unique",
    "until",
]


def unique(prefix: str = "ld") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def create(pool: Pool, table: str, columns: str) -> None:
    with pool.connection() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} ({columns})")


def drop(pool: Pool, *tables: str) -> None:
    with pool.connection() as conn:
        for table in tables:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def count(pool: Pool, table: str) -> int:
    with pool.connection() as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def ids(pool: Pool, table: str) -> list[int]:
    with pool.connection() as conn:
        return [int(r[0]) for r in conn.execute(f"SELECT id FROM {table} ORDER BY id").fetchall()]


def until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def kill_sessions_running(admin: Pool, needle: str) -> int:
    """Terminate every server session whose statement mentions ``needle`` (or, on
    PostgreSQL, whose application_name is ``needle``)."""
    killed = 0
    with admin.connection() as conn:
        if admin.driver.name == "postgresql":
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> "
                "pg_backend_pid() AND (application_name = %s OR query LIKE %s)",
                (needle, f"%{needle}%")).fetchall()
            killed = sum(1 for r in rows if r[0])
        else:
            rows = conn.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
                "AND INFO LIKE %s", (f"%{needle}%",)).fetchall()
            for (sid,) in rows:
                with contextlib.suppress(Exception):
                    conn.execute(f"KILL {int(sid)}")
                    killed += 1
    return killed


# ---------------------------------------------------------------------------- typed rows
TYPED_COLUMNS = ("id", "t", "b", "ts", "d", "f", "n", "flag", "day")


def typed_ddl(driver: str) -> str:
    if driver == "postgresql":
        return ("id int PRIMARY KEY, t text, b bytea, ts timestamptz, d numeric(30,10), "
                "f float8, n bigint, flag boolean, day date")
    if driver == "mysql":
        return ("id INT PRIMARY KEY, t TEXT CHARACTER SET utf8mb4, b BLOB, ts DATETIME(6), "
                "d DECIMAL(30,10), f DOUBLE, n BIGINT, flag BOOLEAN, day DATE")
    return ("id INTEGER PRIMARY KEY, t TEXT, b BLOB, ts TEXT, d TEXT, f REAL, n INTEGER, "
            "flag INTEGER, day TEXT")


_TEXTS = ["plain", "", "tab\there", "new\nline", "cr\rlf\r\n", "quote ' and \" both",
          "back\\slash \\N \\t", "unicode: héllo ✓ 漢字 😀", "comma, semicolon; pipe |",
          "\\", "trailing space ", "NULL", "\x01\x02 control"]
_BYTES = [bytes(range(256)), b"", b"\x00", b"\\x00", b"\n\t\r", "😀".encode()]
_ZONES = [dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)),
          dt.timezone(dt.timedelta(hours=-8))]
_DECIMALS = [Decimal("0"), Decimal("-12345678901234567890.0123456789"), Decimal("1.5"),
             Decimal("0.0000000001"), Decimal("99999999999999999999")]
_FLOATS = [0.0, 1.5, -2.25e-300, 1.7976931348623157e308, 0.1, 123456.789]


def typed_rows(n: int, driver: str) -> Iterator[tuple[Any, ...]]:
    for i in range(n):
        text = _TEXTS[i % len(_TEXTS)] + f" #{i}"
        if driver != "postgresql" and i % 7 == 3:
            text += "\x00nul"  # PostgreSQL text cannot hold NUL; the others can
        ts = dt.datetime(2024, 2, 29, 23, 59, 59, (i * 7919) % 1_000_000,
                         tzinfo=_ZONES[i % len(_ZONES)])
        row: tuple[Any, ...] = (i, text, _BYTES[i % len(_BYTES)], ts, _DECIMALS[i % len(_DECIMALS)],
               _FLOATS[i % len(_FLOATS)], (i * 2654435761) % (2**62) - 2**61,
               i % 2 == 0, dt.date(1999, 12, 31) + dt.timedelta(days=i))
        if i % 5 == 4:  # NULL in every nullable column
            row = (i, None, None, None, None, None, None, None, None)
        yield row


def typed_expected(row: tuple[Any, ...], driver: str) -> tuple[Any, ...]:
    """What the database gives back for a row of :func:`typed_rows`."""
    i, text, data, ts, dec, flt, n, flag, day = row
    if text is None:
        return row
    if driver == "postgresql":
        return (i, text, data, ts, dec, flt, n, flag, day)
    if driver == "mysql":
        utc = ts.astimezone(dt.UTC).replace(tzinfo=None)
        return (i, text, data, utc, dec, flt, n, int(flag), day)
    return (i, text, data, ts.isoformat(" "), str(dec), flt, n, int(flag), day.isoformat())


def normalise(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Bytes-like values as bytes (drivers return memoryview/bytearray)."""
    return tuple(bytes(v) if isinstance(v, bytearray | memoryview) else v for v in row)
