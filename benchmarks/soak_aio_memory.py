"""Memory soak for the asyncio pool: a million acquire/release cycles and 100,000 cancelled
acquires through ``AsyncPool`` must not grow the process.

    .venv/bin/python benchmarks/soak_aio_memory.py            # 1,000,000 cycles, 100,000 cancels
    .venv/bin/python benchmarks/soak_aio_memory.py --quick    # 100,000 cycles, 10,000 cancels
    .venv/bin/python benchmarks/soak_aio_memory.py --dsn postgresql+asyncpg://postgres@127.0.0.1:5432/test

The default database is ``sqlite://`` (in memory, aiosqlite): an acquire/release cycle with
no query never reaches the driver (the transaction state is read locally), so the pool's own
code is all that runs, without a server round trip in the way; ``--dsn`` runs the same soak on
any other backend. The cycles mix ``getconn``/``putconn`` and ``async with pool.connection()``,
a ``SELECT 1`` every 100th cycle, a cursor left open every 1,000th (closed by the return's
reset; on asyncpg, which has no cursors, a transaction left open), statistics read and reset,
and bursts of 8 tasks sharing the 4 connections (waiters, hand-offs). The cancelled acquires
queue a batch of tasks for a connection while every connection is held, then cancel them:
most while queued, some just after a connection was handed to them (the release and the
cancel in the same loop iteration), so both of ``_wait``'s cancellation paths run.
Afterwards the pool must hold every connection idle, no waiter and no extra task.

RSS and tracemalloc's traced bytes are sampled after a warm-up and at the end of each part,
after full garbage collections; the script exits 1 when either grew by more than the budget
(1 MB by default) or a check failed, and prints the allocation sites that grew most.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import tracemalloc
from typing import Any

from _common import AIO_MODULES, code_fingerprint, machine_summary, print_table, rss_bytes

from poolkeeper import AsyncPool
from poolkeeper.config import mask_dsn

__all__ = ["main"]

MB = 1 << 20
POOL_SIZE = 4
BURST_TASKS = 8
BURST_EVERY = 50_000  # cycles between contended bursts
BURST_CYCLES = 2_000  # cycles per burst, shared by its tasks
CANCEL_BATCH = 50  # waiters queued, then cancelled, at a time


async def select_one(conn: Any) -> None:
    """``SELECT 1`` in the proxy's own API (asyncpg's ``fetchval``, or a DB-API cursor)."""
    if hasattr(conn, "fetchval"):
        await conn.fetchval("SELECT 1")
    else:
        await (await conn.execute("SELECT 1")).fetchone()


async def leave_work_for_the_reset(conn: Any) -> None:
    """Leave the return something to undo on the server: a cursor left open (DB-API drivers,
    closed by the return) or, on asyncpg, which has no cursors, an open transaction (rolled
    back by the return)."""
    if hasattr(conn, "fetchval"):
        await conn.execute("BEGIN")
    else:
        await conn.cursor().execute("SELECT 1")


async def one_cycle(pool: AsyncPool, i: int) -> None:
    """One acquire + release, choosing the path from the cycle number."""
    if i % 2:
        conn = await pool.getconn()
        if i % 100 == 1:
            await select_one(conn)
        await pool.putconn(conn)
        return
    async with pool.connection() as conn:
        if i % 1000 == 0:
            await leave_work_for_the_reset(conn)


async def burst(pool: AsyncPool, cycles: int, deadline: float) -> int:
    """``cycles`` cycles spread over BURST_TASKS tasks; cycles done."""
    per_task = cycles // BURST_TASKS
    done = [0] * BURST_TASKS

    async def work(k: int) -> None:
        for j in range(per_task):
            if time.monotonic() >= deadline:
                return
            async with pool.connection() as conn:
                if j % 50 == 0:
                    await select_one(conn)
                await asyncio.sleep(0)  # hold across a suspension: the others queue
            done[k] += 1

    tasks = [asyncio.create_task(work(k)) for k in range(BURST_TASKS)]
    _, late = await asyncio.wait(tasks, timeout=max(1.0, deadline - time.monotonic() + 5.0))
    if late:
        for t in late:
            t.cancel()
        raise RuntimeError(f"{len(late)} burst tasks did not finish: the pool deadlocked?")
    for t in tasks:
        t.result()
    return sum(done)


#: pool counters summed over every pop_stats() of the soak
TOTALS = dict.fromkeys(("requests_num", "handoffs_num", "connections_num"), 0)


def pop_totals(pool: AsyncPool) -> None:
    popped = pool.pop_stats()
    for key in TOTALS:
        TOTALS[key] += int(popped[key])


async def run_cycles(pool: AsyncPool, cycles: int, deadline: float, start: int = 0) -> int:
    """Run ``cycles`` cycles (bursts included); how many ran before the deadline."""
    done = 0
    i = start
    while done < cycles and time.monotonic() < deadline:
        if i % BURST_EVERY == BURST_EVERY - 1:
            done += await burst(pool, min(BURST_CYCLES, cycles - done), deadline)
        else:
            await one_cycle(pool, i)
            done += 1
        if i % 10_000 == 0:
            if i % 20_000 == 0:
                pop_totals(pool)
            else:
                pool.stats()
        i += 1
    return done


async def run_cancels(pool: AsyncPool, cancels: int, deadline: float) -> tuple[int, int]:
    """Queue CANCEL_BATCH acquires while every connection is held, then cancel them. Every
    fourth batch releases one connection first, in the same loop iteration as the cancels,
    so the oldest waiter is cancelled after the hand-off. Returns (cancelled, got one)."""
    cancelled = served = 0
    batch_no = 0
    held = [await pool.getconn() for _ in range(POOL_SIZE)]
    try:
        while cancelled + served < cancels and time.monotonic() < deadline:
            n = min(CANCEL_BATCH, cancels - cancelled - served)
            waiters = [asyncio.create_task(pool.getconn()) for _ in range(n)]
            await asyncio.sleep(0)  # every one of them queued in the bag
            if batch_no % 4 == 3:
                await pool.putconn(held.pop())  # handed to the oldest waiter, not yet woken
            for w in waiters:
                w.cancel()
            for w in waiters:
                try:
                    conn = await w
                except asyncio.CancelledError:
                    cancelled += 1
                else:  # it ran to the end before the cancel could land: a normal borrow
                    served += 1
                    await pool.putconn(conn)
            while len(held) < POOL_SIZE:
                held.append(await pool.getconn(timeout=5.0))
            batch_no += 1
    finally:
        for conn in held:
            await pool.putconn(conn)
    return cancelled, served


def measure() -> tuple[int, int]:
    gc.collect()
    gc.collect()
    return rss_bytes(), tracemalloc.get_traced_memory()[0]


async def soak(dsn: str, cycles: int, cancels: int, max_seconds: float,
               budget: int) -> list[str]:
    """Both parts; the failures (empty: passed)."""
    warmup = min(50_000, max(10_000, cycles // 10))
    failed: list[str] = []
    rows: list[list[str]] = []
    async with AsyncPool(dsn, name="aio-soak", min_idle=POOL_SIZE, max_size=POOL_SIZE) as pool:
        await pool.wait_ready(30)
        deadline = time.monotonic() + max_seconds
        baseline_tasks = len(pool.tasks)
        # Warm-up: every path once (cancels included), caches and free lists at their size.
        await run_cycles(pool, warmup, deadline)
        await burst(pool, BURST_CYCLES, deadline)
        await run_cancels(pool, min(2_000, cancels), deadline)
        snap0 = tracemalloc.take_snapshot()  # first: its own megabytes must not count
        for part, amount in (("acquire/release cycles", cycles), ("cancelled acquires", cancels)):
            rss0, traced0 = measure()
            t0 = time.monotonic()
            if part.startswith("acquire"):
                done = await run_cycles(pool, amount, deadline, start=warmup)
                what = f"{done:,} cycles"
            else:
                got, served = await run_cancels(pool, amount, deadline)
                done = got + served
                what = f"{got:,} cancelled, {served:,} served before the cancel"
            elapsed = time.monotonic() - t0
            rss1, traced1 = measure()
            d_rss, d_traced = rss1 - rss0, traced1 - traced0
            rows.append([part, what, f"{elapsed:.1f}", f"{done / elapsed:,.0f}",
                         f"{rss0 / MB:.2f} MB", f"{d_rss / 1024:+.1f} KiB",
                         f"{traced0 / MB:.2f} MB", f"{d_traced / 1024:+.1f} KiB"])
            if done < amount:
                failed.append(f"{part}: only {done:,} of {amount:,} ran within "
                              f"{max_seconds:g} s")
            if d_rss > budget:
                failed.append(f"{part}: RSS grew by {d_rss / 1024:.0f} KiB "
                              f"(budget {budget / 1024:.0f} KiB)")
            if d_traced > budget:
                failed.append(f"{part}: traced memory grew by {d_traced / 1024:.0f} KiB "
                              f"(budget {budget / 1024:.0f} KiB)")
        snap1 = tracemalloc.take_snapshot()
        await asyncio.sleep(0.05)  # resets in flight (the cursors left open) end
        st = pool.stats()
        counts: dict[str, Any] = {"idle": st["pool_available"], "total": st["pool_size"],
                                  "waiting": st["requests_waiting"]}
        tasks_left = len(pool.tasks)
        pop_totals(pool)
    checks = [
        (f"every connection idle at the end (idle {counts['idle']} of {counts['total']})",
         counts["idle"] == counts["total"] == POOL_SIZE),
        (f"no waiter left queued ({counts['waiting']})", counts["waiting"] == 0),
        (f"no task left but the pool's own ({tasks_left}, {baseline_tasks} at the start)",
         tasks_left <= baseline_tasks),
    ]
    print_table(f"memory after warm-up vs after each part ({mask_dsn(dsn)}, tracemalloc on)",
                ["part", "done", "seconds", "per s", "RSS before", "RSS growth",
                 "traced before", "traced growth"], rows,
                [f"budget per part: {budget / 1024:.0f} KiB of RSS and of traced memory",
                 "pool counters over the whole soak: "
                 + ", ".join(f"{key}={value:,}" for key, value in TOTALS.items())]
                + [f"{'ok    ' if ok else 'FAILED'} {what}" for what, ok in checks])
    failed += [f"check failed: {what}" for what, ok in checks if not ok]
    if failed:
        print("allocation sites that grew most:")
        for stat in snap1.compare_to(snap0, "lineno")[:15]:
            print(f"  {stat}")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="100,000 cycles and 10,000 cancels instead of 1,000,000 and 100,000")
    parser.add_argument("--cycles", type=int, help="acquire/release cycles (overrides --quick)")
    parser.add_argument("--cancels", type=int, help="cancelled acquires (overrides --quick)")
    parser.add_argument("--dsn", default="sqlite://:memory:",
                        help="database (default sqlite://:memory:, aiosqlite)")
    parser.add_argument("--budget-mb", type=float, default=1.0,
                        help="allowed growth of RSS and of traced memory per part (default 1 MB)")
    parser.add_argument("--max-seconds", type=float,
                        help="stop after this long (default 120 quick, 900 full)")
    args = parser.parse_args(argv)
    cycles = args.cycles or (100_000 if args.quick else 1_000_000)
    cancels = args.cancels or (10_000 if args.quick else 100_000)
    max_seconds = args.max_seconds or (120.0 if args.quick else 900.0)
    budget = int(args.budget_mb * MB)
    print(f"poolkeeper asyncio memory soak: {cycles:,} cycles, {cancels:,} cancelled acquires "
          f"on {mask_dsn(args.dsn)}; {machine_summary()}")
    print(code_fingerprint(AIO_MODULES))
    tracemalloc.start(1)  # one frame: 10 make the loop 8x slower, and lineno is enough
    try:
        failed = asyncio.run(soak(args.dsn, cycles, cancels, max_seconds, budget))
    finally:
        tracemalloc.stop()
    if failed:
        print("\nFAIL: " + "; ".join(failed))
        return 1
    print(f"\nOK: growth within {args.budget_mb:g} MB per part over {cycles:,} cycles and "
          f"{cancels:,} cancelled acquires")
    return 0


if __name__ == "__main__":
    sys.exit(main())
