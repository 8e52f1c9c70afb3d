"""What the resource monitor costs: PostgreSQL ``SELECT 1`` through the pool, and per call.

Part 1 runs borrow -> cursor -> execute ``SELECT 1`` -> fetch -> close -> return on one
thread, in interleaved rounds, in these modes:

- ``pool off, on``: the ``pool off`` pool with its monitor switched on for the run
  (``pool.monitor.enable()``), against ``pool off`` itself: one connection and one server
  process on both sides, so where the OS placed the server process cannot differ between
  them (it does between two pools, unpinned); the figure the target is judged on;
- ``pool off`` / ``pool on``: the real thing, ``Pool(dsn, monitor=False)`` against
  ``Pool(dsn, monitor=True)``: the pool makes its own monitor calls (``borrow_site``: the
  call site at the default depth, 4 frames, kept on the connection's slot and dropped on
  return, the checkout's record made from the slot only when a view or a collection needs
  one; a cursor keeps its site and caller, 2 frames, on itself, likewise without a record);
- ``baseline``: no monitor call at all (a build without monitor hooks);
- ``disabled``: the calls below, with the monitor off (null probe);
- ``enabled``: monitor on, through the public ``track``: checkouts at the default depth (4
  frames), cursors with 2 (their checkout holds the stack);
- ``enabled all 8``: monitor on, 8 frames for checkouts and cursors (the old default depth);
- ``sampled 1/16``: monitor on, one resource in 16 recorded.

The other modes make, around a pool with the monitor off, the calls the pool made before its
cursors went without records: a checkout token on borrow, a cursor token (parent: the
checkout), ``set_sql`` on execute, ``close`` on cursor close and on return (by the public API,
which does more than the pool's ``borrow_site``, so the monitor's own share can be
seen apart from the pool's monitored code paths). Each cycle runs 12 frames deep, as
application code does, so that all 8 frames exist to be kept.

Part 2 measures the calls alone (track + set_sql + close) in a tight loop, and states them as
a share of the measured ``SELECT 1`` cycle: a steadier figure than part 1 on a busy machine.

Targets: ``pool on`` < 5 % slower than ``pool off`` (and ``enabled`` than ``baseline``),
``disabled`` < 1 %. The added CPU column (this thread's CPU time, ``time.thread_time``)
is the steadiest figure on a shared machine.

The pools are in the default transaction mode: each cycle's ``with`` block ends with a
COMMIT, a second round trip; ``--autocommit`` measures the shorter one-round-trip cycle, where
the monitor's share is about twice as large.

By default the client and the server processes of its sessions are pinned to CPU 0, as in
``bench_pool.py`` section 3: a wake-up crossing CPUs on this 2-vCPU machine costs 30-100 us
at random, which buries a 1-2 us difference; pinned, the cycle is the shortest (so the
monitor's share the largest: the worst case). ``--unpinned`` leaves placement to the OS.

    python benchmarks/bench_monitor.py [--quick] [--unpinned] [--dsn postgresql://...]

``--against REV`` (issue #16) runs, instead, one real pool with its monitor switched off and
on at runtime, with explicit cursors and with ``conn.execute``, in two subprocesses: this tree
and git ``REV`` (``_against.py``), rounds interleaved, and prints both trees' figures with
new/old ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _against
from _common import load_note, loadavg, median, pg_dsn, pin_current_thread, pin_pg_backends

from poolkeeper import Pool
from poolkeeper.observe.monitor import MONITOR, Monitor, Probe

QUERY = "SELECT 1"
#: the depth the pool passes for cursor records (their checkout holds the full stack)
CURSOR_DEPTH = 2
#: the cycles run this many frames deep, as in an application, so 8 frames exist to keep
STACK_DEPTH = 12


def deep(levels: int, fn: Callable[[Pool, int], None], pool: Pool, n: int) -> None:
    if levels:
        deep(levels - 1, fn, pool, n)
    else:
        fn(pool, n)


def cycle_plain(pool: Pool, n: int) -> None:
    for _ in range(n):
        with pool.connection() as conn:
            cur = conn.cursor()
            cur.execute(QUERY)
            cur.fetchone()
            cur.close()


def cycle_execute(pool: Pool, n: int) -> None:
    """cycle_plain through ``conn.execute`` (the cursor made and closed by the proxy)."""
    for _ in range(n):
        with pool.connection() as conn:
            conn.execute(QUERY).fetchone()


def cycle_switched_on(pool: Pool, n: int) -> None:
    """cycle_plain with the pool's monitor switched on for the run: the same connection, so
    the same server process, as the ``pool off`` mode it is compared with."""
    pool.monitor.enable()
    try:
        cycle_plain(pool, n)
    finally:
        pool.monitor.disable()


def make_cycle_monitored(probe: Probe, cursor_depth: int | None = CURSOR_DEPTH,
                         checkout_depth: int | None = None) -> Callable[[Pool, int], None]:
    def cycle(pool: Pool, n: int) -> None:
        for _ in range(n):
            with pool.connection() as conn:
                # No obj: the pool reports an unreturned checkout itself (its __del__ path
                # calls token.collected()), which spares a weakref per borrow.
                token = probe.track("checkout", depth=checkout_depth)
                cur = conn.cursor()
                ctoken = probe.track("cursor", parent=token, depth=cursor_depth)
                ctoken.set_sql(QUERY)
                cur.execute(QUERY)
                cur.fetchone()
                cur.close()
                ctoken.close()
                token.close()
    return cycle


def run_pool_rounds(dsn: str, rounds: int, per_round: int, pinned: bool = True,
                    autocommit: bool = False
                    ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU (this thread) microseconds per cycle, per mode, one entry per round."""
    monitor = Monitor()
    off = monitor.probe("bench-off", enabled=False)
    on = monitor.probe("bench-on", enabled=True)
    sampled_mon = Monitor(sample_every=16)
    sampled = sampled_mon.probe("bench-s16", enabled=True)
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    rng = random.Random(5)
    opts: dict[str, Any] = {"max_size": 1, "min_idle": 1, "autocommit": autocommit}
    with Pool(dsn, name="bench-monitor", **opts) as pool, \
            Pool(dsn, name="bench-monitor-off", monitor=False, **opts) as p_off, \
            Pool(dsn, name="bench-monitor-on", monitor=True, **opts) as p_on:
        modes: dict[str, tuple[Callable[[Pool, int], None], Pool]] = {
            "baseline": (cycle_plain, pool),
            "disabled": (make_cycle_monitored(off), pool),
            "enabled": (make_cycle_monitored(on), pool),
            "enabled all 8": (make_cycle_monitored(on, 8, 8), pool),
            "sampled 1/16": (make_cycle_monitored(sampled), pool),
            "pool off": (cycle_plain, p_off),
            "pool on": (cycle_plain, p_on),
            "pool off, on": (cycle_switched_on, p_off),
        }
        assert p_on.monitor.enabled and not p_off.monitor.enabled
        if pinned:
            for p in (pool, p_off, p_on):
                p.wait_ready(30)
            previous = pin_current_thread({0})
            with pool.connection() as conn:
                pinned_backends = pin_pg_backends(conn.raw, {0})
            print(f"client and {pinned_backends} server processes pinned to CPU 0")
        for mode, (fn, p) in modes.items():  # warm up every path
            deep(STACK_DEPTH, fn, p, 200)
            times[mode], cpu[mode] = [], []
        deadline = time.monotonic() + 600
        for _ in range(rounds):
            order = list(modes)
            rng.shuffle(order)
            for mode in order:
                fn, p = modes[mode]
                gc.collect()
                start, start_cpu = time.perf_counter(), time.thread_time()
                deep(STACK_DEPTH, fn, p, per_round)
                times[mode].append((time.perf_counter() - start) / per_round * 1e6)
                cpu[mode].append((time.thread_time() - start_cpu) / per_round * 1e6)
            if time.monotonic() > deadline:
                break
        if pinned:
            pin_current_thread(previous)
        live_on = [r for r in MONITOR.live(0, pool=p_on.name) if r.kind in ("checkout", "cursor")]
        assert not live_on, f"the monitored pool left {len(live_on)} checkout/cursor records"
    assert monitor.stats()["records"] == 0, "the benchmark itself leaked records"
    return times, cpu


def run_call_costs(n: int, rounds: int) -> dict[str, float]:
    """ns per borrow cycle's worth of monitor calls (checkout + cursor + set_sql + closes)."""
    results: dict[str, list[float]] = {}
    on = Monitor().probe("on", enabled=True)
    setups: dict[str, tuple[Probe, int | None, int | None]] = {
        "disabled": (Monitor().probe("off", enabled=False), CURSOR_DEPTH, None),
        "enabled": (on, CURSOR_DEPTH, None),
        "enabled all 8": (on, 8, 8),
        "sampled 1/16": (Monitor(sample_every=16).probe("s16", enabled=True), CURSOR_DEPTH,
                         None),
    }

    def calls(probe: Probe, cursor_depth: int | None, checkout_depth: int | None,
              count: int) -> None:
        for _ in range(count):
            token = probe.track("checkout", depth=checkout_depth)
            ctoken = probe.track("cursor", parent=token, depth=cursor_depth)
            ctoken.set_sql(QUERY)
            ctoken.close()
            token.close()

    def empty(count: int) -> None:
        for _ in range(count):
            pass

    for _ in range(rounds):
        start = time.perf_counter()
        empty(n)
        loop = time.perf_counter() - start
        for name, (probe, cursor_depth, checkout_depth) in setups.items():
            start = time.perf_counter()
            calls(probe, cursor_depth, checkout_depth, n)
            results.setdefault(name, []).append(
                (time.perf_counter() - start - loop) / n * 1e9)
    return {k: statistics.median(v) for k, v in results.items()}


#: the --against modes: (name, cycle, monitor on?)
AGAINST_MODES: list[tuple[str, Callable[[Pool, int], None], bool]] = [
    ("cursor, monitor off", cycle_plain, False),
    ("cursor, monitor on", cycle_plain, True),
    ("execute, monitor off", cycle_execute, False),
    ("execute, monitor on", cycle_execute, True),
]
#: chunks per mode and round, in alternating direction. Each switch of the monitor turns the
#: proxies' classes over, and CPython's specialising interpreter re-learns the shared hot code
#: (its inline caches see the other class): with 100-cycle chunks that churn cost the
#: in-memory SQLite cycle 0.6 us with the monitor off (4.39 -> 5.08 us) and made the monitor's
#: share +1.29 us instead of +0.77 us; with 300-cycle chunks it is gone (4.46 us, +0.90 us).
#: A real pool switches its monitor far less often than every 5 ms.
AGAINST_CHUNKS = 2


def against_setup(dsn: str, per_round: int, pinned: bool, autocommit: bool
                  ) -> Callable[[contextlib.ExitStack[Any]], _against.RoundFn]:
    """One tree's side of --against: one pool (one connection, one server process), its
    monitor switched on and off at runtime (``pool.monitor.enable()`` / ``disable()``) around
    the chunks of the "monitor on" modes; one round a call."""
    def setup(stack: contextlib.ExitStack[Any]) -> _against.RoundFn:
        opts: dict[str, Any] = {"max_size": 1, "min_idle": 1, "autocommit": autocommit}
        pool = stack.enter_context(Pool(dsn, name="bench-monitor", monitor=False, **opts))
        pool.wait_ready(30)
        if pinned:
            stack.callback(pin_current_thread, pin_current_thread({0}))
            with pool.connection() as conn:
                pin_pg_backends(conn.raw, {0})
        modes = list(AGAINST_MODES)
        for _, fn, on in modes:
            (pool.monitor.enable if on else pool.monitor.disable)()
            deep(STACK_DEPTH, fn, pool, 200)
        pool.monitor.disable()
        n = max(1, per_round // AGAINST_CHUNKS)

        def run_round(r: int) -> dict[str, dict[str, float]]:
            k = r % len(modes)
            order = modes[k:] + modes[:k]
            wall = {name: 0.0 for name, _, _ in modes}
            cpu = dict.fromkeys(wall, 0.0)
            # chunks in alternating direction: a burst of load spreads over every mode
            for c in range(AGAINST_CHUNKS):
                for name, fn, on in (order if c % 2 == 0 else order[::-1]):
                    (pool.monitor.enable if on else pool.monitor.disable)()
                    start, start_cpu = time.perf_counter(), time.thread_time()
                    deep(STACK_DEPTH, fn, pool, n)
                    wall[name] += time.perf_counter() - start
                    cpu[name] += time.thread_time() - start_cpu
            pool.monitor.disable()
            total = AGAINST_CHUNKS * n
            return {"wall": {k: v / total for k, v in wall.items()},
                    "cpu": {k: v / total for k, v in cpu.items()}}
        return run_round
    return setup


def against(rev: str, args: argparse.Namespace, rounds: int, per_round: int) -> None:
    # no --dsn unless given: each child tags its sessions with its own application_name
    passed = ["--child", "--per-round", str(per_round)] + (["--dsn", args.dsn] if args.dsn else [])
    passed += ["--autocommit"] if args.autocommit else []
    passed += ["--unpinned"] if args.unpinned else []
    load0 = loadavg()
    news, olds, _ = _against.run_pairs(rev, str(Path(__file__).resolve()), passed, rounds,
                                         args.procs)
    mode = "autocommit" if args.autocommit else "a COMMIT per borrow"
    for metric in ("wall", "cpu"):
        notes = []
        for what in ("cursor", "execute"):
            on, off = f"{what}, monitor on", f"{what}, monitor off"
            cost = {side: [f[metric][on] / f[metric][off] - 1 for f in figs]
                    for side, figs in (("new", news), ("old", olds))}
            notes.append(f"monitor on vs off, {what}: new {median(cost['new']) * 100:+.2f}% "
                         f"({min(cost['new']) * 100:+.1f}..{max(cost['new']) * 100:+.1f}), "
                         f"old {median(cost['old']) * 100:+.2f}% "
                         f"({min(cost['old']) * 100:+.1f}..{max(cost['old']) * 100:+.1f})")
        _against.report(
            f"PostgreSQL {QUERY!r} through the pool ({mode}, max_size 1, "
            f"{'unpinned' if args.unpinned else 'pinned'}): new tree vs {rev} ({metric})",
            news, olds, metric, unit="us", scale=1e6, ref=None,
            notes=[*notes, load_note(load0)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (< 60 s)")
    parser.add_argument("--dsn", default=None,
                        help="PostgreSQL DSN (default: POOLKEEPER_BENCH_PG_DSN or the local "
                             "server, tagged so its server processes can be pinned)")
    parser.add_argument("--autocommit", action="store_true",
                        help="pools in autocommit: one round trip per cycle instead of two "
                             "(SELECT, then COMMIT), so the monitor's share is about double")
    parser.add_argument("--unpinned", action="store_true",
                        help="leave client and server placement to the OS (noisy)")
    parser.add_argument("--skip-pool", action="store_true", help="only the per-call costs")
    parser.add_argument("--against", metavar="REV",
                        help="the real pools, monitor off and on, cursor and conn.execute, "
                             "with this tree and git REV in one run (new/old ratios)")
    parser.add_argument("--rounds", type=int, help="rounds (overrides the preset)")
    parser.add_argument("--procs", type=int, default=3,
                        help="--against: pairs of processes the rounds are spread over")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--per-round", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rounds, per_round = (15, 300) if args.quick else (80, 600)
    rounds = args.rounds or rounds
    if args.child:
        return _against.serve(against_setup(args.dsn or pg_dsn(), args.per_round or per_round,
                                            not args.unpinned, args.autocommit))
    if args.against:
        # fewer rounds than part 1's default: each round runs every mode in two processes
        against(args.against, args, args.rounds or (8 if args.quick else 30), per_round)
        return 0

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs); targets: enabled < 5 %, disabled < 1 %")
    costs = run_call_costs(20_000 if args.quick else 100_000, 5 if args.quick else 15)
    cycle_us: float | None = None
    if not args.skip_pool:
        try:
            times, cpu = run_pool_rounds(args.dsn or pg_dsn(), rounds, per_round,
                                         pinned=not args.unpinned, autocommit=args.autocommit)
        except Exception as exc:  # noqa: BLE001 - report and still print part 2
            print(f"pool part skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
        else:
            base = statistics.median(times["baseline"])
            cycle_us = min(times["baseline"])
            print(f"PostgreSQL {QUERY!r} through the pool, 1 thread, {rounds} interleaved "
                  f"rounds x {per_round} cycles, microseconds per cycle")
            print("wall vs base: median over rounds of mode/reference in the same round "
                  "(IQR in brackets);\nadded CPU: median over rounds of client CPU minus the "
                  "reference's, and that as a share of the reference's wall time")
            print(f"{'mode':<14} {'wall':>7} {'min':>7} {'wall vs base':>13} "
                  f"{'(IQR)':>17} {'CPU':>7} {'added CPU':>10} {'of wall':>8}")
            for mode, values in times.items():
                # the real pools are compared with each other, the rest with the baseline
                ref = "pool off" if mode.startswith("pool") else "baseline"
                ref_wall = statistics.median(times[ref]) if mode.startswith("pool") else base
                ratios = sorted(v / b - 1 for v, b in zip(values, times[ref], strict=True))
                q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
                mode_cpu = statistics.median(cpu[mode])
                # added CPU: the median of the per-round differences (same round, same load)
                added = statistics.median(c - b for c, b in zip(cpu[mode], cpu[ref],
                                                                 strict=True))
                print(f"{mode:<14} {statistics.median(values):7.1f} {min(values):7.1f} "
                      f"{statistics.median(ratios) * 100:+12.2f}% "
                      f"({q1 * 100:+6.1f}..{q3 * 100:+5.1f}%) {mode_cpu:7.1f} "
                      f"{added:+10.2f} {added / ref_wall * 100:+7.2f}%")
            print("(pool on, pool off, on: against pool off; every other mode: against baseline)")
            print()
    print("monitor calls per borrow cycle (2 x track, set_sql, 2 x close), median ns; "
          "share of the fastest baseline cycle")
    header = f"{'mode':<14} {'ns/cycle':>9}"
    if cycle_us is not None:
        header += f" {'% of cycle':>11}"
    print(header)
    for mode, ns in costs.items():
        row = f"{mode:<14} {ns:9.0f}"
        if cycle_us is not None:  # against the fastest baseline round: the worst case
            row += f" {ns / (cycle_us * 1000) * 100:10.3f}%"
        print(row)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
