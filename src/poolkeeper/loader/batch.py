"""Batches (a sealed region with a deterministic id) and the ledger of committed batch ids.

A batch id is ``<label>:<run>:<table>:<seq>``: the run part is unique per Loader (time +
randomness), ``seq`` counts the regions the run opened. The id is fixed when the region
opens, written into the spill log with its rows, and reused by every retry and by a replay
after a crash.

The *ledger* is a small table in the target database. A batch inserts its id there in the
same transaction as its rows, first, so:

- a retry after an ambiguous failure (connection lost during COMMIT) finds its id already
  there (a unique-key violation) and knows the rows are in: it does not load them twice;
- a concurrent duplicate blocks on the key until the first commits or rolls back.

Rows of a run are deleted from the ledger when the run closes cleanly (nothing of it can be
retried or replayed any more); rows older than ``ledger_retention_s`` are purged at start, so
the ledger stays small even after crashes.
"""

from __future__ import annotations

import secrets
import time
from array import array
from dataclasses import dataclass, field

__all__ = ["Batch", "FlushReason", "Ledger", "is_plain_identifier", "make_run_id", "spill_safe"]


class FlushReason:
    """Why a region was flushed (each is a ``flushes_<reason>`` counter)."""

    SIZE = "size"  #: the region reached batch_bytes, or was the largest at the soft limit
    ROWS = "rows"  #: the region reached batch_rows
    AGE = "age"  #: the region's first row is older than max_age_s
    EXPLICIT = "explicit"  #: flush() was called
    CLOSE = "close"  #: close() flushed what was left
    REPLAY = "replay"  #: a batch in the spill log of an earlier run was loaded at start
    ALL = (SIZE, ROWS, AGE, EXPLICIT, CLOSE, REPLAY)


def make_run_id() -> str:
    """A run id that sorts by start time and never repeats: ``YYYYmmddHHMMSS-<8 hex>``."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


@dataclass(slots=True)
class Batch:
    """A sealed region on its way to the database."""

    table: str
    batch_id: str
    seq: int
    columns: tuple[str, ...] | None
    data: bytes | bytearray
    ends: array[int]
    #: bytes counted in the budget for this batch (released when it is done)
    nbytes: int
    reason: str
    #: whether its rows are in the spill log (durable mode)
    spilled: bool = False
    created: float = field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        return len(self.ends)

    def start(self, i: int) -> int:
        """Offset of record ``i`` in ``data``."""
        return self.ends[i - 1] if i > 0 else 0

    def span(self, lo: int, hi: int) -> memoryview:
        """Records ``lo`` .. ``hi - 1`` as one buffer (no copy)."""
        return memoryview(self.data)[self.start(lo):self.ends[hi - 1]]

    def record(self, i: int) -> bytes:
        return bytes(self.data[self.start(i):self.ends[i]])

    def __repr__(self) -> str:
        return f"<Batch {self.batch_id} rows={self.rows} bytes={self.nbytes} ({self.reason})>"


class Ledger:
    """The SQL of the ledger table in one dialect ("postgresql", "mysql", "sqlite")."""

    def __init__(self, dialect: str, table: str) -> None:
        if not is_plain_identifier(table):
            raise ValueError(f"ledger_table={table!r} must be a plain identifier "
                             "(letters, digits, underscore)")
        self.dialect = dialect
        self.table = table
        ph = "?" if dialect == "sqlite" else "%s"
        self.ph = ph
        if dialect == "postgresql":
            self.create = (
                f"CREATE TABLE IF NOT EXISTS {table} (batch_id text PRIMARY KEY, "
                "run_id text NOT NULL, table_name text NOT NULL, row_count bigint NOT NULL, "
                "committed_at timestamptz NOT NULL DEFAULT now())")
            self.purge = (f"DELETE FROM {table} WHERE committed_at < now() - "
                          f"make_interval(secs => {ph})")
        elif dialect == "mysql":
            self.create = (
                f"CREATE TABLE IF NOT EXISTS {table} (batch_id VARCHAR(255) NOT NULL PRIMARY "
                "KEY, run_id VARCHAR(64) NOT NULL, table_name VARCHAR(255) NOT NULL, "
                "row_count BIGINT NOT NULL, committed_at TIMESTAMP(6) NOT NULL DEFAULT "
                "CURRENT_TIMESTAMP(6)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
            self.purge = (f"DELETE FROM {table} WHERE committed_at < "
                          f"NOW(6) - INTERVAL {ph} SECOND")
        elif dialect == "sqlite":
            self.create = (
                f"CREATE TABLE IF NOT EXISTS {table} (batch_id TEXT PRIMARY KEY, "
                "run_id TEXT NOT NULL, table_name TEXT NOT NULL, row_count INTEGER NOT NULL, "
                "committed_at INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER)))")
            self.purge = (f"DELETE FROM {table} WHERE committed_at < "
                          f"CAST(strftime('%s', 'now') AS INTEGER) - {ph}")
        else:
            raise ValueError(f"no ledger for the {dialect!r} dialect")
        self.insert = (f"INSERT INTO {table} (batch_id, run_id, table_name, row_count) "
                       f"VALUES ({ph}, {ph}, {ph}, {ph})")
        self.lookup = f"SELECT row_count FROM {table} WHERE batch_id = {ph}"
        self.delete_run = f"DELETE FROM {table} WHERE run_id = {ph}"


def is_plain_identifier(name: str) -> bool:
    """Letters, digits and underscores only: safe to put into SQL unquoted."""
    return bool(name) and all(c.isalnum() or c == "_" for c in name)


def spill_safe(name: str, limit: int = 48) -> str:
    """A file-name-safe rendering of a table name (the header keeps the exact name)."""
    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)
    return safe[:limit] or "_"

