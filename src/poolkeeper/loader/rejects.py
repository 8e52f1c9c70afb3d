"""Rows the database refused, with its error: to a callback, a JSON-lines file, and memory.

A rejected row is never just dropped. It goes to ``on_reject(reject)`` and/or is appended to
``rejects_path`` (one JSON object per line), and the most recent ones are kept in memory up to
``max_bytes`` (:meth:`RejectSink.recent`; what falls out is counted in ``rejects_evicted``).

Rejects are delivered *before* the batch's good rows are committed, so a crash in between
delivers them again on replay: a reject may be reported twice, never zero times.

A row is shown as the database would read it: PostgreSQL and MariaDB fields as text (bytes
as ``\\x<hex>`` in the file), SQLite values with their types.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["Reject", "RejectSink"]


@dataclass(frozen=True, slots=True)
class Reject:
    """One row the database refused."""

    table: str
    batch_id: str
    #: the row's position in its batch
    index: int
    row: tuple[Any, ...]
    #: the database's error message (first lines), or why the row was not attempted
    error: str
    #: SQLSTATE (PostgreSQL), error number (MariaDB) or None
    code: str | None

    def to_json(self) -> str:
        return json.dumps({
            "table": self.table, "batch_id": self.batch_id, "index": self.index,
            "row": [_jsonable(v) for v in self.row], "error": self.error, "code": self.code,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, ensure_ascii=False)

    def nbytes(self) -> int:
        return 200 + sum(len(v) if isinstance(v, str | bytes) else 16 for v in self.row) + \
            len(self.error)


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, bytes | bytearray | memoryview):
        return "\\x" + bytes(v).hex()
    return str(v)


class RejectSink:
    """Where rejected rows go. Thread-safe; the file is opened on first use."""

    def __init__(self, path: str | None, callback: Callable[[Reject], Any] | None,
                 max_bytes: int = 1 << 20) -> None:
        self.path = path
        self.callback = callback
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._recent: deque[Reject] = deque()
        self._recent_bytes = 0
        self.rejected = 0
        self.evicted = 0
        self.callback_errors = 0

    @property
    def durable(self) -> bool:
        """Whether rejects reach something beyond this process's memory."""
        return self.path is not None or self.callback is not None

    def deliver(self, rejects: list[Reject]) -> list[BaseException]:
        """Hand rejects on; returns the callback's exceptions (the caller surfaces them)."""
        errors: list[BaseException] = []
        if not rejects:
            return errors
        with self._lock:
            self.rejected += len(rejects)
            if self.path is not None:
                if self._file is None:
                    self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
                self._file.write("".join(r.to_json() + "\n" for r in rejects))
                self._file.flush()
            for r in rejects:
                self._recent.append(r)
                self._recent_bytes += r.nbytes()
            while self._recent_bytes > self.max_bytes and self._recent:
                self._recent_bytes -= self._recent.popleft().nbytes()
                self.evicted += 1
        if self.callback is not None:
            for r in rejects:
                try:
                    self.callback(r)
                except Exception as exc:  # noqa: BLE001 - surfaced by the loader
                    self.callback_errors += 1
                    errors.append(exc)
        return errors

    def recent(self) -> list[Reject]:
        """The most recent rejects still held in memory (bounded by ``max_bytes``)."""
        with self._lock:
            return list(self._recent)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def stats(self) -> dict[str, int]:
        return {"rows_rejected": self.rejected, "rejects_evicted": self.evicted,
                "rejects_held_bytes": self._recent_bytes,
                "reject_callback_errors": self.callback_errors}
