"""The bulk loader against the real servers: exact round trips, flush policy, errors, cleanup."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from poolkeeper import LoaderBackpressure, LoaderError, Pool
from poolkeeper.loader import Loader, Reject

from .test_loader_support import (
    TYPED_COLUMNS,
    count,
    create,
    drop,
    ids,
    normalise,
    typed_ddl,
    typed_expected,
    typed_rows,
    unique,
    until,
)


def _pool(dsn: str, **options: Any) -> Pool:
    options.setdefault("max_size", 4)
    return Pool(dsn, **options)


def _temp_dir_of(loader: Loader) -> str | None:
    """The loader's temp directory (only MariaDB's LOAD DATA needs one)."""
    path = loader._engine._temp_dir
    assert (path is not None) == (loader.target == "load_data")
    assert path is None or os.path.isdir(path)
    return path


# ---------------------------------------------------------------------------- round trips
def test_every_supported_type_round_trips_exactly(any_dsn: str) -> None:
    with _pool(any_dsn) as pool:
        driver = pool.driver.name
        table = unique()
        create(pool, table, typed_ddl(driver))
        try:
            rows = list(typed_rows(400, driver))
            with Loader(pool, budget_bytes=1 << 20, batch_rows=97,
                        columns={table: TYPED_COLUMNS}) as loader:
                for row in rows:
                    loader.write(table, row)
            with pool.connection() as conn:
                got = [normalise(tuple(r)) for r in conn.execute(
                    f"SELECT {', '.join(TYPED_COLUMNS)} FROM {table} ORDER BY id").fetchall()]
            assert len(got) == len(rows)
            for row, back in zip(rows, got, strict=True):
                assert back == typed_expected(row, driver), row[0]
        finally:
            drop(pool, table)


def test_mariadb_uses_load_data_when_the_server_allows_it(mysql_dsn: str) -> None:
    with _pool(mysql_dsn) as pool:
        with pool.connection() as conn:
            local_infile = int(conn.execute("SELECT @@GLOBAL.local_infile").fetchone()[0])
        table = unique()
        create(pool, table, "id INT PRIMARY KEY, v TEXT")
        try:
            with Loader(pool, columns={table: ("id", "v")}) as loader:
                # Documents which path ran: LOAD DATA LOCAL when local_infile=ON, else INSERT.
                assert loader.target == ("load_data" if local_infile else "insert")
                for i in range(1000):
                    loader.write(table, (i, f"v{i}"))
            assert count(pool, table) == 1000
        finally:
            drop(pool, table)


def test_mariadb_insert_fallback_round_trips_exactly(mysql_dsn: str) -> None:
    with _pool(mysql_dsn) as pool:
        table = unique()
        create(pool, table, typed_ddl("mysql"))
        try:
            rows = list(typed_rows(200, "mysql"))
            with Loader(pool, mysql_local_infile=False, batch_rows=64,
                        columns={table: TYPED_COLUMNS}) as loader:
                assert loader.target == "insert"
                for row in rows:
                    loader.write(table, row)
            with pool.connection() as conn:
                got = [normalise(tuple(r)) for r in conn.execute(
                    f"SELECT {', '.join(TYPED_COLUMNS)} FROM {table} ORDER BY id").fetchall()]
            assert got == [typed_expected(r, "mysql") for r in rows]
        finally:
            drop(pool, table)


def test_mariadb_pool_connections_with_local_files_are_used_directly(mysql_dsn: str) -> None:
    with _pool(mysql_dsn, connect_kwargs={"client_flag": 128}) as pool:
        table = unique()
        create(pool, table, "id INT PRIMARY KEY")
        try:
            with Loader(pool, columns={table: ("id",)}) as loader:
                for i in range(100):
                    loader.write(table, (i,))
                loader.flush()
                assert loader.target == "load_data"
                assert loader.stats()["connections_opened"] == 0  # no connection of its own
            assert count(pool, table) == 100
        finally:
            drop(pool, table)


def test_load_data_refuses_any_file_but_its_own(mysql_dsn: str, tmp_path: Path) -> None:
    import pymysql

    from poolkeeper.drivers.mysql_infile import guarded_execute

    secret = tmp_path / "secret.txt"
    secret.write_text("42\n")
    ours = tmp_path / "ours.tsv"
    ours.write_text("1\n")
    with _pool(mysql_dsn) as pool:
        table = unique()
        create(pool, table, "id INT")
        raw = pymysql.connect(**{**pool.driver.params, "client_flag": 128})
        try:
            # The server asks for the file its statement names: here, not the loader's own.
            with pytest.raises(LoaderError, match="refused"):
                guarded_execute(raw, f"LOAD DATA LOCAL INFILE '{secret}' INTO TABLE {table}",
                                str(ours))
            raw.rollback()
            assert guarded_execute(raw, f"LOAD DATA LOCAL INFILE '{ours}' INTO TABLE {table}",
                                   str(ours)) == 1
            raw.commit()
            # ... and outside the guarded statement, no file is ever sent.
            with pytest.raises(RuntimeError, match="local_infile option is false"):
                raw.cursor().execute(f"LOAD DATA LOCAL INFILE '{ours}' INTO TABLE {table}")
        finally:
            raw.close()
        with pool.connection() as conn:
            assert [tuple(r) for r in conn.execute(f"SELECT id FROM {table}").fetchall()] == [(1,)]
        drop(pool, table)


@pytest.mark.parametrize("packet_bytes", [7, 4096, 8 << 20])
def test_load_data_sends_the_file_in_packets_of_any_size(mysql_dsn: str, tmp_path: Path,
                                                         packet_bytes: int) -> None:
    import pymysql

    from poolkeeper.drivers.mysql_infile import guarded_execute

    ours = tmp_path / "ours.tsv"
    ours.write_text("".join(f"{i}\trow {i}\n" for i in range(5000)))
    with _pool(mysql_dsn) as pool:
        table = unique()
        create(pool, table, "id INT, note VARCHAR(20)")
        raw = pymysql.connect(**{**pool.driver.params, "client_flag": 128})
        try:
            # Packet boundaries fall inside lines: the server joins them back.
            assert guarded_execute(raw, f"LOAD DATA LOCAL INFILE '{ours}' INTO TABLE {table}",
                                   str(ours), packet_bytes=packet_bytes) == 5000
            raw.commit()
            with raw.cursor() as cur:  # the connection is in step for the next statement
                cur.execute(f"SELECT COUNT(*), SUM(id), MAX(note) FROM {table}")
                assert cur.fetchone() == (5000, sum(range(5000)), "row 999")
        finally:
            raw.close()
            drop(pool, table)


# ---------------------------------------------------------------------------- rows in
def test_dict_rows_take_columns_from_the_first_row(any_dsn: str) -> None:
    with _pool(any_dsn) as pool:
        table = unique()
        create(pool, table, "id INTEGER PRIMARY KEY, a TEXT, b TEXT")
        try:
            with Loader(pool) as loader:
                loader.write(table, {"id": 1, "a": "x", "b": "y"})
                loader.write(table, {"b": "q", "id": 2, "a": None})  # any key order
                with pytest.raises(ValueError, match=r"unknown column.*'zzz'"):
                    loader.write(table, {"id": 3, "a": "x", "b": "y", "zzz": 1})
                with pytest.raises(ValueError, match="no value for column 'b'"):
                    loader.write(table, {"id": 3, "a": "x"})
                with pytest.raises(TypeError, match="cannot"):
                    loader.write(table, {"id": 4, "a": object(), "b": "y"})
            with pool.connection() as conn:
                got = conn.execute(f"SELECT id, a, b FROM {table} ORDER BY id").fetchall()
            assert [tuple(r) for r in got] == [(1, "x", "y"), (2, None, "q")]
        finally:
            drop(pool, table)


def test_a_row_that_cannot_be_encoded_is_not_buffered(any_dsn: str) -> None:
    with _pool(any_dsn) as pool:
        table = unique()
        create(pool, table, "id INTEGER PRIMARY KEY, v TEXT")
        try:
            with Loader(pool, columns={table: ("id", "v")}) as loader:
                loader.write(table, (1, "ok"))
                with pytest.raises(ValueError, match="has 3 values"):
                    loader.write(table, (2, "a", "b"))
                with pytest.raises(TypeError, match=table):
                    loader.write(table, (2, {"not": "loadable"}))
                with pytest.raises(TypeError, match="must be a tuple, list or dict"):
                    loader.write(table, "id=2")
                loader.write(table, [2, "ok"])
                assert loader.stats()["rows_written"] == 2
            assert ids(pool, table) == [1, 2]
        finally:
            drop(pool, table)


# ---------------------------------------------------------------------------- flush policy
def test_each_flush_records_its_reason(sqlite_dsn: str) -> None:
    with _pool(sqlite_dsn) as pool:
        tables = [unique() for _ in range(4)]
        for t in tables:
            create(pool, t, "id INTEGER PRIMARY KEY, v TEXT")
        flushed: list[tuple[str, str, int]] = []
        with Loader(pool, batch_rows=10, batch_bytes=2_000, max_age_s=0.2,
                    on_flushed=lambda t, b, n: flushed.append((t, b, n))) as loader:
            for i in range(10):  # rows
                loader.write(tables[0], (i, "r"))
            for i in range(39):  # size: every 3 rows of ~500 bytes pass 2,000 bytes
                loader.write(tables[1], (i, "s" * 500))
            loader.write(tables[2], (1, "explicit"))
            loader.flush(tables[2])
            loader.write(tables[3], (1, "age"))
            assert until(lambda: loader.stats()["flushes_age"] >= 1, 10)
            loader.write(tables[0], (100, "close"))
            stats = loader.stats()
            assert stats["flushes_rows"] == 1
            assert stats["flushes_size"] >= 1
            assert stats["flushes_explicit"] == 1
        assert loader.stats()["flushes_close"] == 1
        assert sum(n for _t, _b, n in flushed) == 10 + 39 + 1 + 1 + 1
        for t, expected in zip(tables, (11, 39, 1, 1), strict=True):
            assert count(pool, t) == expected
        drop(pool, *tables)


def test_on_flushed_follows_each_tables_write_order(any_dsn: str) -> None:
    with _pool(any_dsn) as pool:
        table = unique()
        create(pool, table, "id INTEGER PRIMARY KEY")
        seen: list[str] = []
        try:
            with Loader(pool, batch_rows=50, workers=2 if pool.driver.name != "sqlite" else 1,
                        on_flushed=lambda t, b, n: seen.append(b),
                        columns={table: ("id",)}) as loader:
                for i in range(1_000):
                    loader.write(table, (i,))
            seqs = [int(b.rsplit(":", 1)[1]) for b in seen]
            assert seqs == sorted(seqs) and len(seqs) == 20
            assert count(pool, table) == 1_000
        finally:
            drop(pool, table)


def test_soft_limit_flushes_the_largest_table(sqlite_dsn: str) -> None:
    with _pool(sqlite_dsn) as pool:
        small, big = unique(), unique()
        for t in (small, big):
            create(pool, t, "id INTEGER PRIMARY KEY, v TEXT")
        sealed: list[str] = []
        with Loader(pool, budget_bytes=200_000, batch_rows=10**9, batch_bytes=200_000,
                    max_age_s=None, on_flushed=lambda t, b, n: sealed.append(t)) as loader:
            for i in range(20):
                loader.write(small, (i, "x"))
            i = 0
            while loader.stats()["soft_limit_seals"] == 0 and i < 10_000:
                loader.write(big, (i, "y" * 100))
                i += 1
            loader.flush()
            assert sealed[0] == big  # the largest went first, the small one only on flush
        assert count(pool, big) == i and count(pool, small) == 20
        drop(pool, small, big)


def test_hard_limit_blocks_writers_and_never_drops_rows(pg_dsn: str) -> None:
    with _pool(pg_dsn) as pool, _pool(pg_dsn, max_size=1) as admin:
        table = unique()
        create(pool, table, "id int PRIMARY KEY, v text")
        written = 0
        try:
            lock = admin.getconn()
            lock.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # COPY now waits
            with Loader(pool, budget_bytes=64_000, write_timeout_s=0.3,
                        columns={table: ("id", "v")}) as loader:
                with pytest.raises(LoaderBackpressure) as info:
                    for i in range(100_000):
                        loader.write(table, (i, "z" * 100))
                        written += 1
                message = str(info.value)
                assert "write_timeout_s=0.3" in message and "budget_bytes=64000" in message
                assert "no row was dropped" in message
                stats = loader.stats()
                assert stats["backpressure_timeouts"] == 1
                assert stats["bytes_peak"] <= 64_000 + 300  # budget plus one row
                lock.rollback()  # the database takes rows again
                admin.putconn(lock)
                loader.write(table, (written, "after"))
                written += 1
            assert count(pool, table) == written
        finally:
            drop(pool, table)


# ---------------------------------------------------------------------------- errors
def test_bad_rows_are_isolated_and_the_rest_loads(any_dsn: str, tmp_path: Path) -> None:
    with _pool(any_dsn) as pool:
        table = unique()
        create(pool, table, "id INTEGER PRIMARY KEY, n INTEGER NOT NULL")
        rejects_path = tmp_path / "rejects.jsonl"
        got: list[Reject] = []
        bad = {17: (17, None), 250: (3, 250), 251: (3, 251), 999: (999, None)}
        try:
            with Loader(pool, batch_rows=400, rejects_path=rejects_path, on_reject=got.append,
                        columns={table: ("id", "n")}) as loader:
                for i in range(1_000):
                    loader.write(table, bad.get(i, (i, i)))
            stats = loader.stats()
            assert stats["rows_rejected"] == 4 and stats["rows_loaded"] == 996
            assert count(pool, table) == 996
            as_text = {tuple(None if v is None else str(v) for v in r.row) for r in got}
            assert as_text == {("17", None), ("3", "250"), ("3", "251"), ("999", None)}
            lines = [json.loads(x) for x in rejects_path.read_text().splitlines()]
            assert len(lines) == 4 and all(x["error"] and x["table"] == table for x in lines)
            assert {str(x["row"][0]) for x in lines} == {"17", "3", "999"}
        finally:
            drop(pool, table)


def test_missing_table_surfaces_on_the_next_call(any_dsn: str) -> None:
    with _pool(any_dsn) as pool:
        missing, fine = unique("nope"), unique()
        create(pool, fine, "id INTEGER PRIMARY KEY")
        rejected: list[Reject] = []
        try:
            loader = Loader(pool, on_reject=rejected.append, retry_deadline_s=1)
            loader.write(missing, (1,))
            loader.write(fine, (1,))
            with pytest.raises(LoaderError, match=f"{missing}.*not loaded") as info:
                loader.flush()
            assert info.value.__cause__ is not None  # the driver's own error
            assert "table exists" in str(info.value)
            assert len(rejected) == 1 and rejected[0].table == missing
            loader.write(fine, (2,))  # the loader goes on
            loader.close()
            assert ids(pool, fine) == [1, 2]
        finally:
            drop(pool, fine)


def test_error_surfaces_on_write_and_on_close(sqlite_dsn: str) -> None:
    with _pool(sqlite_dsn) as pool:
        missing = unique("nope")
        loader = Loader(pool, batch_rows=1, on_reject=lambda r: None)
        loader.write(missing, (1,))  # one row is a full batch: it is flushed at once
        assert until(lambda: loader.stats()["batches_failed"] == 1)
        with pytest.raises(LoaderError, match="no such table"):
            loader.write(missing, (2,))  # raised instead of accepting the row
        assert loader.stats()["rows_written"] == 1
        loader.write(missing, (3,))  # raised once: now accepted, and fails in turn
        with pytest.raises(LoaderError, match="no such table"):
            loader.close()
        assert loader.closed


# ---------------------------------------------------------------------------- life cycle
def test_close_stops_threads_and_leaves_no_temp_file(any_dsn: str) -> None:
    with _pool(any_dsn) as pool:
        table = unique()
        create(pool, table, "id INTEGER PRIMARY KEY")
        try:
            loader = Loader(pool, columns={table: ("id",)})
            temp = _temp_dir_of(loader)
            threads = loader.threads
            assert threads and all(t.name.startswith("poolkeeper-loader-") for t in threads)
            for i in range(5_000):
                loader.write(table, (i,))
            loader.close()
            assert not any(t.is_alive() for t in threads)
            assert temp is None or not os.path.exists(temp)
            assert pool.stats()["pool_active"] == 0
            with pytest.raises(LoaderError, match="closed"):
                loader.write(table, (1,))
            loader.close()  # idempotent
            assert count(pool, table) == 5_000
        finally:
            drop(pool, table)


def test_abort_stops_at_once_and_reports_what_it_dropped(pg_dsn: str) -> None:
    with _pool(pg_dsn) as pool:
        table = unique()
        create(pool, table, "id int PRIMARY KEY")
        try:
            loader = Loader(pool, max_age_s=None, columns={table: ("id",)})
            temp = _temp_dir_of(loader)
            for i in range(1_000):
                loader.write(table, (i,))
            threads = loader.threads
            assert loader.abort() == 1_000
            assert not any(t.is_alive() for t in threads) and loader.closed
            assert temp is None or not os.path.exists(temp)
            assert count(pool, table) == 0
            assert loader.abort() == 0
        finally:
            drop(pool, table)


def test_an_unclosed_loader_stops_its_threads_when_collected(sqlite_dsn: str) -> None:
    import gc

    with _pool(sqlite_dsn) as pool:
        loader = Loader(pool)
        threads = loader.threads
        del loader
        gc.collect()
        for t in threads:
            t.join(5)
        assert not any(t.is_alive() for t in threads)


def test_connections_stay_within_the_pool(any_dsn: str) -> None:
    with _pool(any_dsn, max_size=2) as pool:
        tables = [unique() for _ in range(20)]
        for t in tables:
            create(pool, t, "id INTEGER PRIMARY KEY")
        peak = 0
        stop = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, pool.stats()["pool_size"])
                time.sleep(0.001)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with Loader(pool, workers=2 if pool.driver.name != "sqlite" else 1,
                        batch_rows=20) as loader:
                for i in range(200):
                    for t in tables:
                        loader.write(t, (i,))
        finally:
            stop.set()
            watcher.join()
        assert peak <= 2
        # MariaDB without LOCAL_FILES on the pool's connections: LOAD DATA runs on the
        # loader's own connections, at most one per worker (see LoadDataTarget).
        assert loader.stats()["connections_opened"] <= loader.stats()["workers"]
        assert all(count(pool, t) == 200 for t in tables)
        drop(pool, *tables)


def test_monitor_sees_the_loader_buffer_while_open(sqlite_dsn: str) -> None:
    from poolkeeper.observe import monitor

    with _pool(sqlite_dsn) as pool:
        monitor.enable()
        try:
            loader = Loader(pool)
            kinds = {r.kind for r in monitor.get_monitor().live(min_age=0)}
            assert {"loader_buffer", "thread"} <= kinds
            loader.close()
            live = [r for r in monitor.get_monitor().live(min_age=0)
                    if r.kind == "loader_buffer"]
            assert not live
        finally:
            monitor.disable()


def test_autocommit_pools_still_load_each_batch_atomically(any_dsn: str) -> None:
    with _pool(any_dsn, autocommit=True) as pool:
        table = unique()
        create(pool, table, "id INTEGER PRIMARY KEY")
        got: list[Reject] = []
        try:
            with Loader(pool, batch_rows=100, on_reject=got.append,
                        columns={table: ("id",)}) as loader:
                for i in range(300):
                    loader.write(table, (i if i != 150 else 149,))  # one duplicate key
            assert count(pool, table) == 299 and len(got) == 1
            assert loader.stats()["batches_committed"] == 3
        finally:
            drop(pool, table)


def test_temp_directories_of_killed_loaders_are_removed(mysql_dsn: str) -> None:
    import subprocess
    import sys

    from poolkeeper.loader.engine import _TEMP_PREFIX

    # A process that exits without cleaning up (as SIGKILL would leave it).
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = os.path.join(tempfile.gettempdir(), f"{_TEMP_PREFIX}{dead}-test")
    os.makedirs(stale, exist_ok=True)
    with _pool(mysql_dsn) as pool, Loader(pool) as loader:
        assert loader.target in ("load_data", "insert")
        assert not os.path.exists(stale)
