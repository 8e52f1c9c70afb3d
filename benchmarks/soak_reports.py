"""Soaks, one per field report, run from the outside with the code users actually write.

Each soak replays a field report's workload through the idioms applications use
(``conn.execute(...).fetchall()``, cursors left to the garbage collector, large results,
light steady load between bursts, many pools), on every backend the report concerns, with
the resource monitor off and on, each run in a fresh process (see ``_soak.py``: RSS from
/proc/self/status and tracemalloc, after warm-up, with ``MALLOC_ARENA_MAX=2`` and
``MALLOC_MMAP_THRESHOLD_=131072``). A run passes when RSS and traced memory grew by no more
than its bound (the configured budgets plus a stated constant) and its extra checks hold.

    .venv/bin/python benchmarks/soak_reports.py                  # the full soaks
    .venv/bin/python benchmarks/soak_reports.py --quick          # small counts (the tests')
    .venv/bin/python benchmarks/soak_reports.py --only bonecp_churn --backends sqlite mysql
    .venv/bin/python benchmarks/soak_reports.py --list

Prints a table (soak, backend, monitor, RSS growth, traced growth, bound, PASS/FAIL), then
each failure with its numbers, and exits 1 if any run failed. ``--json`` prints one JSON
result per line instead (what tests/test_soak_reports.py reads).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MYSQL_DSN, PG_APP_NAME, machine_summary, pg_dsn, print_table
from _soak import MB, Meter, Outcome, Result, child_main, describe, run_child, vm_rss

__all__ = ["SOAKS", "main"]

KB = 1 << 10
#: what one row of the loader child costs in the buffer, roughly (a 2,000-character payload)
_ROW_BYTES = 2 * KB
N = TypeVar("N", int, float)
BACKENDS = ("sqlite", "postgresql", "mysql")
HERE = Path(__file__).resolve()
#: a loop stops once its process grew by this much: the leak is shown, the machine is shared
SAFETY_RSS = 768 * MB


@dataclass
class Ctx:
    """What a soak function gets: where to connect, the monitor switch, the meter."""

    backend: str
    dsn: str
    monitor: bool
    quick: bool
    meter: Meter
    tmp: Path
    deadline: float
    stopped_big: bool = False

    def pool(self, **options: Any) -> Any:
        from poolkeeper import Pool

        options.setdefault("name", f"soak-{uuid.uuid4().hex[:6]}")
        return Pool(self.dsn, monitor=self.monitor, **options)

    def n(self, full: N, quick: N) -> N:
        return quick if self.quick else full

    def time_left(self) -> bool:
        """Whether the loop may go on: within its time budget, and (the machine is shared)
        the process has not grown by more than SAFETY_RSS since the measured part began."""
        if time.monotonic() >= self.deadline:
            return False
        if self.meter.started and vm_rss() - self.meter.rss0 > SAFETY_RSS:
            self.stopped_big = True
            return False
        return True


@dataclass(frozen=True)
class Soak:
    name: str
    report: str  #: the public incident it replays
    items: str  #: which of issue #14's leaks it catches on today's tree
    backends: tuple[str, ...]
    run: Callable[[Ctx], Outcome]
    seconds_full: float = 240.0  #: time budget of one full run (loops stop early past it)


def _repeat(backend: str, n: int, ch: str = "x") -> str:
    """SQL for one text value of ``n`` characters, built by the server."""
    if backend == "sqlite":
        return f"SELECT substr(hex(zeroblob({(n + 1) // 2})), 1, {n})"
    return f"SELECT REPEAT('{ch}', {n})" if backend == "mysql" else f"SELECT repeat('{ch}', {n})"


def _pool_bytes(pool: Any) -> int:
    """Every byte counter the pool reports for its bounded structures (what the ledger reads)."""
    from poolkeeper.observe.memory import counted_bytes, pool_entries

    return counted_bytes(pool_entries(pool))


# ============================================================================ the soaks
def bonecp_records(c: Ctx) -> Outcome:
    """BoneCP: the MySQL driver kept a record per connection ever opened. 20,000 opens, each
    borrowed once for ``conn.execute(...).fetchall()`` of a 256 KB text, the cursor left to
    the garbage collector; nothing of a closed connection may stay."""
    opens = c.n(20_000, 100 if c.backend == "mysql" else 250)
    with c.pool(min_idle=1, max_size=2) as pool:
        sql = _repeat(c.backend, 256 * KB)
        for _ in range(20):
            pool.expire_all()
            with pool.connection() as conn:
                conn.execute(sql).fetchall()
        c.meter.start()
        done = 0
        while done < opens and c.time_left():
            pool.expire_all()
            with pool.connection() as conn:
                conn.execute(sql).fetchall()
            done += 1
        c.meter.stop()
        opened = pool.stats()["connections_num"]
    # MariaDB: each PyMySQL connection builds an SSLContext in OpenSSL's own heap, whose
    # fragments RSS keeps after the close (+2.3 MB over 100 opens, traced +13 KB); the leak
    # this soak catches kept ~0.8 MB per closed connection (+82 MB), far above 4 MB
    constant = 4 * MB if c.backend == "mysql" else 2 * MB
    out = Outcome(constant, f"no budget: closed connections hold nothing; "
                            f"{constant // MB} MB constant")
    out.notes.append(f"{done:,} opens (of {opens:,}), connections_num={opened:,}"
                     + (" (stopped early: RSS grew past the safety cap)" if c.stopped_big else ""))
    out.check(f"ran {opens:,} opens within the time budget", done == opens or c.stopped_big)
    return out


def bonecp_churn(c: Ctx) -> Outcome:
    """BoneCP's idle churn: bursts to max_size, a one-connection trickle between them. Opens
    over the run must be exactly the initial min_idle plus, per burst, max_size - min_idle
    (no lifetime retirements: max_lifetime is off)."""
    min_idle, max_size, idle_timeout = 2, 6, 0.1
    bursts = c.n(5, 2)
    trickle_s = idle_timeout * c.n(50, 10)
    with c.pool(min_idle=min_idle, max_size=max_size, idle_timeout=idle_timeout,
                max_lifetime=None, housekeeping_interval=0.02, keepalive_interval=None,
                lease_ms=0) as pool:
        pool.wait_ready(30)
        c.meter.start()
        gate = threading.Barrier(max_size, timeout=30)

        def hold() -> None:
            with pool.connection() as conn:
                gate.wait()
                conn.execute("SELECT 1").fetchall()
                gate.wait()

        for _ in range(bursts):
            threads = [threading.Thread(target=hold, name=f"soak-burst-{k}")
                       for k in range(max_size)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            end = time.monotonic() + trickle_s
            while time.monotonic() < end:  # one request at a time, 5 ms of work each
                with pool.connection() as conn:
                    conn.execute("SELECT 1").fetchall()
                    time.sleep(0.005)
                time.sleep(0.01)
        # the last trickle ends with the pool back at min_idle
        c.meter.stop()
        stats = pool.stats()
    expected = min_idle + bursts * (max_size - min_idle)
    opened = int(stats["connections_num"])
    out = Outcome(None, "judged by its count of opens")
    out.notes.append(f"opens {opened} (expected {expected}: {min_idle} + {bursts} bursts x "
                     f"{max_size - min_idle}); closed idle {stats['connections_closed_idle']}, "
                     f"lifetime {stats['connections_closed_lifetime']}")
    out.check(f"opened {opened} connections, expected exactly {expected}", opened == expected)
    return out


def druid_sqlite_statements(c: Ctx) -> Outcome:
    """Druid's statement cache: one pooled connection running 100 distinct statements each
    carrying a 1 MB literal (``SELECT length('<1 MB>'), i``)."""
    count = c.n(100, 20)
    with c.pool(min_idle=1, max_size=1) as pool:
        with pool.connection() as conn:
            conn.execute("SELECT 1").fetchall()
        c.meter.start()
        for i in range(count):
            sql = f"SELECT length('{'x' * MB}'), {i}"
            with pool.connection() as conn:
                conn.execute(sql).fetchall()
            del sql
        c.meter.stop()
        cfg = pool.config
        budget = (cfg.statement_cache_bytes * cfg.max_size + cfg.stats_max_bytes)
    out = Outcome(budget + 4 * MB, "statement_cache_bytes x max_size + stats_max_bytes + 4 MB")
    out.notes.append(f"{count} statements of 1 MB")
    return out


def druid_sql_stats(c: Ctx) -> Outcome:
    """Druid's SQL statistics: IN lists of every length up to 30,000 literals (the batch of
    the report) and multi-row VALUES, each a distinct text, through
    ``conn.execute(...).fetchall()``."""
    import random

    count = c.n(600, 50)
    rnd = random.Random(2)

    def statement(i: int) -> str:
        n = rnd.randint(1, 30_000)
        if i % 2:
            return ("SELECT COUNT(*) FROM (SELECT 1 AS x) t WHERE x IN ("
                    + ", ".join(str(rnd.randint(1, 10**9)) for _ in range(n)) + ")")
        rows = ", ".join(f"({rnd.randint(1, 10**6)}, 'r{j}')" for j in range(n // 10 + 1))
        return f"SELECT COUNT(*) FROM (VALUES {rows}) AS v"

    with c.pool(min_idle=2, max_size=2) as pool:
        for i in range(c.n(40, 6)):
            with pool.connection() as conn:
                conn.execute(statement(i)).fetchall()
        c.meter.start()
        done = 0
        while done < count and c.time_left():
            with pool.connection() as conn:
                conn.execute(statement(done)).fetchall()
            done += 1
        c.meter.stop()
        cfg = pool.config
        budget = cfg.statement_cache_bytes * cfg.max_size + cfg.stats_max_bytes
        fingerprints = len(pool.sql_stats())
    out = Outcome(budget + 4 * MB, "statement_cache_bytes x max_size + stats_max_bytes + 4 MB")
    out.notes.append(f"{done:,} statements, {fingerprints} fingerprints")
    out.check(f"ran {count:,} statements within the time budget", done == count)
    return out


def dble_idle_result(c: Ctx) -> Outcome:
    """dble's leaked buffers: a 12 MB result fetched on each connection in autocommit, then
    the connections sit idle. An idle connection may keep no result."""
    conns = c.n(4, 2)
    with c.pool(min_idle=conns, max_size=conns, autocommit=True) as pool:
        pool.wait_ready(30)
        held = [pool.getconn() for _ in range(conns)]
        for conn in held:
            conn.execute("SELECT 1").fetchall()
        for conn in held:
            pool.putconn(conn)
        del held, conn
        c.meter.start()
        _one_big_result_each(pool, conns, _repeat(c.backend, 12 * MB, "z"), 12 * MB)
        c.meter.stop()
    out = Outcome(4 * MB, "no budget for results at rest: 4 MB constant")
    out.notes.append(f"{conns} idle connections after a 12 MB result each")
    return out


def _one_big_result_each(pool: Any, conns: int, sql: str, size: int) -> None:
    """Borrow ``conns`` connections at once, fetch one ``size``-character value on each, return
    them all: each connection has received one large result and now sits idle."""
    held = [pool.getconn() for _ in range(conns)]
    for conn in held:
        rows = conn.execute(sql).fetchall()
        assert len(rows[0][0]) == size
        del rows
    for conn in held:
        pool.putconn(conn)


def dble_libpq_buffer(c: Ctx) -> Outcome:
    """dble's leaked buffers, libpq's way: each connection's input buffer stays at its
    largest message. One 64 MB row per connection, then idle."""
    conns, size = c.n(4, 2), c.n(64, 16) * MB
    with c.pool(min_idle=conns, max_size=conns) as pool:
        pool.wait_ready(30)
        c.meter.start()
        _one_big_result_each(pool, conns, _repeat(c.backend, size), size)
        c.meter.stop()
    out = Outcome(8 * MB, "no budget for results at rest: 8 MB constant")
    out.notes.append(f"{conns} idle connections after one {size // MB} MB row each")
    return out


def _texts(tag: str, size: int) -> str:
    return f"SELECT length('{tag * (size // len(tag))}') AS {tag}"


def druid_psycopg_mirror(c: Ctx) -> Outcome:
    """Druid's statement cache, psycopg's way: with a cache of 4, texts A1-A4 run six times
    each (prepared) and B1-B4 once (counted, not prepared). What psycopg keeps must be what
    the pool reports: traced growth minus the pool's byte counters stays under 512 KB."""
    size = 400 * KB
    with c.pool(min_idle=1, max_size=1, statement_cache_size=4,
                statement_cache_bytes=4 * MB) as pool:
        with pool.connection() as conn:
            conn.execute("SELECT 1").fetchall()
        reported0 = _pool_bytes(pool)
        c.meter.start()
        for tag in ("A1", "A2", "A3", "A4"):
            for _ in range(6):
                with pool.connection() as conn:
                    conn.execute(_texts(tag, size)).fetchall()
        for tag in ("B1", "B2", "B3", "B4"):
            with pool.connection() as conn:
                conn.execute(_texts(tag, size)).fetchall()
        c.meter.stop()
        reported = _pool_bytes(pool) - reported0
        cache = pool.statement_cache_info()
        budget = pool.config.statement_cache_bytes * pool.config.max_size
    traced = c.meter.traced_growth or 0
    out = Outcome(budget + pool.config.stats_max_bytes + 2 * MB,
                  "statement_cache_bytes x max_size + stats_max_bytes + 2 MB")
    out.notes.append(f"traced {traced / MB:.2f} MB, the pool reports {reported / MB:.2f} MB "
                     f"(stmt_cache_bytes {cache['stmt_cache_bytes'] / MB:.2f} MB)")
    out.check(f"unreported memory {(traced - reported) / MB:.2f} MB <= 0.5 MB",
              traced - reported <= 512 * KB)
    return out


def ledger_per_connection(c: Ctx) -> Outcome:
    """Druid's statement cache in the ledger: four connections each fill 40% of their own
    statement cache budget; no ledger entry may read above its budget."""
    from poolkeeper.observe import LEDGER

    size = 100 * KB
    with c.pool(min_idle=4, max_size=4, statement_cache_size=4,
                statement_cache_bytes=MB) as pool:
        pool.wait_ready(30)
        c.meter.start()
        held = [pool.getconn() for _ in range(4)]
        for k, conn in enumerate(held):
            for tag in ("C1", "C2", "C3", "C4"):
                for _ in range(6):
                    conn.execute(_texts(f"{tag}{k}", size)).fetchall()
        for conn in held:
            pool.putconn(conn)
        del held, conn
        c.meter.stop()
        mine = [e for e in LEDGER.entries() if e.name.endswith(":" + pool.name)]
        over = [f"{e.name} {e.bytes / MB:.2f} MB of {e.budget_bytes / MB:.2f} MB"
                for e in mine if e.budget_bytes and e.bytes > e.budget_bytes]
        budget = pool.config.statement_cache_bytes * 4 + pool.config.stats_max_bytes
    out = Outcome(budget + 2 * MB, "statement_cache_bytes x 4 + stats_max_bytes + 2 MB")
    out.notes.append("ledger: " + "; ".join(
        f"{e.name.split(':')[0]} {e.bytes / KB:.0f}/{(e.budget_bytes or 0) / KB:.0f} KB"
        for e in mine if e.budget_bytes))
    out.check("no ledger entry above its budget" + (f" ({'; '.join(over)})" if over else ""),
              not over)
    return out


def many_pools(c: Ctx) -> Outcome:
    """1,000 pools opened, used once and closed (a test suite, a job runner): a closed pool
    leaves nothing behind in any process-wide registry."""
    count = c.n(1_000, 300)

    def one(i: int) -> None:
        pool = c.pool(min_idle=1, max_size=1, name=f"soak-many-{uuid.uuid4().hex}")
        try:
            with pool.connection() as conn:
                conn.execute("SELECT 1").fetchall()
        finally:
            pool.close()

    for i in range(30):
        one(i)
    c.meter.start()
    done = 0
    while done < count and c.time_left():
        one(done)
        done += 1
    c.meter.stop()
    # RSS gets its own constant: each pool starts and joins worker threads, and glibc keeps
    # freed thread stacks in its stack cache and moves malloc arenas by whole pages (seen:
    # 36-168 KB over 300 pools on 3.11 and 3.12; 3.13 settles higher, 256-380 KB over 300
    # pools, 450-620 KB over 1,000, and stays there: 300-324 KB from 600 to 3,000 pools in
    # one process); tracemalloc is the exact measure here. Traced: psycopg 3.3's connect
    # keeps up to ~400 small strings (18-22 KB, the same after 300 as after 1,000 pools: a
    # bounded cache of its conninfo handling, traced to psycopg/conninfo.py's escaping),
    # hence 32 KB rather than 16 KB.
    out = Outcome(32 * KB, "no budget: a closed pool keeps nothing; 32 KB constant (RSS 768 KB)",
                  rss_bound=768 * KB)
    out.notes.append(f"{done:,} pools"
                     + (" (stopped early: RSS grew past the safety cap)" if c.stopped_big else ""))
    out.check(f"opened {count:,} pools within the time budget", done == count or c.stopped_big)
    return out


def connectorj_timers(c: Ctx) -> Outcome:
    """Connector/J's cancelled timer tasks: every statement under a query timeout of an
    hour, each finishing at once; the scheduler may hold only what is in flight."""
    count = c.n(100_000, 3_000)
    with c.pool(min_idle=2, max_size=2, query_timeout=3600) as pool:
        for _ in range(500):
            with pool.connection() as conn:
                conn.execute("SELECT 1").fetchall()
        c.meter.start()
        done = 0
        most = 0
        while done < count and c.time_left():
            with pool.connection() as conn:
                conn.execute("SELECT 1", timeout=1800).fetchall()
                cur = conn.cursor()
                cur.execute("SELECT 1")  # left open: the return closes it
            done += 1
            if done % 500 == 0:
                most = max(most, int(pool.stats().get("timeouts_entries_now", 0)))
        c.meter.stop()
        entries = int(pool.stats().get("timeouts_entries_now", 0))
    out = Outcome(2 * MB, "the scheduler holds what is in flight: 2 MB constant")
    out.notes.append(f"{done:,} statements, scheduler entries now {entries}, most seen {most}")
    out.check(f"ran {count:,} statements within the time budget", done == count)
    out.check(f"scheduler entries after the run {entries} <= 2", entries <= 2)
    return out


# ------------------------------------------------------------------------------ the loader
def _lock_table(c: Ctx, table: str) -> tuple[Any, Callable[[], None]]:
    """Take a lock from our own session that blocks every load into ``table``; the release."""
    from poolkeeper import Pool

    holder = Pool(c.dsn, min_idle=1, max_size=1, name="soak-lock-holder")
    conn = holder.getconn()
    if c.backend == "postgresql":
        conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    elif c.backend == "mysql":
        conn.execute(f"LOCK TABLES {table} WRITE")
    else:
        conn.execute("BEGIN IMMEDIATE")

    def release() -> None:
        with contextlib.suppress(Exception):
            if c.backend == "mysql":
                conn.execute("UNLOCK TABLES")
            conn.rollback()
        with contextlib.suppress(Exception):
            holder.putconn(conn)
        holder.close()

    return conn, release


def _running_loads(c: Ctx, conn: Any, table: str) -> int:
    """Statements of other sessions still running against ``table`` (server's view)."""
    if c.backend == "postgresql":
        # ``conn`` holds the lock, so it is inside a transaction, and PostgreSQL keeps one
        # snapshot of pg_stat_activity per transaction: clear it, or a first look taken
        # before the COPY arrived is all every later look sees (the setup race it had)
        conn.execute("SELECT pg_stat_clear_snapshot()")
        # our own sessions only (tagged with this process's application_name)
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                           " AND application_name = %s AND state = 'active'"
                           " AND wait_event_type = 'Lock'", (PG_APP_NAME,)).fetchone()
    elif c.backend == "mysql":
        row = conn.execute("SELECT COUNT(*) FROM information_schema.processlist WHERE "
                           "id <> CONNECTION_ID() AND command = 'Query' AND info LIKE %s",
                           (f"%{table}%",)).fetchone()
    else:
        return 0
    return int(row[0])


def starrocks_abort(c: Ctx) -> Outcome:
    """The StarRocks loader: abort() while a load is blocked on the server must cancel the
    running statement (a lock held by our own session blocks it), and return promptly."""
    from poolkeeper.loader import Loader

    table = f"soak_abort_{uuid.uuid4().hex[:8]}"
    with c.pool(min_idle=1, max_size=3, connect_kwargs=(
            {"client_flag": 128} if c.backend == "mysql" else {})) as pool:
        with pool.connection() as conn:
            conn.execute(f"CREATE TABLE {table} (id INTEGER, v TEXT)")
        c.meter.start()
        lock_conn, release = _lock_table(c, table)
        try:
            loader = Loader(pool, budget_bytes=8 * MB, batch_rows=500, max_age_s=0.05,
                            columns={table: ("id", "v")}, ledger=False, workers=1)
            for i in range(500):
                loader.write(table, (i, f"row {i}"))
            blocked_deadline = time.monotonic() + 10
            running = 0
            while time.monotonic() < blocked_deadline and c.backend != "sqlite":
                running = _running_loads(c, lock_conn, table)
                if running:
                    break
                time.sleep(0.05)
            if c.backend == "sqlite":
                time.sleep(0.5)
            t0 = time.monotonic()
            dropped = loader.abort()
            abort_s = time.monotonic() - t0
            time.sleep(0.5)
            still = _running_loads(c, lock_conn, table)
        finally:
            release()
        c.meter.stop()
        with pool.connection() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    out = Outcome(None, "judged by the statement's fate")
    out.notes.append(f"blocked statements before abort {running}, after {still}; abort took "
                     f"{abort_s:.2f} s; rows not loaded {dropped}")
    if c.backend != "sqlite":
        out.check("the load was running on the server when abort() came", running >= 1)
        out.check(f"{still} loader statements still running 0.5 s after abort()", still == 0)
    out.check(f"abort() returned in {abort_s:.2f} s (<= 2 s)", abort_s <= 2.0)
    return out


_LOADER_CHILD = textwrap.dedent("""
    import sys, threading, time
    from poolkeeper import Pool
    from poolkeeper.loader import Loader
    dsn, spill, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
    tables = [prefix + str(k) for k in range(int(sys.argv[7]))]
    budget, rows, segment = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    # hold_at >= 0: rows 0 .. hold_at - 1 are written and flushed (committed), then the
    # workers are held in on_flushed after at most one more commit each, and row hold_at is
    # written to every table: its batches are accepted (in the spill log) and, but for at
    # most one per worker, not committed when "held" is printed and the parent kills us.
    hold_at = int(sys.argv[8])
    holding = threading.Event()
    never = threading.Event()  # never set: a held worker waits until the SIGKILL

    def on_flushed(table, batch_id, rows):
        if holding.is_set():
            never.wait(600)

    kw = {"connect_kwargs": {"client_flag": 128}} if dsn.startswith("mysql") else {}
    with Pool(dsn, max_size=3, **kw) as pool:
        loader = Loader(pool, budget_bytes=budget, spill_dir=spill, batch_rows=200,
                        spill_segment_bytes=segment, on_flushed=on_flushed,
                        max_age_s=0.2, write_timeout_s=120,
                        columns={t: ("id", "v") for t in tables})
        print("ready", flush=True)
        for i in range(rows if hold_at < 0 else hold_at + 1):
            if i == hold_at:
                loader.flush()
                print("committed", loader.stats()["rows_loaded"], flush=True)
                holding.set()
            for t in tables:
                loader.write(t, (i, "payload %d %s" % (i, "p" * 2000)))
            print("ack", i, flush=True)   # write() returned for row i of every table
        print("held" if hold_at >= 0 else "done", flush=True)
        time.sleep(600)  # the parent kills us (SIGKILL) while the workers commit or are held
""")


def starrocks_replay(c: Ctx) -> Outcome:
    """The StarRocks loader, durable: 10,000 tables loaded by a child under one budget,
    SIGKILLed mid-load (half the rows committed, one more row of every table accepted and,
    the workers held in on_flushed, not committed); the replay under a 1 MB budget must stay
    within it, load every acknowledged row exactly once, and not go through the batches
    committed before the kill again (the ledger skips them, but reading and re-sending them
    is the redo)."""
    # x 2 KB per row: 60 MB in the full run (within one 64 MB spill segment), 4 MB in the quick;
    # killed once half the rows are committed and one more row of every table is accepted
    # but (the workers held) not committed: by progress, not by time, so a loaded machine
    # cannot let the workers commit everything before the kill
    rows = c.n(4, 100)
    return _replay_soak(c, 64 * MB, c.n(10_000, 40) if c.backend != "mysql" else c.n(2_000, 40),
                        rows, kill_at=rows // 2)


def starrocks_segments(c: Ctx) -> Outcome:
    """The same with 256 KB spill segments, so that batches span segments and segments are
    deleted as their batches commit: the replay after the SIGKILL must start at all. Killed
    once everything is written and the workers had time to commit most of it."""
    return _replay_soak(c, 256 * KB, 40, 100)


def _replay_soak(c: Ctx, segment_bytes: int, ntables: int, rows_per_table: int,
                 kill_at: int | None = None) -> Outcome:
    from poolkeeper import LoaderError, Pool
    from poolkeeper.loader import Loader

    tag = uuid.uuid4().hex[:6]
    prefix = f"soak_rp_{tag}_"
    tables = [f"{prefix}{k}" for k in range(ntables)]
    spill = c.tmp / "spill"
    # Room for one row of every table while the workers are held (kill_at), four times over
    # for each region's overhead and header: the last write() then never waits for a worker
    # that will not come (10,000 tables: 80 MB; the quick run keeps 16 MB).
    child_budget = max(16 * MB, 4 * ntables * _ROW_BYTES)
    replay_budget = MB
    kw: dict[str, Any] = {"connect_kwargs": {"client_flag": 128}} if c.backend == "mysql" else {}
    with Pool(c.dsn, min_idle=1, max_size=3, monitor=c.monitor, name=f"soak-rp-{tag}",
              **kw) as pool, contextlib.ExitStack() as cleanup:
        cleanup.callback(_each_table, pool, tables, "DROP TABLE IF EXISTS {}")
        _each_table(pool, tables, "CREATE TABLE {} (id INTEGER NOT NULL, v TEXT)")
        env = dict(os.environ)
        proc = subprocess.Popen([sys.executable, "-c", _LOADER_CHILD, c.dsn, str(spill),
                                 prefix, str(child_budget), str(rows_per_table),
                                 str(segment_bytes), str(ntables),
                                 str(-1 if kill_at is None else kill_at)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        assert proc.stdout is not None
        acked = -1
        committed_at_hold = None
        try:
            deadline = time.monotonic() + c.n(120, 40)
            line = ""
            # One line per row written to every table, then "held" (kill_at: rows up to
            # kill_at - 1 committed, row kill_at accepted and held back) or "done"; bounded
            # by the lines the child prints and by the deadline.
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line or line.startswith(("done", "held")):
                    break
                if line.startswith("ack"):
                    acked = int(line.split()[1])
                elif line.startswith("committed"):
                    committed_at_hold = int(line.split()[1])
            held = line.startswith("held")
            if kill_at is None:
                # The child wrote everything and sleeps; its workers commit what it wrote
                # (max_age_s=0.2), so the kill finds committed batches still in the spill.
                time.sleep(c.n(5.0, 1.5))
            os.kill(proc.pid, signal.SIGKILL)
            rest, err = proc.communicate(timeout=30)
            acked = max([acked] + [int(x.split()[1]) for x in rest.splitlines()
                                   if x.startswith("ack")])
            if kill_at is not None and not held:
                raise RuntimeError(f"the loader child never held its workers at row {kill_at} "
                                   f"(last line {line.strip()!r}, acked row {acked}): "
                                   f"{err.strip()[-2000:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        committed = _count_all(pool, tables)
        spilled = sum(p.stat().st_size for p in spill.glob("*.spill"))
        c.meter.start()
        refused = None
        try:
            with Loader(pool, budget_bytes=replay_budget, spill_dir=spill,
                        columns=dict.fromkeys(tables, ("id", "v"))) as loader:
                stats = loader.stats()
        except LoaderError as exc:
            refused = str(exc)
        peak = c.meter.peak_since_start()
        c.meter.stop()
        rows, distinct = _count_all(pool, tables, distinct=True)
    expected_min = (acked + 1) * ntables
    out = Outcome(replay_budget + 4 * MB, "the replay's budget_bytes + 4 MB")
    if refused is not None:
        out.notes.append(f"{ntables:,} tables, acked rows {expected_min:,}, committed before "
                         f"the kill {committed:,}, spill {spilled / MB:.1f} MB in "
                         f"{segment_bytes // KB:,} KB segments; the replay refused to start")
        out.check(f"the replay starts (it raised LoaderError: {refused})", False)
        return out
    out.notes.append(
        f"{ntables:,} tables, acked rows {expected_min:,}, committed before the kill "
        f"{committed:,}, spill {spilled / MB:.1f} MB; after replay {rows:,} rows "
        f"({distinct:,} distinct); replayed {stats['replayed_batches']} batches / "
        f"{stats['replayed_rows']:,} rows, skipped {stats['replay_skipped_batches']}; "
        f"traced peak of the replay {peak / MB:.1f} MB")
    out.check("the kill left something to replay", spilled > 0)
    if kill_at is not None:
        out.notes.append(f"killed with {committed_at_hold:,} rows committed when the workers "
                         f"were held (rows 0-{kill_at - 1} of every table), row {kill_at} "
                         "of every table accepted")
        out.check(f"the kill came mid-load ({committed:,} rows committed before it, of "
                  f"{rows_per_table * ntables:,})", 0 < committed < rows_per_table * ntables)
        out.check(f"the replay had batches to load ({stats['replayed_batches']})",
                  stats["replayed_batches"] > 0)
    out.check(f"traced peak of the replay {peak / MB:.1f} MB <= budget 1 MB + 4 MB",
              peak <= replay_budget + 4 * MB)
    out.check(f"no row twice ({rows:,} rows, {distinct:,} distinct)", rows == distinct)
    out.check(f"every acknowledged row loaded ({distinct:,} >= {expected_min:,})",
              distinct >= expected_min)
    out.check(f"no committed batch redone: replay skipped {stats['replay_skipped_batches']} "
              "(at most one per worker may commit in the instant of the kill)",
              stats["replay_skipped_batches"] <= 3)
    return out


def _each_table(pool: Any, tables: list[str], sql: str) -> None:
    """Run ``sql`` for each table, 200 to a transaction (PostgreSQL's lock table holds
    max_locks_per_transaction x connections: 10,000 tables in one transaction overflow it)."""
    for i in range(0, len(tables), 200):
        with pool.connection() as conn:
            for t in tables[i:i + 200]:
                conn.execute(sql.format(t))


def _count_all(pool: Any, tables: list[str], distinct: bool = False) -> Any:
    total = uniq = 0
    for i in range(0, len(tables), 200):  # 200 to a transaction, as _each_table
        with pool.connection() as conn:
            for t in tables[i:i + 200]:
                row = conn.execute(f"SELECT COUNT(*), COUNT(DISTINCT id) FROM {t}").fetchone()
                total += int(row[0])
                uniq += int(row[1])
    return (total, uniq) if distinct else total


SOAKS: dict[str, Soak] = {s.name: s for s in [
    Soak("bonecp_records", "BoneCP's per-connection records (20,000 opens)", "1",
         BACKENDS, bonecp_records, 200),
    Soak("bonecp_churn", "BoneCP's idle churn (bursts and a trickle)", "7", BACKENDS,
         bonecp_churn, 120),
    Soak("druid_sqlite_statements", "Druid's statement cache (1 MB statements, SQLite)", "2",
         ("sqlite",), druid_sqlite_statements),
    Soak("druid_sql_stats", "Druid's SQL statistics (IN lists, multi-row VALUES)", "2",
         BACKENDS, druid_sql_stats, 150),
    Soak("druid_psycopg_mirror", "Druid's statement cache (psycopg's prepared texts)", "5",
         ("postgresql",), druid_psycopg_mirror),
    Soak("druid_ledger", "Druid's statement cache in the memory ledger", "6",
         ("postgresql",), ledger_per_connection),
    Soak("dble_idle_result", "dble's leaked buffers (a result kept by an idle connection)",
         "3", ("mysql", "sqlite"), dble_idle_result),
    Soak("dble_libpq_buffer", "dble's leaked buffers (libpq's input buffer)", "4",
         ("postgresql",), dble_libpq_buffer),
    Soak("many_pools", "1,000 pools opened and closed", "8", BACKENDS, many_pools),
    Soak("connectorj_timers", "Connector/J's cancelled timer tasks", "-", BACKENDS,
         connectorj_timers),
    Soak("starrocks_abort", "the StarRocks loader: abort during a running load", "9",
         BACKENDS, starrocks_abort, 60),
    Soak("starrocks_replay", "the StarRocks loader: SIGKILL mid-load, durable replay", "10",
         BACKENDS, starrocks_replay, 420),
    Soak("starrocks_segments", "the StarRocks loader: replay of a spill in small segments",
         "new", BACKENDS, starrocks_segments, 120),
]}


def backend_dsn(backend: str, tmp: Path) -> str:
    if backend == "postgresql":
        return pg_dsn()
    if backend == "mysql":
        return MYSQL_DSN
    return f"sqlite:///{tmp / 'soak.db'}"


@contextlib.contextmanager
def _tmpdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="poolkeeper-soak-") as d:
        yield Path(d)


def _child(name: str, backend: str, monitor: bool, quick: bool) -> int:
    soak = SOAKS[name]
    seconds = 60.0 if quick else soak.seconds_full
    with _tmpdir() as tmp:
        def run(meter: Meter) -> Outcome:
            ctx = Ctx(backend, backend_dsn(backend, tmp), monitor, quick, meter, tmp,
                      time.monotonic() + seconds)
            return soak.run(ctx)

        return child_main(name, backend, monitor, run)


def run_one(name: str, backend: str, monitor: bool, quick: bool) -> Result:
    """One soak, one backend, one monitor setting, in a fresh process."""
    args = ["--child", name, backend, "on" if monitor else "off"] + (["--quick"] if quick else [])
    limit = (90.0 if quick else SOAKS[name].seconds_full * 2 + 60)
    return run_child(HERE, args, name, backend, monitor, timeout=limit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small counts (seconds per run)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these soaks only")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--monitor", choices=("off", "on", "both"), default="both")
    parser.add_argument("--json", action="store_true", help="one JSON result per line")
    parser.add_argument("--list", action="store_true", help="list the soaks and exit")
    parser.add_argument("--child", nargs=3, metavar=("NAME", "BACKEND", "MONITOR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, backend, monitor = args.child
        return _child(name, backend, monitor == "on", args.quick)
    if args.list:
        for s in SOAKS.values():
            print(f"{s.name:<24} item {s.items:<3} {', '.join(s.backends):<26} {s.report}")
        return 0
    names = args.only or list(SOAKS)
    unknown = [n for n in names if n not in SOAKS]
    if unknown:
        parser.error(f"unknown soak(s) {unknown}; known: {', '.join(SOAKS)}")
    monitors = {"off": [False], "on": [True], "both": [False, True]}[args.monitor]
    if not args.json:
        print(f"poolkeeper field-report soaks ({'quick' if args.quick else 'full'}); "
              f"{machine_summary()}")
    results = []
    for name in names:
        for backend in SOAKS[name].backends:
            if backend not in args.backends:
                continue
            for monitor in monitors:
                r = run_one(name, backend, monitor, args.quick)
                results.append(r)
                if args.json:
                    print(r.to_json(), flush=True)
    if not args.json:
        print_table("growth after warm-up (RSS: VmRSS; traced: tracemalloc current)",
                    ["soak", "backend", "monitor", "RSS", "traced", "bound", "s", "verdict"],
                    [describe(r) for r in results])
        for r in results:
            for note in r.notes:
                print(f"  {r.soak} {r.backend} monitor={'on' if r.monitor else 'off'}: {note}")
        failed = [r for r in results if not r.passed]
        for r in failed:
            print(f"FAIL {r.soak} {r.backend} monitor={'on' if r.monitor else 'off'}: "
                  + "; ".join(r.failures))
        print(f"\n{len(results) - len(failed)} of {len(results)} runs passed")
    return 1 if any(not r.passed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
