"""Query timeouts as a user meets them: the option, a per-call timeout, a timeout block."""

from __future__ import annotations

import time

import pytest

from poolkeeper import Pool, QueryTimeout
from poolkeeper.scheduler import THREAD_NAME

from ._db import sleep_sql


def test_query_timeout_option_cuts_a_long_statement_and_the_pool_stays_usable(
        any_dsn: str) -> None:
    with Pool(any_dsn, max_size=1, query_timeout=0.2) as pool:
        started = time.monotonic()
        with pytest.raises(QueryTimeout) as info, pool.connection() as conn:
            conn.execute(sleep_sql(pool, 10)).fetchall()
        assert time.monotonic() - started < 8
        assert info.value.timeout_s == pytest.approx(0.2)
        assert "query_timeout" in str(info.value) or "0.2" in str(info.value)
        with pool.connection() as conn:  # the same physical connection, clean
            assert conn.execute("SELECT 1").fetchone()[0] == 1
        stats = pool.stats()
        assert stats["timeouts_raised_num"] == 1
        assert stats["timeouts_entries_now"] == 0  # nothing left behind


def test_per_call_timeout_and_timeout_block(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=1) as pool:  # no query_timeout: installed on first use
        assert pool._timeouts is None
        with pool.connection() as conn:
            with pytest.raises(QueryTimeout):
                conn.cursor().execute(sleep_sql(pool, 10), timeout=0.2)
            with pytest.raises(QueryTimeout), conn.timeout(0.2):
                conn.execute(sleep_sql(pool, 10)).fetchall()
            # outside the block, and with timeout=None, nothing is cut
            assert conn.execute(sleep_sql(pool, 0.3), timeout=None).fetchall()
        assert pool.stats()["timeouts_raised_num"] == 2


def test_timeouts_thread_stops_when_the_pool_closes(pg_dsn: str) -> None:
    with Pool(pg_dsn, max_size=1, query_timeout=0.2) as pool, pool.connection() as conn, \
            pytest.raises(QueryTimeout):
        conn.execute("SELECT pg_sleep(5)")
    import threading

    alive = {t.name for t in threading.enumerate() if t.is_alive()}
    assert THREAD_NAME not in alive
    assert not any(name.endswith("-canceller") for name in alive)
