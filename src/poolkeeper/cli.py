"""The ``poolkeeper`` command line.

    poolkeeper demo [--dsn URL] [--console]     a realistic workload, then the pool's report
    poolkeeper doctor CONFIG.toml               worst-case memory and risky settings
    poolkeeper console --dsn URL                serve a pool's web console until Ctrl-C
    poolkeeper top URL                          a live terminal view of a running console
    poolkeeper load --dsn URL TABLE FILE...     bulk-load CSV / JSON-lines files

Built on argparse (standard library); output drawn with rich when installed (the ``cli``
extra), as plain text otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .config import mask_dsn

__all__ = ["build_parser", "main"]

_TOKEN_ENV = "POOLKEEPER_CONSOLE_TOKEN"


# ----------------------------------------------------------------------------- output
def _print_table(title: str, rows: list[tuple[str, Any]], *, text: bool = False) -> None:
    """Two columns, key and value; ``text`` left-aligns (and wraps) the values."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"\n{title}")
        width = max((len(k) for k, _ in rows), default=0)
        for key, value in rows:
            print(f"  {key:<{width}}  {value}")
        return
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="cyan", no_wrap=True)
    table.add_column(justify="left" if text else "right", overflow="fold")
    for key, value in rows:
        table.add_row(key, str(value))
    Console().print(table)


def _print_grid(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                *, wide: int = 0) -> None:
    """A table with a header; column ``wide`` (an index) wraps, the others are numbers."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"\n{title}")
        print("  " + " | ".join(columns))
        for row in rows:
            print("  " + " | ".join(str(v) for v in row))
        return
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        if i == wide:
            table.add_column(col, overflow="fold", ratio=1, min_width=24)
        else:
            table.add_column(col, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*(str(v) for v in row))
    Console().print(table)


def _say(text: str, style: str = "") -> None:
    try:
        from rich.console import Console
    except ImportError:
        print(text)
        return
    Console(highlight=False).print(text, style=style or None)


def _mb(n: Any) -> str:
    if not isinstance(n, int | float):
        return "–"
    return f"{n / 1024 / 1024:,.2f} MB" if n >= 1024 * 1024 else f"{n / 1024:,.1f} KB"


# ----------------------------------------------------------------------------- errors
def _connect_failed(command: str, exc: BaseException, dsn: str | None) -> str:
    """A failed first connection, with advice in the command line's terms (the pool's own
    message suggests ``fail_fast=False``, a Python option the command line does not have)."""
    cause = exc.__cause__ or exc
    first = (str(cause).strip().splitlines() or [""])[0]
    password = _password(dsn)
    if password:
        first = first.replace(password, "***")
    where = mask_dsn(dsn) if dsn else "the database"
    return (f"poolkeeper {command}: could not connect to {where}: {type(cause).__name__}: "
            f"{first}. Check that the server is up and that --dsn names the right host, port, "
            "database, user and password")


def _password(dsn: str | None) -> str | None:
    if not dsn:
        return None
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(dsn).password
    except ValueError:
        return None
    return unquote(password) if password else None


def _token_refused(command: str, host: str, token: str | None) -> str | None:
    """The command line's wording of the console's token rule, or None when it is met."""
    from .console.server import MIN_TOKEN_CHARS, token_problem

    problem = token_problem(host, token)
    make = "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
    if problem == "invalid":
        return (f"poolkeeper {command}: the console token (--token or ${_TOKEN_ENV}) must be at "
                f"least {MIN_TOKEN_CHARS} characters of letters, digits and -._~+/=; make one "
                f"with: {make}")
    if problem == "missing":
        return (f"poolkeeper {command}: --host {host} is not a loopback address, so the console "
                f"would show pool state to other machines: set ${_TOKEN_ENV} (or --token; the "
                f"environment keeps it out of ps), made with: {make}; or keep --host 127.0.0.1 "
                "and reach it through an SSH tunnel")
    return None


# ----------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoResult, run_demo
    from .errors import ConnectError

    dsn = args.dsn or "sqlite://:memory:"
    token = args.token or os.environ.get(_TOKEN_ENV)
    refused = _token_refused("demo", args.host, token) if args.console else None
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
    handle: Any = None

    def on_pool(pool: Any) -> None:
        nonlocal handle
        if args.console:
            from .console import serve

            handle = serve([pool], host=args.host, port=args.port, token=token)
            print(f"console: {handle.url}  (JSON under /api/, Prometheus at /metrics)")

    def after(pool: Any, result: DemoResult) -> None:
        if progress is not None:
            progress.stop()
        _demo_report(result, pool.driver.name)
        if handle is not None:
            _serve_until_interrupt(pool, handle, args.console_seconds, result.prefix)

    try:
        result = run_demo(dsn, threads=args.threads, operations=args.operations,
                          max_size=args.max_size, progress=progress_cb,
                          faults=not args.no_faults, on_pool=on_pool, after=after)
    except ConnectError as exc:
        print(_connect_failed("demo", exc, dsn), file=sys.stderr)
        return 2
    finally:
        if progress is not None:
            progress.stop()
        if handle is not None:
            handle.stop()
    _demo_next_steps(dsn, args.console)
    return 0 if result.errors == 0 else 1


def _demo_next_steps(dsn: str, console: bool) -> None:
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


def _demo_report(result: Any, driver: str = "the driver") -> None:
    stats = result.stats
    rate = result.operations / result.seconds if result.seconds else 0.0
    _print_table("workload", [
        ("operations", result.operations), ("errors", result.errors),
        ("seconds", f"{result.seconds:.2f}"), ("operations/s", f"{rate:,.0f}"),
        *[(f"  {k}", v) for k, v in result.by_kind.items()]])
    keys = ("pool_size", "pool_max", "requests_num", "requests_queued", "requests_wait_ms",
            "requests_timeouts", "handoffs_num", "lease_reuses_num", "usage_ms",
            "connections_num", "connections_opened_last_hour", "connections_lost",
            "leaks_detected")
    _print_table("pool statistics", [(k, stats[k]) for k in keys if k in stats])
    bounds = stats["histogram_bounds_ms"]
    labels = [f"<={b:g} ms" for b in bounds] + [f">{bounds[-1]:g} ms"]
    _print_table("wait time histogram (requests)",
                 [(label, n) for label, n in zip(labels, stats["wait_ms_histogram"], strict=True)
                  if n])
    if result.timeout is not None:
        t = result.timeout
        outcome = t["error"] or "finished before its timeout"
        if "cancelled on the server" in outcome:
            outcome = "QueryTimeout raised: " + outcome.split(": ", 1)[-1].split(" (")[0]
        _print_table("slow query under a statement timeout", [
            ("statement", t["sql"][:200]), ("timeout", f"{t['timeout_s']:g} s"),
            ("returned after", f"{t['elapsed_s']:.3f} s"), ("outcome", outcome[:200])],
            text=True)
    if result.leak is not None:
        leak = result.leak
        monitor = leak.get("monitor_site") or (
            "not fed by this pool yet" if not leak.get("monitor_checkouts") else
            "saw checkouts, not this one")
        _print_table("planted leak", [
            ("planted at", leak["expected_site"]),
            ("leak detector", leak.get("detector_site") or "not detected"),
            ("held for", f"{leak.get('held_s') or 0:.2f} s by {leak.get('holder_thread')}"),
            ("resource monitor", monitor)], text=True)
    if result.top_sql:
        rows = [(f"{r.get('executions', r.get('count', 0)):,}", r.get("errors", 0),
                 f"{r.get('total_ms', 0):,.1f}", f"{r.get('mean_ms', 0):.3f}",
                 f"{r.get('max_ms', 0):,.1f}", r.get("fingerprint", "")[:300])
                for r in result.top_sql]
        _print_grid("top SQL fingerprints (by total time)",
                    ("runs", "errors", "total ms", "mean ms", "max ms", "fingerprint"),
                    rows, wide=5)
    uncounted = False
    if result.caches:
        cache_rows, notes = _cache_rows(result.caches, driver)
        uncounted = bool(notes) and bool(result.caches.get("stmt_cache_supported"))
        _print_table("caches", cache_rows)
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
        _print_grid("memory ledger", ("structure", "category", "bytes", "budget", "used"),
                    ledger)
    if result.not_enabled:
        _print_table("not enabled in this build", list(result.not_enabled.items()), text=True)


def _serve_until_interrupt(pool: Any, handle: Any, seconds: float | None,
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
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        print()
    finally:
        stop.set()
        thread.join(5)


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", help="database URL (default: an in-memory SQLite database)")
    p.add_argument("--threads", type=int, default=6, help="worker threads (default 6)")
    p.add_argument("--operations", type=int, default=3000, help="operations in all (default 3000)")
    p.add_argument("--max-size", type=int, default=3, help="pool max_size (default 3)")
    p.add_argument("--console", action="store_true",
                   help="serve the web console during the run and after it, until Ctrl-C")
    p.add_argument("--host", default="127.0.0.1", help="console address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="console port (default: a free one)")
    p.add_argument("--token", help=f"console token (default: ${_TOKEN_ENV})")
    p.add_argument("--console-seconds", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-faults", action="store_true",
                   help="skip the planted slow query and leak")


# ----------------------------------------------------------------------------- doctor
def _cmd_doctor(args: argparse.Namespace) -> int:
    import json
    import tomllib

    from .doctor import diagnose_file, format_report, parse_size

    try:
        limit = parse_size(args.memory_limit) if args.memory_limit else None
        report = diagnose_file(args.config, table=args.table, memory_limit=limit,
                               limit_source="--memory-limit" if limit else None,
                               statements_per_second=args.statements_per_second)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"poolkeeper doctor: cannot use {args.config}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({
            "path": report.path, "memory_limit": report.memory_limit,
            "limit_source": report.limit_source, "dangerous": report.dangerous,
            "worst_total_bytes": report.worst_total_bytes,
            "structures": [vars(s) for s in report.structures],
            "findings": [dict(vars(f), source=f.source) for f in report.findings]}, indent=1))
        return report.exit_code
    try:
        import rich  # noqa: F401 - only checking that it is installed
    except ImportError:
        print(format_report(report))
        return report.exit_code
    _doctor_rich(report)
    return report.exit_code


def _doctor_rich(report: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    from .doctor import format_bytes

    console = Console(highlight=False)
    config = report.config
    limit = format_bytes(report.memory_limit) if report.memory_limit else "unknown"
    console.print(f"[bold]poolkeeper doctor[/bold] {report.path}")
    if config.dsn:
        console.print(f"  dsn {mask_dsn(config.dsn)}, max_size {config.max_size}, "
                      f"min_idle {config.min_idle}; memory limit {limit} "
                      f"({report.limit_source})")
    table = Table(title="worst-case memory per structure", title_justify="left")
    table.add_column("structure", style="cyan", no_wrap=True)
    table.add_column("worst case", justify="right", no_wrap=True)
    table.add_column("bounded by", overflow="fold")
    for s in report.structures:
        worst = format_bytes(s.worst_bytes) if s.worst_bytes is not None else "unbounded"
        table.add_row(s.name, worst, s.bound + (f" [dim]({s.note})[/dim]" if s.note else ""))
    total = format_bytes(report.worst_total_bytes)
    table.add_row("[bold]total[/bold]", f"[bold]{total}[/bold]", "")
    console.print(table)
    if report.findings:
        console.print("[bold]risky settings[/bold]")
        style = {"danger": "bold red", "warning": "yellow", "info": "blue"}
        for f in report.findings:
            value = f" = {escape(f.value)}" if f.value else ""
            console.print(f"[{style.get(f.severity, '')}]{f.severity.upper():<8}[/] "
                          f"[cyan]{escape(f.setting)}{value}[/cyan]")
            console.print(Padding(Text(f.reason), (0, 0, 0, 9)))
            if f.source:
                console.print(Padding(Text(f"repeats: {f.source}", style="dim"), (0, 0, 0, 9)))
    else:
        console.print("no risky settings found")
    if report.dangerous:
        console.print("[bold red]verdict: dangerous settings (exit 1)[/]")
    else:
        console.print("[green]verdict: nothing dangerous (exit 0)[/]")


def _doctor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a TOML file with a [pool] table of PoolConfig options")
    p.add_argument("--table", default="pool", help="the TOML table to read (default: pool)")
    p.add_argument("--memory-limit", help="memory to judge against, e.g. 2GB "
                                          "(default: the cgroup limit, else physical memory)")
    p.add_argument("--statements-per-second", type=float, default=1000.0,
                   help="statement rate assumed for timeout estimates (default 1000)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


# ----------------------------------------------------------------------------- console
def _cmd_console(args: argparse.Namespace) -> int:
    from .config import PoolConfig
    from .console import serve
    from .errors import ConnectError, PoolError
    from .pool import Pool

    options: dict[str, Any] = {}
    try:
        config = PoolConfig.from_toml(args.config) if args.config else None
        if args.dsn:
            options["dsn"] = args.dsn
        if args.max_size is not None:
            options["max_size"] = args.max_size
        if args.name:
            options["name"] = args.name
        if config is None and "dsn" not in options:
            print("poolkeeper console: give --dsn URL or --config FILE", file=sys.stderr)
            return 2
        token = args.token or os.environ.get(_TOKEN_ENV)
        refused = _token_refused("console", args.host, token)
        if refused:
            print(refused, file=sys.stderr)
            return 2
        pool = Pool(config=config, **options) if config is not None else Pool(**options)
    except ConnectError as exc:
        dsn = options.get("dsn") or (config.dsn if config is not None else None)
        print(_connect_failed("console", exc, dsn), file=sys.stderr)
        return 2
    except (OSError, ValueError, PoolError) as exc:
        print(f"poolkeeper console: cannot open the pool: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            handle = serve([pool], host=args.host, port=args.port, token=token,
                           protect_reads=True if args.protect_reads else None)
        except ValueError as exc:
            print(f"poolkeeper console: {exc}", file=sys.stderr)
            return 2
        print(f"poolkeeper console for pool {pool.name!r} ({mask_dsn(pool.config.dsn or '')}) "
              f"at {handle.url}; Ctrl-C stops it", flush=True)
        try:
            deadline = None if args.seconds is None else time.monotonic() + args.seconds
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2)
        except KeyboardInterrupt:
            print()
        finally:
            handle.stop()
    finally:
        pool.close()
    return 0


def _console_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", help="database URL of the pool to serve")
    p.add_argument("--config", help="a TOML file with a [pool] table (--dsn overrides its dsn)")
    p.add_argument("--name", help="pool name shown in the console")
    p.add_argument("--max-size", type=int, default=None, help="pool max_size")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; others need a token)")
    p.add_argument("--port", type=int, default=8187, help="port (default 8187; 0: a free one)")
    p.add_argument("--token", help=f"access token (better: ${_TOKEN_ENV}, kept out of ps)")
    p.add_argument("--protect-reads", action="store_true",
                   help="require the token for reading pages on loopback too (on a machine "
                        "shared with other users)")
    p.add_argument("--seconds", type=float, default=None, help=argparse.SUPPRESS)


# ----------------------------------------------------------------------------- top
def _cmd_top(args: argparse.Namespace) -> int:
    from .console.top import run_top

    try:
        return run_top(args.url, interval=args.interval, count=args.count,
                       token=args.token or os.environ.get(_TOKEN_ENV), once=args.once)
    except ImportError:
        print("poolkeeper top needs rich: pip install 'poolkeeper[cli]'", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"poolkeeper top: {exc}", file=sys.stderr)
        return 2


def _top_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="the console's URL, e.g. http://127.0.0.1:8187/")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    p.add_argument("--count", type=int, default=None, help="stop after this many refreshes")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--token", help=f"console token (default: ${_TOKEN_ENV})")


# ----------------------------------------------------------------------------- load
def _cmd_load(args: argparse.Namespace) -> int:
    from .doctor import parse_size
    from .errors import ConnectError, PoolError
    from .loader import load_files
    from .pool import Pool

    try:
        budget = parse_size(args.budget)
    except ValueError as exc:
        print(f"poolkeeper load: --budget: {exc}", file=sys.stderr)
        return 2
    options: dict[str, Any] = {"budget_bytes": budget}
    if args.rejects:
        options["rejects_path"] = args.rejects
    fmt = args.format or ("jsonl" if all(str(p).endswith((".jsonl", ".ndjson"))
                                         for p in args.files) else "csv")
    progress: Any = None
    callback: Callable[[int, int, int], None] | None = None
    try:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
    except ImportError:
        pass
    else:
        progress = Progress(TextColumn("loading"), BarColumn(), DownloadColumn(),
                            TextColumn("{task.fields[rows]:,} rows"), transient=True)
        task = progress.add_task("load", total=None, rows=0)

        def callback(done: int, total: int, rows: int) -> None:
            progress.update(task, completed=done, total=total, rows=rows)

    try:
        with Pool(args.dsn, max_size=args.max_size, min_idle=1, name="load") as pool:
            if progress is not None:
                progress.start()
            try:
                summary = load_files(pool, args.table, args.files, fmt=fmt, progress=callback,
                                     delimiter=args.delimiter, null=args.null,
                                     encoding=args.encoding, **options)
            finally:
                if progress is not None:
                    progress.stop()
    except (OSError, ValueError) as exc:
        print(f"poolkeeper load: {exc}", file=sys.stderr)
        return 2
    except ConnectError as exc:
        print(_connect_failed("load", exc, args.dsn), file=sys.stderr)
        return 2
    except PoolError as exc:
        print(f"poolkeeper load: {exc}", file=sys.stderr)
        return 1
    rate = summary.rows_loaded / summary.seconds if summary.seconds else 0.0
    _print_table("poolkeeper load", [
        ("table", args.table), ("files", summary.files), ("rows read", f"{summary.rows_read:,}"),
        ("rows loaded", f"{summary.rows_loaded:,}"),
        ("rows rejected", f"{summary.rows_rejected:,}"), ("batches", summary.batches),
        ("seconds", f"{summary.seconds:.2f}"), ("rows/s", f"{rate:,.0f}")])
    if summary.rows_rejected:
        where = f" (see {args.rejects})" if args.rejects else ""
        print(f"{summary.rows_rejected:,} rows were rejected by the database{where}",
              file=sys.stderr)
        return 1
    return 0


def _load_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", help="the table to load into (it must exist)")
    p.add_argument("files", nargs="+", help="CSV files with a header row, or JSON-lines files")
    p.add_argument("--dsn", required=True, help="database URL")
    p.add_argument("--format", choices=("csv", "jsonl"), default=None,
                   help="file format (default: jsonl when every file ends in .jsonl, else csv)")
    p.add_argument("--delimiter", default=",", help="CSV field delimiter (default ,)")
    p.add_argument("--null", default="", help="CSV text meaning NULL (default: empty field)")
    p.add_argument("--encoding", default="utf-8", help="file encoding (default utf-8)")
    p.add_argument("--budget", default="64MB",
                   help="memory the loader may buffer across tables (default 64MB)")
    p.add_argument("--rejects", help="write rows the database refuses to this file "
                                     "(default: good rows still load, and refused rows make "
                                     "the command fail at the end)")
    p.add_argument("--max-size", type=int, default=4, help="pool max_size (default 4)")


# ----------------------------------------------------------------------------- registry
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                           Callable[[argparse.Namespace], int]]] = {
    "demo": ("run a short realistic workload and print the pool's report", _demo_args,
             _cmd_demo),
    "doctor": ("check a pool configuration: worst-case memory and risky settings",
               _doctor_args, _cmd_doctor),
    "console": ("serve a pool's web console (JSON API and /metrics too)", _console_args,
                _cmd_console),
    "top": ("live terminal view of a running console", _top_args, _cmd_top),
    "load": ("bulk-load CSV or JSON-lines files into a table", _load_args, _cmd_load),
}


_DESCRIPTION = """\
A database connection pool for sqlite3, PostgreSQL and MariaDB/MySQL that shows where
every connection, statement and byte goes. Try:

  poolkeeper demo                      a short workload on in-memory SQLite, then its report
  poolkeeper demo --console            the same, serving the web console while it runs
  poolkeeper demo --dsn postgresql://postgres@127.0.0.1:5432/test
  poolkeeper doctor pool.toml          worst-case memory and risky settings of a [pool] table
  poolkeeper console --dsn URL         serve a pool's web console until Ctrl-C
  poolkeeper top URL                   a live terminal view of a running console
  poolkeeper load --dsn URL TABLE FILE...   bulk-load CSV / JSON-lines files

URLs: sqlite:///file.db, sqlite://:memory:, postgresql://user@host:5432/db,
mysql://user@host:3306/db. Console token: --token or $POOLKEEPER_CONSOLE_TOKEN.
"poolkeeper COMMAND --help" shows a command's options."""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="poolkeeper", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"poolkeeper {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, _run) in _COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _COMMANDS[args.command][2](args)


if __name__ == "__main__":
    sys.exit(main())
