"""10,000 tables through one small budget: memory, descriptors and connections stay bounded,
and every row of every table arrives (the StarRocks outage, replayed)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from poolkeeper import Pool
from poolkeeper.loader import Loader

TABLES = 10_000
ROWS_PER_TABLE = 2
BUDGET = 1 << 20


def _fast_sqlite(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
    # Test speed only: one fsync per batch would make 10,000 commits take minutes.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    return conn


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_ten_thousand_tables_stay_within_budget_fds_and_pool(tmp_path: Path) -> None:
    db = str(tmp_path / "many.db")
    with _fast_sqlite(db) as setup:
        for i in range(TABLES):
            setup.execute(f"CREATE TABLE t{i} (id INTEGER NOT NULL, v TEXT)")
    setup.close()
    spill = tmp_path / "spill"
    with Pool(connect=lambda: _fast_sqlite(db), driver="sqlite", max_size=2) as pool:
        fds_before = _open_fds()
        peak_fds = 0
        peak_pool = 0
        stop = threading.Event()

        def watch() -> None:
            nonlocal peak_fds, peak_pool
            while not stop.wait(0.005):
                peak_fds = max(peak_fds, _open_fds())
                peak_pool = max(peak_pool, pool.stats()["pool_size"])

        watcher = threading.Thread(target=watch, name="test-watch")
        watcher.start()
        started = time.monotonic()
        try:
            with Loader(pool, budget_bytes=BUDGET, spill_dir=spill, max_age_s=None,
                        write_timeout_s=120) as loader:
                for r in range(ROWS_PER_TABLE):
                    for i in range(TABLES):
                        loader.write(f"t{i}", (r, f"table {i} row {r}"))
                stats = loader.stats()
        finally:
            stop.set()
            watcher.join()
        elapsed = time.monotonic() - started
    assert elapsed < 300
    # memory: everything held (buffered and loading) stayed under the budget (+ one row)
    assert stats["bytes_peak"] <= BUDGET + 200
    assert stats["rows_written"] == TABLES * ROWS_PER_TABLE
    assert stats["soft_limit_seals"] > 0 and stats["backpressure_waits"] > 0
    # descriptors: one spill segment open at a time, never one file per table
    assert stats["spill_open_files"] <= 1
    assert peak_fds - fds_before <= 12  # spill segment and lock, pool's sqlite files
    assert stats["spill_bytes_written"] > 0
    # connections: the pool's, never more
    assert peak_pool <= 2
    assert not list(spill.glob("*.spill"))
    check = sqlite3.connect(db)
    try:
        per_table = check.execute(
            "SELECT COUNT(*) FROM (SELECT name FROM sqlite_master WHERE type='table' "
            "AND name LIKE 't%')").fetchone()[0]
        assert per_table == TABLES
        total = sum(check.execute(f"SELECT COUNT(*) FROM t{i}").fetchone()[0]
                    for i in range(0, TABLES, 97))
        assert total == len(range(0, TABLES, 97)) * ROWS_PER_TABLE
        missing = [i for i in range(TABLES)
                   if check.execute(f"SELECT COUNT(DISTINCT id) FROM t{i}").fetchone()[0]
                   != ROWS_PER_TABLE]
        assert not missing, f"{len(missing)} tables lost rows, e.g. t{missing[:5]}"
    finally:
        check.close()
