"""``poolkeeper doctor CONFIG.toml``: print what :mod:`.diagnosis` finds in a ``[pool]`` table.

As rich tables when rich is installed, as plain text otherwise (:func:`format_report`), or as
JSON (``--json``). Exit 1 when a setting is dangerous, 2 when the file cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib

from ..config import mask_dsn
from .diagnosis import Report, diagnose_file
from .sizes import format_bytes, parse_size

__all__ = ["add_arguments", "format_report", "run"]

#: what ``poolkeeper --help`` says of this command
HELP = "check a pool configuration: worst-case memory and risky settings"


def run(args: argparse.Namespace) -> int:
    """Diagnose the file; exit 0 (nothing dangerous), 1 (dangerous) or 2 (unreadable)."""
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
    _print_rich(report)
    return report.exit_code


def _print_rich(report: Report) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a TOML file with a [pool] table of PoolConfig options")
    p.add_argument("--table", default="pool", help="the TOML table to read (default: pool)")
    p.add_argument("--memory-limit", help="memory to judge against, e.g. 2GB "
                                          "(default: the cgroup limit, else physical memory)")
    p.add_argument("--statements-per-second", type=float, default=1000.0,
                   help="statement rate assumed for timeout estimates (default 1000)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def format_report(report: Report) -> str:
    """The report as plain text (the CLI draws the same with rich when it is installed)."""
    lines = [f"poolkeeper doctor: {report.path or 'configuration'}"]
    if report.config.dsn:
        lines.append(f"  dsn: {mask_dsn(report.config.dsn)}")
    limit = format_bytes(report.memory_limit) if report.memory_limit else "unknown"
    lines.append(f"  memory limit: {limit} ({report.limit_source})")
    lines.append("")
    lines.append("worst-case memory per structure:")
    width = max((len(s.name) for s in report.structures), default=10)
    for s in report.structures:
        worst = format_bytes(s.worst_bytes) if s.worst_bytes is not None else "unbounded"
        lines.append(f"  {s.name:<{width}}  {worst:>10}  {s.bound}"
                     + (f" ({s.note})" if s.note else ""))
    lines.append(f"  {'total':<{width}}  {format_bytes(report.worst_total_bytes):>10}")
    lines.append("")
    if not report.findings:
        lines.append("no risky settings found")
    for f in report.findings:
        value = f" = {f.value}" if f.value else ""
        lines.append(f"{f.severity.upper():<8} {f.setting}{value}")
        lines.append(f"         {f.reason}")
        if f.source:
            lines.append(f"         repeats: {f.source}")
    lines.append("")
    lines.append("verdict: " + ("DANGEROUS (exit 1)" if report.dangerous else "ok (exit 0)"))
    return "\n".join(lines)
