"""Tables for the commands' reports: drawn with rich when installed (the ``cli`` extra), as
plain text otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["print_grid", "print_table"]


def print_table(title: str, rows: list[tuple[str, Any]], *, text: bool = False) -> None:
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


def print_grid(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
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
