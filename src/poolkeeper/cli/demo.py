"""``poolkeeper demo``: run the demo workload (:mod:`.workload`) and print the pool's report.

With ``--console`` the pool's web console is served during the run and after it, with a
trickle of queries so its charts move, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from typing import Any

from ..config import mask_dsn
from ..console import ConsoleHandle, serve
from ..errors import ConnectError
from ..pool import Pool
from .console_token import TOKEN_ENV, given_token, token_refused
from .failures import connect_failed
from .output import print_grid, print_table
from .serving import serve_until_stopped
from .workload import DemoResult, run_demo

__all__ = ["add_arguments", "print_report", "run"]

#: what ``poolkeeper --help`` says of this command
HELP = "run a short realistic workload and print the pool's report"


def run(args: argparse.Namespace) -> int:
    """Run the workload, print its report; 0 when no operation failed."""
    dsn = args.dsn or "sqlite://:memory:"
    token = given_token(args.token)
    refused = token_refused("demo", args.host, token) if args.console else None
    if refused:
        print(refused, file=sys.stderr)
        return 2
    print(f"poolkeeper demo: {args.threads} threads, {args.operations} operations, "
          f"max_size={args.max_size}, on {mask_dsn(dsn)}")
    progress_cb: Callable[[int], None] | None = None
    try:
        from rich.progress import Progress
    except ImportError:
        progress = None
    else:
        progress = Progress(transient=True)
    if progress is not None:
        task = progress.add_task("workload", total=args.operations)

        def advance(n: int) -> None:
            progress.advance(task, n)

        progress_cb = advance
        progress.start()
    handle: ConsoleHandle | None = None

    def on_pool(pool: Pool) -> None:
        nonlocal handle
        if args.console:
            handle = serve([pool], host=args.host, port=args.port, token=token)
            print(f"console: {handle.url}  (JSON under /api/, Prometheus at /metrics)")

    def after(pool: Pool, result: DemoResult) -> None:
        if progress is not None:
            progress.stop()
        print_report(result, pool.driver.name)
        if handle is not None:
            _serve_until_interrupt(pool, handle, args.console_seconds, result.prefix)

    try:
        result = run_demo(dsn, threads=args.threads, operations=args.operations,
                          max_size=args.max_size, progress=progress_cb,
                          faults=not args.no_faults, on_pool=on_pool, after=after)
    except ConnectError as exc:
        print(connect_failed("demo", exc, dsn), file=sys.stderr)
        return 2
    finally:
        if progress is not None:
            progress.stop()
        if handle is not None:
            handle.stop()
    _print_next_steps(dsn, args.console)
    return 0 if result.errors == 0 else 1


def _print_next_steps(dsn: str, console: bool) -> None:
    on_sqlite = dsn.split("://", 1)[0].lower().startswith("sqlite")
    steps = []
    if not console:
        steps.append(("poolkeeper demo --console",
                      "the same workload, serving the web console (pages, JSON, /metrics)"))
    if on_sqlite:
        steps.append(("poolkeeper demo --dsn postgresql://postgres@127.0.0.1:5432/test",
                      "on a server (or mysql://root@127.0.0.1:3306/test): cancels on the "
                      "server, a counted statement cache"))
    else:
        steps.append(("poolkeeper demo", "the same on in-memory SQLite, no server needed"))
    steps.append(("poolkeeper doctor pool.toml",
                  "your own [pool] settings: worst-case memory and risky settings"))
    steps.append(("poolkeeper --help", "every command (README.md: the Python API)"))
    print("\nnext steps:")
    for command, what in steps:
        print(f"  {command}\n      {what}")


_DRIVER_NAMES = {"sqlite": "sqlite3", "mysql": "PyMySQL", "postgresql": "psycopg"}


def _cache_rows(caches: dict[str, Any], driver: str) -> tuple[list[tuple[str, Any]], list[str]]:
    """The cache figures and notes: what is not counted is said, not shown as zeros."""
    rows = list(caches.items())
    name = _DRIVER_NAMES.get(driver, driver)
    if "stmt_cache_supported" not in caches:
        return rows, []
    if not caches["stmt_cache_supported"]:
        rows = [(k, v) for k, v in rows if not k.startswith("stmt_cache_")]
        return rows, [f"statement cache: none; {name} sends every statement as text, so there "
                      "is nothing to cache or count"]
    if caches.get("stmt_cache_accesses"):
        return rows, []
    # The workload ran statements, but none reached the counters: this driver's cache keeps
    # none (sqlite3's compiled-statement cache has no counters). Only its bounds are figures.
    counted = ("stmt_cache_statements", "stmt_cache_bytes", "stmt_cache_hits",
               "stmt_cache_misses", "stmt_cache_accesses", "stmt_cache_evictions",
               "stmt_cache_discarded", "stmt_cache_bypassed")
    rows = [(k, v) for k, v in rows if k not in counted]
    return rows, [f"statement cache: {name} caches compiled statements itself and keeps no "
                  "counters, so its use (statements, bytes, hits, misses, evictions) is not "
                  "counted; stmt_cache_max_statements and stmt_cache_budget_bytes are the "
                  "bounds it is given"]


def print_report(result: DemoResult, driver: str = "the driver") -> None:
    """The workload's figures, the planted faults as the pool saw them, top SQL, caches and
    the memory ledger."""
    stats = result.stats
    rate = result.operations / result.seconds if result.seconds else 0.0
    print_table("workload", [
        ("operations", result.operations), ("errors", result.errors),
        ("seconds", f"{result.seconds:.2f}"), ("operations/s", f"{rate:,.0f}"),
        *[(f"  {k}", v) for k, v in result.by_kind.items()]])
    keys = ("pool_size", "pool_max", "requests_num", "requests_queued", "requests_wait_ms",
            "requests_timeouts", "handoffs_num", "lease_reuses_num", "usage_ms",
            "connections_num", "connections_opened_last_hour", "connections_lost",
            "leaks_detected")
    print_table("pool statistics", [(k, stats[k]) for k in keys if k in stats])
    bounds = stats["histogram_bounds_ms"]
    labels = [f"<={b:g} ms" for b in bounds] + [f">{bounds[-1]:g} ms"]
    print_table("wait time histogram (requests)",
                 [(label, n) for label, n in zip(labels, stats["wait_ms_histogram"], strict=True)
                  if n])
    if result.timeout is not None:
        t = result.timeout
        outcome = t["error"] or "finished before its timeout"
        if "cancelled on the server" in outcome:
            outcome = "QueryTimeout raised: " + outcome.split(": ", 1)[-1].split(" (")[0]
        print_table("slow query under a statement timeout", [
            ("statement", t["sql"][:200]), ("timeout", f"{t['timeout_s']:g} s"),
            ("returned after", f"{t['elapsed_s']:.3f} s"), ("outcome", outcome[:200])],
            text=True)
    if result.leak is not None:
        leak = result.leak
        monitor = leak.get("monitor_site") or (
            "not fed by this pool yet" if not leak.get("monitor_checkouts") else
            "saw checkouts, not this one")
        print_table("planted leak", [
            ("planted at", leak["expected_site"]),
            ("leak detector", leak.get("detector_site") or "not detected"),
            ("held for", f"{leak.get('held_s') or 0:.2f} s by {leak.get('holder_thread')}"),
            ("resource monitor", monitor)], text=True)
    if result.top_sql:
        rows = [(f"{r.get('executions', r.get('count', 0)):,}", r.get("errors", 0),
                 f"{r.get('total_ms', 0):,.1f}", f"{r.get('mean_ms', 0):.3f}",
                 f"{r.get('max_ms', 0):,.1f}", r.get("fingerprint", "")[:300])
                for r in result.top_sql]
        print_grid("top SQL fingerprints (by total time)",
                    ("runs", "errors", "total ms", "mean ms", "max ms", "fingerprint"),
                    rows, wide=5)
    uncounted = False
    if result.caches:
        cache_rows, notes = _cache_rows(result.caches, driver)
        uncounted = bool(notes) and bool(result.caches.get("stmt_cache_supported"))
        print_table("caches", cache_rows)
        for note in notes:
            print(note)
    if result.ledger:
        ledger = []
        for e in result.ledger:
            if uncounted and e["category"] == "statement caches":
                # the same cache: its bytes are not counted, so 0.0 KB would mislead
                ledger.append((e["name"], e["category"], "not counted", _mb(e["budget_bytes"]),
                               "–"))
                continue
            ledger.append((e["name"], e["category"], _mb(e["bytes"]), _mb(e["budget_bytes"]),
                           f"{e['fraction'] * 100:.1f}%" if e["fraction"] is not None else "–"))
        print_grid("memory ledger", ("structure", "category", "bytes", "budget", "used"),
                    ledger)


def _serve_until_interrupt(pool: Pool, handle: ConsoleHandle, seconds: float | None,
                           prefix: str) -> None:
    """Keep a trickle of queries going so the console's charts move, until Ctrl-C."""
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.2):
            try:
                with pool.connection() as conn:
                    conn.execute(f"SELECT COUNT(*) FROM {prefix}orders").fetchall()
            except Exception:  # noqa: BLE001 - the trickle is decoration; errors are counted
                continue

    thread = threading.Thread(target=trickle, name="demo-trickle", daemon=True)
    thread.start()
    print(f"serving the console at {handle.url}; press Ctrl-C to stop")
    try:
        serve_until_stopped(seconds)
    finally:
        stop.set()
        thread.join(5)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", help="database URL (default: an in-memory SQLite database)")
    p.add_argument("--threads", type=int, default=6, help="worker threads (default 6)")
    p.add_argument("--operations", type=int, default=3000, help="operations in all (default 3000)")
    p.add_argument("--max-size", type=int, default=3, help="pool max_size (default 3)")
    p.add_argument("--console", action="store_true",
                   help="serve the web console during the run and after it, until Ctrl-C")
    p.add_argument("--host", default="127.0.0.1", help="console address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="console port (default: a free one)")
    p.add_argument("--token", help=f"console token (default: ${TOKEN_ENV})")
    p.add_argument("--console-seconds", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-faults", action="store_true",
                   help="skip the planted slow query and leak")


def _mb(n: Any) -> str:
    if not isinstance(n, int | float):
        return "–"
    return f"{n / 1024 / 1024:,.2f} MB" if n >= 1024 * 1024 else f"{n / 1024:,.1f} KB"
