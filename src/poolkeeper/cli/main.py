"""The ``poolkeeper`` command line: its arguments and the table of commands.

    poolkeeper demo [--dsn URL] [--console]     a realistic workload, then the pool's report
    poolkeeper doctor CONFIG.toml               worst-case memory and risky settings
    poolkeeper console --dsn URL                serve a pool's web console until Ctrl-C
    poolkeeper top URL                          a live terminal view of a running console
    poolkeeper load --dsn URL TABLE FILE...     bulk-load CSV / JSON-lines files

Each command is a module of this package with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> exit code``. Built on argparse (standard library); output drawn with rich when
installed (the ``cli`` extra), as plain text otherwise.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import console, demo, doctor, load, top

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


@dataclass(frozen=True)
class Command:
    """One ``poolkeeper COMMAND``: its help line, its options and what runs it."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: every command, in the order ``poolkeeper --help`` lists them
COMMANDS: dict[str, Command] = {
    "demo": Command(demo.HELP, demo.add_arguments, demo.run),
    "doctor": Command(doctor.HELP, doctor.add_arguments, doctor.run),
    "console": Command(console.HELP, console.add_arguments, console.run),
    "top": Command(top.HELP, top.add_arguments, top.run),
    "load": Command(load.HELP, load.add_arguments, load.run),
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
    from .. import __version__

    parser = argparse.ArgumentParser(prog="poolkeeper", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"poolkeeper {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help,
                                             description=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command with ``argv`` (default: ``sys.argv[1:]``); returns its exit code."""
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command].run(args)
