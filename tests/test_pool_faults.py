"""What the pool does when connections die, servers refuse, and callers misbehave."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any

import pytest

from poolkeeper import ConnectError, ConnectionReclaimed, Pool, PoolTimeout

from ._db import driver_errors, kill_session, sleep_sql, until

SERVER_DSNS = ["pg_dsn", "mysql_dsn"]


@pytest.fixture(params=SERVER_DSNS)
def server_dsn(request: pytest.FixtureRequest) -> str:
    dsn: str = request.getfixturevalue(request.param)
    return dsn



def test_killed_backend_in_use_is_discarded_and_replaced(server_dsn: str) -> None:
    with Pool(server_dsn, min_idle=1, max_size=2) as pool, Pool(server_dsn, max_size=1) as admin:
        conn = pool.getconn()
        victim = conn.slot.session_id
        kill_session(admin, victim)
        with pytest.raises(driver_errors()):  # the driver's own error passes through unchanged
            conn.execute("SELECT 1")
        pool.putconn(conn)
        assert pool.stats()["connections_lost"] == 1
        with pool.connection() as fresh:
            assert fresh.slot.session_id != victim
            assert fresh.execute("SELECT 1").fetchone()[0] == 1


def test_killed_idle_backends_are_caught_by_validation(server_dsn: str) -> None:
    with Pool(server_dsn, min_idle=2, max_size=2, validation_bypass=0) as pool, \
            Pool(server_dsn, max_size=1) as admin:
        pool.wait_ready(10)
        victims = [row["session_id"] for row in pool.connections_info()]
        for victim in victims:
            kill_session(admin, victim)
        time.sleep(0.2)
        for _ in range(2):  # the caller never sees the dead connections
            with pool.connection() as conn:
                assert conn.execute("SELECT 1").fetchone()[0] == 1
                assert conn.slot.session_id not in victims
        assert pool.stats()["connections_closed_validation"] >= 1


def test_server_idle_timeout_is_survived(mysql_dsn: str) -> None:
    # MariaDB drops a session idle past wait_timeout; the pool must notice and replace it.
    with Pool(mysql_dsn, min_idle=1, max_size=1, validation_bypass=0.5,
              keepalive_interval=None) as pool:
        with pool.connection() as conn:
            conn.execute("SET SESSION wait_timeout = 1")
            first = conn.slot.session_id
        time.sleep(2.5)
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
            assert conn.slot.session_id != first
        assert pool.stats()["connections_closed_validation"] == 1


def test_keepalive_outlives_the_server_idle_timeout(mysql_dsn: str) -> None:
    # The same server limit, with keepalive under it: the connection is kept, not replaced.
    with Pool(mysql_dsn, min_idle=1, max_size=1, keepalive_interval=0.3,
              housekeeping_interval=0.1) as pool:
        with pool.connection() as conn:
            conn.execute("SET SESSION wait_timeout = 1")
            first = conn.slot.session_id
        time.sleep(2.5)
        with pool.connection() as conn:
            assert conn.slot.session_id == first
        assert pool.stats()["connections_num"] == 1


def test_abandoned_checkout_is_reclaimed_but_not_while_executing(
        any_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="poolkeeper")
    with Pool(any_dsn, min_idle=0, max_size=2, abandoned_timeout=0.3) as pool:
        idle_holder = pool.getconn()
        busy = threading.Event()
        outcome: list[Any] = []

        def run_long() -> None:
            with pool.connection() as conn:
                busy.set()
                cur = conn.execute(sleep_sql(pool, 1.0))  # longer than abandoned_timeout
                outcome.append(cur.fetchone())

        t = threading.Thread(target=run_long)
        t.start()
        busy.wait(10)
        until(lambda: pool.stats()["abandoned_reclaimed"] >= 1, timeout=5)
        t.join(20)
        assert outcome and outcome[0] is not None  # the executing checkout was not touched
        assert pool.stats()["abandoned_reclaimed"] == 1
        with pytest.raises(ConnectionReclaimed, match=r"abandoned_timeout=0\.3"):
            idle_holder.execute("SELECT 1")
        idle_holder.close()  # a late return of a reclaimed connection is harmless
        assert any("reclaimed abandoned connection" in r.getMessage() for r in caplog.records)
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_a_checkout_that_keeps_running_statements_is_not_abandoned(sqlite_dsn: str) -> None:
    # Held four times abandoned_timeout, but never idle that long: DBCP's "last used" rule.
    with Pool(sqlite_dsn, min_idle=0, max_size=1, abandoned_timeout=0.3) as pool:
        with pool.connection() as conn:
            deadline = time.monotonic() + 1.2
            while time.monotonic() < deadline:
                assert conn.execute("SELECT 1").fetchone()[0] == 1
                time.sleep(0.1)
        assert pool.stats()["abandoned_reclaimed"] == 0


class _SlowFetchConnection:
    """Fault injection: a real sqlite connection whose cursors' fetchone() can be made to
    block, and whose close() records whether any fetch was still running (the race that
    crashed psycopg's C code when the housekeeper closed a connection under a fetch)."""

    def __init__(self, path: str) -> None:
        self._real = sqlite3.connect(path, check_same_thread=False)
        self.fetch_delay = 0.0
        self.fetching = 0
        self.closed_during_fetch = False
        self.closed = False

    def cursor(self) -> Any:
        return _SlowFetchCursor(self, self._real.cursor())

    def close(self) -> None:
        self.closed_during_fetch = self.fetching > 0
        self.closed = True
        self._real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _SlowFetchCursor:
    def __init__(self, conn: _SlowFetchConnection, real: sqlite3.Cursor) -> None:
        self._conn = conn
        self._real = real

    def fetchone(self) -> Any:
        self._conn.fetching += 1
        try:
            time.sleep(self._conn.fetch_delay)
            return self._real.fetchone()
        finally:
            self._conn.fetching -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_reclaim_never_closes_a_connection_under_a_running_fetch(tmp_path: Any) -> None:
    opened: list[_SlowFetchConnection] = []

    def connect() -> _SlowFetchConnection:
        opened.append(_SlowFetchConnection(str(tmp_path / "r.db")))
        return opened[-1]

    with Pool(connect=connect, driver="sqlite", min_idle=0, max_size=1,
              abandoned_timeout=0.2) as pool:
        conn = pool.getconn()
        cur = conn.execute("SELECT 42")
        # One fetch that outlasts abandoned_timeout: the housekeeper revokes the checkout
        # while the driver is inside it, and must close the connection only after it ends.
        opened[0].fetch_delay = 0.8
        assert cur.fetchone() == (42,)
        until(lambda: opened[0].closed, timeout=5)
        assert not opened[0].closed_during_fetch
        assert pool.stats()["abandoned_reclaimed"] == 1
        with pytest.raises(ConnectionReclaimed):
            cur.fetchone()
        pool.putconn(conn)  # late return: harmless


class _FlakyConnect:
    """Fault injection: a connect() that fails ``failures`` times, then opens real sqlite."""

    def __init__(self, path: str, failures: int) -> None:
        self.path = path
        self.failures = failures
        self.calls = 0

    def __call__(self) -> sqlite3.Connection:
        self.calls += 1
        if self.calls <= self.failures:
            raise sqlite3.OperationalError(f"server unavailable (attempt {self.calls})")
        return sqlite3.connect(self.path, check_same_thread=False)


def test_pool_refills_after_connect_failures_with_backoff(tmp_path: Any) -> None:
    flaky = _FlakyConnect(str(tmp_path / "f.db"), failures=3)
    with Pool(connect=flaky, driver="sqlite", min_idle=2, max_size=2, fail_fast=False,
              reconnect_backoff_max=0.2) as pool:
        pool.wait_ready(10)
        stats = pool.stats()
        assert stats["connections_errors"] == 3
        assert stats["pool_size"] == 2


def test_timeout_while_server_is_down_chains_the_connect_error(tmp_path: Any) -> None:
    flaky = _FlakyConnect(str(tmp_path / "f.db"), failures=10**6)
    with Pool(connect=flaky, driver="sqlite", min_idle=0, max_size=2,
              reconnect_backoff_max=0.05) as pool:
        with pytest.raises(PoolTimeout) as info:
            pool.getconn(timeout=0.3)
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert "last connection error: OperationalError: server unavailable" in str(info.value)


def test_bad_dsn_fails_fast_without_showing_the_password(mysql_dsn: str) -> None:
    with pytest.raises(ConnectError) as info:
        Pool("mysql://nosuchuser:s3cr3t-pw@127.0.0.1:3306/test", min_idle=1)
    assert "s3cr3t-pw" not in str(info.value)
    assert "nosuchuser:***@127.0.0.1" in str(info.value)
    assert info.value.__cause__ is not None


def test_connect_callable_detects_its_driver(tmp_path: Any) -> None:
    path = str(tmp_path / "d.db")
    with Pool(connect=lambda: sqlite3.connect(path, check_same_thread=False)) as pool:
        assert pool.driver.name == "sqlite"
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_parked_connection_is_reclaimed_when_its_owner_stops_borrowing(sqlite_dsn: str) -> None:
    # A long lease, so the owner parks on return; the waiter must still get the connection
    # once the lease ends, without the owner ever borrowing again.
    with Pool(sqlite_dsn, min_idle=1, max_size=1, lease_ms=200, max_wait=10) as pool:
        got: list[float] = []
        owner_conn = pool.getconn()

        def waiter() -> None:
            start = time.monotonic()
            with pool.connection():
                got.append(time.monotonic() - start)

        t = threading.Thread(target=waiter)
        t.start()
        until(lambda: pool.stats()["requests_waiting"] == 1)
        pool.putconn(owner_conn)  # lease still young: parked for this thread
        assert pool.stats()["pool_parked"] == 1
        t.join(10)
        assert got, "the waiter never got the parked connection"
        assert pool.stats()["lease_parks_num"] == 1


def test_open_transaction_is_never_parked(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, min_idle=1, max_size=1, lease_ms=500, reset_on_return=False) as pool:
        with pool.connection() as conn:
            conn.execute("CREATE TABLE t (x INTEGER)")
        conn = pool.getconn()
        conn.execute("INSERT INTO t VALUES (1)")  # transaction left open, reset disabled
        t = threading.Thread(target=lambda: pool.connection(timeout=5).close())
        t.start()
        until(lambda: pool.stats()["requests_waiting"] == 1)
        pool.putconn(conn)
        t.join(10)
        assert pool.stats()["lease_parks_num"] == 0
        assert pool.stats()["handoffs_num"] >= 1


def test_pool_close_closes_a_revoked_checkout_still_in_its_grace(tmp_path: Any) -> None:
    opened: list[_SlowFetchConnection] = []

    def connect() -> _SlowFetchConnection:
        opened.append(_SlowFetchConnection(str(tmp_path / "g.db")))
        return opened[-1]

    pool = Pool(connect=connect, driver="sqlite", min_idle=0, max_size=1, abandoned_timeout=0.1)
    conn = pool.getconn()

    def revoked() -> bool:
        try:
            conn.execute("SELECT 1").close()
        except ConnectionReclaimed:
            return True
        time.sleep(0.15)  # no statement for longer than abandoned_timeout
        return False

    until(revoked, timeout=5)
    assert not opened[0].closed  # revoked, its close waits for the grace
    pool.close()  # nobody will return it: close() closes it
    assert opened[0].closed
    assert pool.stats()["abandoned_reclaimed"] == 1
