"""Seed 004 as a benchmark: a one-hour query timeout around a million statements.

MySQL Connector/J scheduled a ``TimerTask`` per statement with a query timeout; ``cancel()``
only flagged it, so every statement run within the timeout stayed queued: 290,000 tasks, 2 GB.

Part 1, cost (one thread, median of interleaved rounds):
  - a bare ``call_later`` + ``cancel`` pair on the shared scheduler (target < 1.5 us);
  - the work ``TimeoutHook`` adds to one statement, measured around a no-op driver call.

Part 2, memory: ``--pairs`` statements (default 1,000,000) driven through ``TimeoutHook``
exactly as the pool drives it (schedule before the driver call, cancel after), on
``--threads`` threads, with ``query_timeout=3600``. Scheduler entries must stay at most the
statements in flight (plus flagged entries, which never outnumber the live ones), and RSS and
tracemalloc growth must stay under 2 MB. Next to it, the same drive through a naive timer that
only flags cancelled entries (java.util.Timer's behaviour, hence Connector/J's): it grows with
every statement run.

Part 3 (``--pg``): PostgreSQL ``SELECT 1`` through a pool, with and without the hook
(target: under 2 us or 2 % added per statement).

Exit status 1 when poolkeeper's growth exceeds the 2 MB budget.

    python benchmarks/bench_timeouts_memory.py [--quick] [--pairs N] [--threads T] [--pg [--pin]]
"""

from __future__ import annotations

import argparse
import gc
import heapq
import itertools
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from _common import (
    code_fingerprint,
    hook_runner,
    machine_summary,
    median,
    pg_dsn,
    pin_current_thread,
    pin_pg_backends,
    print_table,
    rss_bytes,
)

from poolkeeper.drivers.cancel import Canceller, make_canceller
from poolkeeper.hooks.timeouts import TimeoutHook
from poolkeeper.scheduler import acquire_scheduler, scheduler_stats

BUDGET_BYTES = 2 << 20
TIMEOUT_S = 3600.0
Execute = Callable[[Any, Any, Any, Any, bool], Any]


class _NoDriver:
    """Just enough of a driver adapter for the hook (the soak never reaches a cancel)."""

    name = "sqlite"
    connect_timeout = 1.0

    def canceller(self, timeout: float = 5.0) -> Canceller:
        return make_canceller("sqlite", timeout=timeout)


def _noop_execute(cursor: Any, raw: Any, query: Any, params: Any, many: bool) -> Any:
    return None


# --------------------------------------------------------------------------- the seed, naive
class _FlaggedTask:
    __slots__ = ("callback", "state")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.state = 0

    def cancel(self) -> bool:
        # java.util.TimerTask.cancel(): flag only; the queue keeps the task until its time
        was = self.state == 0
        self.state = 1
        return was


class NaiveTimer:
    """One queue shared by all statements, cancel only flags: Connector/J's ``CancelTask``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: list[tuple[float, int, _FlaggedTask]] = []
        self.seq = itertools.count()

    def schedule(self, delay: float, callback: Callable[[], object]) -> _FlaggedTask:
        task = _FlaggedTask(callback)
        with self.lock:
            heapq.heappush(self.queue, (time.monotonic() + delay, next(self.seq), task))
        return task


class NaiveHook:
    """The same middleware shape as TimeoutHook, on the naive timer."""

    def __init__(self, timer: NaiveTimer, timeout: float) -> None:
        self.timer = timer
        self.timeout = timeout

    def wrap(self, inner: Execute) -> Execute:
        timer, timeout = self.timer, self.timeout

        def execute(cursor: Any, raw: Any, query: Any, params: Any, many: bool) -> Any:
            task = timer.schedule(timeout, lambda: None)
            try:
                return inner(cursor, raw, query, params, many)
            finally:
                task.cancel()

        return execute


# --------------------------------------------------------------------------- part 1: cost
def cost_per_pair(rounds: int, n: int) -> list[list[str]]:
    lease = acquire_scheduler("bench-cost")
    hook = TimeoutHook(_NoDriver(), query_timeout=TIMEOUT_S, name="bench-cost")
    hooked = hook_runner(hook, _noop_execute, _NoDriver())
    bare = _noop_execute
    call_later = lease.call_later

    def cb() -> None:
        pass

    # CPU time of this thread, not wall time: the machine is shared, and a wall clock counts
    # the time other processes held the CPU as if the scheduler had spent it.
    clock = time.thread_time

    def run_pairs() -> float:
        t = clock()
        for _ in range(n):
            call_later(TIMEOUT_S, cb).cancel()
        return (clock() - t) / n * 1e6

    def run_exec(fn: Execute) -> float:
        t = clock()
        for _ in range(n):
            fn(None, None, "SELECT 1", None, False)
        return (clock() - t) / n * 1e6

    pairs, added = [], []
    try:
        for _ in range(rounds):
            pairs.append(run_pairs())
            with_hook = run_exec(hooked)
            without = run_exec(bare)
            added.append(with_hook - without)
    finally:
        hook.close()
        lease.release()
    return [
        ["call_later + cancel (scheduler)", f"{median(pairs):.3f}", f"{min(pairs):.3f}",
         "< 1.5"],
        ["TimeoutHook, added per statement", f"{median(added):.3f}", f"{min(added):.3f}",
         "< 2.0"],
    ]


# --------------------------------------------------------------------------- part 2: memory
def soak(wrap: Callable[[Execute], Execute], pairs: int, threads: int,
         probe: Callable[[], tuple[int, int]]) -> dict[str, Any]:
    """Drive ``pairs`` statements through ``wrap(no-op)`` on ``threads`` threads."""
    execute = wrap(_noop_execute)
    for _ in range(20_000):  # warm-up: free lists, the heap's array, code caches
        execute(None, None, "SELECT 1", None, False)
    gc.collect()
    tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    rss_before = rss_bytes()
    per_thread = pairs // threads
    stop = threading.Event()
    highest = {"live": -1, "queued": 0}

    def sample() -> None:
        while not stop.wait(0.02):
            live, queued = probe()
            highest["live"] = max(highest["live"], live)
            highest["queued"] = max(highest["queued"], queued)

    def work() -> None:
        for _ in range(per_thread):
            execute(None, None, "SELECT 1", None, False)

    sampler = threading.Thread(target=sample, name="bench-sampler", daemon=True)
    sampler.start()
    started = time.perf_counter()
    workers = [threading.Thread(target=work, name=f"bench-{i}") for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    live, queued = probe()
    gc.collect()
    traced_after, traced_peak = tracemalloc.get_traced_memory()
    rss_after = rss_bytes()
    tracemalloc.stop()
    return {
        "statements": per_thread * threads,
        "elapsed_s": elapsed,
        "live_now": live,
        "queued_now": queued,
        "live_max": highest["live"],
        "queued_max": highest["queued"],
        "traced": traced_after - traced_before,
        "traced_peak": traced_peak - traced_before,
        "rss": rss_after - rss_before,
    }


def _mb(n: float) -> str:
    return f"{n / (1 << 20):.2f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (< 60 s)")
    parser.add_argument("--pairs", type=int, default=None, help="statements (default 1e6)")
    parser.add_argument("--threads", type=int, default=8, help="threads running statements")
    parser.add_argument("--naive-pairs", type=int, default=None,
                        help="statements through the naive timer (default: as --pairs)")
    parser.add_argument("--pg", action="store_true", help="also time SELECT 1 on PostgreSQL")
    parser.add_argument("--pin", action="store_true",
                        help="with --pg: pin client and backend to CPU 0 (quiet machines)")
    args = parser.parse_args()
    pairs = args.pairs or (200_000 if args.quick else 1_000_000)
    naive_pairs = args.naive_pairs or pairs
    threads = max(1, args.threads)

    print(machine_summary())
    print(code_fingerprint())

    rows = cost_per_pair(rounds=5 if args.quick else 11, n=50_000 if args.quick else 200_000)
    print_table("Part 1: cost per statement (us)", ["what", "median", "best", "target"], rows,
                ["one thread, query_timeout=3600, no database: the bookkeeping alone",
                 "thread CPU time (time.thread_time), so other processes' load is not counted"])

    hook = TimeoutHook(_NoDriver(), query_timeout=TIMEOUT_S, name="bench-soak")

    def pk_probe() -> tuple[int, int]:
        s = scheduler_stats()
        live = s["scheduler_entries_now"]
        return live, live + s["scheduler_cancelled_pending"]

    pk = soak(lambda inner: hook_runner(hook, inner, _NoDriver()), pairs, threads, pk_probe)
    pk_max_heap = scheduler_stats()["scheduler_entries_max"]
    hook.close()

    timer = NaiveTimer()
    naive_hook = NaiveHook(timer, TIMEOUT_S)

    def naive_probe() -> tuple[int, int]:
        return -1, len(timer.queue)  # live entries: not counted (a scan of the whole queue)

    naive = soak(naive_hook.wrap, naive_pairs, threads, naive_probe)

    def row(name: str, r: dict[str, Any]) -> list[str]:
        live = "-" if r["live_max"] < 0 else str(r["live_max"])
        return [name, f"{r['statements']:,}", f"{r['elapsed_s']:.1f}", live,
                f"{r['queued_now']:,}", f"{r['queued_max']:,}", _mb(r["traced"]),
                _mb(r["traced_peak"]), _mb(r["rss"]),
                f"{max(r['traced'], 0) / max(r['statements'], 1):.1f}"]

    print_table(
        f"Part 2: memory after the run, query_timeout={TIMEOUT_S:g} s, {threads} threads",
        ["timer", "statements", "s", "live max", "queued now", "queued max", "traced growth",
         "traced peak", "RSS growth", "B/stmt"],
        [row("poolkeeper scheduler", pk), row("naive flag-only timer (seed)", naive)],
        [f"in flight at most {threads} (one statement per thread); 'queued' counts live + "
         "cancelled entries still held (the naive count includes 20,000 warm-up statements)",
         f"poolkeeper heap high-water mark over the process: {pk_max_heap} entries "
         f"(bound: 2 x in flight + 1 = {2 * threads + 1})",
         f"budget: poolkeeper growth under {_mb(BUDGET_BYTES)} (tracemalloc and RSS)",
         "Connector/J's CancelTask was ~7 KB: 290,000 statements in the hour = 2 GB"])

    if args.pg:
        pg_rows = select1_cost(rounds=5 if args.quick else 15, n=500 if args.quick else 2000,
                               pin=args.pin)
        print_table("Part 3: PostgreSQL SELECT 1 per statement (us, medians)",
                    ["measure", "timeouts off", "on (3600 s)", "added"], pg_rows,
                    ["borrow once, execute + fetchall in a loop; interleaved rounds",
                     "client CPU is the steadier figure on a shared machine"])

    failed = []
    if pk["traced"] > BUDGET_BYTES:
        failed.append(f"tracemalloc growth {_mb(pk['traced'])}")
    if pk["rss"] > BUDGET_BYTES:
        failed.append(f"RSS growth {_mb(pk['rss'])}")
    if pk["queued_now"] != 0:
        failed.append(f"{pk['queued_now']} scheduler entries left after the run")
    if failed:
        print(f"\nFAIL: poolkeeper over budget: {', '.join(failed)}")
        return 1
    print(f"\nOK: poolkeeper stayed within {_mb(BUDGET_BYTES)}; the naive timer grew by "
          f"{_mb(naive['traced'])} for {naive['statements']:,} statements")
    return 0


def select1_cost(rounds: int, n: int, pin: bool) -> list[list[str]]:
    from poolkeeper import Pool

    # Pinning the client and its backend on one CPU removes cross-CPU wake-ups on a quiet
    # machine; on a busy one it queues both behind other processes, so it is optional.
    previous = pin_current_thread({0}) if pin else None
    with Pool(pg_dsn(), max_size=1, min_idle=1) as pool:
        hook = TimeoutHook(pool.driver, query_timeout=TIMEOUT_S, name=pool.name)
        try:
            if pin:
                with pool.connection() as conn:
                    pin_pg_backends(conn.raw, {0})

            def run(with_hook: bool) -> tuple[float, float]:
                if with_hook:
                    pool.add_hook(hook)
                try:
                    with pool.connection() as conn:
                        cur = conn.cursor()
                        t, c = time.perf_counter(), time.thread_time()
                        for _ in range(n):
                            cur.execute("SELECT 1")
                            cur.fetchall()
                        return ((time.perf_counter() - t) / n * 1e6,
                                (time.thread_time() - c) / n * 1e6)
                finally:
                    if with_hook:
                        pool.remove_hook(hook)

            off: list[tuple[float, float]] = []
            on: list[tuple[float, float]] = []
            for _ in range(rounds):
                off.append(run(False))
                on.append(run(True))
        finally:
            hook.close()
            if previous is not None:
                pin_current_thread(previous)

    def fig(i: int) -> tuple[str, str, str]:
        a = [r[i] for r in off]
        b = [r[i] for r in on]
        d = [y - x for x, y in zip(a, b, strict=True)]
        return (f"{median(a):.1f}", f"{median(b):.1f}",
                f"{median(d):+.2f} ({median(d) / median(a) * 100:+.1f} %)")

    wall, cpu = fig(0), fig(1)
    return [["wall time", *wall], ["client CPU (thread_time)", *cpu]]


if __name__ == "__main__":
    sys.exit(main())
