"""max_idle_result_bytes: a PostgreSQL connection that received a large result is retired at
return, since libpq keeps its input buffer at the largest message until the connection closes
(about 2 s on the real server)."""

from __future__ import annotations

import pytest

from poolkeeper import Pool
from poolkeeper.errors import ConfigError

_BIG = "SELECT repeat('x', 8 * 1024 * 1024)"


def test_large_result_retired_at_return(pg_dsn: str) -> None:
    with Pool(pg_dsn, min_idle=0, max_size=1, max_idle_result_bytes=1 << 20) as pool:
        with pool.connection() as conn:
            conn.execute(_BIG).fetchall()
            first = conn.slot.id
            assert conn.slot.largest_result_bytes > 8 * 1024 * 1024
        assert pool.stats()["connections_closed_large_result"] == 1
        with pool.connection() as conn:
            assert conn.slot.id != first
            assert conn.slot.largest_result_bytes == 0


def test_bound_off_keeps_connection_and_shows_size(pg_dsn: str) -> None:
    with Pool(pg_dsn, min_idle=0, max_size=1, max_idle_result_bytes=0) as pool:
        with pool.connection() as conn:
            conn.execute(_BIG).fetchall()
            first = conn.slot.id
        [row] = pool.connections_info()
        assert row["id"] == first
        assert row["largest_result_bytes"] > 8 * 1024 * 1024
        assert pool.stats()["connections_closed_large_result"] == 0


def test_small_results_never_retire(pg_dsn: str) -> None:
    with Pool(pg_dsn, min_idle=0, max_size=1, max_idle_result_bytes=1 << 20) as pool:
        for _ in range(20):
            with pool.connection() as conn:
                conn.execute("SELECT generate_series(1, 100)").fetchall()
                conn.execute("SELECT 1 WHERE false").fetchall()
        [row] = pool.connections_info()
        assert row["uses"] == 20
        assert 0 < row["largest_result_bytes"] < 1 << 20
        assert pool.stats()["connections_closed_large_result"] == 0


def test_other_drivers_measure_nothing(any_dsn: str) -> None:
    # sqlite3 and PyMySQL free their buffers with the result: nothing pinned, nothing retired
    with Pool(any_dsn, min_idle=0, max_size=1, max_idle_result_bytes=1 << 20) as pool:
        with pool.connection() as conn:
            conn.execute("SELECT 1").fetchall()
        [row] = pool.connections_info()
        if pool.driver.name != "postgresql":
            assert row["largest_result_bytes"] == 0
        else:
            assert 0 < row["largest_result_bytes"] < 1 << 20


def test_option_validated() -> None:
    with pytest.raises(ConfigError, match="max_idle_result_bytes"):
        Pool("sqlite://:memory:", max_idle_result_bytes=-1)


def test_doctor_flags_bound_off_or_high() -> None:
    from poolkeeper.cli.diagnosis import diagnose
    from poolkeeper.config import PoolConfig

    dsn = "postgresql://app@127.0.0.1/test"
    for bound in (0, 1 << 30):
        found = [f for f in diagnose(PoolConfig(dsn=dsn, max_idle_result_bytes=bound)).findings
                 if f.setting == "max_idle_result_bytes"]
        assert found and found[0].incident == "dble"
    ok = diagnose(PoolConfig(dsn=dsn)).findings
    assert not [f for f in ok if f.setting == "max_idle_result_bytes"]


def test_memory_ledger_shows_idle_pinned_bytes(pg_dsn: str) -> None:
    from poolkeeper.observe.memory import pool_entries

    with Pool(pg_dsn, min_idle=0, max_size=1, max_idle_result_bytes=0) as pool:
        with pool.connection() as conn:
            conn.execute(_BIG).fetchall()
        [entry] = [e for e in pool_entries(pool) if e.name.startswith("idle_pinned:")]
        assert entry.bytes > 8 * 1024 * 1024
        assert entry.category == "connections"


def test_libpq_is_looked_up_once_per_process_not_per_pool(pg_dsn: str) -> None:
    # before: each pool's driver loaded libpq with ctypes again, and a ctypes library object
    # (its function-pointer class and symbols) stayed behind per pool ever created
    from poolkeeper import Pool

    with Pool(pg_dsn, max_size=1) as a, Pool(pg_dsn, max_size=1) as b:
        assert getattr(a.driver, "_memory_size") is getattr(b.driver, "_memory_size")  # noqa: B009
