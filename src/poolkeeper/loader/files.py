"""Load CSV and JSON-lines files into one table: what ``poolkeeper load`` runs.

Example::

    from poolkeeper import Pool
    from poolkeeper.loader import load_files

    with Pool("postgresql://app@127.0.0.1/shop") as pool:
        summary = load_files(pool, "orders", ["orders-1.csv", "orders-2.csv"],
                             progress=lambda done, total, rows: print(done, "/", total))
    print(summary.rows_loaded, summary.rows_rejected)

CSV files start with a header naming the columns; an empty field is NULL (``null=``
changes which text means NULL). JSON-lines files hold one object per line; the keys of the
first object name the columns, nested arrays and objects are loaded as JSON text. Values reach
the database as text and are converted by it to the column types.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import LoaderError
from .loader import Loader

__all__ = ["LoadSummary", "load_files"]

#: progress(bytes_done, bytes_total, rows_read)
Progress = Callable[[int, int, int], Any]


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """What :func:`load_files` did."""

    files: int
    rows_read: int
    rows_loaded: int
    rows_rejected: int
    batches: int
    seconds: float
    stats: dict[str, Any]


class _Counted:
    """Lines of a binary file as text, counting the bytes consumed (for progress)."""

    def __init__(self, fh: io.BufferedReader, encoding: str) -> None:
        self.fh = fh
        self.encoding = encoding
        self.bytes = 0
        self.line = 0

    def __iter__(self) -> Iterator[str]:
        for raw in self.fh:
            self.bytes += len(raw)
            self.line += 1
            yield raw.decode(self.encoding)


def load_files(pool: Any, table: str, paths: Sequence[str | os.PathLike[str]], *,
               fmt: str = "csv", progress: Progress | None = None, delimiter: str = ",",
               null: str = "", encoding: str = "utf-8", **loader_options: Any) -> LoadSummary:
    """Load every file in ``paths`` into ``table`` (``fmt``: "csv" or "jsonl").

    ``loader_options`` go to :class:`Loader` (``budget_bytes``, ``rejects_path``, ...).
    Raises :class:`ValueError` naming the file and line of malformed input (rows before it
    are loaded), and :class:`~poolkeeper.errors.LoaderError` for rows the database refused
    when no ``rejects_path``/``on_reject`` was given.
    """
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"fmt={fmt!r} is not supported: use 'csv' or 'jsonl'")
    files = [os.fspath(p) for p in paths]
    if not files:
        raise ValueError("load_files() needs at least one file")
    total = 0
    for path in files:
        try:
            total += os.path.getsize(path)
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
    start = time.monotonic()
    done_before = 0
    rows = 0
    loader_options.setdefault("max_age_s", None)
    loader = Loader(pool, **loader_options)
    try:
        for path in files:
            with open(path, "rb") as fh:
                src = _Counted(fh, encoding)
                parsed = (_csv_rows(src, delimiter, null, loader, table) if fmt == "csv"
                          else _jsonl_rows(src, loader, table))
                chunk: list[Any] = []
                while True:
                    try:
                        row = next(parsed)
                    except StopIteration:
                        break
                    except (ValueError, TypeError) as exc:
                        rows += loader.write_many(table, chunk)  # the good rows before it
                        raise ValueError(f"{path}, line {src.line}: {exc} ({rows} rows before "
                                         "it were accepted and are loaded)") from exc
                    chunk.append(row)
                    if len(chunk) >= 1000:
                        rows += loader.write_many(table, chunk)
                        chunk.clear()
                        if progress is not None:
                            progress(done_before + src.bytes, total, rows)
                rows += loader.write_many(table, chunk)
            done_before += os.path.getsize(path)
            if progress is not None:
                progress(done_before, total, rows)
        loader.close()
    except BaseException:
        if not loader.closed:
            with contextlib.suppress(LoaderError):  # the original error is the one to report
                loader.close()
        raise
    stats = loader.stats()
    return LoadSummary(files=len(files), rows_read=rows, rows_loaded=stats["rows_loaded"],
                       rows_rejected=stats["rows_rejected"],
                       batches=stats["batches_committed"],
                       seconds=time.monotonic() - start, stats=stats)


def _csv_rows(src: _Counted, delimiter: str, null: str, loader: Loader,
              table: str) -> Iterator[tuple[Any, ...]]:
    reader = csv.reader(src, delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return
    columns = [c.strip() for c in header]
    loader.declare(table, columns)
    width = len(columns)
    for record in reader:
        if not record:
            continue
        if len(record) != width:
            raise ValueError(f"{len(record)} fields where the header has {width}")
        yield tuple(None if v == null else v for v in record)


def _jsonl_rows(src: _Counted, loader: Loader, table: str) -> Iterator[dict[str, Any]]:
    declared = False
    for line in src:
        text = line.strip()
        if not text:
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"each line must be a JSON object, not {type(obj).__name__}")
        if not declared:
            loader.declare(table, [str(k) for k in obj])
            declared = True
        yield {k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in obj.items()}
