"""``poolkeeper load --dsn URL TABLE FILE...``: bulk-load CSV or JSON-lines files into a table
through :func:`poolkeeper.load_files`, with a progress bar when rich is installed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ..errors import ConnectError, PoolError
from ..loader import load_files
from ..pool import Pool
from .failures import connect_failed
from .output import print_table
from .sizes import parse_size

__all__ = ["add_arguments", "run"]

#: what ``poolkeeper --help`` says of this command
HELP = "bulk-load CSV or JSON-lines files into a table"


def run(args: argparse.Namespace) -> int:
    """Load the files; 0 when every row loaded, 1 when rows were refused, 2 on bad input."""
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
        print(connect_failed("load", exc, args.dsn), file=sys.stderr)
        return 2
    except PoolError as exc:
        print(f"poolkeeper load: {exc}", file=sys.stderr)
        return 1
    rate = summary.rows_loaded / summary.seconds if summary.seconds else 0.0
    print_table("poolkeeper load", [
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


def add_arguments(p: argparse.ArgumentParser) -> None:
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
