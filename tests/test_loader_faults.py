"""The loader when connections die: every row loaded exactly once, whatever was cut."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from typing import Any

import pytest

from poolkeeper import Pool
from poolkeeper.loader import Loader

from .test_loader_support import create, drop, kill_sessions_running, unique, until

#: a load loop stops after this many rows even if the killer never caught a session
_MAX_ROWS = 300_000


def _counts(pool: Pool, table: str) -> tuple[int, int]:
    with pool.connection() as conn:
        row = conn.execute(f"SELECT COUNT(*), COUNT(DISTINCT id) FROM {table}").fetchone()
        return int(row[0]), int(row[1])


def _load_while_killing(dsn: str, app_dsn: str, needle: str | None) -> None:
    table = unique("kill")
    needle = needle or table
    with Pool(app_dsn, max_size=4) as pool, Pool(dsn, max_size=2) as admin:
        # No primary key on purpose: a batch loaded twice shows up as extra rows.
        create(pool, table, "id INTEGER NOT NULL, v TEXT")
        killed = 0
        stop = threading.Event()

        def killer() -> None:
            nonlocal killed
            rnd = random.Random(1)
            # Now and then, not all the time: between kills, batches must be able to finish.
            while not stop.wait(rnd.uniform(0.02, 0.12)):
                with contextlib.suppress(Exception):
                    killed += kill_sessions_running(admin, needle)

        thread = threading.Thread(target=killer, name="test-killer")
        written = 0
        deadline = time.monotonic() + 60
        try:
            with Loader(pool, batch_rows=500, retry_backoff_s=0.01, retry_backoff_max_s=0.2,
                        columns={table: ("id", "v")}) as loader:
                thread.start()
                while written < _MAX_ROWS and time.monotonic() < deadline:
                    for _ in range(1_000):
                        loader.write(table, (written, f"row {written}"))
                        written += 1
                    if killed >= 5 and written >= 20_000:
                        break
                loader.flush()
                stop.set()
                thread.join()
                stats = loader.stats()
            assert killed >= 1, "the killer never caught a loader session: test proves nothing"
            assert stats["retries"] >= 1
            assert stats["rows_rejected"] == 0 and stats["batches_failed"] == 0
            assert _counts(pool, table) == (written, written)
        finally:
            stop.set()
            if thread.is_alive():
                thread.join()
            drop(pool, table)


def test_postgres_sessions_terminated_mid_load_lose_and_double_nothing(pg_dsn: str) -> None:
    app = unique("app")
    sep = "&" if "?" in pg_dsn else "?"
    # Every connection of the loader's pool carries this application_name: the killer
    # terminates them wherever they are (in COPY, in COMMIT, idle in the pool).
    needle_dsn = f"{pg_dsn}{sep}application_name={app}"
    _load_while_killing(pg_dsn, needle_dsn, app)


def test_mariadb_sessions_killed_mid_load_lose_and_double_nothing(mysql_dsn: str) -> None:
    # LOAD DATA and the ledger INSERT both name the table; KILL whatever runs them.
    _load_while_killing(mysql_dsn, mysql_dsn, None)


# ---------------------------------------------------------------------------- lost COMMIT
def _lose_first_commit_answer(loader: Loader, admin: Pool) -> dict[str, int]:
    """Make the first COMMIT reach the server, then kill the session before the client
    hears back: the classic ambiguous failure. Real server, real kill; only the timing is
    arranged."""
    target: Any = loader._engine.flusher.target
    real_commit = target.commit
    state = {"lost": 0}

    def commit_then_lose(s: Any) -> None:
        real_commit(s)
        if state["lost"]:
            return
        state["lost"] = 1
        with admin.connection() as conn:
            if admin.driver.name == "postgresql":
                conn.execute("SELECT pg_terminate_backend(%s)", (s.raw.info.backend_pid,))
            else:
                conn.execute(f"KILL {int(s.raw.thread_id())}")
        time.sleep(0.05)
        s.run("SELECT 1")  # raises the driver's own "connection lost" error

    target.commit = commit_then_lose
    return state


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_a_commit_whose_answer_was_lost_is_not_loaded_twice(
        backend: str, request: pytest.FixtureRequest) -> None:
    dsn = request.getfixturevalue("pg_dsn" if backend == "postgresql" else "mysql_dsn")
    with Pool(dsn, max_size=3) as pool, Pool(dsn, max_size=1) as admin:
        table = unique()
        create(pool, table, "id INTEGER NOT NULL")
        flushed: list[tuple[str, int]] = []
        try:
            with Loader(pool, batch_rows=100, workers=1, retry_backoff_s=0.01,
                        on_flushed=lambda t, b, n: flushed.append((b, n)),
                        columns={table: ("id",)}) as loader:
                state = _lose_first_commit_answer(loader, admin)
                for i in range(1_000):
                    loader.write(table, (i,))
            assert state["lost"] == 1
            stats = loader.stats()
            assert stats["ambiguous_resolved"] == 1 and stats["batches_duplicate"] == 1
            assert _counts(pool, table) == (1_000, 1_000)
            # the producer hears about each batch once, with its real row count
            assert len({b for b, _ in flushed}) == len(flushed)
            assert sum(n for _, n in flushed) == 1_000
        finally:
            drop(pool, table)


def test_without_the_ledger_a_lost_commit_answer_loads_twice(pg_dsn: str) -> None:
    """Why the ledger exists: the same fault with ledger=False duplicates a batch."""
    with Pool(pg_dsn, max_size=3) as pool, Pool(pg_dsn, max_size=1) as admin:
        table = unique()
        create(pool, table, "id INTEGER NOT NULL")
        try:
            with Loader(pool, batch_rows=100, workers=1, retry_backoff_s=0.01, ledger=False,
                        columns={table: ("id",)}) as loader:
                _lose_first_commit_answer(loader, admin)
                for i in range(1_000):
                    loader.write(table, (i,))
            total, distinct = _counts(pool, table)
            assert distinct == 1_000 and total > 1_000
        finally:
            drop(pool, table)


def test_a_pool_that_cannot_connect_is_retried_then_reported(tmp_path: Any) -> None:
    """Transient errors retry until retry_deadline_s, then the batch fails loudly."""
    from poolkeeper import LoaderError

    # A port nothing listens on: every borrow fails with a connect error.
    with Pool("postgresql://postgres@127.0.0.1:1/test", min_idle=0, max_wait=0.05,
              connect_timeout=0.2, fail_fast=False) as pool:
        rejects = tmp_path / "rejects.jsonl"
        loader = Loader(pool, retry_deadline_s=0.5, retry_backoff_s=0.01, batch_rows=10,
                        rejects_path=rejects, ledger=False, connection_timeout_s=0.05)
        for i in range(10):
            loader.write("t", (i,))
        with pytest.raises(LoaderError, match="not loaded"):
            loader.close()
        stats = loader.stats()
        assert stats["retries"] >= 1 and stats["rows_failed"] == 10
        assert len(rejects.read_text().splitlines()) == 10


# ---------------------------------------------------------------------------- ledger setup
@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_ledger_setup_retries_when_its_connection_is_lost(
        backend: str, request: pytest.FixtureRequest) -> None:
    """The ledger's purge waits behind another session's lock; that waiting session (the
    loader's own) is killed on the server: setup retries instead of failing the Loader.
    About 1 s."""
    import pymysql

    from poolkeeper.loader.batch import Ledger

    dsn = request.getfixturevalue("pg_dsn" if backend == "postgresql" else "mysql_dsn")
    ledger_table = unique("ledger")
    with Pool(dsn, max_size=3) as pool, Pool(dsn, max_size=1) as admin:
        with pool.connection() as conn:
            conn.execute(Ledger(backend, ledger_table).create)
        table = unique()
        create(pool, table, "id INTEGER NOT NULL")
        made: list[Loader] = []
        failed: list[BaseException] = []

        def construct() -> None:
            try:
                made.append(Loader(pool, ledger_table=ledger_table, retry_backoff_s=0.01,
                                   columns={table: ("id",)}))
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                failed.append(exc)

        thread = threading.Thread(target=construct, name="test-construct")
        locker: Any = None
        try:
            if backend == "postgresql":
                import psycopg

                locker = psycopg.connect(dsn)
                locker.execute(f"LOCK TABLE {ledger_table} IN ACCESS EXCLUSIVE MODE")
                waiting = ("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND query ILIKE %s AND pid <> pg_backend_pid()")
                kill = "SELECT pg_terminate_backend(%s)"
            else:
                locker = pymysql.connect(**dict(pool.driver.params))
                with locker.cursor() as cur:
                    cur.execute("SET autocommit = 0")
                    cur.execute(f"LOCK TABLES {ledger_table} WRITE")
                waiting = ("SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> "
                           "CONNECTION_ID() AND INFO LIKE %s AND STATE LIKE 'Waiting for%%'")
                kill = "KILL %s"
            thread.start()
            victims: list[Any] = []

            def setup_waits() -> bool:
                with admin.connection() as conn:
                    victims[:] = [r[0] for r in
                                  conn.execute(waiting, (f"%{ledger_table}%",)).fetchall()]
                return bool(victims)

            assert until(setup_waits, 10), "the ledger setup never waited: proves nothing"
            with admin.connection() as conn:  # the loader's own session, nobody else's
                conn.execute(kill, (victims[0],))
            locker.close()  # releases the lock
            locker = None
            thread.join(30)
            assert not thread.is_alive()
            assert failed == [] and len(made) == 1
            with made[0] as loader:
                for i in range(50):
                    loader.write(table, (i,))
            assert _counts(pool, table) == (50, 50)
        finally:
            if locker is not None:
                locker.close()
            if thread.is_alive():
                thread.join(30)
            for loader in made:
                if not loader.closed:
                    loader.abort()
            drop(pool, table, ledger_table)
