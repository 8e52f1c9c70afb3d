"""poolkeeper's AsyncPool side by side with psycopg_pool's AsyncConnectionPool and asyncpg's Pool.

    .venv/bin/python benchmarks/bench_aio.py            # full run, about 3 minutes
    .venv/bin/python benchmarks/bench_aio.py --quick    # about 25 s
    .venv/bin/python benchmarks/bench_aio.py --sections 2 --rounds 20 --json out.json

Sections (issue #17, "Benchmarks"), all on PostgreSQL, each through both of poolkeeper's
PostgreSQL drivers (``postgresql://`` = psycopg's AsyncConnection, ``postgresql+asyncpg://``):

1. acquire + release with no query, one task, relative to the faster of psycopg_pool's
   ``AsyncConnectionPool`` getconn/putconn and asyncpg's ``Pool`` acquire/release in the same
   round (target: poolkeeper <= 0.5x, CPU time);
2. ``SELECT 1`` from 32 tasks sharing 4 connections, relative to 4 tasks on 4 dedicated raw
   connections of the same driver in the same round (target >= 0.85x), with fairness (fewest /
   most queries per task) and p99 latency relative to "dedicated-32": the same 32 tasks sharing
   the 4 raw connections through one ``asyncio.Lock`` per connection (target <= 2x);
3. single-task ``SELECT 1`` (borrow, execute, fetch, return) relative to a raw connection of the
   same driver, statistics on (the default) and off (``stats=False``) (target <= 1.10x).

Memory over 1,000,000 cycles and 100,000 cancelled acquires is ``soak_aio_memory.py``.

Method: as ``bench_pool.py``. Every contender runs in every round, in an order rotated round by
round (sections 1 and 3 cut each round into small chunks run in alternating direction); ratios
are computed inside a round and the median over rounds is reported with its range. CPU time
is the process's (``time.process_time``: one event loop, and no pool here starts a thread); it
excludes preemption by other processes, so sections 1 and 3 are judged on CPU where a pool
adds no I/O. Sections 1 and 3 pin the client (and, in 3, its PostgreSQL server processes) to
CPU 0. psycopg connections run in autocommit (asyncpg has no other mode), so no pool pays a
COMMIT the others do not. asyncpg's Pool resets every connection it takes back with a round
trip (``Connection.reset()``: ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
ALL``); the "reset=no-op" rows pass ``create_pool(reset=...)`` a coroutine that does nothing
(asyncpg >= 0.30), which leaves only the local ``Connection._reset()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import psycopg
from _common import (
    AIO_MODULES,
    Budget,
    code_fingerprint,
    fmt_ratio,
    load_note,
    loadavg,
    machine_summary,
    median,
    percentile,
    pg_dsn,
    pin_current_thread,
    pin_pg_backends,
    print_table,
    versions,
)
from psycopg_pool import AsyncConnectionPool

from poolkeeper import AsyncPool

__all__ = ["main"]

QUERY = "SELECT 1"
POOL_SIZE = 4
TASKS = 32
#: a task never runs more operations than this in one contention run, whatever the clock says
MAX_OPS_PER_TASK = 2_000_000

Run = Callable[[int], Awaitable[None]]  # run n cycles in a tight loop
Op = Callable[[], Awaitable[None]]  # one operation (section 2)
Stack = contextlib.AsyncExitStack


@dataclass
class Settings:
    rounds1: int
    chunks1: int
    cycles1: int
    rounds2: int
    seconds2: float
    rounds3: int
    chunks3: int
    queries3: int
    budget_s: float  # per section; a section stops after 3 rounds once it is exceeded


QUICK = Settings(rounds1=5, chunks1=4, cycles1=2_000, rounds2=4, seconds2=0.25, rounds3=5,
                 chunks3=20, queries3=25, budget_s=40)
FULL = Settings(rounds1=15, chunks1=10, cycles1=2_000, rounds2=12, seconds2=0.5, rounds3=15,
                chunks3=60, queries3=25, budget_s=240)

#: poolkeeper's two PostgreSQL drivers: the label, the DSN scheme
DRIVERS = (("psycopg", "postgresql"), ("asyncpg", "postgresql+asyncpg"))


def dsn_for(scheme: str) -> str:
    return scheme + pg_dsn()[len("postgresql"):]


# ============================================================================ pools
async def open_poolkeeper(stack: Stack, scheme: str, name: str, **options: Any) -> AsyncPool:
    pool = AsyncPool(dsn_for(scheme), name=name, autocommit=True, min_idle=POOL_SIZE,
                     max_size=POOL_SIZE, **options)
    await pool.open()
    stack.push_async_callback(pool.close)
    await pool.wait_ready(30)
    return pool


async def open_psycopg_pool(stack: Stack, name: str) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = AsyncConnectionPool(
        pg_dsn(), min_size=POOL_SIZE, max_size=POOL_SIZE, kwargs={"autocommit": True},
        name=name, open=False)
    await pool.open(wait=True, timeout=30)
    stack.push_async_callback(pool.close)
    return pool


async def _no_reset(conn: Any) -> None:
    """asyncpg ``create_pool(reset=...)``: skip the server round trip of Connection.reset()."""


async def open_asyncpg_pool(stack: Stack, reset: bool = True) -> Any:
    pool = await asyncpg.create_pool(pg_dsn(), min_size=POOL_SIZE, max_size=POOL_SIZE,
                                     **({} if reset else {"reset": _no_reset}))
    stack.push_async_callback(pool.close)
    return pool


async def raw_psycopg(stack: Stack) -> Any:
    conn = await psycopg.AsyncConnection.connect(pg_dsn(), autocommit=True)
    stack.push_async_callback(conn.close)
    return conn


async def raw_asyncpg(stack: Stack) -> Any:
    conn = await asyncpg.connect(pg_dsn())
    stack.push_async_callback(conn.close)
    return conn


async def raw_for(stack: Stack, driver: str) -> Any:
    return await (raw_psycopg(stack) if driver == "psycopg" else raw_asyncpg(stack))


def query_for(driver: str) -> Callable[[Any], Awaitable[None]]:
    """One ``SELECT 1`` on a connection (raw or proxy) of ``driver``, in its own API."""
    if driver == "psycopg":
        async def psycopg_query(conn: Any) -> None:
            cur = await conn.execute(QUERY)
            await cur.fetchone()
        return psycopg_query

    async def asyncpg_query(conn: Any) -> None:
        await conn.fetchval(QUERY)
    return asyncpg_query


# ============================================================================ timing
@dataclass
class Timing:
    """Per-round seconds per cycle: wall clock and the process's CPU time."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]


async def interleave(contenders: list[tuple[str, Run]], *, rounds: int, chunks: int, n: int,
                     budget: Budget) -> Timing:
    for _, run in contenders:  # warm-up: code paths, caches, the pools' first borrows
        await run(n)
    wall: dict[str, list[float]] = {name: [] for name, _ in contenders}
    cpu: dict[str, list[float]] = {name: [] for name, _ in contenders}
    pc, pt = time.perf_counter, time.process_time
    for r in range(rounds):
        if r >= 3 and budget.expired():
            print(f"  (time budget reached: {r} rounds instead of {rounds})")
            break
        gc.collect()
        k = r % len(contenders)
        order = contenders[k:] + contenders[:k]
        w_tot = {name: 0.0 for name, _ in contenders}
        c_tot = dict.fromkeys(w_tot, 0.0)
        for c in range(chunks):
            for name, run in (order if c % 2 == 0 else order[::-1]):
                c0 = pt()
                t0 = pc()
                await run(n)
                t1 = pc()
                c1 = pt()
                w_tot[name] += t1 - t0
                c_tot[name] += c1 - c0
        for name, seconds in w_tot.items():
            wall[name].append(seconds / (chunks * n))
            cpu[name].append(c_tot[name] / (chunks * n))
    return Timing(wall, cpu)


def ratios(per_round: dict[str, list[float]], base: list[float]) -> dict[str, list[float]]:
    return {name: [v / b for v, b in zip(vals, base, strict=True)]
            for name, vals in per_round.items()}


# ============================================================================ section 1
def getput(get: Callable[[], Awaitable[Any]], put: Callable[[Any], Awaitable[Any]]) -> Run:
    async def run(n: int) -> None:
        for _ in range(n):
            await put(await get())
    return run


def with_block(cm: Callable[[], Any]) -> Run:
    async def run(n: int) -> None:
        for _ in range(n):
            async with cm():
                pass
    return run


PP1, AP1 = "psycopg_pool getconn/putconn", "asyncpg Pool acquire/release"


async def section1(s: Settings, budget: Budget, results: dict[str, Any],
                   verdicts: list[str]) -> None:
    """Acquire + release, no query, one task (pinned to CPU 0: no migrations)."""
    load0 = loadavg()
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(pin_current_thread, pin_current_thread({0}))
        contenders: list[tuple[str, Run]] = []
        for label, scheme in DRIVERS:
            pk = await open_poolkeeper(stack, scheme, f"bench-aio-s1-{label}")
            contenders += [(f"poolkeeper/{label} getconn/putconn", getput(pk.getconn, pk.putconn)),
                           (f"poolkeeper/{label} async with connection()",
                            with_block(pk.connection))]
        pp = await open_psycopg_pool(stack, "bench-aio-s1")
        ap = await open_asyncpg_pool(stack)
        apn = await open_asyncpg_pool(stack, reset=False)
        contenders += [
            (PP1, getput(pp.getconn, pp.putconn)),
            ("psycopg_pool async with connection()", with_block(pp.connection)),
            (AP1, getput(ap.acquire, ap.release)),
            ("asyncpg Pool async with acquire()", with_block(ap.acquire)),
            ("asyncpg Pool acquire/release, reset=no-op", getput(apn.acquire, apn.release)),
        ]
        timing = await interleave(contenders, rounds=s.rounds1, chunks=s.chunks1, n=s.cycles1,
                                  budget=budget)
    # the reference of each round: the faster of the two peers' explicit calls in that round
    base_cpu = [min(a, b) for a, b in zip(timing.cpu[PP1], timing.cpu[AP1], strict=True)]
    base_wall = [min(a, b) for a, b in zip(timing.wall[PP1], timing.wall[AP1], strict=True)]
    rel_cpu, rel_wall = ratios(timing.cpu, base_cpu), ratios(timing.wall, base_wall)
    rows = [[name, f"{median(timing.cpu[name]) * 1e6:.2f}", fmt_ratio(rel_cpu[name]),
             f"{median(timing.wall[name]) * 1e6:.2f}", fmt_ratio(rel_wall[name])]
            for name in timing.cpu]
    print_table(
        f"1. acquire + release, no query, one task pinned to CPU 0, PostgreSQL "
        f"({len(base_cpu)} rounds x {s.chunks1 * s.cycles1} cycles)",
        ["contender", "CPU us/cycle", "x faster peer (CPU)", "wall us/cycle",
         "x faster peer (wall)"], rows,
        ["faster peer: the faster of psycopg_pool getconn/putconn and asyncpg Pool "
         "acquire/release in the same round (the ratio's denominator)",
         "CPU = process CPU time; target: poolkeeper <= 0.50x (CPU)", load_note(load0)])
    for label, _ in DRIVERS:
        for how in ("getconn/putconn", "async with connection()"):
            name = f"poolkeeper/{label} {how}"
            verdict(verdicts, f"section 1, {name} (CPU)", median(rel_cpu[name]), "<=", 0.50)
    results["section1"] = {"ratio_to": "min(psycopg_pool, asyncpg Pool) per round",
                           "cpu_s": timing.cpu, "wall_s": timing.wall,
                           "ratios_cpu": rel_cpu, "ratios_wall": rel_wall}


# ============================================================================ section 2
@dataclass
class TaskRun:
    ops: int
    per_task: list[int]
    latencies: list[float]
    elapsed: float
    cpu: float

    @property
    def qps(self) -> float:
        return self.ops / self.elapsed

    @property
    def fairness(self) -> float:
        most = max(self.per_task)
        return min(self.per_task) / most if most else 0.0


async def run_tasks(make_op: Callable[[int], Op], tasks: int, seconds: float) -> TaskRun:
    """``tasks`` tasks each repeating their op for ``seconds``; ops finished after the stop
    signal are not counted."""
    ops = [make_op(i) for i in range(tasks)]
    counts = [0] * tasks
    lats: list[list[float]] = [[] for _ in range(tasks)]
    stop = False
    start = asyncio.Event()
    pc = time.perf_counter

    async def work(i: int) -> None:
        op, append = ops[i], lats[i].append
        await start.wait()
        n = 0
        while n < MAX_OPS_PER_TASK:
            t0 = pc()
            await op()
            t1 = pc()
            if stop:
                break
            append(t1 - t0)
            n += 1
        counts[i] = n

    workers = [asyncio.create_task(work(i)) for i in range(tasks)]
    await asyncio.sleep(0)  # every task waits on the start event
    c0 = time.process_time()
    t0 = pc()
    start.set()
    await asyncio.sleep(seconds)
    stop = True
    elapsed = pc() - t0
    cpu = time.process_time() - c0
    done, late = await asyncio.wait(workers, timeout=60)
    if late:
        for w in late:
            w.cancel()
        raise RuntimeError(f"{len(late)} benchmark tasks did not stop within 60 s: "
                           "a pool deadlocked?")
    for w in done:
        w.result()  # an op that failed fails the benchmark, with its error
    return TaskRun(sum(counts), counts, [x for lst in lats for x in lst], elapsed, cpu)


def pooled_op(cm: Callable[[], Any], query: Callable[[Any], Awaitable[None]]) -> Op:
    async def op() -> None:
        async with cm() as conn:
            await query(conn)
    return op


DED4, DED32 = "dedicated: 4 tasks x 4 raw conns", "dedicated-32: 32 tasks, Lock per conn"


async def setup2(stack: Stack, label: str, scheme: str
                 ) -> list[tuple[str, Callable[[int], Op], int]]:
    """One driver's section-2 contenders: (name, op factory, task count)."""
    query = query_for(label)
    dedicated = [await raw_for(stack, label) for _ in range(POOL_SIZE)]
    locks = [asyncio.Lock() for _ in range(POOL_SIZE)]
    pk = await open_poolkeeper(stack, scheme, f"bench-aio-s2-{label}")
    pkn = await open_poolkeeper(stack, scheme, f"bench-aio-s2-{label}-nostats", stats=False)

    def raw_op(i: int) -> Op:
        conn = dedicated[i]

        async def op() -> None:
            await query(conn)
        return op

    def locked_op(i: int) -> Op:
        conn, lock = dedicated[i % POOL_SIZE], locks[i % POOL_SIZE]

        async def op() -> None:
            async with lock:
                await query(conn)
        return op

    workloads: list[tuple[str, Callable[[int], Op], int]] = [
        (DED4, raw_op, POOL_SIZE),
        (DED32, locked_op, TASKS),
        ("poolkeeper (stats on, default)", lambda i: pooled_op(pk.connection, query), TASKS),
        ("poolkeeper stats=False", lambda i: pooled_op(pkn.connection, query), TASKS),
    ]
    if label == "psycopg":
        pp = await open_psycopg_pool(stack, "bench-aio-s2")
        workloads.append(("psycopg_pool AsyncConnectionPool",
                          lambda i: pooled_op(pp.connection, query), TASKS))
    else:
        ap = await open_asyncpg_pool(stack)
        apn = await open_asyncpg_pool(stack, reset=False)
        workloads += [("asyncpg Pool (default reset)", lambda i: pooled_op(ap.acquire, query),
                       TASKS),
                      ("asyncpg Pool, reset=no-op", lambda i: pooled_op(apn.acquire, query),
                       TASKS)]
    for _, make, tasks in workloads:  # warm-up
        await run_tasks(make, tasks, 0.2)
    return workloads


async def section2(s: Settings, budget: Budget, results: dict[str, Any],
                   verdicts: list[str]) -> None:
    """SELECT 1 from 32 tasks sharing 4 connections vs 4 tasks on 4 dedicated connections."""
    out: dict[str, Any] = {}
    for label, scheme in DRIVERS:
        load0 = loadavg()
        async with contextlib.AsyncExitStack() as stack:
            workloads = await setup2(stack, label, scheme)
            runs: dict[str, list[TaskRun]] = {name: [] for name, _, _ in workloads}
            for r in range(s.rounds2):
                if r >= 3 and budget.expired():
                    print(f"  (time budget reached: {r} rounds instead of {s.rounds2})")
                    break
                k = r % len(workloads)
                for name, make, tasks in workloads[k:] + workloads[:k]:
                    gc.collect()
                    runs[name].append(await run_tasks(make, tasks, s.seconds2))
        base = [run.qps for run in runs[DED4]]
        base_p99 = [percentile(run.latencies, 0.99) for run in runs[DED32]]
        rows = []
        section: dict[str, Any] = {}
        for name, per in runs.items():
            rel = [run.qps / b for run, b in zip(per, base, strict=True)]
            fair = [run.fairness for run in per]
            p99 = [percentile(run.latencies, 0.99) for run in per]
            p99_rel = [p / b for p, b in zip(p99, base_p99, strict=True)]
            cpu_op = [run.cpu / max(1, run.ops) for run in per]
            rows.append([name, len(per[0].per_task), f"{median(run.qps for run in per):,.0f}",
                         fmt_ratio(rel), fmt_ratio(fair),
                         f"{median(percentile(run.latencies, 0.5) for run in per) * 1e3:.2f}",
                         f"{median(p99) * 1e3:.2f}", fmt_ratio(p99_rel),
                         f"{median(cpu_op) * 1e6:.1f}"])
            section[name] = {"qps": [run.qps for run in per], "ratio": rel, "fairness": fair,
                             "p99_s": p99, "p99_x_dedicated32": p99_rel, "cpu_s_per_op": cpu_op}
            if name.startswith("poolkeeper"):
                what = f"section 2, {label}, {name}"
                verdict(verdicts, f"{what}: throughput x dedicated", median(rel), ">=", 0.85)
                verdict(verdicts, f"{what}: p99 x dedicated-32", median(p99_rel), "<=", 2.0)
                verdicts.append(f"       {what}: fairness {median(fair):.2f} (min/max per task)")
        print_table(
            f"2. SELECT 1, {TASKS} tasks sharing {POOL_SIZE} connections, PostgreSQL via {label} "
            f"({len(base)} rounds x {s.seconds2:g} s per contender)",
            ["contender", "tasks", "queries/s", "x dedicated", "fairness", "p50 ms", "p99 ms",
             "p99 x ded-32", "CPU us/q"], rows,
            ["x dedicated: queries/s over those of 4 tasks on 4 dedicated raw connections in "
             "the same round; target >= 0.85",
             "fairness: fewest / most queries per task over the run (min/max, not Jain's)",
             "p99 x ded-32: p99 latency over that of 32 tasks sharing the 4 raw connections "
             "with an asyncio.Lock each, same round; target <= 2.0",
             "CPU us/q: process CPU time over the run / queries (client side)",
             load_note(load0)])
        out[label] = section
    results["section2"] = out


# ============================================================================ section 3
def pooled_loop(cm: Callable[[], Any], query: Callable[[Any], Awaitable[None]]) -> Run:
    async def run(n: int) -> None:
        for _ in range(n):
            async with cm() as conn:
                await query(conn)
    return run


def raw_loop(conn: Any, query: Callable[[Any], Awaitable[None]]) -> Run:
    async def run(n: int) -> None:
        for _ in range(n):
            await query(conn)
    return run


async def section3(s: Settings, budget: Budget, results: dict[str, Any],
                   verdicts: list[str]) -> None:
    """Single-task SELECT 1 through each pool relative to a raw connection of its driver."""
    for label, scheme in DRIVERS:
        load0 = loadavg()
        query = query_for(label)
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(pin_current_thread, pin_current_thread({0}))
            raw = await raw_for(stack, label)
            pk = await open_poolkeeper(stack, scheme, f"bench-aio-s3-{label}")
            pkn = await open_poolkeeper(stack, scheme, f"bench-aio-s3-{label}-nostats",
                                        stats=False)
            ref = f"raw {label} connection"
            contenders: list[tuple[str, Run]] = [
                (ref, raw_loop(raw, query)),
                ("poolkeeper async with connection() (stats on)",
                 pooled_loop(pk.connection, query)),
                ("poolkeeper stats=False", pooled_loop(pkn.connection, query)),
            ]
            if label == "psycopg":
                pp = await open_psycopg_pool(stack, "bench-aio-s3")
                contenders.append(("psycopg_pool AsyncConnectionPool",
                                   pooled_loop(pp.connection, query)))
            else:
                ap = await open_asyncpg_pool(stack)
                contenders.append(("asyncpg Pool (default reset)", pooled_loop(ap.acquire, query)))
            with psycopg.connect(pg_dsn()) as sync_conn:  # to find this process's sessions
                pinned = pin_pg_backends(sync_conn, {0})
            timing = await interleave(contenders, rounds=s.rounds3, chunks=s.chunks3,
                                      n=s.queries3, budget=budget)
            validations = pk.stats()["validations_num"]
        rel_wall = ratios(timing.wall, timing.wall[ref])
        rel_cpu = ratios(timing.cpu, timing.cpu[ref])
        rows = [[name, f"{median(timing.wall[name]) * 1e6:.1f}", fmt_ratio(rel_wall[name]),
                 f"{median(timing.cpu[name]) * 1e6:.1f}", fmt_ratio(rel_cpu[name])]
                for name in timing.wall]
        where = (f"client and {pinned} server processes pinned to CPU 0" if pinned else
                 "client pinned to CPU 0 (server processes could not be pinned)")
        print_table(
            f"3. single-task SELECT 1 (borrow, execute, fetch, return), PostgreSQL via {label}, "
            f"{where} ({len(timing.wall[ref])} rounds x {s.chunks3 * s.queries3} queries)",
            ["contender", "wall us/query", "x raw (wall)", "CPU us/query", "x raw (CPU)"], rows,
            [f"target: poolkeeper <= 1.10x raw; poolkeeper validations (pings) during the run: "
             f"{validations}", load_note(load0)])
        for name in ("poolkeeper async with connection() (stats on)", "poolkeeper stats=False"):
            what = f"section 3, {label}, {name}"
            verdict(verdicts, f"{what} (wall)", median(rel_wall[name]), "<=", 1.10)
            verdict(verdicts, f"{what} (CPU)", median(rel_cpu[name]), "<=", 1.10)
        results[f"section3_{label}"] = {"setup": where, "ratio_to": ref, "wall_s": timing.wall,
                                        "cpu_s": timing.cpu, "ratios_wall": rel_wall,
                                        "ratios_cpu": rel_cpu}


# ============================================================================ main
def verdict(verdicts: list[str], what: str, value: float, op: str, target: float) -> None:
    ok = value <= target if op == "<=" else value >= target
    mark = "MET   " if ok else "MISSED"
    verdicts.append(f"{mark} {what}: {value:.2f} (target {op} {target:.2f})")


async def run_sections(s: Settings, sections: set[str], results: dict[str, Any]) -> list[str]:
    verdicts: list[str] = []
    if "1" in sections:
        await section1(s, Budget(s.budget_s), results, verdicts)
    if "2" in sections:
        await section2(s, Budget(s.budget_s), results, verdicts)
    if "3" in sections:
        await section3(s, Budget(s.budget_s), results, verdicts)
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (about 25 s)")
    parser.add_argument("--sections", default="1,2,3", help="comma-separated: 1,2,3 (default all)")
    parser.add_argument("--rounds", type=int, help="rounds per section (overrides the preset)")
    parser.add_argument("--seconds", type=float, help="seconds per contender run in section 2")
    parser.add_argument("--json", metavar="PATH", help="also write every per-round figure here")
    args = parser.parse_args(argv)
    s = QUICK if args.quick else FULL
    if args.rounds:
        s = dataclasses.replace(s, rounds1=args.rounds, rounds2=args.rounds, rounds3=args.rounds)
    if args.seconds:
        s = dataclasses.replace(s, seconds2=args.seconds)
    sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    logging.basicConfig(level=logging.WARNING)

    print(f"poolkeeper asyncio benchmarks ({'quick' if args.quick else 'full'}): "
          f"{machine_summary()}")
    print(versions("poolkeeper", "psycopg", "psycopg-pool", "asyncpg"))
    print(code_fingerprint(AIO_MODULES))
    print(f"pool size {POOL_SIZE}, autocommit, query {QUERY!r}, default asyncio event loop")
    results: dict[str, Any] = {"machine": machine_summary(), "code": code_fingerprint(AIO_MODULES),
                               "quick": args.quick}
    started = time.monotonic()
    verdicts = asyncio.run(run_sections(s, sections, results))
    print(f"\nTargets ({time.monotonic() - started:.0f} s):")
    for line in verdicts:
        print(f"  {line}")
    results["verdicts"] = verdicts
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
