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

``--stmt-cache-hook REV`` instead times the PostgreSQL statement-cache hook alone (its inner
call does nothing) against the same module at git revision REV, per statement: one text
repeated, and 8 texts in turn on a cache of 4 (issue #14 item 5).
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


def stmt_cache_hook(rev: str, n: int = 200_000) -> None:
    """Per-statement CPU of StatementCacheHook's psycopg path, this tree vs ``rev``."""
    import importlib.util
    import subprocess
    import tempfile
    from pathlib import Path

    import psycopg

    import poolkeeper.sql.stmtcache as here

    src = subprocess.run(["git", "show", f"{rev}:src/poolkeeper/sql/stmtcache.py"],
                         capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent).stdout
    path = Path(tempfile.mkdtemp(prefix="poolkeeper-bench-")) / "stmtcache.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("poolkeeper.sql._bench_base", path)
    assert spec is not None and spec.loader is not None
    base = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = base
    spec.loader.exec_module(base)

    class Slot:  # what the hook reads of a pool cursor
        stmt_memo = None

    class Cursor:
        def __init__(self) -> None:
            self._slot = Slot()

    def inner(cursor: object, raw: object, query: object, params: object, many: bool) -> None:
        return None

    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        raw = conn.cursor()
        raw.execute(QUERY)  # the command tag and result the hook may read

        def one(mod: object, texts: list[str], memo: bool) -> float:
            hook = mod.StatementCacheHook(  # type: ignore[attr-defined]
                mod.statement_cache_policy("postgresql", 4, 1 << 20))  # type: ignore[attr-defined]
            call = hook.wrap(inner)
            cur = Cursor() if memo else None
            k = len(texts)
            t0 = time.process_time()
            for i in range(n):
                call(cur, raw, texts[i % k], None, False)
            return (time.process_time() - t0) / n

        cases = {"one text": [QUERY], "8 texts, cache 4": [f"SELECT {i}" for i in range(8)]}
        for name, texts in cases.items():
            for memo in (True, False):
                b = statistics.median(one(base, texts, memo) for _ in range(5))
                h = statistics.median(one(here, texts, memo) for _ in range(5))
                print(f"{name:18} memo {'on ' if memo else 'off'}: {rev} {b * 1e9:6.0f} ns, "
                      f"this tree {h * 1e9:6.0f} ns, {(h - b) * 1e9:+5.0f} ns per statement")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--placements", default="pinned,unpinned",
                        help="comma-separated: pinned, unpinned")
    parser.add_argument("--transactions", action="store_true",
                        help="the pool's default transaction mode (BEGIN ... COMMIT: two round "
                             "trips per cycle) instead of autocommit")
    parser.add_argument("--stmt-cache-hook", metavar="REV",
                        help="time the statement-cache hook alone against git revision REV")
    args = parser.parse_args(argv)
    if args.stmt_cache_hook:
        stmt_cache_hook(args.stmt_cache_hook)
        return 0
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
