"""Query timeouts against the real servers: cancelled on the server, nothing left behind.

Every long statement here would run 10 s; each is cut at about 0.2 s. No test asserts on how
fast anything happens: the bounds below only keep a broken build from hanging.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from poolkeeper import Pool, QueryTimeout
from poolkeeper.config import parse_dsn
from poolkeeper.drivers.cancel import Canceller, MysqlControl, make_canceller
from poolkeeper.hooks.context import StatementContext
from poolkeeper.hooks.timeouts import TimeoutHook, statement_timeout
from poolkeeper.scheduler import THREAD_NAME, scheduler_stats

from ._db import count_rows, create_table, drop_table, sleep_sql, unique_table

LONG_S = 10.0
CUT_S = 0.2
WAIT_S = 30.0


@contextlib.contextmanager
def timed_pool(dsn: str, *, canceller: Canceller | None = None,
               wrap_canceller: Callable[[Canceller], Canceller] | None = None,
               max_size: int = 4, inner_hooks: tuple[Any, ...] = (),
               **options: Any) -> Iterator[tuple[Pool, TimeoutHook]]:
    """A pool with a TimeoutHook installed (and hooks that must sit inside it, added first).

    ``wrap_canceller`` wraps the pool's real canceller (fault injection around real I/O).
    """
    query_timeout = options.pop("query_timeout", None)
    transaction_timeout = options.pop("transaction_timeout", None)
    pool = Pool(dsn, max_size=max_size, min_idle=0, **options)
    if wrap_canceller is not None:
        canceller = wrap_canceller(make_canceller(pool.driver.name, connect=pool.driver.connect))
    hook = TimeoutHook(pool.driver, query_timeout=query_timeout,
                       transaction_timeout=transaction_timeout, name=pool.name,
                       canceller=canceller)
    try:
        for inner in inner_hooks:
            pool.add_hook(inner)
        # Installed as the pool installs its own on first need, with the injected canceller.
        pool._timeouts = hook
        pool._closers.append(hook.close)
        pool.add_hook(hook)
        yield pool, hook
    finally:
        pool.close()


def untimed_create(pool: Pool, table: str) -> None:
    """Set-up DDL without a timeout: a slow disk must not fail the set-up of a test."""
    with statement_timeout(None):
        create_table(pool, table)


def untimed_drop(pool: Pool, table: str) -> None:
    with statement_timeout(None):
        drop_table(pool, table)


# --------------------------------------------------------------------------- the basic cut
def test_long_statement_is_cancelled_on_the_server_and_raises_query_timeout(
        any_dsn: str) -> None:
    with timed_pool(any_dsn, query_timeout=CUT_S) as (pool, _hook):
        with pool.connection() as conn:
            started = time.monotonic()
            with pytest.raises(QueryTimeout) as info:
                conn.execute(sleep_sql(pool, LONG_S)).fetchall()
            assert time.monotonic() - started < LONG_S  # cut, not waited out
            error = info.value
            # chained to the driver's own cancellation error: the server did the stopping
            assert error.__cause__ is not None
            assert type(error.__cause__).__module__.split(".")[0] in (
                "sqlite3", "psycopg", "pymysql")
            assert error.timeout_s == pytest.approx(CUT_S)
            assert error.elapsed_s >= CUT_S
            assert f"timeout {CUT_S:g} s" in str(error)
            assert pool.name in str(error)
            # the same connection carries on
            assert conn.execute("SELECT 1").fetchone()[0] == 1
        with pool.connection() as conn:
            assert conn.execute("SELECT 2").fetchone()[0] == 2
        stats = pool.stats()
        assert stats["timeouts_fired_num"] == 1
        assert stats["timeouts_server_cancels_sent_num"] == 1
        assert stats["timeouts_raised_num"] == 1
        assert stats["timeouts_server_cancels_failed_num"] == 0
        assert stats["timeouts_entries_now"] == 0


def test_timeout_inside_a_transaction_rolls_it_back(any_dsn: str) -> None:
    with timed_pool(any_dsn, query_timeout=CUT_S) as (pool, _hook):
        table = unique_table("pk_to")
        untimed_create(pool, table)
        try:
            with pool.connection() as conn:
                conn.execute(f"INSERT INTO {table} (id, v) VALUES (1, 'lost')")
                with pytest.raises(QueryTimeout, match="rolled back"):
                    conn.execute(sleep_sql(pool, LONG_S))
                assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
                conn.execute(f"INSERT INTO {table} (id, v) VALUES (2, 'kept')")
            assert count_rows(pool, table) == 1
        finally:
            untimed_drop(pool, table)


def test_query_timeout_message_shows_no_literals(pg_dsn: str) -> None:
    with timed_pool(pg_dsn, query_timeout=CUT_S) as (pool, _hook):
        with pool.connection() as conn, pytest.raises(QueryTimeout) as info:
            conn.execute(f"SELECT 'hunter2' AS secret, pg_sleep({LONG_S})")
        assert "hunter2" not in str(info.value)
        assert "pg_sleep" in info.value.sql


def test_statements_finishing_in_time_leave_no_entry_behind(any_dsn: str) -> None:
    # Seed 004 in miniature: a one-hour timeout around statements that finish at once.
    with timed_pool(any_dsn, query_timeout=3600.0) as (pool, _hook):
        with pool.connection() as conn:
            cur = conn.cursor()
            for _ in range(500):
                cur.execute("SELECT 1")
                cur.fetchall()
        stats = pool.stats()
        assert stats["timeouts_scheduled_num"] == 500
        assert stats["timeouts_cancelled_on_time_num"] == 500
        assert stats["timeouts_entries_now"] == 0
        assert stats["scheduler_entries_now"] == 0
        assert stats["scheduler_cancelled_pending"] == 0


# --------------------------------------------------------------------------- overrides
def test_statement_timeout_scope_sets_a_timeout_where_the_pool_has_none(pg_dsn: str) -> None:
    with timed_pool(pg_dsn) as (pool, _hook), pool.connection() as conn:
        conn.execute("SELECT pg_sleep(0.01)")  # no timeout at all: nothing scheduled
        assert pool.stats()["timeouts_scheduled_num"] == 0
        with statement_timeout(CUT_S, conn), pytest.raises(QueryTimeout):
            conn.execute(f"SELECT pg_sleep({LONG_S})")


def test_statement_timeout_none_disables_the_pool_timeout(any_dsn: str) -> None:
    with timed_pool(any_dsn, query_timeout=0.05) as (pool, _hook), pool.connection() as conn:
        with statement_timeout(None):
            conn.execute(sleep_sql(pool, 0.3)).fetchall()
        assert pool.stats()["timeouts_fired_num"] == 0


def test_statement_timeout_for_another_connection_does_not_apply(pg_dsn: str) -> None:
    with timed_pool(pg_dsn, max_size=2) as (pool, _hook):
        with (pool.connection() as mine, pool.connection() as other,
              statement_timeout(0.05, other)):
            mine.execute("SELECT pg_sleep(0.3)")  # runs to the end
            with pytest.raises(QueryTimeout):
                other.execute(f"SELECT pg_sleep({LONG_S})")
        assert pool.stats()["timeouts_raised_num"] == 1


def test_innermost_scope_wins(pg_dsn: str) -> None:
    with timed_pool(pg_dsn) as (pool, _hook), pool.connection() as conn:
        with statement_timeout(CUT_S), statement_timeout(None, conn):
            conn.execute("SELECT pg_sleep(0.3)")
        with statement_timeout(None), statement_timeout(CUT_S, conn), pytest.raises(
                QueryTimeout):
            conn.execute(f"SELECT pg_sleep({LONG_S})")


def test_bad_timeouts_are_refused_naming_the_value() -> None:
    with pytest.raises(ValueError, match="timeout=-1"):
        statement_timeout(-1)
    with pytest.raises(ValueError, match="timeout='2'"):
        statement_timeout("2")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- concurrency
def test_timeouts_on_many_threads_at_once(any_dsn: str) -> None:
    threads_n = 6
    with timed_pool(any_dsn, query_timeout=CUT_S, max_size=threads_n) as (pool, _hook):
        outcomes: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(threads_n)

        def worker() -> None:
            try:
                with pool.connection() as conn:
                    barrier.wait(WAIT_S)
                    try:
                        conn.execute(sleep_sql(pool, LONG_S)).fetchall()
                        outcome = "finished"
                    except QueryTimeout:
                        outcome = "timeout" if conn.execute("SELECT 1").fetchone()[0] == 1 \
                            else "unusable"
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                outcome = f"{type(exc).__name__}: {exc}"
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=worker) for _ in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_S * 2)
        assert outcomes == ["timeout"] * threads_n
        stats = pool.stats()
        assert stats["timeouts_server_cancels_sent_num"] == threads_n
        assert stats["timeouts_raised_num"] == threads_n
        assert stats["timeouts_entries_now"] == 0


# --------------------------------------------------------------------------- the race
class _Finished:
    """A statement hook inside the TimeoutHook: marks the moment the driver call returned."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def before(self, ctx: StatementContext) -> None:
        return None

    def after(self, ctx: StatementContext, token: Any, result: Any,
              error: BaseException | None) -> None:
        self.event.set()


class _CancelAfterFinish:
    """Fault injection: the real canceller, delivered only once the statement has finished.

    This pins the race a real server produces only now and then: the deadline fires while the
    statement runs, and the cancel lands just after the statement's result came back.
    """

    blocking = True

    def __init__(self, inner: Canceller, finished: threading.Event) -> None:
        self.inner = inner
        self.finished = finished
        self.max_duration_s = inner.max_duration_s + WAIT_S
        self.poisons_pending_rows = inner.poisons_pending_rows
        self.delivered = threading.Event()

    def cancel(self, raw: Any, session_id: Any) -> bool | None:
        assert self.finished.wait(WAIT_S)
        try:
            return self.inner.cancel(raw, session_id)
        finally:
            self.delivered.set()

    def stats(self) -> dict[str, int]:
        return self.inner.stats()

    def close(self) -> None:
        self.inner.close()


def race_statement(pool: Pool, table: str) -> str:
    """About half a second of work whose outcome stays checkable after a late cancel."""
    if pool.driver.name == "sqlite":
        # DML: sqlite3 runs it to the end inside execute(), so no row is left pending
        return (f"INSERT INTO {table} (id, v) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
                "SELECT x + 1 FROM c WHERE x < 1500000) SELECT max(x), 'done' FROM c")
    sleep = "pg_sleep(0.5)" if pool.driver.name == "postgresql" else "SLEEP(0.5)"
    return f"INSERT INTO {table} (id, v) SELECT 1, 'done' FROM (SELECT {sleep}) AS s"


def test_a_cancel_arriving_after_the_statement_finished_kills_nothing(any_dsn: str) -> None:
    finished = _Finished()
    wrapped: list[_CancelAfterFinish] = []

    def wrap(real: Canceller) -> Canceller:
        wrapped.append(_CancelAfterFinish(real, finished.event))
        return wrapped[0]

    with timed_pool(any_dsn, query_timeout=0.02, wrap_canceller=wrap,
                    inner_hooks=(finished,)) as (pool, _hook):
        canceller = wrapped[0]
        table = unique_table("pk_race")
        untimed_create(pool, table)
        try:
            with pool.connection() as conn:
                finished.event.clear()  # set by the statements of create_table()
                pool.pop_stats()
                conn.execute(race_statement(pool, table))  # outlives its deadline, not its cancel
                assert canceller.delivered.is_set()  # the statement's thread waited for it
                with statement_timeout(None):
                    assert conn.execute("SELECT 1").fetchone()[0] == 1  # not killed
                    assert conn.execute(f"SELECT v FROM {table}").fetchall() == [("done",)]
            stats = pool.stats()
            assert stats["timeouts_fired_num"] == 1
            assert stats["timeouts_raised_num"] == 0
            assert stats["timeouts_late_num"] == 1
            if pool.driver.name == "mysql":
                # KILL QUERY ID found the session idle: nothing was sent to it at all
                assert stats["timeouts_server_cancels_missed_num"] == 1
        finally:
            untimed_drop(pool, table)


def test_a_late_sqlite_interrupt_poisoning_pending_rows_is_reported_as_a_timeout(
        sqlite_dsn: str) -> None:
    finished = _Finished()
    canceller = _CancelAfterFinish(make_canceller("sqlite"), finished.event)
    with timed_pool(sqlite_dsn, query_timeout=0.02, canceller=canceller,
                    inner_hooks=(finished,)) as (pool, _hook), pool.connection() as conn:
        # the row is computed, but the interrupt would make the fetch fail with "interrupted"
        with pytest.raises(QueryTimeout):
            conn.execute(sleep_sql(pool, 0.5))
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_fast_statements_racing_their_deadlines_never_hurt_the_next_one(any_dsn: str) -> None:
    # Deadlines equal to the statements' own duration: every ordering of "statement done" and
    # "deadline fired" happens. A statement may time out; the next one must never suffer.
    with timed_pool(any_dsn, max_size=1) as (pool, _hook), pool.connection() as conn:
        end = time.monotonic() + 5.0
        rounds = 0
        while rounds < 200 and time.monotonic() < end:
            rounds += 1
            with contextlib.suppress(QueryTimeout), statement_timeout(0.005):
                conn.execute(sleep_sql(pool, 0.005)).fetchall()
            with statement_timeout(None):
                assert conn.execute("SELECT 1").fetchone()[0] == 1
        stats = pool.stats()
        assert stats["timeouts_entries_now"] == 0
        assert stats["timeouts_server_cancels_failed_num"] == 0


# --------------------------------------------------------------------------- MariaDB control
def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed on exit: nothing listens there


def _mysql_connect(mysql_dsn: str, port: Callable[[], int]) -> Callable[[], Any]:
    import pymysql  # here: the module must import without the MariaDB driver

    params = dict(parse_dsn(mysql_dsn).params)

    def connect() -> Any:
        return pymysql.connect(**{**params, "port": port(), "connect_timeout": 2})

    return connect


def test_mysql_control_connection_down_lets_the_statement_run_on(mysql_dsn: str) -> None:
    dead = _dead_port()
    control = MysqlControl(_mysql_connect(mysql_dsn, lambda: dead), timeout=2.0,
                           connect_timeout=2.0, backoff_min=60.0, backoff_max=60.0)
    with timed_pool(mysql_dsn, query_timeout=0.05, canceller=control) as (pool, _hook):
        with pool.connection() as conn:
            assert conn.execute("SELECT SLEEP(0.3)").fetchone()[0] == 0  # ran to the end
            assert conn.execute("SELECT SLEEP(0.3)").fetchone()[0] == 0
        stats = pool.stats()
        assert stats["timeouts_fired_num"] == 2
        assert stats["timeouts_server_cancels_failed_num"] == 2
        assert stats["timeouts_raised_num"] == 0
        # the second cancel failed at once, inside the backoff: no second connect attempt
        assert stats["timeouts_control_connect_failures_num"] == 1
        assert stats["timeouts_control_connections"] == 0


def test_mysql_control_connection_comes_back_after_the_backoff(mysql_dsn: str) -> None:
    port = {"now": _dead_port()}
    real = int(parse_dsn(mysql_dsn).params["port"])
    control = MysqlControl(_mysql_connect(mysql_dsn, lambda: port["now"]), timeout=2.0,
                           connect_timeout=2.0, backoff_min=0.05, backoff_max=0.05)
    with timed_pool(mysql_dsn, query_timeout=0.05, canceller=control) as (pool, _hook):
        with pool.connection() as conn:
            conn.execute("SELECT SLEEP(0.3)")  # cancel fails: server "down"
            port["now"] = real
            with pytest.raises(QueryTimeout):  # backoff over, control connection reopened
                conn.execute(f"SELECT SLEEP({LONG_S})")
        stats = pool.stats()
        assert stats["timeouts_server_cancels_failed_num"] == 1
        assert stats["timeouts_control_connects_num"] == 1
        assert stats["timeouts_control_connections"] == 1


def test_mysql_control_connection_killed_by_the_server_is_replaced(mysql_dsn: str) -> None:
    with timed_pool(mysql_dsn, query_timeout=CUT_S) as (pool, hook):
        with pool.connection() as conn:
            with pytest.raises(QueryTimeout):
                conn.execute(f"SELECT SLEEP({LONG_S})")
            control = hook._canceller
            assert isinstance(control, MysqlControl)
            victim = control.session_id
            assert victim is not None
            with statement_timeout(None):
                conn.execute(f"KILL {victim}")  # the control connection dies under the hook
            with pytest.raises(QueryTimeout):
                conn.execute(f"SELECT SLEEP({LONG_S})")
            assert control.session_id != victim
        stats = pool.stats()
        assert stats["timeouts_control_connects_num"] == 2
        assert stats["timeouts_server_cancels_failed_num"] == 0


def test_one_control_connection_serves_every_cancel_of_a_pool(mysql_dsn: str) -> None:
    with timed_pool(mysql_dsn, query_timeout=CUT_S, max_size=3) as (pool, _hook):
        for _ in range(3):
            with pool.connection() as conn, pytest.raises(QueryTimeout):
                conn.execute(f"SELECT SLEEP({LONG_S})")
        assert pool.stats()["timeouts_control_connects_num"] == 1


# --------------------------------------------------------------------------- transactions
def test_transaction_timeout_cuts_a_statement_that_outlives_the_transaction(
        any_dsn: str) -> None:
    with timed_pool(any_dsn, transaction_timeout=0.3) as (pool, _hook):
        table = unique_table("pk_txn")
        untimed_create(pool, table)
        try:
            with pool.connection() as conn:
                conn.execute(f"INSERT INTO {table} (id, v) VALUES (1, 'x')")
                with pytest.raises(QueryTimeout, match=r"transaction_timeout=0\.3 s"):
                    conn.execute(sleep_sql(pool, LONG_S))
            assert count_rows(pool, table) == 0
            assert pool.stats()["timeouts_transaction_num"] == 1
        finally:
            untimed_drop(pool, table)


def test_statement_after_the_transaction_time_is_up_is_not_run(any_dsn: str) -> None:
    with timed_pool(any_dsn, transaction_timeout=0.2) as (pool, _hook):
        table = unique_table("pk_txn")
        untimed_create(pool, table)
        try:
            with pool.connection() as conn:
                conn.execute(f"INSERT INTO {table} (id, v) VALUES (1, 'x')")
                time.sleep(0.3)  # idle in transaction past its limit
                with pytest.raises(QueryTimeout, match="not run"):
                    conn.execute(f"INSERT INTO {table} (id, v) VALUES (2, 'y')")
                # rolled back: the next statement opens a fresh transaction with a fresh clock
                conn.execute(f"INSERT INTO {table} (id, v) VALUES (3, 'z')")
            assert count_rows(pool, table) == 1
        finally:
            untimed_drop(pool, table)


def test_commit_of_a_transaction_past_its_time_is_refused_and_rolled_back(
        any_dsn: str) -> None:
    with timed_pool(any_dsn, transaction_timeout=0.2) as (pool, hook):
        table = unique_table("pk_txn")
        untimed_create(pool, table)
        try:
            with pool.connection() as conn:
                conn.execute(f"INSERT INTO {table} (id, v) VALUES (1, 'x')")
                hook.check_transaction(conn)  # young enough: nothing happens
                time.sleep(0.3)
                with pytest.raises(QueryTimeout, match="not committed"):
                    hook.check_transaction(conn)  # what the pool calls before commit()
                conn.commit()  # nothing left to commit
            assert count_rows(pool, table) == 0
        finally:
            untimed_drop(pool, table)


# --------------------------------------------------------------------------- threads
def test_closing_the_hook_stops_its_threads_and_the_scheduler(pg_dsn: str) -> None:
    assert scheduler_stats()["scheduler_users"] == 0
    pool = Pool(pg_dsn, max_size=1, min_idle=0, query_timeout=CUT_S)
    hook = pool._timeouts
    assert hook is not None  # installed by the query_timeout option
    try:
        with pool.connection() as conn, pytest.raises(QueryTimeout):
            conn.execute(f"SELECT pg_sleep({LONG_S})")
        names = {t.name for t in threading.enumerate()}
        assert THREAD_NAME in names
        assert f"poolkeeper-{pool.name}-canceller" in names
    finally:
        pool.close()  # closes the hook too
    assert hook.closed
    names = {t.name for t in threading.enumerate() if t.is_alive()}
    assert THREAD_NAME not in names
    assert f"poolkeeper-{pool.name}-canceller" not in names
    assert scheduler_stats()["scheduler_users"] == 0


def test_a_pool_without_timeouts_starts_no_thread(any_dsn: str) -> None:
    with timed_pool(any_dsn) as (pool, hook), pool.connection() as conn:
        conn.execute("SELECT 1")
        assert hook.threads == []
        assert THREAD_NAME not in {t.name for t in threading.enumerate()}


def test_transaction_clock_restarts_after_each_commit(any_dsn: str) -> None:
    # Many short transactions in one long checkout never add up to one long transaction
    # (MariaDB cannot report a read-only transaction's end: the commit must reset the clock).
    with timed_pool(any_dsn, transaction_timeout=0.3) as (pool, _hook):
        table = unique_table("pk_txn")
        untimed_create(pool, table)
        try:
            with pool.connection() as conn:
                for i in range(4):
                    conn.execute(f"SELECT COUNT(*) FROM {table}").fetchall()
                    conn.execute(f"INSERT INTO {table} (id, v) VALUES ({i}, 'x')")
                    conn.commit()
                    time.sleep(0.12)
            assert count_rows(pool, table) == 4
        finally:
            untimed_drop(pool, table)
