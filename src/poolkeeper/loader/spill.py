"""Durable mode: every row is appended to a spill log before ``write()`` returns.

The log is a sequence of *segment* files (``<run>-<n>.spill``) shared by all tables: one
append per row, to one open file, however many tables are written. (A file per table would
cost a descriptor or an ``open()`` per write, and a file creation per batch; with 10,000
tables that is what exhausted the StarRocks connector.) Lines::

    H\\t{"seq":..,"table":..,"batch_id":..,"codec":..,"columns":..}\\n   a region opens
    <seq>:<length>\\t<encoded record>\\n                                 one row of it

Records are framed by their length (SQLite's are binary); a line cut short by a kill (the
last one written) is recognised by its length and ignored: its ``write()`` never returned.

A segment is closed when it reaches ``segment_bytes`` and deleted once every batch with rows
in it is committed (or its rows handed to the rejects sink). A segment left by a killed
process is replayed by the next loader on the same directory, batch by batch under the
original batch ids, so the ledger tells which ones were committed already.

Writes go straight to the kernel (``os.write``, no user-space buffer): that is what survives
SIGKILL. ``fsync=True`` also survives power loss, at the price of a disk flush per row. A
directory is used by one loader at a time (an exclusive ``flock`` on ``.lock``, released by
the kernel however the process dies).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import LoaderError

__all__ = ["SpillLog", "SpilledBatch"]

_SUFFIX = ".spill"
_HEADER = b"H\t"


@dataclass(slots=True)
class SpilledBatch:
    """A batch read back from the segments of an earlier run, for replay."""

    table: str
    batch_id: str
    seq: int
    codec: str
    columns: tuple[str, ...] | None
    data: bytearray = field(default_factory=bytearray)
    ends: array[int] = field(default_factory=lambda: array("q"))


class SpillLog:
    """The spill directory of one loader. Not thread-safe: the loader holds its lock."""

    def __init__(self, directory: str, *, run_id: str, segment_bytes: int = 64 << 20,
                 fsync: bool = False, track: Callable[..., Any] | None = None) -> None:
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self.run_id = run_id
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._fd = -1
        #: the resource monitor's track(kind, size=...) (a record per open segment)
        self._track = track
        self._token: Any = None
        self._active: str | None = None
        self._active_size = 0
        self._next_segment = 1
        #: segment path -> batch ids with rows in it not yet done
        self._live: dict[str, set[str]] = {}
        #: batch id -> segments holding its rows
        self._where: dict[str, list[str]] = {}
        self.segments_created = 0
        self.segments_removed = 0
        self.bytes_written = 0
        self.torn_bytes = 0
        self._lock_fd = os.open(os.path.join(self.directory, ".lock"),
                                os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise LoaderError(
                f"spill directory {self.directory} is in use by another loader (its .lock is "
                "held); give each loader its own spill_dir") from exc

    # ------------------------------------------------------------------ writing
    @staticmethod
    def header(seq: int, table: str, batch_id: str, codec: str,
               columns: tuple[str, ...] | None) -> bytes:
        meta = {"seq": seq, "table": table, "batch_id": batch_id, "codec": codec,
                "columns": list(columns) if columns is not None else None}
        return _HEADER + json.dumps(meta, separators=(",", ":")).encode() + b"\n"

    def append(self, batch_id: str, seq: int, record: bytes | memoryview,
               header: bytes | None = None) -> None:
        """Append one row of batch ``batch_id`` (with its region's header when it is the
        first). On failure (disk full) the segment is cut back to where it was, so a later
        append never lands after half a line, and the error is raised."""
        if self._fd < 0 or self._active_size >= self.segment_bytes:
            self._rotate()
        prefix = b"%d:%d\t" % (seq, len(record))
        parts = ([header, prefix, record, b"\n"] if header is not None
                 else [prefix, record, b"\n"])
        fd = self._fd
        want = sum(len(p) for p in parts if p is not None)
        written = 0
        try:
            written = os.writev(fd, parts)
            while written < want:  # a short write: finish it
                flat = b"".join(bytes(p) for p in parts if p is not None)
                written += os.write(fd, flat[written:])
            if self.fsync:
                os.fsync(fd)
        except OSError:
            if written:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._active_size)
            raise
        self._active_size += written
        self.bytes_written += written
        active = self._active
        assert active is not None
        where = self._where.get(batch_id)
        if where is None:
            self._where[batch_id] = [active]
            self._live[active].add(batch_id)
        elif where[-1] != active:
            where.append(active)
            self._live[active].add(batch_id)

    def _rotate(self) -> None:
        old = self._active
        self._close_fd()
        if old is not None and not self._live.get(old):
            self._unlink(old)
        name = f"{self.run_id}-{self._next_segment:06d}{_SUFFIX}"
        self._next_segment += 1
        path = os.path.join(self.directory, name)
        self._fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_APPEND, 0o600)
        if self._track is not None:
            self._token = self._track("spill_file", size=0)
        self._active = path
        self._active_size = 0
        self._live[path] = set()
        self.segments_created += 1

    def done(self, batch_id: str) -> None:
        """The batch is committed (or its rows are in the rejects sink): forget its rows;
        segments left with nothing live are deleted (not the one being written)."""
        for path in self._where.pop(batch_id, ()):
            live = self._live.get(path)
            if live is None:
                continue
            live.discard(batch_id)
            if not live and path != self._active:
                self._unlink(path)

    def _unlink(self, path: str) -> None:
        self._live.pop(path, None)
        try:
            os.unlink(path)
            self.segments_removed += 1
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ replay
    def leftovers(self) -> list[str]:
        """Segments in the directory not written by this run, oldest first."""
        names = sorted(n for n in os.listdir(self.directory)
                       if n.endswith(_SUFFIX) and not n.startswith(self.run_id))
        return [os.path.join(self.directory, n) for n in names]

    def read_leftovers(self) -> list[SpilledBatch]:
        """Every batch with rows in the leftover segments, in the order they were opened.

        The segments stay registered: each is deleted once all its batches are done.
        """
        batches: dict[tuple[str, int], SpilledBatch] = {}
        order: list[tuple[str, int]] = []
        for path in self.leftovers():
            run = os.path.basename(path).rsplit("-", 1)[0]
            with open(path, "rb") as fh:
                content = fh.read()
            self._live.setdefault(path, set())
            pos = 0
            size = len(content)
            while pos < size:
                if content.startswith(_HEADER, pos):
                    nl = content.find(b"\n", pos)
                    if nl < 0:
                        break  # torn header: its first row was never acknowledged
                    meta = self._meta(path, content[pos + 2:nl])
                    key = (run, int(meta["seq"]))
                    if key not in batches:
                        cols = meta["columns"]
                        batches[key] = SpilledBatch(
                            str(meta["table"]), str(meta["batch_id"]), int(meta["seq"]),
                            str(meta["codec"]), tuple(cols) if cols is not None else None)
                        order.append(key)
                    pos = nl + 1
                    continue
                tab = content.find(b"\t", pos, pos + 48)
                if tab < 0:
                    break  # torn frame
                seq_text, _, length_text = content[pos:tab].partition(b":")
                if not (seq_text.isdigit() and length_text.isdigit()):
                    raise LoaderError(f"spill segment {path} is damaged at byte {pos} (not a "
                                      "record frame); move the directory away to start, and "
                                      "inspect it")
                start = tab + 1
                stop = start + int(length_text)
                if stop + 1 > size:
                    break  # torn record
                if content[stop] != 0x0A:
                    raise LoaderError(f"spill segment {path} is damaged at byte {pos} (a record "
                                      "does not end where its length says); move the directory "
                                      "away to start, and inspect it")
                key = (run, int(seq_text))
                found = batches.get(key)
                if found is None:
                    raise LoaderError(
                        f"spill segment {path} holds rows of batch {key[1]} of run {run} "
                        "whose header is missing (a segment was deleted by hand?); move "
                        "the directory away to start, and inspect it")
                found.data += content[start:stop]
                found.ends.append(len(found.data))
                where = self._where.setdefault(found.batch_id, [])
                if not where or where[-1] != path:
                    where.append(path)
                    self._live[path].add(found.batch_id)
                pos = stop + 1
            self.torn_bytes += size - pos
        for path in self.leftovers():
            if not self._live.get(path):
                self._unlink(path)  # only headers, or nothing complete: nothing to replay
        return [b for b in (batches[k] for k in order) if b.ends]

    @staticmethod
    def _meta(path: str, raw: bytes) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = json.loads(raw)
            for key in ("seq", "table", "batch_id", "codec", "columns"):
                meta[key]
        except (ValueError, KeyError, TypeError) as exc:
            raise LoaderError(f"spill segment {path} has a damaged header line ({exc}); move "
                              "the directory away to start, and inspect it") from exc
        return meta

    # ------------------------------------------------------------------ shutdown
    @property
    def open_files(self) -> int:
        return 1 if self._fd >= 0 else 0

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._token is not None:
            self._token.close()
            self._token = None

    def close(self) -> None:
        """Close the segment and release the directory (segments with live rows stay)."""
        self._close_fd()
        active, self._active = self._active, None
        if active is not None and not self._live.get(active):
            self._unlink(active)
        if self._lock_fd >= 0:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def stats(self) -> dict[str, int]:
        return {"spill_segments_created": self.segments_created,
                "spill_segments_removed": self.segments_removed,
                "spill_segments_live": len(self._live), "spill_open_files": self.open_files,
                "spill_bytes_written": self.bytes_written,
                "spill_batches_live": len(self._where)}
