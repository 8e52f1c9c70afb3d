"""Memory soak: a million borrow/return cycles through poolkeeper must not grow the process.

    .venv/bin/python benchmarks/soak_pool_memory.py            # 1,000,000 cycles
    .venv/bin/python benchmarks/soak_pool_memory.py --quick    # 100,000 cycles
    .venv/bin/python benchmarks/soak_pool_memory.py --dsn mysql://root@127.0.0.1:3306/test

The cycles mix every path a long-lived application takes: ``getconn``/``putconn``,
``with pool.connection()``, a ``SELECT 1`` every 100th cycle, a cursor left open every 1,000th
(closed by the return), statistics read and reset, and bursts of 8 threads sharing 4 connections
(waiters, hand-offs, leases, parked connections, threads that end while holding a lease).
Resident memory (RSS) and tracemalloc's traced bytes are sampled after a warm-up and at the
end, each after a full garbage collection; the script exits 1 when either grew by more than
the budget (1 MB by default) and then prints the allocation sites that grew most.
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
import tracemalloc
from typing import Any

from _common import PG_DSN, code_fingerprint, machine_summary, print_table, rss_bytes

from poolkeeper import Pool

__all__ = ["main"]

MB = 1 << 20
POOL_SIZE = 4
BURST_THREADS = 8
BURST_EVERY = 50_000  # cycles between contended bursts
BURST_CYCLES = 2_000  # cycles per burst, shared by its threads


def one_cycle(pool: Pool, i: int) -> None:
    """One borrow + return, choosing the path from the cycle number."""
    if i % 2:
        conn = pool.getconn()
        if i % 100 == 1:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            cur.fetchone()
            cur.close()
        pool.putconn(conn)
        return
    with pool.connection() as conn:
        if i % 1000 == 0:
            conn.cursor().execute("SELECT 1")  # left open on purpose: the return closes it


def burst(pool: Pool, cycles: int, deadline: float) -> int:
    """``cycles`` borrow/return cycles spread over BURST_THREADS threads; cycles done."""
    per_thread = cycles // BURST_THREADS
    done = [0] * BURST_THREADS

    def work(k: int) -> None:
        for j in range(per_thread):
            if time.monotonic() >= deadline:
                return
            with pool.connection() as conn:
                if j % 50 == 0:
                    conn.execute("SELECT 1").fetchone()
            done[k] += 1

    threads = [threading.Thread(target=work, args=(k,), name=f"soak-burst-{k}", daemon=True)
               for k in range(BURST_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic() + 5.0))
    if any(t.is_alive() for t in threads):
        raise RuntimeError("a burst thread did not finish: the pool deadlocked?")
    return sum(done)


#: pool counters summed over every pop_stats() of the soak
TOTALS = dict.fromkeys(("requests_num", "handoffs_num", "lease_parks_num", "lease_reuses_num",
                        "connections_num"), 0)


def run_cycles(pool: Pool, cycles: int, deadline: float, start: int = 0,
               on_progress: Any = None) -> int:
    """Run ``cycles`` cycles (bursts included); returns how many ran before the deadline."""
    done = 0
    i = start
    step = max(1, cycles // 10)
    next_report = step
    while done < cycles and time.monotonic() < deadline:
        if i % BURST_EVERY == BURST_EVERY - 1:
            done += burst(pool, min(BURST_CYCLES, cycles - done), deadline)
        else:
            one_cycle(pool, i)
            done += 1
        if i % 10_000 == 0:
            if i % 20_000 == 0:
                popped = pool.pop_stats()
                for key in TOTALS:
                    TOTALS[key] += int(popped[key])
            else:
                pool.stats()
        i += 1
        if on_progress is not None and done >= next_report:
            on_progress(done)
            next_report += step
    return done


def measure() -> tuple[int, int]:
    gc.collect()
    gc.collect()
    return rss_bytes(), tracemalloc.get_traced_memory()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="100,000 cycles instead of 1,000,000")
    parser.add_argument("--cycles", type=int, help="number of cycles (overrides --quick)")
    parser.add_argument("--dsn", default=PG_DSN, help=f"database (default {PG_DSN})")
    parser.add_argument("--budget-mb", type=float, default=1.0,
                        help="allowed growth of RSS and of traced memory (default 1 MB)")
    parser.add_argument("--max-seconds", type=float,
                        help="stop the cycles after this long (default 60 quick, 600 full)")
    args = parser.parse_args(argv)
    cycles = args.cycles or (100_000 if args.quick else 1_000_000)
    max_seconds = args.max_seconds or (60.0 if args.quick else 600.0)
    warmup = min(50_000, max(10_000, cycles // 10))
    budget = int(args.budget_mb * MB)

    print(f"poolkeeper memory soak: {cycles:,} cycles on {args.dsn.split('@')[-1]}; "
          f"{machine_summary()}")
    print(code_fingerprint())
    tracemalloc.start(10)
    pool = Pool(args.dsn, name="soak", min_idle=POOL_SIZE, max_size=POOL_SIZE)
    try:
        pool.wait_ready(30)
        started = time.monotonic()
        deadline = started + max_seconds
        # Warm-up: every code path once, caches and free lists at their working size, and a
        # burst, so that the measured part starts from the steady state.
        run_cycles(pool, warmup, deadline, start=0)
        burst(pool, BURST_CYCLES, deadline)
        # The snapshot first: it costs megabytes of RSS, which must not count as growth.
        snap0 = tracemalloc.take_snapshot()
        rss0, traced0 = measure()
        samples: list[list[str]] = []
        t0 = time.monotonic()

        def progress(done: int) -> None:
            rss, traced = rss_bytes(), tracemalloc.get_traced_memory()[0]
            samples.append([f"{done:,}", f"{time.monotonic() - t0:.1f}",
                            f"{(rss - rss0) / 1024:+.0f}", f"{(traced - traced0) / 1024:+.1f}"])

        done = run_cycles(pool, cycles, deadline, start=warmup, on_progress=progress)
        elapsed = time.monotonic() - t0
        rss1, traced1 = measure()
        snap1 = tracemalloc.take_snapshot()
        peak = tracemalloc.get_traced_memory()[1]
        stats = pool.pop_stats()
        for key in TOTALS:
            TOTALS[key] += int(stats[key])
    finally:
        pool.close()
        # Never leave a thread behind, even on failure.
        tracemalloc.stop()

    print_table("growth while cycling (sampled without a collection; the verdict uses the "
                "collected figures below)",
                ["cycles", "seconds", "RSS KiB", "traced KiB"], samples)
    d_rss, d_traced = rss1 - rss0, traced1 - traced0
    print_table(
        f"memory after warm-up vs after {done:,} cycles ({elapsed:.1f} s, "
        f"{done / elapsed:,.0f} cycles/s with tracemalloc on)",
        ["measure", "after warm-up", "at the end", "growth", "budget"],
        [["RSS", f"{rss0 / MB:.2f} MB", f"{rss1 / MB:.2f} MB", f"{d_rss / 1024:+.1f} KiB",
          f"{budget / 1024:.0f} KiB"],
         ["tracemalloc current", f"{traced0 / MB:.2f} MB", f"{traced1 / MB:.2f} MB",
          f"{d_traced / 1024:+.1f} KiB", f"{budget / 1024:.0f} KiB"],
         ["tracemalloc peak", "", f"{peak / MB:.2f} MB", "", ""]],
        ["pool counters over the whole soak: "
         + ", ".join(f"{key}={value:,}" for key, value in TOTALS.items())])
    failed = []
    if done < cycles:
        failed.append(f"only {done:,} of {cycles:,} cycles ran within {max_seconds:g} s")
    if d_rss > budget:
        failed.append(f"RSS grew by {d_rss / 1024:.0f} KiB (budget {budget / 1024:.0f} KiB)")
    if d_traced > budget:
        failed.append(f"traced memory grew by {d_traced / 1024:.0f} KiB "
                      f"(budget {budget / 1024:.0f} KiB)")
    if failed:
        print("\nFAIL: " + "; ".join(failed))
        print("allocation sites that grew most:")
        for stat in snap1.compare_to(snap0, "lineno")[:15]:
            print(f"  {stat}")
        return 1
    print(f"\nOK: growth within {args.budget_mb:g} MB over {done:,} cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
