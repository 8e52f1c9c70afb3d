"""Where a pooled query's time goes, in CPU instructions: a figure noise cannot move.

    .venv/bin/python benchmarks/bench_instructions.py             # PostgreSQL, ~3 min
    .venv/bin/python benchmarks/bench_instructions.py --layers raw,default --cycles 2000

Timing on this 2-core shared machine moves by 2x from run to run; the number of instructions
the client executes per query hardly does (callgrind counts them; two runs of the same code
agreed within 1.5 %: raw 84,935 and 83,722, default 135,958 and 136,315). It counts the
client's work only: the server's, and the time a query waits on it, are not in it. Each layer runs
``SELECT 1`` (cursor, execute, fetchone, close) in a child process under ``valgrind
--tool=callgrind`` twice, with ``--cycles`` and ``3 x --cycles`` queries after a warm-up;
the difference divided by ``2 x --cycles`` is the per-query count, free of start-up costs.

Layers, each adding one piece to the one before:

- ``raw``: a psycopg connection, no pool;
- ``borrow``: ``pool.getconn()`` / ``putconn()`` around the driver's own cursor (``conn.raw``);
- ``proxy``: the pool's cursor proxy, no execute hook;
- ``stmtcache``: + the statement-cache hook;
- ``default``: + SQL statistics (the pool as configured by default);
- ``monitor``: + the resource monitor (``monitor=True``), the query made 8 frames deep;
- ``deep``: ``default`` made 8 frames deep, the reference of ``monitor``;
- ``deep_execute`` / ``monitor_execute``: the same two through ``conn.execute(...).fetchone()``
  (the cursor freed by reference counting, never closed), monitor off / on.

``--layers deep,monitor,deep_execute,monitor_execute`` gives what the monitor costs per query.

Needs valgrind (Debian: ``apt-get install valgrind``); exits 2 without it. No timing, so the
figures are comparable across machines of the same architecture and Python build.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from _common import code_fingerprint, machine_summary, pg_dsn, print_table

LAYERS = ("raw", "borrow", "proxy", "stmtcache", "default", "monitor", "deep", "deep_execute",
          "monitor_execute")
QUERY = "SELECT 1"
_COLLECTED = re.compile(r"Collected : (\d+)")


def _loop(layer: str) -> Callable[[int], None]:
    """The query loop of one layer (run in the child)."""
    import psycopg

    from poolkeeper import Pool

    if layer == "raw":
        raw = psycopg.connect(pg_dsn(), autocommit=True)

        def run_raw(n: int) -> None:
            for _ in range(n):
                cur = raw.cursor()
                cur.execute(QUERY)
                cur.fetchone()
                cur.close()
        return run_raw
    pool = Pool(pg_dsn(), autocommit=True, min_idle=1, max_size=1, name=f"instr-{layer}",
                monitor=layer.startswith("monitor"))
    pool.wait_ready(30)
    if layer in ("borrow", "proxy"):
        for hook in pool.hooks:
            pool.remove_hook(hook)
    elif layer == "stmtcache":
        for hook in pool.hooks:
            if hook is not pool._stmt_cache:
                pool.remove_hook(hook)
    if layer == "borrow":
        def run_borrow(n: int) -> None:
            for _ in range(n):
                conn = pool.getconn()
                cur = conn.raw.cursor()
                cur.execute(QUERY)
                cur.fetchone()
                cur.close()
                pool.putconn(conn)
        return run_borrow

    def run_pool(n: int) -> None:
        for _ in range(n):
            conn = pool.getconn()
            cur = conn.cursor()
            cur.execute(QUERY)
            cur.fetchone()
            cur.close()
            pool.putconn(conn)

    def run_execute(n: int) -> None:
        for _ in range(n):
            conn = pool.getconn()
            conn.execute(QUERY).fetchone()
            pool.putconn(conn)

    if layer not in ("monitor", "deep", "deep_execute", "monitor_execute"):
        return run_pool
    run = run_execute if layer.endswith("_execute") else run_pool

    def deep(n: int, depth: int = 8) -> None:  # application code is rarely at the top level
        if depth:
            deep(n, depth - 1)
        else:
            run(n)
    return deep


def child(layer: str, cycles: int) -> None:
    run = _loop(layer)
    run(300)  # warm-up: psycopg prepares the statement after 5 runs, caches fill
    run(cycles)


def count(layer: str, cycles: int) -> int:
    """Instructions of a child process running ``cycles`` queries (plus the fixed costs)."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
           sys.executable, os.path.abspath(__file__), "--child", layer, "--cycles", str(cycles)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    found = _COLLECTED.search(result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"{layer}: the child failed (exit {result.returncode}):\n"
                         f"{result.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default=",".join(LAYERS),
                        help=f"comma-separated, from {', '.join(LAYERS)}")
    parser.add_argument("--cycles", type=int, default=1000, help="queries of the short run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cycles < 100:
        parser.error(f"--cycles={args.cycles}: at least 100, or start-up noise shows")
    if args.child:
        child(args.child, args.cycles)
        return 0
    layers = [x.strip() for x in args.layers.split(",") if x.strip()]
    unknown = [x for x in layers if x not in LAYERS]
    if unknown:
        parser.error(f"unknown layer(s) {unknown}; choose from {', '.join(LAYERS)}")
    if shutil.which("valgrind") is None:
        print("bench_instructions: valgrind is not installed (apt-get install valgrind)",
              file=sys.stderr)
        return 2
    print(machine_summary())
    print(code_fingerprint())
    per_query: dict[str, float] = {}
    rows: list[list[Any]] = []
    previous: float | None = None
    for layer in layers:
        short, long = count(layer, args.cycles), count(layer, 3 * args.cycles)
        per_query[layer] = (long - short) / (2 * args.cycles)
        added = "" if previous is None else f"{per_query[layer] - previous:+,.0f}"
        over_raw = (f"{per_query[layer] / per_query['raw']:.3f}x" if "raw" in per_query
                    else "-")
        rows.append([layer, f"{per_query[layer]:,.0f}", added, over_raw])
        previous = per_query[layer]
    print_table(f"client instructions per SELECT 1 (PostgreSQL), callgrind, "
                f"{2 * args.cycles:,} queries of difference", ["layer", "instructions/query",
                                                                "added by the layer", "x raw"],
                rows, ["each layer adds one piece to the one above; see the module docstring"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
