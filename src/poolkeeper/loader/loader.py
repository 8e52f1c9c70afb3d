"""The bulk loader's public face: :class:`Loader`.

Example::

    from poolkeeper import Pool
    from poolkeeper.loader import Loader

    with Pool("postgresql://app@127.0.0.1/shop") as pool:
        with Loader(pool, budget_bytes=64 << 20,
                    columns={"orders": ("id", "customer", "total")},
                    rejects_path="rejects.jsonl",
                    on_flushed=lambda table, batch_id, rows: offsets.commit(batch_id)) as loader:
            for event in stream:
                loader.write(event.table, event.row)     # tuple (declared columns) or dict

The keyword arguments become one validated :class:`~.options.LoaderOptions`
(:meth:`Loader.from_options` takes one directly); the work is done by the
:class:`~.engine.Engine` this facade holds: rows wait in the :class:`~.buffer.Buffer` (one
region per table, all under ``budget_bytes``; above half of it the largest region is
flushed, at the budget ``write()`` blocks up to ``write_timeout_s``, then
:class:`~poolkeeper.errors.LoaderBackpressure`; nothing is dropped to make room) and worker
threads load them batch by batch through the :class:`~.flusher.Flusher`, one pool connection
each per batch, one transaction per batch with a ledger row that makes retries idempotent.

Threads: ``workers`` threads named ``poolkeeper-loader-<name>-<i>``, all stopped by
:meth:`Loader.close` or :meth:`Loader.abort` (and, as a last net, when an unclosed loader is
garbage-collected).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from .engine import Engine
from .options import LoaderOptions
from .rejects import Reject

__all__ = ["Loader"]


class Loader:
    """Bulk-load rows into many tables through a pool, under one memory budget.

    Rows are encoded as they are written and buffered per table; worker threads load them in
    batches with the database's fastest bulk path (PostgreSQL ``COPY``, MariaDB ``LOAD DATA
    LOCAL INFILE``, SQLite ``executemany``), one transaction per batch.

    Memory: everything held (buffered and loading) stays under ``budget_bytes`` plus one row.
    From half of it, the largest table's rows are flushed; at the budget, ``write()`` waits
    (``write_timeout_s``, then :class:`~poolkeeper.errors.LoaderBackpressure`). No row is
    ever dropped to make room.

    Exactly once: each batch has a deterministic id, recorded in a ledger table in the same
    transaction as its rows (``ledger=True``, the default), so a retry after a lost COMMIT
    does not load it twice. Transient errors retry with backoff; rows the database refuses
    are isolated and go to ``rejects_path`` / ``on_reject``; errors that retrying cannot fix
    (missing table, permission) are raised by the next ``write``, ``flush`` or ``close``.

    Durable mode (``spill_dir=``): each row is appended to a spill log before ``write()``
    returns; a process killed at any point loses nothing it acknowledged, and the next loader
    on the same directory loads what was not committed (the ledger skips what was).

    Example::

        with Loader(pool, budget_bytes=32 << 20, columns={"events": ("id", "kind", "at")},
                    rejects_path="rejects.jsonl") as loader:
            loader.write("events", (1, "click", datetime.now(UTC)))
            loader.write("audit", {"who": "me", "what": "login"})   # columns from the dict

    Options (seconds unless named otherwise): ``batch_rows`` (100,000) and ``batch_bytes``
    (budget/8, at most 4 MiB) flush a table's rows when reached; ``max_age_s`` (5) flushes
    rows older than that; ``workers`` threads load (2; 1 for SQLite), each with one pool
    connection at a time; ``retry_deadline_s`` (60) bounds retries of one batch;
    ``reject_limit`` (1,000) rejected rows per batch before the rest is rejected unattempted;
    ``on_flushed(table, batch_id, rows)`` is called after each commit (commit source offsets
    there); ``label`` prefixes batch ids; ``mysql_local_infile=False`` forces multi-row
    INSERT on MariaDB; ``spill_segment_bytes`` (64 MiB) sizes the spill log's segment files.
    The keyword arguments are the fields of :class:`~.options.LoaderOptions`, validated there
    (a :class:`~poolkeeper.errors.ConfigError` names the option, the value and what to use).
    """

    def __init__(self, pool: Any, budget_bytes: int = 64 << 20, *,
                 columns: Mapping[str, Sequence[str]] | None = None,
                 batch_rows: int = 100_000, batch_bytes: int | None = None,
                 max_age_s: float | None = 5.0, workers: int | None = None,
                 write_timeout_s: float = 60.0, close_timeout_s: float = 120.0,
                 retry_deadline_s: float = 60.0, retry_backoff_s: float = 0.05,
                 retry_backoff_max_s: float = 5.0, reject_limit: int = 1_000,
                 rejects_path: str | os.PathLike[str] | None = None,
                 on_reject: Callable[[Reject], Any] | None = None,
                 on_flushed: Callable[[str, str, int], Any] | None = None,
                 spill_dir: str | os.PathLike[str] | None = None,
                 spill_segment_bytes: int = 64 << 20, spill_fsync: bool = False,
                 ledger: bool = True, ledger_table: str = "poolkeeper_loader_ledger",
                 ledger_retention_s: float = 7 * 86_400, label: str = "pk",
                 mysql_local_infile: bool = True, connection_timeout_s: float = 30.0,
                 name: str | None = None) -> None:
        self._start(pool, LoaderOptions(
            budget_bytes=budget_bytes, columns=columns, batch_rows=batch_rows,
            batch_bytes=batch_bytes, max_age_s=max_age_s, workers=workers,
            write_timeout_s=write_timeout_s, close_timeout_s=close_timeout_s,
            retry_deadline_s=retry_deadline_s, retry_backoff_s=retry_backoff_s,
            retry_backoff_max_s=retry_backoff_max_s, reject_limit=reject_limit,
            rejects_path=os.fspath(rejects_path) if rejects_path is not None else None,
            on_reject=on_reject, on_flushed=on_flushed,
            spill_dir=os.fspath(spill_dir) if spill_dir is not None else None,
            spill_segment_bytes=spill_segment_bytes, spill_fsync=spill_fsync, ledger=ledger,
            ledger_table=ledger_table, ledger_retention_s=ledger_retention_s, label=label,
            mysql_local_infile=mysql_local_infile, connection_timeout_s=connection_timeout_s,
            name=name))

    @classmethod
    def from_options(cls, pool: Any, options: LoaderOptions) -> Loader:
        """A loader with options built beforehand (same as the keyword arguments)::

            options = LoaderOptions(budget_bytes=32 << 20, rejects_path="rejects.jsonl")
            with Loader.from_options(pool, options.replace(workers=4)) as loader:
                ...
        """
        loader = cls.__new__(cls)
        loader._start(pool, options)
        return loader

    def _start(self, pool: Any, options: LoaderOptions) -> None:
        self._engine = Engine(pool, options)
        self._finalizer = weakref.finalize(self, self._engine.abandon)
        # write() is the hot path: skip this facade's frame (same signature and behaviour).
        self.write = self._engine.make_write()  # type: ignore[method-assign,assignment]

    # ------------------------------------------------------------------ rows
    def write(self, table: str, row: Sequence[Any] | Mapping[str, Any]) -> None:
        """Buffer one row for ``table`` (a tuple/list in column order, or a dict).

        Returns once the row is accepted (and, in durable mode, in the spill log). Raises
        TypeError/ValueError for a row that cannot be encoded (nothing is buffered then),
        :class:`~poolkeeper.errors.LoaderBackpressure` after ``write_timeout_s`` at the hard
        limit, and :class:`~poolkeeper.errors.LoaderError` for an earlier batch that failed.
        """
        self._engine.write(table, row)

    def write_many(self, table: str, rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int:
        """Buffer many rows for one table (faster than a loop of write()); how many."""
        return self._engine.write_many(table, rows)

    def declare(self, table: str, columns: Sequence[str]) -> None:
        """Name the columns that tuple rows of ``table`` fill, in order (before its rows)."""
        self._engine.declare(table, columns)

    # ------------------------------------------------------------------ control
    def flush(self, table: str | None = None, timeout: float | None = None) -> None:
        """Load the rows written so far (of ``table``, or all) and wait until committed.

        Raises :class:`~poolkeeper.errors.LoaderError` for batches that failed, or when
        ``timeout`` (default ``close_timeout_s``) passes first.
        """
        self._engine.flush(table, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush everything within ``timeout`` (default ``close_timeout_s``), then release
        every thread, connection and file the loader holds (the spill log keeps rows not
        loaded, for the next run). Raises the errors not yet raised."""
        self._engine.close(timeout)
        self._finalizer.detach()

    def abort(self) -> int:
        """Stop at once without loading what is buffered; returns how many rows that was.

        Running statements are interrupted and rolled back; threads, connections and temp
        files are released. In durable mode the rows stay in the spill log and the next
        loader on that directory loads them.
        """
        dropped = self._engine.abort()
        self._finalizer.detach()
        return dropped

    # ------------------------------------------------------------------ views
    def stats(self) -> dict[str, Any]:
        """Counters and gauges (bytes, rows, batches, flushes by reason, retries, rejects)."""
        return self._engine.stats()

    def rejected(self) -> list[Reject]:
        """The most recent rejected rows held in memory (bounded; see also rejects_path)."""
        return self._engine.rejects.recent()

    @property
    def options(self) -> LoaderOptions:
        """The options this loader was built with."""
        return self._engine.options

    @property
    def name(self) -> str:
        return self._engine.name

    @property
    def run_id(self) -> str:
        """This run's id (part of every batch id)."""
        return self._engine.run_id

    @property
    def target(self) -> str:
        """How rows are loaded: "copy", "load_data", "insert" or "executemany"."""
        return self._engine.flusher.target.name

    @property
    def threads(self) -> list[threading.Thread]:
        """The threads this loader started (all stop on close() / abort())."""
        return self._engine.threads

    @property
    def closed(self) -> bool:
        return self._engine.closed

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Rows written before an exception were accepted: they are loaded, not discarded.
        self.close()

    def __repr__(self) -> str:
        return repr(self._engine)
