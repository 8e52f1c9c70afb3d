"""What per-statement SQL statistics cost: pooled PostgreSQL ``SELECT 1``, on vs off (issue 4).

One pool with one connection runs borrow -> cursor -> execute -> fetch -> close -> return
on one thread, in chunks, with ``pool.stats_enabled`` switched on and off between chunks
(the order alternates chunk by chunk and round by round). The target is judged on the median
over rounds of (time with statistics) / (time without) in the same round.

Why one connection switched at runtime, not two pools (one with ``stats=False``, as
``bench_pool.py`` section 3 also prints): two pools have two server processes, and where the
OS places each relative to the client decides a round trip's cost on this 2-vCPU VM (a wake-up
crossing CPUs: 30-100 us). Unpinned, that placement, not the code, decided the two-pool
figure: +8 to +16 % in five runs, where this script measured 0 to +2.5 % on one connection.

Placements, each in its own pass:

- ``pinned``: the client and its server process on CPU 0: the shortest cycle (~27 us), so
  the statistics' share is the largest: the worst case;
- ``unpinned``: the OS places both, as in production (~85-90 us here, one wake-up crossing
  CPUs per round trip).

The pool runs in autocommit, one round trip per cycle: the shortest cycle, so the largest
share. ``--transactions`` runs the pool's default instead (``with pool.connection()`` ends in
COMMIT, a second round trip), as ``bench_monitor.py`` does by default.

    python benchmarks/bench_sql_stats.py [--rounds 31] [--placements pinned,unpinned]
                                         [--transactions]

(The former ``--stmt-cache-hook REV`` timed the statement-cache hook's old ``wrap`` shape
against a revision; the hooks now take an explicit context, so ``bench_pool.py --against REV``
section 3 and ``bench_instructions.py`` measure the statement path instead.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _common import (
    load_note,
    loadavg,
    machine_summary,
    pg_dsn,
    pin_current_thread,
    pin_pg_backends,
    pooled_query_loop,
)

from poolkeeper import Pool

QUERY = "SELECT 1"
TARGET = 1.03
CHUNK = 500  #: queries per chunk; a round runs CHUNKS of them with and without statistics
CHUNKS = 6


def run(placement: str, rounds: int, autocommit: bool = True
        ) -> tuple[list[float], list[float], list[float]]:
    """Per round: on/off wall ratio, added CPU seconds per query, off seconds per query."""
    ratios: list[float] = []
    added: list[float] = []
    off_wall: list[float] = []
    previous = pin_current_thread({0}) if placement == "pinned" else None
    try:
        with Pool(pg_dsn(), autocommit=autocommit, min_idle=1, max_size=1,
                  name=f"bench-sql-stats-{placement}") as pool:
            pool.wait_ready(30)
            if placement == "pinned":
                with pool.connection() as conn:
                    pin_pg_backends(conn.raw, {0})
            cycle = pooled_query_loop(pool, QUERY)
            cycle(2_000)  # warm-up: psycopg prepares, caches fill
            deadline = time.monotonic() + 600
            for r in range(rounds):
                wall = {True: 0.0, False: 0.0}
                cpu = {True: 0.0, False: 0.0}
                order = [True, False] if r % 2 else [False, True]
                for chunk in range(CHUNKS):
                    for on in order if chunk % 2 == 0 else order[::-1]:
                        pool.stats_enabled = on
                        start, start_cpu = time.perf_counter(), time.thread_time()
                        cycle(CHUNK)
                        wall[on] += time.perf_counter() - start
                        cpu[on] += time.thread_time() - start_cpu
                n = CHUNK * CHUNKS  # queries each way this round
                ratios.append(wall[True] / wall[False])
                added.append((cpu[True] - cpu[False]) / n)
                off_wall.append(wall[False] / n)
                if time.monotonic() > deadline:
                    break
    finally:
        if previous is not None:
            pin_current_thread(previous)
    return ratios, added, off_wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--placements", default="pinned,unpinned",
                        help="comma-separated: pinned, unpinned")
    parser.add_argument("--transactions", action="store_true",
                        help="the pool's default transaction mode (BEGIN ... COMMIT: two round "
                             "trips per cycle) instead of autocommit")
    args = parser.parse_args(argv)
    placements = [p.strip() for p in args.placements.split(",") if p.strip()]
    unknown = [p for p in placements if p not in ("pinned", "unpinned")]
    if unknown or args.rounds < 3:
        parser.error(f"placements must be pinned and/or unpinned (got {unknown}); "
                     f"rounds >= 3 (got {args.rounds})")
    print(machine_summary())
    mode = "transactions (COMMIT on return)" if args.transactions else "autocommit"
    print(f"PostgreSQL {QUERY!r} through one pooled connection ({mode}), statistics switched on "
          f"and off between chunks of {CHUNK}; {args.rounds} rounds of {CHUNKS} x {CHUNK} "
          "queries each way")
    verdicts = []
    for placement in placements:
        load0 = loadavg()
        ratios, added, off_wall = run(placement, args.rounds, not args.transactions)
        s = sorted(ratios)
        q1, q3 = s[len(s) // 4], s[(3 * len(s)) // 4]
        med = statistics.median(s)
        cpu = statistics.median(added)
        off = statistics.median(off_wall)
        print(f"{placement:>9}: statistics on {(med - 1) * 100:+.2f}% wall (per-round median, "
              f"IQR {(q1 - 1) * 100:+.1f}..{(q3 - 1) * 100:+.1f}%), added client CPU "
              f"{cpu * 1e6:+.2f} us per query = {cpu / off * 100:+.2f}% of the {off * 1e6:.1f} us "
              f"cycle without; {load_note(load0)}")
        verdicts.append(f"{'MET   ' if med <= TARGET else 'MISSED'} {placement}: "
                        f"{med:.3f} (target <= {TARGET:.2f})")
    print("\n".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
