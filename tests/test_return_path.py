"""The return path when the connection died under the borrower: the caller's own exception is
the one raised, and every connection the pool drops is closed (its server session gone), not
left to the garbage collector. (Real servers; a few seconds in all.)"""

from __future__ import annotations

import logging
import uuid

import pytest

from poolkeeper import Pool

from ._db import kill_session


class _BodyFailed(Exception):
    """The caller's own error, raised inside the ``with`` block."""


def _dsn_with_marker(dsn: str, marker: str) -> str:
    """The DSN of a pool whose server sessions can be counted by ``marker`` (PostgreSQL)."""
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}application_name={marker}"


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_failed_rollback_on_return_keeps_the_callers_error(
        backend: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> None:
    # The session is killed from another connection while the borrower is inside a
    # transaction; the body then raises its own error. The rollback on return fails (the
    # server is gone): that failure used to replace the caller's exception.
    dsn = request.getfixturevalue("pg_dsn" if backend == "postgresql" else "mysql_dsn")
    with Pool(dsn, min_idle=0, max_size=2) as pool, Pool(dsn, min_idle=0, max_size=1) as admin:
        with pytest.raises(_BodyFailed) as raised, caplog.at_level(logging.WARNING):  # noqa: PT012
            with pool.connection() as conn:
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
        with pytest.raises(psycopg.OperationalError), pool.connection() as conn:  # noqa: PT012
            conn.execute("SELECT 1").fetchall()
            kill_session(admin, conn.slot.session_id)
        assert pool.stats()["connections_closed_broken"] == 1
