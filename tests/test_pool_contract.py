"""The pool's contract, proved once per backend (sqlite3, PostgreSQL, MariaDB)."""

from __future__ import annotations

import gc
import logging
import sqlite3
import threading
import time
from typing import Any

import pytest

from poolkeeper import (
    ConnectionProxy,
    ConnectionReturned,
    Pool,
    PoolClosed,
    PoolTimeout,
    TooManyWaiting,
)

from ._db import (
    count_rows,
    create_table,
    drop_table,
    placeholder,
    sleep_sql,
    unique_table,
    until,
)

# the whole module runs on both twins of the bag: lock-free and locked (no GIL)
pytestmark = pytest.mark.usefixtures("bag_twin")


def test_connection_commits_on_clean_exit(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=2) as pool:
        table = unique_table()
        create_table(pool, table)
        try:
            with pool.connection() as conn:
                conn.execute(f"INSERT INTO {table} (id, v) VALUES (1, 'a')")
            assert count_rows(pool, table) == 1
        finally:
            drop_table(pool, table)


def test_connection_rolls_back_on_exception(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=2) as pool:
        table = unique_table()
        create_table(pool, table)
        try:
            with pytest.raises(RuntimeError), pool.connection() as conn:
                conn.execute(f"INSERT INTO {table} (id, v) VALUES (1, 'a')")
                raise RuntimeError("boom")
            assert count_rows(pool, table) == 0
        finally:
            drop_table(pool, table)


def test_putconn_rolls_back_an_open_transaction(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=1) as pool:
        table = unique_table()
        create_table(pool, table)
        try:
            conn = pool.getconn()
            conn.execute(f"INSERT INTO {table} (id, v) VALUES (1, 'a')")
            pool.putconn(conn)  # no commit: the pool must not leak the transaction onward
            assert count_rows(pool, table) == 0
            assert pool.stats()["connections_closed_reset_failed"] == 0
        finally:
            drop_table(pool, table)


def test_returned_proxy_is_inert_and_names_its_borrow_site(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=1) as pool:
        conn = pool.getconn()
        borrow_line = _line() - 1
        cursor = conn.cursor()
        pool.putconn(conn)
        for use in (conn.cursor, conn.commit, lambda: conn.execute("SELECT 1"),
                    lambda: conn.raw, cursor.fetchone, lambda: cursor.execute("SELECT 1")):
            with pytest.raises(ConnectionReturned) as info:
                use()
            assert f"test_pool_contract.py:{borrow_line}" in str(info.value)
        assert conn.closed and cursor.closed
        # the next borrower gets a working connection
        with pool.connection() as again:
            assert again.execute("SELECT 1").fetchone()[0] == 1


def _line() -> int:
    import inspect

    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def test_cursors_left_open_are_closed_on_return(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=1) as pool:
        with pool.connection() as conn:
            cursors = [conn.cursor() for _ in range(3)]
            for cur in cursors:
                cur.execute("SELECT 1")
        assert all(cur.closed for cur in cursors)


def test_many_cursors_in_one_checkout_keep_a_bounded_list(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=1) as pool, pool.connection() as conn:
        for _ in range(1000):
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        assert conn.checkout.cursors is not None and len(conn.checkout.cursors) < 100


def test_results_the_caller_dropped_are_not_kept_alive(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=1) as pool, pool.connection() as conn:
        for _ in range(3000):
            conn.execute("SELECT 1")  # the cursor is dropped at once
        alive = [r for r in conn.checkout.cursors or [] if r() is not None]
        assert len(alive) <= 1
        kept = [conn.execute("SELECT 1") for _ in range(200)]  # cursors kept by the caller
    assert all(cur.closed for cur in kept)


def test_stats_count_requests_and_returns(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=2) as pool:
        pool.pop_stats()
        for _ in range(5):
            with pool.connection() as conn:
                conn.execute("SELECT 1").fetchall()
        stats = pool.pop_stats()
        assert stats["requests_num"] == 5
        assert stats["returns_num"] == 5
        assert sum(stats["usage_ms_histogram"]) == 5
        assert pool.stats()["requests_num"] == 0  # popped


def test_threads_share_a_small_pool_without_loss(any_dsn: str) -> None:
    threads, per_thread = 8, 60
    with Pool(any_dsn, max_size=3, max_wait=30) as pool:
        errors: list[BaseException] = []
        done = [0] * threads

        def work(i: int) -> None:
            try:
                deadline = time.monotonic() + 60
                for _ in range(per_thread):
                    if time.monotonic() > deadline:
                        break
                    with pool.connection() as conn:
                        assert conn.execute("SELECT 1").fetchone()[0] == 1
                    done[i] += 1
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(90)
        assert not errors
        assert done == [per_thread] * threads
        stats = pool.stats()
        assert stats["requests_num"] == stats["returns_num"] == threads * per_thread
        assert stats["pool_size"] <= 3
        assert stats["pool_active"] == 0


def test_waiters_are_served_first_come_first_served(any_dsn: str) -> None:
    # lease_ms=0: strict FIFO hand-off, so the order is exactly the arrival order.
    with Pool(any_dsn, min_idle=1, max_size=1, lease_ms=0, max_wait=20) as pool:
        holder = pool.getconn()
        order: list[int] = []
        lock = threading.Lock()

        def wait_then_record(i: int) -> None:
            with pool.connection(), lock:
                order.append(i)

        threads = []
        for i in range(5):
            t = threading.Thread(target=wait_then_record, args=(i,))
            t.start()
            threads.append(t)
            until(lambda: pool.stats()["requests_waiting"] == len(threads))
        pool.putconn(holder)
        for t in threads:
            t.join(20)
        assert order == [0, 1, 2, 3, 4]


def test_pool_timeout_names_counts_and_holders(any_dsn: str) -> None:
    with Pool(any_dsn, min_idle=1, max_size=1) as pool:
        started = threading.Event()
        release = threading.Event()

        def hold_and_run() -> None:
            with pool.connection() as conn:
                started.set()
                conn.execute(sleep_sql(pool, 0.8))
                release.wait(10)

        t = threading.Thread(target=hold_and_run, name="the-holder")
        t.start()
        started.wait(10)
        time.sleep(0.1)
        with pytest.raises(PoolTimeout) as info:
            pool.getconn(timeout=0.2)
        message = str(info.value)
        release.set()
        t.join(10)
    assert f"pool {pool.name!r}: couldn't get a connection after 0.2" in message
    assert "total=1, active=1, idle=0, waiting=1, opening=0, max_size=1" in message
    assert "by thread 'the-holder'" in message
    assert "test_pool_contract.py" in message and "in hold_and_run" in message
    assert "running: " in message
    assert "0.8" not in message.split("running: ")[1]  # literals are folded, never shown
    assert "what to do" in message


def test_max_waiting_turns_callers_away_at_once(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, max_size=1, max_waiting=1) as pool:
        holder = pool.getconn()
        t = threading.Thread(target=lambda: pool.connection(timeout=5).close())
        t.start()
        until(lambda: pool.stats()["requests_waiting"] == 1)
        with pytest.raises(TooManyWaiting, match="max_waiting=1"):
            pool.getconn(timeout=5)
        pool.putconn(holder)
        t.join(10)


def test_close_stops_every_thread_and_closes_late_returns(any_dsn: str) -> None:
    pool = Pool(any_dsn, min_idle=2, max_size=3)
    pool.wait_ready(10)
    borrowed = pool.getconn()
    threads = pool.threads
    assert threads and all(t.is_alive() for t in threads)
    pool.close()
    assert not any(t.is_alive() for t in threads)
    with pytest.raises(PoolClosed):
        pool.getconn()
    raw = borrowed.raw
    borrowed.close()  # returned after close: the physical connection is closed
    assert pool.stats()["connections_closed_pool_closed"] >= 1
    assert pool.stats()["pool_size"] == 0
    _assert_raw_closed(pool, raw)


def _assert_raw_closed(pool: Pool, raw: Any) -> None:
    if pool.driver.name == "postgresql":
        assert raw.closed
    elif pool.driver.name == "mysql":
        assert not raw.open
    else:
        with pytest.raises(Exception, match="closed"):
            raw.execute("SELECT 1")


def test_waiters_are_woken_with_pool_closed(sqlite_dsn: str) -> None:
    pool = Pool(sqlite_dsn, max_size=1)
    holder = pool.getconn()
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            pool.getconn(timeout=10)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    until(lambda: pool.stats()["requests_waiting"] == 1)
    pool.close()
    t.join(5)
    assert outcome and isinstance(outcome[0], PoolClosed)
    holder.close()


def test_expire_all_retires_idle_now_and_borrowed_on_return(any_dsn: str) -> None:
    with Pool(any_dsn, min_idle=1, max_size=2) as pool:
        borrowed = pool.getconn()
        first_id = borrowed.slot.id
        pool.expire_all()
        pool.putconn(borrowed)
        until(lambda: pool.stats()["connections_closed_expired"] >= 1)
        with pool.connection() as conn:
            assert conn.slot.id != first_id


def test_max_lifetime_retires_connections(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, min_idle=1, max_size=1, max_lifetime=1, idle_timeout=None,
              keepalive_interval=None, housekeeping_interval=0.05) as pool:
        with pool.connection() as conn:
            first = conn.slot.id
        until(lambda: pool.stats()["connections_closed_lifetime"] >= 1, timeout=5)
        with pool.connection() as conn:
            assert conn.slot.id != first


def test_idle_expiry_never_goes_below_min_idle(any_dsn: str) -> None:
    with Pool(any_dsn, min_idle=2, max_size=4, idle_timeout=0.2,
              housekeeping_interval=0.05) as pool:
        held = [pool.getconn() for _ in range(4)]
        for conn in held:
            pool.putconn(conn)
        until(lambda: pool.stats()["connections_closed_idle"] == 2, timeout=5)
        time.sleep(0.5)
        stats = pool.stats()
        assert stats["pool_size"] == 2
        assert stats["connections_closed_idle"] == 2


def test_keepalive_pings_idle_connections_instead_of_replacing_them(any_dsn: str) -> None:
    with Pool(any_dsn, min_idle=2, max_size=2, keepalive_interval=0.1,
              housekeeping_interval=0.05) as pool:
        pool.wait_ready(10)
        opened = pool.stats()["connections_num"]
        until(lambda: pool.stats()["keepalives_num"] >= 4, timeout=5)
        stats = pool.stats()
        assert stats["connections_num"] == opened  # no churn
        assert stats["connections_opened_last_hour"] == opened


def test_validation_is_skipped_within_the_bypass_window(any_dsn: str) -> None:
    with Pool(any_dsn, min_idle=1, max_size=1, validation_bypass=60) as pool:
        for _ in range(5):
            with pool.connection():
                pass
        assert pool.stats()["validations_num"] == 0
    with Pool(any_dsn, min_idle=1, max_size=1, validation_bypass=0) as pool:
        for _ in range(5):
            with pool.connection():
                pass
        assert pool.stats()["validations_num"] == 5


def test_leak_is_logged_with_site_thread_and_sql_then_unleaked(
        any_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="poolkeeper")
    with Pool(any_dsn, max_size=2, leak_threshold=0.1) as pool:
        conn = borrow_and_forget(pool)
        conn.execute("SELECT 42")
        until(lambda: pool.stats()["leaks_detected"] == 1)
        leak = next(r.getMessage() for r in caplog.records if "possible leak" in r.getMessage())
        assert "in borrow_and_forget" in leak and "test_pool_contract.py" in leak
        assert "MainThread" in leak
        assert "running: SELECT" in leak and "borrow stack" in leak
        pool.putconn(conn)
        assert pool.stats()["leaks_returned"] == 1
        assert any("previously reported leak returned" in r.getMessage() for r in caplog.records)


def borrow_and_forget(pool: Pool) -> ConnectionProxy:
    return pool.getconn()


def test_garbage_collected_proxy_gives_its_connection_back(
        any_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="poolkeeper")
    with Pool(any_dsn, min_idle=1, max_size=1, housekeeping_interval=0.05) as pool:
        borrow_and_forget(pool).execute("SELECT 1")  # the proxy is dropped at once
        gc.collect()
        with pool.connection(timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
        assert pool.stats()["orphans_returned"] == 1
        assert any("garbage-collected without being returned" in r.getMessage()
                   and "borrow_and_forget" in r.getMessage() for r in caplog.records)


def test_putconn_rejects_a_connection_of_another_pool(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, max_size=1) as a, Pool("sqlite://:memory:", max_size=1) as b:
        conn = a.getconn()
        with pytest.raises(ValueError, match="belongs to pool"):
            b.putconn(conn)
        a.putconn(conn)


def test_memory_dsn_is_shared_by_all_connections_of_a_pool() -> None:
    with Pool("sqlite://:memory:", max_size=2) as pool:
        c1, c2 = pool.getconn(), pool.getconn()
        c1.execute("CREATE TABLE t (x INTEGER)")
        c1.commit()
        assert c2.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
        pool.putconn(c1)
        pool.putconn(c2)


def test_params_and_rows_round_trip(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=1) as pool:
        table = unique_table()
        create_table(pool, table)
        ph = placeholder(pool)
        try:
            with pool.connection() as conn:
                conn.cursor().executemany(f"INSERT INTO {table} (id, v) VALUES ({ph}, {ph})",
                                          [(i, f"v{i}") for i in range(10)])
            with pool.connection() as conn:
                cur = conn.cursor()
                cur.execute(f"SELECT id, v FROM {table} WHERE id >= {ph} ORDER BY id", (5,))
                assert cur.description is not None
                assert [tuple(r) for r in cur.fetchall()] == [(i, f"v{i}") for i in range(5, 10)]
        finally:
            drop_table(pool, table)


def test_autocommit_change_is_restored_on_return(any_dsn: str) -> None:
    with Pool(any_dsn, min_idle=1, max_size=1) as pool:
        with pool.connection() as conn:
            before = conn.autocommit
            conn.autocommit = not before
            assert conn.autocommit is (not before)
        with pool.connection() as conn:
            assert conn.autocommit is before



def test_read_only_transaction_is_ended_on_return(any_dsn: str) -> None:
    # MariaDB reports no transaction for one that has only read; it must still be ended, or the
    # next borrower reads an old snapshot and DDL on the table blocks behind it.
    with Pool(any_dsn, min_idle=1, max_size=1) as pool:
        table = unique_table()
        create_table(pool, table)
        try:
            conn = pool.getconn()
            conn.execute(f"SELECT COUNT(*) FROM {table}").fetchall()
            pool.putconn(conn)
            with pool.connection(timeout=5) as conn:  # the same physical connection
                if pool.driver.name == "mysql":
                    assert conn.execute("SELECT @@in_transaction").fetchone()[0] == 0
                elif pool.driver.name == "postgresql":
                    assert conn.raw.info.transaction_status == 0  # idle
                else:
                    assert not conn.raw.in_transaction
        finally:
            drop_table(pool, table)


def test_proxies_are_transparent_for_the_drivers_own_attributes(any_dsn: str) -> None:
    # The proxies have no __getattr__ (poolkeeper.pool.delegate): each driver's own attributes,
    # methods and instance attributes must still be reachable, and writable, through them.
    with Pool(any_dsn, max_size=1, min_idle=0) as pool, pool.connection() as conn:
        name = pool.driver.name
        raw = conn.raw
        cur = conn.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchone()[0] == 1
        assert cur.arraysize == cur.raw.arraysize  # DB-API attribute of every driver
        cur.arraysize = 7  # a write reaches the driver's cursor
        assert cur.raw.arraysize == 7
        if name == "postgresql":
            assert conn.info.dbname == raw.info.dbname  # psycopg connection attribute
            assert cur.statusmessage == "SELECT 1"  # psycopg cursor attribute
            assert conn.prepare_threshold == raw.prepare_threshold
        elif name == "mysql":
            assert conn.get_server_info() == raw.get_server_info()  # a driver method
            assert cur.rownumber == cur.raw.rownumber  # a PyMySQL instance attribute
        else:
            conn.row_factory = sqlite3.Row  # sqlite3 connection attribute, written
            assert raw.row_factory is sqlite3.Row
            row = conn.execute("SELECT 2 AS two").fetchone()
            assert row["two"] == 2
            conn.row_factory = None
            assert cur.lastrowid == cur.raw.lastrowid
        cur.close()
        with pytest.raises(AttributeError):
            conn.no_such_attribute_anywhere  # noqa: B018 - neither proxy nor driver has it
