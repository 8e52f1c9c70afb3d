"""The ``poolkeeper`` command line: ``demo`` (more subcommands register in ``_COMMANDS``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .config import mask_dsn

__all__ = ["main"]


def _print_table(title: str, rows: list[tuple[str, Any]]) -> None:
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
    table.add_column(style="cyan")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, str(value))
    Console().print(table)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    dsn = args.dsn or "sqlite://:memory:"
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
    try:
        result = run_demo(dsn, threads=args.threads, operations=args.operations,
                          max_size=args.max_size, progress=progress_cb)
    finally:
        if progress is not None:
            progress.stop()
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
    return 0 if result.errors == 0 else 1


_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                           Callable[[argparse.Namespace], int]]] = {}


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", help="database URL (default: an in-memory SQLite database)")
    p.add_argument("--threads", type=int, default=6, help="worker threads (default 6)")
    p.add_argument("--operations", type=int, default=3000, help="operations in all (default 3000)")
    p.add_argument("--max-size", type=int, default=3, help="pool max_size (default 3)")


_COMMANDS["demo"] = ("run a short realistic workload and print the pool's report", _demo_args,
                     _cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poolkeeper", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, _run) in _COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _COMMANDS[args.command][2](args)


if __name__ == "__main__":
    sys.exit(main())
