"""The bulk loader against each database's own fastest path, and its memory with 10,000 tables.

    .venv/bin/python benchmarks/bench_loader.py            # full run: 1,000,000 rows, 3 rounds
    .venv/bin/python benchmarks/bench_loader.py --quick    # 100,000 rows, 1 round, < 60 s
    .venv/bin/python benchmarks/bench_loader.py --sections pg,rss --rows 200000 --rounds 5

Sections (issue 7, "Benchmarks"), rows of a 6-column table (bigint, text, numeric, float,
timestamptz, text), each contender in one transaction per run, time until everything is
committed:

- ``pg``: ``Loader.write()`` per row vs raw psycopg ``COPY`` (``Copy.write_row`` per row) vs
  psycopg ``executemany`` (targets: >= 0.85x COPY, >= 10x executemany);
- ``mysql``: ``Loader.write()`` vs PyMySQL ``executemany`` (which already folds rows into
  multi-row INSERTs; target >= 5x), and vs a hand-written tab-separated file loaded by one
  ``LOAD DATA LOCAL INFILE``, timed with and without writing the file (the statement alone
  is the ceiling of any loader built on LOAD DATA);
- ``sqlite``: ``Loader.write()`` vs sqlite3 ``executemany`` (for reference; no target);
- ``rss``: a child process writes to 10,000 SQLite tables through a small budget; its peak RSS
  growth must stay within the budget plus a fixed overhead, or this script exits 1;
- ``soak``: the StarRocks loader's case with a crash: a child writes 10,000 SQLite tables in
  durable mode (``spill_dir``) and is SIGKILLed mid-load; a fresh process replays the log
  (``MALLOC_ARENA_MAX=2``, ``MALLOC_MMAP_THRESHOLD_=65536``), once watched by RSS, once by
  tracemalloc; replay must stay within the budget (RSS: plus the fixed overhead), load
  every acknowledged row once, or this script exits 1 (``--quick``: 2,000 tables).

Method: contenders alternate inside every round, in an order rotated round by round, and
ratios are computed per round (median and range reported): the 2-core machine is shared, and
a single measurement can be off by 2x. executemany is slow enough that it runs on at most
``--slow-rows`` rows; rows/s is a rate, comparable across row counts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from _common import (
    MYSQL_DSN,
    PG_DSN,
    fmt_ratio,
    load_note,
    loadavg,
    machine_summary,
    median,
    mysql_params,
    print_table,
    rss_bytes,
    versions,
)

from poolkeeper import Pool
from poolkeeper.loader import Loader

COLUMNS = ("id", "name", "amount", "score", "created", "note")
_N = 1024
_NAMES = [f"customer-{i:05d} ünïcode" for i in range(_N)]
_AMOUNTS = [Decimal(f"{i * 37 % 100000}.{i % 100:02d}") for i in range(_N)]
_TIMES = [dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i * 997)
          for i in range(_N)]
_NOTES = [f"note {i} with\ttab" if i % 50 == 0 else f"note {i}" for i in range(_N)]


def rows(n: int) -> Iterator[tuple[Any, ...]]:
    """The same rows for every contender (built on the fly, at the same cost for all)."""
    names, amounts, times, notes = _NAMES, _AMOUNTS, _TIMES, _NOTES
    for i in range(n):
        k = i & (_N - 1)
        yield (i, names[k], amounts[k], i * 0.25, times[k], notes[k])


def ddl(driver: str, table: str) -> str:
    if driver == "postgresql":
        return (f"CREATE TABLE {table} (id bigint, name text, amount numeric(12,2), "
                "score float8, created timestamptz, note text)")
    if driver == "mysql":
        return (f"CREATE TABLE {table} (id BIGINT, name VARCHAR(100), amount DECIMAL(12,2), "
                "score DOUBLE, created DATETIME(6), note VARCHAR(100)) ENGINE=InnoDB "
                "DEFAULT CHARSET=utf8mb4")
    return (f"CREATE TABLE {table} (id INTEGER, name TEXT, amount TEXT, score REAL, "
            "created TEXT, note TEXT)")


# ---------------------------------------------------------------------------- contenders
def run_loader(pool: Pool, table: str, n: int, budget: int) -> float:
    start = time.perf_counter()
    with Loader(pool, budget_bytes=budget, columns={table: COLUMNS}, max_age_s=None) as loader:
        write = loader.write
        for row in rows(n):
            write(table, row)
    return time.perf_counter() - start


def run_pg_copy(dsn: str, table: str, n: int) -> float:
    import psycopg

    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as copy:
            write_row = copy.write_row
            for row in rows(n):
                write_row(row)
        conn.commit()
        return time.perf_counter() - start


def run_pg_executemany(dsn: str, table: str, n: int) -> float:
    import psycopg

    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s, %s)", rows(n))
        conn.commit()
        return time.perf_counter() - start


def run_mysql_executemany(dsn: str, table: str, n: int) -> float:
    import pymysql

    conn = pymysql.connect(**mysql_params(dsn), charset="utf8mb4")
    try:
        start = time.perf_counter()
        with conn.cursor() as cur:
            # PyMySQL's fast path: rows folded into multi-row INSERTs of up to 1 MB each.
            cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s, %s)",
                            [(*r[:4], r[4].replace(tzinfo=None), r[5]) for r in rows(n)])
        conn.commit()
        return time.perf_counter() - start
    finally:
        conn.close()


def _tsv_field(value: Any) -> str:
    text = str(value)
    if "\\" in text or "\t" in text or "\n" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    return text


def run_mysql_load_data(dsn: str, table: str, n: int, *, statement_only: bool = False,
                        server_side: bool = False) -> float:
    """What a user would write by hand: rows to a tab-separated file (MySQL's default
    escaping), then one ``LOAD DATA LOCAL INFILE`` through PyMySQL. With ``statement_only``
    the file is written before the clock starts: the statement alone, the ceiling of any loader
    built on LOAD DATA LOCAL. With ``server_side`` the server reads the file itself
    (``LOAD DATA INFILE``, no client transfer at all; needs the FILE privilege and a
    ``secure_file_priv`` that allows the temp directory)."""
    import pymysql

    conn = pymysql.connect(**mysql_params(dsn), charset="utf8mb4", local_infile=True)
    fd, path = tempfile.mkstemp(prefix="bench-load-data-", suffix=".tsv")
    try:
        start = time.perf_counter()
        field = _tsv_field
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            write = fh.write
            for r in rows(n):
                write(f"{r[0]}\t{field(r[1])}\t{r[2]}\t{r[3]!r}\t"
                      f"{r[4].replace(tzinfo=None).isoformat(' ')}\t{field(r[5])}\n")
        if statement_only or server_side:
            start = time.perf_counter()
        if server_side:
            os.chmod(path, 0o644)  # the server process reads it
        local = "" if server_side else "LOCAL "
        with conn.cursor() as cur:
            cur.execute(f"LOAD DATA {local}INFILE %s INTO TABLE {table} CHARACTER SET utf8mb4",
                        (path,))
        conn.commit()
        return time.perf_counter() - start
    finally:
        conn.close()
        os.unlink(path)


def run_sqlite_executemany(path: str, table: str, n: int) -> float:
    conn = sqlite3.connect(path)
    try:
        start = time.perf_counter()
        conn.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?)",
                         ((r[0], r[1], str(r[2]), r[3], r[4].isoformat(" "), r[5])
                          for r in rows(n)))
        conn.commit()
        return time.perf_counter() - start
    finally:
        conn.close()


# ---------------------------------------------------------------------------- sections
def _reset(pool: Pool, table: str, driver: str) -> None:
    with pool.connection() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(ddl(driver, table))


def _count(pool: Pool, table: str) -> int:
    with pool.connection() as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def compare(title: str, pool: Pool, table: str, contenders: dict[str, tuple[Callable[[int],
            float], int]], baseline: str, rounds: int,
            targets: dict[str, tuple[str, float]]) -> list[str]:
    """Run every contender each round (rotated order); print rows/s and per-round ratios."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    ratios: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    before = loadavg()
    driver = pool.driver.name
    names = list(contenders)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        this: dict[str, float] = {}
        for name in order:
            fn, n = contenders[name]
            _reset(pool, table, driver)
            cpu_start = time.process_time()
            seconds = fn(n)
            cpu[name].append((time.process_time() - cpu_start) / n * 1e6)
            got = _count(pool, table)
            if got != n:
                raise SystemExit(f"{title}: {name} loaded {got} rows of {n}")
            this[name] = n / seconds
            rates[name].append(this[name])
        for name in names:
            ratios[name].append(this["loader"] / this[name])
    _reset(pool, table, driver)
    with pool.connection() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    table_rows = []
    failures = []
    for name in names:
        n = contenders[name][1]
        ratio = "-" if name == "loader" else fmt_ratio(ratios[name])
        target = targets.get(name)
        verdict = ""
        if target is not None:
            ok = median(ratios[name]) >= target[1]
            verdict = f"{target[0]} {'ok' if ok else 'MISSED'}"
            if not ok:
                failures.append(f"{title}: loader vs {name} {median(ratios[name]):.2f}x, "
                                f"target {target[0]}")
        table_rows.append((name, f"{n:,}", f"{median(rates[name]):,.0f}", ratio, verdict,
                           f"{median(cpu[name]):.2f}"))
    notes = [load_note(before),
             "client CPU: this process's CPU time (all its threads) per row; the least noisy "
             "figure on a shared machine"]
    slow_name = next((name for name in names if name.startswith("executemany")), None)
    if slow_name is not None:
        # What the database's own fast path gains over executemany caps any loader's ratio.
        slow_rate = median(rates[slow_name])
        notes.append(f"over {slow_name}, rows/s: " + ", ".join(
            f"{name} {median(rates[name]) / slow_rate:.2f}x" for name in names
            if name != slow_name))
    print_table(f"{title} ({rounds} round(s))",
                ["contender", "rows", "rows/s (median)", "loader / it (median, range)",
                 "target", "client CPU us/row"], table_rows, notes=notes)
    _ = baseline
    return failures


def section_pg(n: int, slow: int, rounds: int, budget: int) -> list[str]:
    table = "bench_loader_pg"
    with Pool(PG_DSN, max_size=3) as pool:
        return compare("PostgreSQL", pool, table, {
            "loader": (lambda k: run_loader(pool, table, k, budget), n),
            "COPY (psycopg write_row)": (lambda k: run_pg_copy(PG_DSN, table, k), n),
            "executemany (psycopg)": (lambda k: run_pg_executemany(PG_DSN, table, k), slow),
        }, "loader", rounds, {"COPY (psycopg write_row)": (">= 0.85x", 0.85),
                              "executemany (psycopg)": (">= 10x", 10.0)})


def section_mysql(n: int, slow: int, rounds: int, budget: int) -> list[str]:
    table = "bench_loader_my"
    with Pool(MYSQL_DSN, max_size=3) as pool:
        with pool.connection() as conn:
            infile = conn.execute("SELECT @@GLOBAL.local_infile").fetchone()[0]
        print(f"\nMariaDB @@local_infile = {infile} (the loader uses "
              f"{'LOAD DATA LOCAL INFILE' if int(infile) else 'multi-row INSERT'})")
        contenders: dict[str, tuple[Callable[[int], float], int]] = {
            "loader": (lambda k: run_loader(pool, table, k, budget), n),
            "raw LOAD DATA LOCAL (PyMySQL)": (
                lambda k: run_mysql_load_data(MYSQL_DSN, table, k), n),
            "LOAD DATA statement alone": (
                lambda k: run_mysql_load_data(MYSQL_DSN, table, k, statement_only=True), n),
            "executemany (PyMySQL)": (lambda k: run_mysql_executemany(MYSQL_DSN, table, k),
                                      slow),
        }
        _reset(pool, table, "mysql")
        try:
            run_mysql_load_data(MYSQL_DSN, table, 10, server_side=True)
        except Exception as exc:  # noqa: BLE001 - reported, and the contender left out
            print(f"(server-side LOAD DATA INFILE left out: {type(exc).__name__}: {exc})")
        else:
            contenders["LOAD DATA INFILE, server reads the file"] = (
                lambda k: run_mysql_load_data(MYSQL_DSN, table, k, server_side=True), n)
        return compare("MariaDB", pool, table, contenders, "loader", rounds,
                       {"executemany (PyMySQL)": (">= 5x", 5.0)})


def section_sqlite(n: int, rounds: int, budget: int) -> list[str]:
    table = "bench_loader_lite"
    path = os.path.join(tempfile.mkdtemp(prefix="bench-loader-"), "bench.db")
    try:
        with Pool(f"sqlite:///{path}", max_size=2) as pool:
            return compare("SQLite", pool, table, {
                "loader": (lambda k: run_loader(pool, table, k, budget), n),
                "executemany (sqlite3)": (lambda k: run_sqlite_executemany(path, table, k), n),
            }, "loader", rounds, {})
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
        os.rmdir(os.path.dirname(path))


# ---------------------------------------------------------------------------- memory
def rss_child(tables: int, per_table: int, budget: int) -> None:
    """Runs in a fresh process: prints the peak RSS growth of a 10,000-table load as JSON."""
    directory = tempfile.mkdtemp(prefix="bench-loader-rss-")
    path = os.path.join(directory, "many.db")

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        return conn

    setup = connect()
    for i in range(tables):
        setup.execute(ddl("sqlite", f"t{i}"))
    setup.commit()
    setup.close()
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.002):
            peak = max(peak, rss_bytes())

    with Pool(connect=connect, driver="sqlite", max_size=2) as pool:
        # Warm up everything that is not the loader's data (imports, codecs, the pool, the
        # ledger) with a loader on one table, so the baseline holds the fixed costs.
        with Loader(pool, budget_bytes=budget, columns={"t0": COLUMNS}) as warm:
            for row in rows(100):
                warm.write("t0", row)
        baseline = rss_bytes()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        with Loader(pool, budget_bytes=budget, max_age_s=None, write_timeout_s=300) as loader:
            gen = rows(tables * per_table)
            for r in range(per_table):
                for i in range(tables):
                    loader.write(f"t{i}", next(gen))
                    _ = r
            stats = loader.stats()
        seconds = time.perf_counter() - start
        stop.set()
        sampler.join()
        peak = max(peak, rss_bytes())
        check = connect()
        total = sum(check.execute(f"SELECT COUNT(*) FROM t{i}").fetchone()[0]
                    for i in range(0, tables, max(1, tables // 100)))
        check.close()
    for name in os.listdir(directory):
        os.unlink(os.path.join(directory, name))
    os.rmdir(directory)
    print(json.dumps({"baseline": baseline, "peak": peak,
                      "bytes_peak": stats["bytes_peak"], "seconds": seconds,
                      "rows": tables * per_table, "sampled_rows": total,
                      "batches": stats["batches_committed"]}))


def section_rss(tables: int, per_table: int, budget: int, overhead: int) -> list[str]:
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(tables), str(per_table),
                          str(budget)], capture_output=True, text=True, timeout=1800,
                         check=False)
    if out.returncode != 0:
        return [f"rss child failed: {out.stderr[-2000:]}"]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    growth = data["peak"] - data["baseline"]
    limit = budget + overhead
    ok = growth <= limit
    mib = 1 << 20
    print_table(f"Peak RSS, {tables:,} SQLite tables x {per_table} rows", ["figure", "value"], [
        ("budget_bytes", f"{budget / mib:.1f} MiB"),
        ("loader bytes_peak (its own accounting)", f"{data['bytes_peak'] / mib:.2f} MiB"),
        ("RSS before (fixed costs warmed up)", f"{data['baseline'] / mib:.1f} MiB"),
        ("RSS peak during the load", f"{data['peak'] / mib:.1f} MiB"),
        ("growth", f"{growth / mib:.1f} MiB"),
        ("allowed: budget + fixed overhead", f"{limit / mib:.1f} MiB"),
        ("rows, batches, seconds",
         f"{data['rows']:,}, {data['batches']:,}, {data['seconds']:.1f} s"),
        ("verdict", "ok" if ok else "EXCEEDED"),
    ])
    return [] if ok else [f"RSS grew {growth / mib:.1f} MiB > {limit / mib:.1f} MiB allowed"]


# ---------------------------------------------------------------------------- soak
#: glibc settings of the soak's children: few arenas and a low mmap threshold, so freed
#: memory goes back to the system and RSS shows what is really held
SOAK_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "65536"}


def _soak_connect(path: str) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        return conn
    return connect


def soak_writer(path: str, spill: str, tables: int, budget: int) -> None:
    """Runs in a child that the parent SIGKILLs: durable writes round-robin over the tables,
    printing ``ack <rows acknowledged> <rss>`` every 2,000 rows (never returns)."""
    with Pool(connect=_soak_connect(path), driver="sqlite", max_size=2) as pool:
        loader = Loader(pool, budget_bytes=budget, spill_dir=spill, max_age_s=None,
                        write_timeout_s=300, columns={f"t{i}": COLUMNS for i in range(tables)})
        base = rss_bytes()
        print(f"ready {base}", flush=True)
        for n, row in enumerate(rows(1 << 40), 1):
            loader.write(f"t{n % tables}", row)
            if n % 2000 == 0:
                print(f"ack {n} {rss_bytes()}", flush=True)


def soak_replay(path: str, spill: str, budget: int, trace: bool) -> None:
    """Runs in a fresh child: replays the spill log of the killed writer and prints its
    figures as JSON (RSS sampled every 2 ms; tracemalloc only when ``trace``)."""
    import tracemalloc

    with Pool(connect=_soak_connect(path), driver="sqlite", max_size=2) as pool:
        with pool.connection() as conn:  # warm the pool and the driver
            conn.execute("SELECT 1").fetchall()
        baseline = rss_bytes()
        peak = baseline
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.wait(0.002):
                peak = max(peak, rss_bytes())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        if trace:
            tracemalloc.start()
        start = time.perf_counter()
        loader = Loader(pool, budget_bytes=budget, spill_dir=spill)  # replays here
        seconds = time.perf_counter() - start
        traced = tracemalloc.get_traced_memory()[1] if trace else 0
        if trace:
            tracemalloc.stop()
        stats = loader.stats()
        loader.close()
        stop.set()
        sampler.join()
    print(json.dumps({"baseline": baseline, "peak": max(peak, rss_bytes()), "traced": traced,
                      "seconds": seconds, **{k: stats.get(k, 0) for k in (
                          "replayed_batches", "replayed_rows", "replay_skipped_batches",
                          "replay_sweeps", "replay_peak_bytes", "spill_torn_bytes")}}))


def _soak_tables(path: str, tables: int) -> tuple[int, int]:
    """(rows, distinct (table, id) pairs) over every table."""
    conn = sqlite3.connect(path)
    total = distinct = 0
    for i in range(tables):
        a, b = conn.execute(f"SELECT COUNT(*), COUNT(DISTINCT id) FROM t{i}").fetchone()
        total += a
        distinct += b
    conn.close()
    return total, distinct


def section_soak(tables: int, kill_rows: int, budget: int, overhead: int,
                 limit_s: float) -> list[str]:
    """The StarRocks loader's case with a crash: 10,000 tables, durable mode, SIGKILL in
    the middle of the load, then replay in a fresh process (once watched by RSS alone,
    once by tracemalloc, each on its own copy of the database and the spill log)."""
    import shutil
    import signal

    env = {**os.environ, **SOAK_ENV}
    work = tempfile.mkdtemp(prefix="bench-loader-soak-")
    failures: list[str] = []
    try:
        path, spill = os.path.join(work, "many.db"), os.path.join(work, "spill")
        setup = sqlite3.connect(path)
        setup.execute("PRAGMA journal_mode=WAL")
        for i in range(tables):
            setup.execute(ddl("sqlite", f"t{i}"))
        setup.commit()
        setup.close()
        writer = subprocess.Popen([sys.executable, __file__, "--soak-writer", path, spill,
                                   str(tables), str(budget)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
        assert writer.stdout is not None
        deadline = time.monotonic() + limit_s
        acked, writer_base, writer_peak = 0, 0, 0
        while time.monotonic() < deadline:
            line = writer.stdout.readline()
            if not line:
                break
            parts = line.split()
            if parts[0] == "ready":
                writer_base = writer_peak = int(parts[1])
            elif parts[0] == "ack":
                acked, writer_peak = int(parts[1]), max(writer_peak, int(parts[2]))
                if acked >= kill_rows:
                    break
        writer.send_signal(signal.SIGKILL)
        _out, err = writer.communicate(timeout=60)
        if not acked:
            return [f"soak writer acknowledged nothing: {err[-2000:]}"]
        spill_bytes = sum(os.path.getsize(os.path.join(spill, n)) for n in os.listdir(spill)
                          if n.endswith(".spill"))
        committed_at_kill = _soak_tables(path, tables)[0]
        results = {}
        for mode in ("rss", "trace"):
            copy = os.path.join(work, mode)
            os.makedirs(copy)
            for name in os.listdir(work):
                if name.startswith("many.db"):
                    shutil.copy(os.path.join(work, name), copy)
            shutil.copytree(spill, os.path.join(copy, "spill"))
            out = subprocess.run([sys.executable, __file__, "--soak-replay",
                                  os.path.join(copy, "many.db"), os.path.join(copy, "spill"),
                                  str(budget), "1" if mode == "trace" else "0"],
                                 capture_output=True, text=True, timeout=limit_s + 600,
                                 check=False, env=env)
            if out.returncode != 0:
                return [f"soak replay ({mode}) failed: {out.stderr[-2000:]}"]
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            results[mode]["rows"] = _soak_tables(os.path.join(copy, "many.db"), tables)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    r, t = results["rss"], results["trace"]
    mib = 1 << 20
    growth = r["peak"] - r["baseline"]
    total, distinct = r["rows"]
    ok_rss = growth <= budget + overhead
    # Besides the loader's budget, the replay allocates the pool's SQL statistics (bounded
    # by stats_max_bytes, 4 MiB by default: 10,000 tables are 10,000 distinct INSERTs) and
    # the replay's plan (24 bytes per batch in the log, plus its registration)
    traced_limit = budget + (4 << 20) + (1 << 20)
    ok_traced = t["traced"] <= traced_limit
    ok_rows = total == distinct and total >= acked
    print_table(f"Soak: {tables:,} SQLite tables, durable, SIGKILL after {acked:,} rows, "
                f"replay ({', '.join(f'{k}={v}' for k, v in SOAK_ENV.items())})",
                ["figure", "value"], [
        ("budget_bytes", f"{budget / mib:.1f} MiB"),
        ("writer RSS growth until the kill", f"{(writer_peak - writer_base) / mib:.1f} MiB"),
        ("rows committed at the kill / acknowledged", f"{committed_at_kill:,} / {acked:,}"),
        ("spill log left by the kill", f"{spill_bytes / mib:.1f} MiB"),
        ("replayed batches (rows)", f"{r['replayed_batches']:,} ({r['replayed_rows']:,})"),
        ("committed batches attempted again", f"{r['replay_skipped_batches']}"),
        ("replay sweeps, replay_peak_bytes",
         f"{r['replay_sweeps']}, {r['replay_peak_bytes'] / mib:.2f} MiB"),
        ("replay RSS before / peak / growth", f"{r['baseline'] / mib:.1f} / "
         f"{r['peak'] / mib:.1f} / {growth / mib:.1f} MiB"),
        ("replay tracemalloc peak (its own run)", f"{t['traced'] / mib:.2f} MiB"),
        ("allowed: budget + stats_max_bytes + 1 MiB", f"{traced_limit / mib:.1f} MiB"),
        ("replay seconds (RSS run, tracemalloc run)",
         f"{r['seconds']:.1f} s, {t['seconds']:.1f} s"),
        ("rows after replay (distinct)", f"{total:,} ({distinct:,})"),
        ("verdict", "ok" if ok_rss and ok_traced and ok_rows else "EXCEEDED"),
    ])
    if not ok_rss:
        failures.append(f"RSS of the replay grew {growth / mib:.1f} MiB > "
                        f"{(budget + overhead) / mib:.1f} MiB allowed")
    if not ok_traced:
        failures.append(f"RSS check: replay traced {t['traced'] / mib:.1f} MiB > "
                        f"{traced_limit / mib:.1f} MiB (budget + stats_max_bytes + 1 MiB)")
    if not ok_rows:
        failures.append(f"rss soak rows: {total:,} loaded, {distinct:,} distinct, "
                        f"{acked:,} acknowledged")
    return failures


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--rss-child":
        rss_child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--soak-writer":
        soak_writer(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--soak-replay":
        soak_replay(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 1 round (< 60 s)")
    parser.add_argument("--rows", type=int, help="rows per run (default 1,000,000)")
    parser.add_argument("--slow-rows", type=int, help="rows for executemany contenders")
    parser.add_argument("--rounds", type=int, help="rounds (default 3)")
    parser.add_argument("--budget-mib", type=int, default=64, help="loader budget (64 MiB)")
    parser.add_argument("--sections", default="pg,mysql,sqlite,rss,soak",
                        help="comma-separated: pg, mysql, sqlite, rss, soak")
    args = parser.parse_args()
    n = args.rows or (100_000 if args.quick else 1_000_000)
    slow = args.slow_rows or (min(n, 20_000) if args.quick else min(n, 200_000))
    rounds = args.rounds or (1 if args.quick else 3)
    budget = args.budget_mib << 20
    print(f"bench_loader: {n:,} rows, executemany on {slow:,}, {rounds} round(s); "
          f"{machine_summary()}")
    print(versions("psycopg", "psycopg-binary", "PyMySQL"))
    sections = {s.strip() for s in args.sections.split(",")}
    failures: list[str] = []
    if "pg" in sections:
        failures += section_pg(n, slow, rounds, budget)
    if "mysql" in sections:
        failures += section_mysql(n, slow, rounds, budget)
    if "sqlite" in sections:
        failures += section_sqlite(n, rounds, budget)
    if "rss" in sections:
        tables = 2_000 if args.quick else 10_000
        failures += section_rss(tables, 20, 8 << 20, 24 << 20)
    if "soak" in sections:
        tables = 2_000 if args.quick else 10_000
        failures += section_soak(tables, 40_000 if args.quick else 200_000, 8 << 20,
                                 24 << 20, 60 if args.quick else 180)
    for line in failures:
        print(f"NOTE: {line}")
    # Only the memory bound fails the run: speed ratios depend on a shared machine.
    return 1 if any(f.startswith(("RSS", "rss")) for f in failures) else 0


if __name__ == "__main__":
    sys.exit(main())
