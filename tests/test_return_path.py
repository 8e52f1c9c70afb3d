"""The return path when the connection died under the borrower: the caller's own exception is
the one raised, and every connection the pool drops is closed (its server session gone), not
left to the garbage collector. (Real servers; a few seconds in all.)"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

import pytest

from poolkeeper import Pool

from ._db import kill_session, until

# the whole module runs on both twins of the bag: lock-free and locked (no GIL)
pytestmark = pytest.mark.usefixtures("bag_twin")


class _BodyFailed(Exception):
    """The caller's own error, raised inside the ``with`` block."""


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_failed_rollback_on_return_keeps_the_callers_error(
        backend: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> None:
    # The session is killed from another connection while the borrower is inside a
    # transaction; the body then raises its own error. The rollback on return fails (the
    # server is gone): that failure used to replace the caller's exception.
    dsn = request.getfixturevalue("pg_dsn" if backend == "postgresql" else "mysql_dsn")
    with Pool(dsn, min_idle=0, max_size=2) as pool, Pool(dsn, min_idle=0, max_size=1) as admin:
        with pytest.raises(_BodyFailed) as raised, caplog.at_level(logging.WARNING), \
                pool.connection() as conn:
            conn.execute("SELECT 1").fetchall()  # a transaction is open (autocommit off)
            kill_session(admin, conn.slot.session_id)
            raise _BodyFailed("the caller's own error")
        notes = getattr(raised.value, "__notes__", [])
        assert any("rollback" in n and "discarded" in n for n in notes), notes
        assert any("rollback on return failed" in r.getMessage() for r in caplog.records)
        stats = pool.stats()
        assert stats["connections_closed_broken"] + stats["connections_closed_reset_failed"] == 1
        assert stats["pool_size"] == 0
        with pool.connection() as conn:  # the pool still lends a working connection
            assert list(conn.execute("SELECT 1").fetchall()) == [(1,)]


def test_failed_commit_on_clean_exit_is_still_raised(pg_dsn: str) -> None:
    # No caller's error to keep: a commit that fails on a clean exit is what the caller sees.
    import psycopg

    with Pool(pg_dsn, min_idle=0, max_size=1) as pool, \
            Pool(pg_dsn, min_idle=0, max_size=1) as admin:
        with pytest.raises(psycopg.OperationalError), pool.connection() as conn:
            conn.execute("SELECT 1").fetchall()
            kill_session(admin, conn.slot.session_id)
        assert pool.stats()["connections_closed_broken"] == 1


# ---------------------------------------------------------------- every dropped connection closed
# The test keeps every driver connection the pool lent (conn.raw): without that, reference
# counting would close a connection the pool merely forgot, and hide the defect. After each
# path, each retired connection must be closed by the pool (raw closed, server session gone)
# and counted (opened - closed = still in the pool).


def _raw_closed(raw: Any) -> bool:
    if hasattr(raw, "open"):  # PyMySQL
        return not raw.open
    return bool(raw.closed)  # psycopg


def _live_sessions(admin: Pool, ids: list[Any]) -> int:
    """How many of these server sessions (backend pids / thread ids) still exist."""
    marks = ", ".join(str(int(i)) for i in ids)
    if admin.driver.name == "postgresql":
        sql = f"SELECT count(*) FROM pg_stat_activity WHERE pid IN ({marks})"
    else:
        sql = f"SELECT count(*) FROM information_schema.processlist WHERE id IN ({marks})"
    with admin.connection() as conn:
        return int(conn.execute(sql).fetchone()[0])


def _assert_all_closed(pool: Pool, admin: Pool, lent: dict[Any, Any], keep: int = 0) -> None:
    stats = pool.stats()
    closed = sum(stats[f"connections_closed_{r}"] for r in (
        "lifetime", "idle", "broken", "validation", "reset_failed", "unknown_state", "expired",
        "abandoned", "pool_closed", "large_result"))
    assert stats["connections_num"] - closed == stats["pool_size"] == keep, stats
    kept = {s.session_id for s in pool._slots.values()}
    gone = [sid for sid in lent if sid not in kept]
    until(lambda: all(_raw_closed(lent[sid]) for sid in gone))
    until(lambda: _live_sessions(admin, gone) == 0)


def _borrow(pool: Pool, lent: dict[Any, Any]) -> Any:
    conn = pool.connection()
    lent[conn.slot.session_id] = conn.raw
    return conn


def _path_expired_on_return(pool: Pool, admin: Pool, lent: dict[Any, Any]) -> int:
    conn = _borrow(pool, lent)
    pool.expire_all()
    conn.close()
    return 0


def _path_expired_idle(pool: Pool, admin: Pool, lent: dict[Any, Any]) -> int:
    conns = [_borrow(pool, lent) for _ in range(3)]
    for conn in conns:
        conn.close()
    pool.expire_all()
    return 0


def _path_lifetime(pool: Pool, admin: Pool, lent: dict[Any, Any]) -> int:
    conn = _borrow(pool, lent)
    conn.slot.expires_at = 0.0  # its max_lifetime is over
    conn.close()
    return 0


def _path_broken(pool: Pool, admin: Pool, lent: dict[Any, Any]) -> int:
    conn = _borrow(pool, lent)
    kill_session(admin, conn.slot.session_id)
    with pytest.raises(Exception):  # noqa: B017 - the driver's "connection lost"
        conn.execute("SELECT 1").fetchall()
    conn.close()
    return 0


def _path_reset_failed(pool: Pool, admin: Pool, lent: dict[Any, Any]) -> int:
    with pytest.raises(_BodyFailed), _borrow(pool, lent) as conn:
        conn.execute("SELECT 1").fetchall()
        kill_session(admin, conn.slot.session_id)
        raise _BodyFailed("body")
    return 0


def _path_validation(pool: Pool, admin: Pool, lent: dict[Any, Any]) -> int:
    conn = _borrow(pool, lent)
    victim = conn.slot.session_id
    conn.close()
    kill_session(admin, victim)
    until(lambda: _live_sessions(admin, [victim]) == 0)
    with _borrow(pool, lent):  # the ping on borrow fails: replaced by a new connection
        pass
    return 1


def _path_large_result(pool: Pool, admin: Pool, lent: dict[Any, Any]) -> int:
    with _borrow(pool, lent) as conn:
        if pool.driver.name == "postgresql":
            conn.execute("SELECT repeat('x', 200000)").fetchall()
        else:
            conn.slot.largest_result_bytes = 10**6  # PyMySQL has no connection-held buffer
    return 0


def _path_pool_close(pool: Pool, admin: Pool, lent: dict[Any, Any]) -> int:
    conns = [_borrow(pool, lent) for _ in range(3)]
    for conn in conns:
        conn.close()
    held = _borrow(pool, lent)
    pool.close()
    held.close()  # borrowed across the close: closed on return
    return 0


def _path_retired_then_closed(pool: Pool, admin: Pool, lent: dict[Any, Any]) -> int:
    # The retired connections' closes are queued on the worker threads; close() right after
    # stops the workers, whose queue used to be dropped with those closes in it.
    conns = [_borrow(pool, lent) for _ in range(4)]
    for conn in conns:
        conn.close()
    pool.expire_all()
    pool.close()
    return 0


def _path_orphan(pool: Pool, admin: Pool, lent: dict[Any, Any]) -> int:
    conn = _borrow(pool, lent)
    conn.execute("SELECT 1").fetchall()
    pool.expire_all()  # retired when the orphan is taken back
    del conn
    gc.collect()
    with _borrow(pool, lent):  # a waiter... or the next borrow's wait drains the orphans
        pass
    pool._drain_orphans()
    return 1


def _path_orphan_after_close(pool: Pool, admin: Pool, lent: dict[Any, Any]) -> int:
    conn = _borrow(pool, lent)
    pool.close()
    del conn  # nobody returns it: the pool must close it, not wait for its own collection
    gc.collect()
    return 0


PATHS: dict[str, Callable[[Pool, Pool, dict[Any, Any]], int]] = {
    "expired_on_return": _path_expired_on_return,
    "expired_idle": _path_expired_idle,
    "lifetime": _path_lifetime,
    "broken": _path_broken,
    "reset_failed": _path_reset_failed,
    "validation": _path_validation,
    "large_result": _path_large_result,
    "pool_close": _path_pool_close,
    "retired_then_closed": _path_retired_then_closed,
    "orphan": _path_orphan,
    "orphan_after_close": _path_orphan_after_close,
}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_every_dropped_connection_is_closed_and_counted(
        backend: str, path: str, request: pytest.FixtureRequest) -> None:
    dsn = request.getfixturevalue("pg_dsn" if backend == "postgresql" else "mysql_dsn")
    lent: dict[Any, Any] = {}
    with Pool(dsn, min_idle=0, max_size=4, validation_bypass=0.0,
              max_idle_result_bytes=65536) as pool, \
            Pool(dsn, min_idle=0, max_size=1) as admin:
        keep = PATHS[path](pool, admin, lent)
        _assert_all_closed(pool, admin, lent, keep)
