"""poolkeeper side by side with psycopg_pool, SQLAlchemy QueuePool and DBUtils PooledDB.

    .venv/bin/python benchmarks/bench_pool.py            # full run, about 6 minutes
    .venv/bin/python benchmarks/bench_pool.py --quick    # about 35 s
    .venv/bin/python benchmarks/bench_pool.py --sections 2 --rounds 20 --json out.json
    .venv/bin/python benchmarks/bench_pool.py --sections 2 --against main --seconds 0.25

Sections (issue 2, "Benchmarks"):

1. borrow + return with no query, one thread, relative to psycopg_pool getconn/putconn
   (target: poolkeeper <= 0.5);
2. ``SELECT 1`` on PostgreSQL from 8 and 32 threads sharing 4 connections, relative to 4 threads
   on 4 dedicated psycopg connections measured in the same round, with fairness (fewest / most
   operations per thread) and p99 latency (target: ratio >= 0.8 and fairness >= 0.8); a
   no-pool reference shares the same 4 connections between fixed thread pairs under a plain
   ``threading.Lock``, to show what CPython's cheapest (and unfair) sharing reaches;
3. single-thread ``SELECT 1`` (borrow, execute, fetch, return) relative to a raw connection, on
   PostgreSQL and MariaDB (targets: <= 1.03x and <= 1.05x).

Memory over a million cycles is ``soak_pool_memory.py``.

Method: every contender runs inside every round, in an order rotated round by round (and, in
sections 1 and 3, in small chunks alternating direction within a round), so that a burst of
load from another process hits all contenders alike. Ratios are computed inside each round and
the median over rounds is reported with its range; the raw medians are printed beside them.
All connections run in autocommit, so no pool pays a COMMIT round trip the others do not; each
pool otherwise keeps its default settings (SQLAlchemy rolls back on every return, DBUtils
pings on every borrow and rolls back on every return; over psycopg both are free in
autocommit, over PyMySQL both are round trips).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _against
import psycopg
import pymysql
from _common import (
    MYSQL_DSN,
    Budget,
    code_fingerprint,
    fmt_ratio,
    load_note,
    loadavg,
    machine_summary,
    median,
    mysql_params,
    percentile,
    pg_dsn,
    pin_current_thread,
    pin_pg_backends,
    pooled_query_loop,
    print_table,
    versions,
)
from dbutils.pooled_db import PooledDB
from psycopg_pool import ConnectionPool
from sqlalchemy.pool import QueuePool

from poolkeeper import Pool

__all__ = ["main"]

QUERY = "SELECT 1"
POOL_SIZE = 4
#: a thread never runs more operations than this in one contention run, whatever the clock says
MAX_OPS_PER_THREAD = 2_000_000

Run = Callable[[int], None]  # run n cycles in a tight loop
Op = Callable[[], None]  # one operation (section 2)


@dataclass
class Settings:
    rounds1: int
    chunks1: int
    cycles1: int
    rounds2: int
    seconds2: float
    thread_counts: tuple[int, ...]
    rounds3: int
    chunks3: int
    queries3: int
    budget_s: float  # per section; a section stops after 3 rounds once it is exceeded
    unpinned3: bool  # also run section 3 on PostgreSQL without pinning (noisy)


# Section 2 uses many short runs rather than a few long ones: the machine's speed drifts over
# seconds, and a ratio is only as good as the time between its two runs is short.
QUICK = Settings(rounds1=5, chunks1=4, cycles1=5_000, rounds2=5, seconds2=0.25,
                 thread_counts=(8, 32), rounds3=5, chunks3=40, queries3=25, budget_s=40,
                 unpinned3=False)
FULL = Settings(rounds1=15, chunks1=10, cycles1=5_000, rounds2=16, seconds2=1.0,
                thread_counts=(8, 32), rounds3=15, chunks3=150, queries3=20, budget_s=400,
                unpinned3=True)


# ============================================================================ pools
def open_poolkeeper(dsn: str, name: str, **options: Any) -> Pool:
    pool = Pool(dsn, name=name, autocommit=True, min_idle=POOL_SIZE, max_size=POOL_SIZE, **options)
    pool.wait_ready(30)
    return pool


def open_psycopg_pool(name: str) -> ConnectionPool:
    pool: ConnectionPool = ConnectionPool(pg_dsn(), min_size=POOL_SIZE, max_size=POOL_SIZE,
                                          kwargs={"autocommit": True}, name=name, open=True)
    pool.wait(30)
    return pool


def open_queuepool(creator: Callable[[], Any]) -> QueuePool:
    pool = QueuePool(creator, pool_size=POOL_SIZE, max_overflow=0, timeout=30)
    held = [pool.connect() for _ in range(POOL_SIZE)]  # QueuePool opens lazily: fill it now
    for conn in held:
        conn.close()
    return pool


def open_pooleddb(module: Any, **kwargs: Any) -> PooledDB:
    # blocking=True: the default raises TooManyConnections instead of waiting.
    return PooledDB(module, mincached=POOL_SIZE, maxcached=POOL_SIZE, maxconnections=POOL_SIZE,
                    blocking=True, **kwargs)


def pg_raw() -> Any:
    return psycopg.connect(pg_dsn(), autocommit=True)


def mysql_raw() -> Any:
    return pymysql.connect(**mysql_params(MYSQL_DSN), autocommit=True)


# ============================================================================ timing
@dataclass
class Timing:
    """Per-round seconds per cycle: wall clock, and this thread's CPU time.

    CPU time does not count the time the thread sat preempted by another process, the main
    noise on a shared machine; for work without I/O (section 1) it is the steadier figure.
    """

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]


def interleave(contenders: list[tuple[str, Run]], *, rounds: int, chunks: int, n: int,
               budget: Budget) -> Timing:
    """Seconds per cycle of each contender, one figure per round."""
    for _, run in contenders:  # warm-up: code paths, caches, the pools' first borrows
        run(n)
    wall: dict[str, list[float]] = {name: [] for name, _ in contenders}
    cpu: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for r in range(rounds):
        if r >= 3 and budget.expired():
            print(f"  (time budget reached: {r} rounds instead of {rounds})")
            break
        gc.collect()
        w_round, c_round = one_round(contenders, r, chunks=chunks, n=n)
        for name, per_round in wall.items():
            per_round.append(w_round[name])
            cpu[name].append(c_round[name])
    return Timing(wall, cpu)


def one_round(contenders: list[tuple[str, Run]], r: int, *, chunks: int, n: int
              ) -> tuple[dict[str, float], dict[str, float]]:
    """Round ``r``: wall and CPU seconds per cycle of each contender (order rotated by r)."""
    pc, tt = time.perf_counter, time.thread_time
    k = r % len(contenders)
    order = contenders[k:] + contenders[:k]
    w_tot = {name: 0.0 for name, _ in contenders}
    c_tot = dict.fromkeys(w_tot, 0.0)
    for c in range(chunks):
        for name, run in (order if c % 2 == 0 else order[::-1]):
            c0 = tt()
            t0 = pc()
            run(n)
            t1 = pc()
            c1 = tt()
            w_tot[name] += t1 - t0
            c_tot[name] += c1 - c0
    return ({name: w / (chunks * n) for name, w in w_tot.items()},
            {name: c / (chunks * n) for name, c in c_tot.items()})


def ratios(per_round: dict[str, list[float]], ref: str) -> dict[str, list[float]]:
    base = per_round[ref]
    return {name: [v / b for v, b in zip(vals, base, strict=True)]
            for name, vals in per_round.items()}


@dataclass
class ThreadRun:
    ops: int
    per_thread: list[int]
    latencies: list[float]
    elapsed: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def qps(self) -> float:
        return self.ops / self.elapsed

    @property
    def fairness(self) -> float:
        most = max(self.per_thread)
        return min(self.per_thread) / most if most else 0.0


def run_threads(make_op: Callable[[int], Op], threads: int, seconds: float) -> ThreadRun:
    """``threads`` threads each repeating their op for ``seconds``; ops finished after the stop
    signal are not counted (an op in flight at the end would flatter nobody in particular, but
    it would count time outside the window)."""
    ops = [make_op(i) for i in range(threads)]
    counts = [0] * threads
    lats: list[list[float]] = [[] for _ in range(threads)]
    stop = threading.Event()
    barrier = threading.Barrier(threads + 1)
    pc = time.perf_counter
    stopped = stop.is_set

    def work(i: int) -> None:
        op, mine = ops[i], lats[i]
        append = mine.append
        barrier.wait()
        n = 0
        while n < MAX_OPS_PER_THREAD:
            t0 = pc()
            op()
            t1 = pc()
            if stopped():
                break
            append(t1 - t0)
            n += 1
        counts[i] = n

    workers = [threading.Thread(target=work, args=(i,), name=f"bench-worker-{i}", daemon=True)
               for i in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = pc()
    stop.wait(seconds)
    stop.set()
    elapsed = pc() - t0
    for w in workers:
        w.join(60)
    if any(w.is_alive() for w in workers):
        raise RuntimeError("a benchmark thread did not stop within 60 s: a pool deadlocked?")
    return ThreadRun(sum(counts), counts, [x for lst in lats for x in lst], elapsed)


# ============================================================================ section 1
S1_REF = "psycopg_pool getconn/putconn"


def setup1(stack: contextlib.ExitStack[Any]) -> list[tuple[str, Run]]:
    """Section 1's pools (closed by ``stack``), the client pinned to CPU 0 until then."""
    stack.callback(pin_current_thread, pin_current_thread({0}))
    pk = open_poolkeeper(pg_dsn(), "bench-s1")
    stack.callback(pk.close)
    pp = open_psycopg_pool("bench-s1")
    stack.callback(pp.close)
    qp = open_queuepool(pg_raw)
    stack.callback(qp.dispose)
    db = open_pooleddb(psycopg, conninfo=pg_dsn(), autocommit=True)
    stack.callback(db.close)

    def pk_getput(n: int) -> None:
        get, put = pk.getconn, pk.putconn
        for _ in range(n):
            put(get())

    def pk_with(n: int) -> None:
        connection = pk.connection
        for _ in range(n):
            with connection():
                pass

    def pp_getput(n: int) -> None:
        get, put = pp.getconn, pp.putconn
        for _ in range(n):
            put(get())

    def pp_with(n: int) -> None:
        connection = pp.connection
        for _ in range(n):
            with connection():
                pass

    def qp_cycle(n: int) -> None:
        connect = qp.connect
        for _ in range(n):
            connect().close()

    def db_cycle(n: int) -> None:
        connection = db.connection
        for _ in range(n):
            connection().close()

    contenders: list[tuple[str, Run]] = [
        ("poolkeeper getconn/putconn", pk_getput),
        ("poolkeeper with connection()", pk_with),
        ("psycopg_pool getconn/putconn", pp_getput),
        ("psycopg_pool with connection()", pp_with),
        ("SQLAlchemy QueuePool connect/close", qp_cycle),
        ("DBUtils PooledDB connection/close", db_cycle),
    ]
    return contenders


def section1(s: Settings, budget: Budget, results: dict[str, Any]) -> None:
    """Borrow + return, no query, one thread (pinned to one CPU: no migrations)."""
    load0 = loadavg()
    with contextlib.ExitStack() as stack:
        contenders = setup1(stack)
        timing = interleave(contenders, rounds=s.rounds1, chunks=s.chunks1, n=s.cycles1,
                            budget=budget)
    ref = S1_REF
    rel_cpu = ratios(timing.cpu, ref)
    rel_wall = ratios(timing.wall, ref)
    rows = [[name, f"{median(timing.cpu[name]) * 1e6:.2f}", fmt_ratio(rel_cpu[name]),
             f"{median(timing.wall[name]) * 1e6:.2f}", fmt_ratio(rel_wall[name])]
            for name in timing.cpu]
    n_rounds = len(timing.cpu[ref])
    print_table(
        f"1. borrow + return, no query, one thread pinned to CPU 0, PostgreSQL ({n_rounds} "
        f"rounds x {s.chunks1 * s.cycles1} cycles)",
        ["contender", "CPU us/cycle", "x psycopg_pool (CPU)", "wall us/cycle",
         "x psycopg_pool (wall)"], rows,
        [f"ratios: median (min-max) over rounds, against {ref} in the same round",
         "CPU = this thread's CPU time (excludes preemption by other processes); "
         "target: poolkeeper <= 0.50x (CPU)", load_note(load0)])
    for name in ("poolkeeper getconn/putconn", "poolkeeper with connection()"):
        verdict(f"section 1, {name} (CPU)", median(rel_cpu[name]), "<=", 0.50)
    results["section1"] = {"ratio_to": ref, "cpu_s": timing.cpu, "wall_s": timing.wall,
                           "ratios_cpu": rel_cpu, "ratios_wall": rel_wall}


# ============================================================================ section 2
def pg_op(borrow: Callable[[], Any], give_back: Callable[[Any], None]) -> Op:
    def op() -> None:
        conn = borrow()
        cur = conn.cursor()
        cur.execute(QUERY)
        cur.fetchone()
        cur.close()
        give_back(conn)
    return op


def pk_with_op(pool: Pool) -> Op:
    connection = pool.connection

    def op() -> None:
        with connection() as conn:
            cur = conn.cursor()
            cur.execute(QUERY)
            cur.fetchone()
            cur.close()
    return op


S2_DED = "raw psycopg, 4 threads x 4 dedicated conns"
S2_PAIRS = "no pool: fixed conn per thread + Lock"
S2_PK2, S2_PK0 = "poolkeeper lease_ms=2 (default)", "poolkeeper lease_ms=0 (FIFO)"
S2_PKN = "poolkeeper lease_ms=2, stats=False"


@dataclass
class Section2:
    """Section 2's contenders: (name, op factory, thread count: None = the round's count), and
    poolkeeper's pools by contender name (their hand-off counters are read after each run)."""

    workloads: list[tuple[str, Callable[[int], Op], int | None]]
    pk_pools: dict[str, Pool]


def setup2(stack: contextlib.ExitStack[Any], s: Settings) -> Section2:
    """Section 2's connections and pools (closed by ``stack``), warmed up."""
    dedicated = [pg_raw() for _ in range(POOL_SIZE)]
    for conn in dedicated:
        stack.callback(conn.close)
    pk2 = open_poolkeeper(pg_dsn(), "bench-s2-lease2")  # lease_ms default (2.0)
    stack.callback(pk2.close)
    pk0 = open_poolkeeper(pg_dsn(), "bench-s2-lease0", lease_ms=0.0)
    stack.callback(pk0.close)
    pkn = open_poolkeeper(pg_dsn(), "bench-s2-nostats", stats=False)
    stack.callback(pkn.close)
    pp = open_psycopg_pool("bench-s2")
    stack.callback(pp.close)
    qp = open_queuepool(pg_raw)
    stack.callback(qp.dispose)
    db = open_pooleddb(psycopg, conninfo=pg_dsn(), autocommit=True)
    stack.callback(db.close)

    def raw_op(i: int) -> Op:
        conn = dedicated[i]

        def op() -> None:
            cur = conn.cursor()
            cur.execute(QUERY)
            cur.fetchone()
            cur.close()
        return op

    # No pool at all: thread i always uses connection i % 4 under that connection's
    # threading.Lock. The cheapest sharing CPython allows, and an unfair one (a releasing
    # thread re-takes the lock before the woken waiter runs): what barging buys, and costs.
    pair_locks = [threading.Lock() for _ in range(POOL_SIZE)]

    def pair_op(i: int) -> Op:
        conn, lock = dedicated[i % POOL_SIZE], pair_locks[i % POOL_SIZE]

        def op() -> None:
            with lock:
                cur = conn.cursor()
                cur.execute(QUERY)
                cur.fetchone()
                cur.close()
        return op

    found = Section2(workloads=[
        (S2_DED, raw_op, POOL_SIZE),
        (S2_PAIRS, pair_op, None),
        (S2_PK2, lambda i: pk_with_op(pk2), None),
        (S2_PK0, lambda i: pk_with_op(pk0), None),
        (S2_PKN, lambda i: pk_with_op(pkn), None),
        ("psycopg_pool getconn/putconn", lambda i: pg_op(pp.getconn, pp.putconn), None),
        ("SQLAlchemy QueuePool", lambda i: pg_op(qp.connect, lambda c: c.close()), None),
        ("DBUtils PooledDB", lambda i: pg_op(db.connection, lambda c: c.close()), None),
    ], pk_pools={S2_PK2: pk2, S2_PK0: pk0, S2_PKN: pkn})
    for _, make, fixed in found.workloads:  # warm-up
        run_threads(make, fixed or 8, min(0.3, s.seconds2))
    for pool in found.pk_pools.values():
        pool.pop_stats()
    return found


def round2(setup: Section2, r: int, s: Settings) -> dict[int, dict[str, ThreadRun]]:
    """Round ``r``: one timed run of every contender per thread count (order rotated by r)."""
    workloads = setup.workloads
    runs: dict[int, dict[str, ThreadRun]] = {t: {} for t in s.thread_counts}
    for threads in s.thread_counts:
        k = r % len(workloads)
        for name, make, fixed in workloads[k:] + workloads[:k]:
            gc.collect()
            run = run_threads(make, fixed or threads, s.seconds2)
            pk_pool = setup.pk_pools.get(name)
            if pk_pool is not None:
                st = pk_pool.pop_stats()
                reqs = max(1, int(st["requests_num"]))
                run.extra = {"handoffs_per_op": st["handoffs_num"] / reqs,
                             "reuses_per_op": st["lease_reuses_num"] / reqs}
            runs[threads][name] = run
    return runs


def section2(s: Settings, budget: Budget, results: dict[str, Any]) -> None:
    """SELECT 1 from 8 and 32 threads sharing 4 connections vs 4 dedicated connections."""
    load0 = loadavg()
    out: dict[str, Any] = {}
    ded, pk2_name, pk0_name = S2_DED, S2_PK2, S2_PK0
    with contextlib.ExitStack() as stack:
        setup = setup2(stack, s)
        runs: dict[int, dict[str, list[ThreadRun]]] = {
            t: {name: [] for name, _, _ in setup.workloads} for t in s.thread_counts}
        done = 0
        for r in range(s.rounds2):
            if r >= 3 and budget.expired():
                print(f"  (time budget reached: {r} rounds instead of {s.rounds2})")
                break
            for threads, by_name in round2(setup, r, s).items():
                for name, run in by_name.items():
                    runs[threads][name].append(run)
            done += 1

    for threads in s.thread_counts:
        base = [run.qps for run in runs[threads][ded]]
        rows = []
        section: dict[str, Any] = {}
        for name, per in runs[threads].items():
            rel = [run.qps / b for run, b in zip(per, base, strict=True)]
            fair = [run.fairness for run in per]
            p99 = [percentile(run.latencies, 0.99) * 1e3 for run in per]
            p50 = [percentile(run.latencies, 0.50) * 1e3 for run in per]
            hand = [run.extra["handoffs_per_op"] for run in per if run.extra]
            n_thr = POOL_SIZE if name == ded else threads
            rows.append([name, n_thr, f"{median(run.qps for run in per):,.0f}", fmt_ratio(rel),
                         fmt_ratio(fair), f"{median(p50):.2f}", f"{median(p99):.2f}",
                         f"{median(hand):.3f}" if hand else "-"])
            section[name] = {"qps": [run.qps for run in per], "ratio": rel, "fairness": fair,
                             "p50_ms": p50, "p99_ms": p99, "handoffs_per_op": hand}
            if name in (pk2_name, pk0_name):
                verdict(f"section 2, {threads} threads, {name}: throughput", median(rel),
                        ">=", 0.80)
                verdict(f"section 2, {threads} threads, {name}: fairness", median(fair),
                        ">=", 0.80)
        print_table(
            f"2. SELECT 1, {threads} threads sharing {POOL_SIZE} connections, PostgreSQL "
            f"({done} rounds x {s.seconds2:g} s per contender)",
            ["contender", "threads", "queries/s", "x dedicated (median, range)",
             "fairness (median, range)", "p50 ms", "p99 ms", "hand-offs/op"], rows,
            ["x dedicated: queries/s over those of 4 threads on 4 dedicated connections "
             "in the same round",
             "fairness: fewest / most queries per thread over the run; hand-offs/op: "
             "poolkeeper's handoffs_num / requests_num",
             "target: poolkeeper >= 0.80x dedicated with fairness >= 0.80",
             load_note(load0)])
        out[str(threads)] = section
    results["section2"] = out


# ============================================================================ section 3
def query_loop(borrow: Callable[[], Any], give_back: Callable[[Any], None]) -> Run:
    def run(n: int) -> None:
        for _ in range(n):
            conn = borrow()
            cur = conn.cursor()
            cur.execute(QUERY)
            cur.fetchone()
            cur.close()
            give_back(conn)
    return run


def raw_loop(conn: Any) -> Run:
    def run(n: int) -> None:
        cursor = conn.cursor
        for _ in range(n):
            cur = cursor()
            cur.execute(QUERY)
            cur.fetchone()
            cur.close()
    return run


#: the same pool without per-statement SQL statistics, to show what they cost
NOSTATS = "poolkeeper with connection(), stats=False"


def setup3(stack: contextlib.ExitStack[Any], server: str, pinned: bool
           ) -> tuple[list[tuple[str, Run]], float, str, Pool]:
    """Section 3's connections and pools (closed by ``stack``): contenders, target, placement,
    and the default poolkeeper pool (for its ping count)."""
    if pinned:
        stack.callback(pin_current_thread, pin_current_thread({0}))
    if server == "PostgreSQL":
        raw = pg_raw()
        stack.callback(raw.close)
        pk = open_poolkeeper(pg_dsn(), "bench-s3-pg")
        stack.callback(pk.close)
        pkn = open_poolkeeper(pg_dsn(), "bench-s3-pg-nostats", stats=False)
        stack.callback(pkn.close)
        pp = open_psycopg_pool("bench-s3")
        stack.callback(pp.close)
        qp = open_queuepool(pg_raw)
        stack.callback(qp.dispose)
        db = open_pooleddb(psycopg, conninfo=pg_dsn(), autocommit=True)
        stack.callback(db.close)
        contenders: list[tuple[str, Run]] = [
            ("raw psycopg connection", raw_loop(raw)),
            ("poolkeeper with connection()", pooled_query_loop(pk, QUERY)),
            ("poolkeeper getconn/putconn", query_loop(pk.getconn, pk.putconn)),
            (NOSTATS, pooled_query_loop(pkn, QUERY)),
            ("psycopg_pool getconn/putconn", query_loop(pp.getconn, pp.putconn)),
            ("SQLAlchemy QueuePool", query_loop(qp.connect, lambda c: c.close())),
            ("DBUtils PooledDB", query_loop(db.connection, lambda c: c.close())),
        ]
        target = 1.03
        if pinned:
            n = pin_pg_backends(raw, {0})
            where = (f"client and its {n} server processes pinned to CPU 0" if n else
                     "client pinned to CPU 0 (server processes could not be pinned)")
        else:
            where = "unpinned: the OS places client and server (noisy)"
    else:
        params = mysql_params(MYSQL_DSN)
        raw = mysql_raw()
        stack.callback(raw.close)
        pk = open_poolkeeper(MYSQL_DSN, "bench-s3-mysql")
        stack.callback(pk.close)
        pkn = open_poolkeeper(MYSQL_DSN, "bench-s3-mysql-nostats", stats=False)
        stack.callback(pkn.close)
        qp = open_queuepool(mysql_raw)
        stack.callback(qp.dispose)
        db = open_pooleddb(pymysql, autocommit=True, **params)
        stack.callback(db.close)
        contenders = [
            ("raw PyMySQL connection", raw_loop(raw)),
            ("poolkeeper with connection()", pooled_query_loop(pk, QUERY)),
            ("poolkeeper getconn/putconn", query_loop(pk.getconn, pk.putconn)),
            (NOSTATS, pooled_query_loop(pkn, QUERY)),
            ("SQLAlchemy QueuePool", query_loop(qp.connect, lambda c: c.close())),
            ("DBUtils PooledDB", query_loop(db.connection, lambda c: c.close())),
        ]
        target = 1.05
        # The server threads are shared with other users of the server: never pinned.
        where = "client pinned to CPU 0" if pinned else "unpinned"
    return contenders, target, where, pk


def section3(s: Settings, budget: Budget, results: dict[str, Any], server: str,
             pinned: bool) -> None:
    """Single-thread SELECT 1 through each pool relative to a raw connection."""
    load0 = loadavg()
    with contextlib.ExitStack() as stack:
        contenders, target, where, pk = setup3(stack, server, pinned)
        timing = interleave(contenders, rounds=s.rounds3, chunks=s.chunks3, n=s.queries3,
                            budget=budget)
        validations = pk.stats()["validations_num"]
    ref = contenders[0][0]
    rel = ratios(timing.wall, ref)
    raw_cpu = median(timing.cpu[ref])
    rows = [[name, f"{median(timing.wall[name]) * 1e6:.1f}", fmt_ratio(rel[name]),
             f"{median(timing.cpu[name]) * 1e6:.1f}",
             f"{(median(timing.cpu[name]) - raw_cpu) * 1e6:+.1f}"]
            for name in timing.wall]
    label = f"{server}, {where}"
    print_table(
        f"3. single-thread SELECT 1 (borrow, execute, fetch, return), {label} "
        f"({len(timing.wall[ref])} rounds x {s.chunks3 * s.queries3} queries)",
        ["contender", "wall us/query", "x raw (wall)", "client CPU us/query",
         "CPU over raw"], rows,
        [f"target: poolkeeper <= {target:.2f}x raw (wall); poolkeeper validations (pings) "
         f"during the run: {validations}", load_note(load0)])
    for name in ("poolkeeper with connection()", "poolkeeper getconn/putconn", NOSTATS):
        verdict(f"section 3, {server} ({'pinned' if pinned else 'unpinned'}), {name}",
                median(rel[name]), "<=", target)
    # Issue 4's figure: what per-statement SQL statistics cost, the same pool with them on
    # and off, compared round by round (both run interleaved in every round).
    on, off = timing.wall["poolkeeper with connection()"], timing.wall[NOSTATS]
    per_round = sorted(a / b for a, b in zip(on, off, strict=True))
    added_cpu = median([a - b for a, b in zip(timing.cpu["poolkeeper with connection()"],
                                              timing.cpu[NOSTATS], strict=True)])
    q1, q3 = per_round[len(per_round) // 4], per_round[(3 * len(per_round)) // 4]
    print(f"  SQL statistics on vs off (issue 4), {label}: {(median(per_round) - 1) * 100:+.2f}% "
          f"wall (per-round median, IQR {(q1 - 1) * 100:+.1f}..{(q3 - 1) * 100:+.1f}%); "
          f"added client CPU {added_cpu * 1e6:+.2f} us = "
          f"{added_cpu / median(off) * 100:+.2f}% of the stats=False cycle; target < 3%")
    verdict(f"section 3, {server} ({'pinned' if pinned else 'unpinned'}), SQL statistics on "
            f"(x stats=False, wall)", median(per_round), "<=", 1.03)
    key = f"section3_{server}_{'pinned' if pinned else 'unpinned'}"
    results[key] = {"setup": where, "ratio_to": ref, "wall_s": timing.wall,
                    "cpu_s": timing.cpu, "ratios_wall": rel}


# ============================================================================ --against
def section2_rounds(setup: Section2, s: Settings) -> _against.RoundFn:
    """Section 2 as ``--against`` rounds: per thread count, each contender's queries/s,
    fairness and p99 latency (seconds) in one round."""
    def run_round(r: int) -> dict[str, dict[str, float]]:
        figures: dict[str, dict[str, float]] = {}
        for threads, by_name in round2(setup, r, s).items():
            figures[f"qps {threads}"] = {name: run.qps for name, run in by_name.items()}
            figures[f"fairness {threads}"] = {name: run.fairness
                                              for name, run in by_name.items()}
            figures[f"p99 {threads}"] = {name: percentile(run.latencies, 0.99)
                                         for name, run in by_name.items()}
        return figures
    return run_round


def child_setup(spec: str, s: Settings) -> Callable[[contextlib.ExitStack[Any]], _against.RoundFn]:
    """What a ``--child`` subprocess of ``--against`` runs: section 1, 2, or 3 on one server."""
    def setup(stack: contextlib.ExitStack[Any]) -> _against.RoundFn:
        if spec == "2":
            return section2_rounds(setup2(stack, s), s)
        if spec == "1":
            contenders, chunks, n = setup1(stack), s.chunks1, s.cycles1
        elif spec in ("3:PostgreSQL", "3:MariaDB"):
            contenders = setup3(stack, spec[2:], pinned=True)[0]
            chunks, n = s.chunks3, s.queries3
        else:
            raise ValueError(f"--child {spec!r}: expected 1, 2, 3:PostgreSQL or 3:MariaDB")
        for _, run in contenders:  # warm-up, as interleave() does
            run(n)

        def run_round(r: int) -> dict[str, dict[str, float]]:
            wall, cpu = one_round(contenders, r, chunks=chunks, n=n)
            return {"wall": wall, "cpu": cpu}
        return run_round
    return setup


def against(rev: str, s: Settings, sections: set[str], quick: bool, procs: int,
            results: dict[str, Any]) -> None:
    """Sections 1, 2 and 3 with the current tree and ``rev`` in one run (issue #16)."""
    script = str(Path(__file__).resolve())
    # The child reads the same settings: --rounds only matters here, --seconds there too.
    passed = [*(["--quick"] if quick else []), "--seconds", repr(s.seconds2)]
    if "1" in sections:
        load0 = loadavg()
        news, olds, header = _against.run_pairs(rev, script, [*passed, "--child", "1"],
                                                s.rounds1, procs)
        results["against_section1"] = {"trees": header, **{
            metric: _against.report(
                f"1. borrow + return, no query, pinned, PostgreSQL: new tree vs {rev} "
                f"({metric}, {s.chunks1 * s.cycles1} cycles per round)",
                news, olds, metric, unit="us", scale=1e6, ref=S1_REF,
                notes=[load_note(load0)] if metric == "wall" else [])
            for metric in ("cpu", "wall")}}
    if "2" in sections:
        load0 = loadavg()
        news, olds, header = _against.run_pairs(rev, script, [*passed, "--child", "2"],
                                                s.rounds2, procs)
        out: dict[str, Any] = {"trees": header}
        for threads in s.thread_counts:
            what = (f"2. SELECT 1, {threads} threads sharing {POOL_SIZE} connections, PostgreSQL: "
                    f"new tree vs {rev}")
            out[str(threads)] = {
                "qps": _against.report(
                    f"{what} (queries/s, {s.seconds2:g} s per contender per round)", news,
                    olds, f"qps {threads}", unit="q/s", scale=1.0, ref=S2_DED,
                    notes=["x ref = x dedicated: the section's ratio, in each tree",
                           load_note(load0)]),
                "fairness": _against.report(
                    f"{what} (fairness: fewest / most queries per thread)", news, olds,
                    f"fairness {threads}", unit="fairness", scale=1.0, ref=None,
                    difference=True),
                "p99_ms": _against.report(
                    f"{what} (p99 latency)", news, olds, f"p99 {threads}", unit="ms",
                    scale=1e3, ref=None)}
        results["against_section2"] = out
    if "3" in sections:
        for server in ("PostgreSQL", "MariaDB"):
            load0 = loadavg()
            news, olds, header = _against.run_pairs(
                rev, script, [*passed, "--child", f"3:{server}"], s.rounds3, procs)
            ref = "raw psycopg connection" if server == "PostgreSQL" else "raw PyMySQL connection"
            results[f"against_section3_{server}"] = {"trees": header, **{
                metric: _against.report(
                    f"3. single-thread SELECT 1, {server}, client pinned: new tree vs {rev} "
                    f"({metric}, {s.chunks3 * s.queries3} queries per round)",
                    news, olds, metric, unit="us", scale=1e6, ref=ref,
                    notes=[load_note(load0)] if metric == "wall" else [])
                for metric in ("wall", "cpu")}}


# ============================================================================ main
VERDICTS: list[str] = []


def verdict(what: str, value: float, op: str, target: float) -> None:
    ok = value <= target if op == "<=" else value >= target
    mark = "MET   " if ok else "MISSED"
    VERDICTS.append(f"{mark} {what}: {value:.2f} (target {op} {target:.2f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (about 35 s)")
    parser.add_argument("--sections", default="1,2,3", help="comma-separated: 1,2,3 (default all)")
    parser.add_argument("--rounds", type=int, help="rounds per section (overrides the preset)")
    parser.add_argument("--seconds", type=float, help="seconds per contender run in section 2")
    parser.add_argument("--json", metavar="PATH", help="also write every per-round figure here")
    parser.add_argument("--against", metavar="REV",
                        help="sections 1-3 in two subprocesses, this tree and git REV "
                             "(exported to .bench-trees/), rounds interleaved: new/old ratios")
    parser.add_argument("--procs", type=int, default=3,
                        help="--against: pairs of processes the rounds are spread over "
                             "(default 3: a process's own bias averages out)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one tree's side of --against
    args = parser.parse_args(argv)
    s = QUICK if args.quick else FULL
    if args.rounds:
        s = dataclasses.replace(s, rounds1=args.rounds, rounds2=args.rounds, rounds3=args.rounds)
    if args.seconds:
        s = dataclasses.replace(s, seconds2=args.seconds)
    sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        return _against.serve(child_setup(args.child, s))

    print(f"poolkeeper benchmarks ({'quick' if args.quick else 'full'}): {machine_summary()}")
    print(versions("poolkeeper", "psycopg", "psycopg-pool", "SQLAlchemy", "DBUtils", "PyMySQL"))
    print(code_fingerprint())
    print(f"pool size {POOL_SIZE}, autocommit everywhere, query {QUERY!r}")
    results: dict[str, Any] = {"machine": machine_summary(), "code": code_fingerprint(),
                               "quick": args.quick}
    started = time.monotonic()
    if args.against:
        against(args.against, s, sections, args.quick, args.procs, results)
        sections = set()
    if "1" in sections:
        section1(s, Budget(s.budget_s), results)
    if "2" in sections:
        section2(s, Budget(s.budget_s), results)
    if "3" in sections:
        section3(s, Budget(s.budget_s / 3), results, "PostgreSQL", pinned=True)
        if s.unpinned3:
            section3(s, Budget(s.budget_s / 3), results, "PostgreSQL", pinned=False)
        section3(s, Budget(s.budget_s / 3), results, "MariaDB", pinned=True)
    print(f"\nTargets ({time.monotonic() - started:.0f} s):")
    for line in VERDICTS:
        print(f"  {line}")
    results["verdicts"] = VERDICTS
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
