"""Durable mode: every row is appended to a spill log before ``write()`` returns.

The log is a sequence of *segment* files (``<run>-<n>.spill``) shared by all tables: one
append per row, to one open file, however many tables are written. (A file per table would
cost a descriptor or an ``open()`` per write, and a file creation per batch; with 10,000
tables that is what exhausted the StarRocks connector.) Lines::

    H\\t{"seq":..,"table":..,"batch_id":..,"codec":..,"columns":..}\\n   a region opens
    <seq>:<length>\\t<encoded record>\\n                                 one row of it
    D\\t<run>:<seq>\\n                                                 that batch is done

Records are framed by their length (SQLite's are binary); a line cut short by a kill (the
last one written) is recognised by its length and ignored: its ``write()`` never returned.

A segment is closed when it reaches ``segment_bytes`` and deleted once every batch with rows
in it is committed (or its rows handed to the rejects sink). A segment that must stay (it
holds rows of batches still live, or it is the one being written) gets a ``D`` line for each
of its batches as it is done, so a replay never attempts a committed batch again; the
segment being written is deleted and started afresh once nothing in it is live and it holds
at least ``_TRIM_BYTES``. A segment left by a killed process is replayed by the next loader
on the same directory under the original batch ids: only the batches without a ``D`` line
(at most the ones in flight at the kill are committed already, and the ledger skips those).

Replay streams: a first pass over the segments notes where each batch ends (a few integers
per batch, no rows); then the batches are read back in sweeps, each holding at most the
loader's budget of rows, and each batch is handed over as soon as its last row is read.

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
import sys
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from ..errors import LoaderError
from .budget import record_cost

__all__ = ["SpillLog", "SpilledBatch"]

_SUFFIX = ".spill"
_HEADER = b"H\t"
_DONE = b"D\t"
#: the segment being written is deleted (and a new one started) once nothing in it is
#: live and it is at least this large; smaller, it keeps its D lines instead
_TRIM_BYTES = 1 << 20
#: replay reads segments in chunks of this size (plus one record when a record is larger)
_CHUNK = 256 << 10
#: a record frame's "<seq>:<length>\t" fits in this many bytes
_FRAME_MAX = 48
#: what one batch being read back costs besides its rows (its objects, strings, D line,
#: registration), counted in the budget of a replay sweep: measured ~0.9 KiB with 10,000
#: tables (benchmarks/bench_loader.py --sections soak)
REPLAY_BATCH_OVERHEAD = 1024


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
    #: budget bytes its rows cost once all are read (what a replay sweep reserves for it)
    cost: int = 0


class _RunIndex:
    """What replay's first pass keeps of one run's batches: 24 bytes each, no rows.

    A run's batch seqs are consecutive from the first one still in a segment (``base``);
    per seq: the segment of its header (+1; 0: none seen), the end of its last row
    (segment << 40 | offset; 0: no row), and the budget cost of its rows.
    """

    __slots__ = ("base", "cost", "head", "last")

    def __init__(self, base: int) -> None:
        self.base = base
        self.head = array("q")
        self.last = array("q")
        self.cost = array("q")

    def header(self, seq: int, segment: int) -> None:
        i = seq - self.base
        if i < 0:  # not expected (headers come in seq order): make room in front
            pad = bytes(8 * -i)
            for arr in (self.head, self.last, self.cost):
                arr[0:0] = array("q", pad)
            self.base, i = seq, 0
        if i >= len(self.head):
            pad = bytes(8 * (i + 1 - len(self.head)))
            for arr in (self.head, self.last, self.cost):
                arr.frombytes(pad)
        if not self.head[i]:
            self.head[i] = segment + 1

    def row(self, seq: int, segment: int, end: int, cost: int) -> bool:
        """Note a row; False when its batch has no header."""
        i = seq - self.base
        if not 0 <= i < len(self.head) or not self.head[i]:
            return False
        if self.last[i] >= 0:
            self.last[i] = (segment << 40) | end
            self.cost[i] += cost
        return True

    def done(self, seq: int) -> None:
        i = seq - self.base
        if 0 <= i < len(self.last):
            self.last[i] = -1

    def pending(self) -> Iterator[int]:
        """Seqs of the batches with a header, rows, and no D line, in order."""
        last = self.last
        for i, head in enumerate(self.head):
            if head and last[i] > 0:
                yield self.base + i

    def info(self, seq: int) -> tuple[int, int, int, int]:
        """(first segment, last segment, end of its last row, cost of replaying it)."""
        i = seq - self.base
        last = self.last[i]
        return (self.head[i] - 1, last >> 40, last & ((1 << 40) - 1),
                self.cost[i] + REPLAY_BATCH_OVERHEAD)


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
        #: batch key (this run's: its batch id; a replayed one's: "<run>:<seq>") -> segments
        #: holding its rows
        self._where: dict[str, list[str]] = {}
        #: batch key -> its D line, written where it must stay when the batch is done
        self._mark: dict[str, bytes] = {}
        #: batch id of a batch being replayed -> its key
        self._alias: dict[str, str] = {}
        self.marks_written = 0
        self.replay_sweeps = 0
        self.replay_peak_bytes = 0
        self.replay_batches_done = 0
        self.segments_created = 0
        self.segments_removed = 0
        self.bytes_written = 0
        self.torn_bytes = 0
        #: where the complete lines of a segment end, when a torn line follows them (_frames)
        self._torn_tail: dict[str, int] = {}
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
            self._mark[batch_id] = b"%s%s:%d\n" % (_DONE, self.run_id.encode(), seq)
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
        """The batch is committed (or its rows are in the rejects sink): forget its rows.

        Segments left with nothing live are deleted (the one being written once it holds
        _TRIM_BYTES); every other segment with rows of the batch gets its D line, so a
        replay after a kill does not attempt the batch again.
        """
        key = self._alias.pop(batch_id, None)
        if key is None:  # a batch of this run
            key = batch_id
            mark = self._mark.pop(key, None)
        else:  # a replayed batch: its key is "<run>:<seq>"
            mark = b"%s%s\n" % (_DONE, key.encode())
        # Marks first, deletions after: a kill between the two then leaves rows that a D line
        # covers, never rows whose header segment is gone and that nothing marks done.
        emptied = []
        for path in self._where.pop(key, ()):
            live = self._live.get(path)
            if live is None:
                continue
            live.discard(key)
            if path == self._active:
                if not live and self._active_size >= min(_TRIM_BYTES, self.segment_bytes):
                    emptied.append(path)
                elif mark is not None:
                    self._write_mark(self._fd, mark)
                    self._active_size += len(mark)
            elif not live:
                emptied.append(path)
            elif mark is not None:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                try:
                    self._write_mark(fd, mark)
                finally:
                    os.close(fd)
        for path in emptied:
            if path == self._active:
                self._close_fd()
                self._active = None
            self._unlink(path)

    def _write_mark(self, fd: int, mark: bytes) -> None:
        # One short write of a whole line; a kill cutting it leaves a torn last line, which
        # a replay ignores (the batch is then attempted, and the ledger skips it).
        os.write(fd, mark)
        self.bytes_written += len(mark)
        self.marks_written += 1

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

    def replay(self, budget_bytes: int) -> Iterator[SpilledBatch]:
        """The batches of the leftover segments not marked done, in the order they were
        opened, each as soon as its last row is read.

        Memory: a first pass keeps a few integers per batch; then sweeps over the segments
        each hold rows of batches whose total cost is at most ``budget_bytes`` (a batch
        larger than that alone gets a sweep of its own). A batch handed over is dropped
        when the next is asked for. The segments stay registered: each is deleted once all
        its batches are done; those with nothing to replay are deleted at once.
        """
        paths = self.leftovers()
        runs = self._plan(paths)
        order = [(run, seq) for run in sorted(runs) for seq in runs[run].pending()]
        i = 0
        while i < len(order):
            sweep: dict[tuple[str, int], tuple[int, int, int, int]] = {}
            total = 0
            while i < len(order):
                run, seq = order[i]
                info = runs[run].info(seq)
                if sweep and total + info[3] > budget_bytes:
                    break
                sweep[(run, seq)] = info
                total += info[3]
                i += 1
            self.replay_sweeps += 1
            yield from self._sweep(paths, sweep)

    def _plan(self, paths: list[str]) -> dict[str, _RunIndex]:
        """First pass: where each batch with rows and no D line starts and ends, and what
        its rows cost; registers them as live in their segments."""
        runs: dict[str, _RunIndex] = {}
        # Rows whose batch has no header in any segment left: the header's segment was
        # deleted because the batch was done, and its D line follows those rows here or in a
        # later segment (done() writes it before it deletes anything). Rows still without a
        # D line at the end have lost their header: that is refused.
        headless: dict[tuple[str, int], str] = {}
        for index, path in enumerate(paths):
            run = self._run_of(path)
            for kind, seq, buf, lo, hi, end in self._frames(path):
                if kind == "H":
                    meta = self._meta(path, bytes(buf[lo:hi]))
                    found = runs.get(run)
                    if found is None:
                        found = runs[run] = _RunIndex(int(meta["seq"]))
                    found.header(int(meta["seq"]), index)
                elif kind == "D":
                    # a D line follows its batch's header in the log (same or later segment)
                    mrun, _, mseq = bytes(buf[lo:hi]).decode("ascii", "replace").rpartition(":")
                    if mseq.isdigit():
                        headless.pop((mrun, int(mseq)), None)
                        if mrun in runs:
                            runs[mrun].done(int(mseq))
                elif not (run in runs and runs[run].row(seq, index, end, record_cost(hi - lo))):
                    headless.setdefault((run, seq), path)
            cut = self._torn_tail.pop(path, None)
            if cut is not None:
                # The torn line was never acknowledged (its write() did not return). Cut it
                # off before done() appends D lines here: after it, they would run into the
                # length its frame declares, and a later sweep would find the segment damaged
                # (or read torn bytes and D lines as a row). The directory's flock is ours.
                os.truncate(path, cut)
        if headless:
            (run, seq), path = next(iter(headless.items()))
            raise LoaderError(
                f"spill segment {path} holds rows of batch {seq} of run {run} whose header is "
                f"missing and that is not marked done ({len(headless)} such batch(es); a "
                "segment was deleted by hand?); move the directory away to start, and inspect "
                "it")
        spans: dict[tuple[int, int], list[str]] = {}  # shared: most batches have one segment
        for run in sorted(runs):
            batches = runs[run]
            for seq in batches.pending():
                first, last, _end, _cost = batches.info(seq)
                key = f"{run}:{seq}"
                where = spans.get((first, last))
                if where is None:
                    where = spans[(first, last)] = paths[first:last + 1]
                self._where[key] = where  # never appended to (only this run's batches are)
                for path in where:
                    self._live.setdefault(path, set()).add(key)
        for path in paths:
            if not self._live.get(path):
                self._unlink(path)  # nothing to replay: done batches, headers, torn lines
        return runs

    def _sweep(self, paths: list[str],
               sweep: dict[tuple[str, int], tuple[int, int, int, int]]) -> Iterator[SpilledBatch]:
        first = min(info[0] for info in sweep.values())
        last = max(info[1] for info in sweep.values())
        reading: dict[tuple[str, int], SpilledBatch] = {}
        #: one tuple of column names per distinct list, not one per batch
        shared: dict[tuple[str, ...], tuple[str, ...]] = {}
        held = 0
        for index in range(first, last + 1):
            path = paths[index]
            run = self._run_of(path)
            for kind, seq, buf, lo, hi, end in self._frames(path, count_torn=False):
                if kind == "H":
                    meta = self._meta(path, bytes(buf[lo:hi]))
                    key = (run, int(meta["seq"]))
                    if key in sweep:
                        cols = meta["columns"]
                        columns = None
                        if cols is not None:
                            columns = shared.setdefault(tuple(cols), tuple(cols))
                        reading[key] = SpilledBatch(
                            str(meta["table"]), str(meta["batch_id"]), key[1],
                            sys.intern(str(meta["codec"])), columns, cost=sweep[key][3])
                        held += REPLAY_BATCH_OVERHEAD
                    continue
                if kind != "R":
                    continue
                key = (run, seq)
                found = reading.get(key)
                if found is None:
                    continue
                found.data += buf[lo:hi]
                found.ends.append(len(found.data))
                held += record_cost(hi - lo)
                self.replay_peak_bytes = max(self.replay_peak_bytes, held)
                info = sweep[key]
                if index == info[1] and end == info[2]:
                    del reading[key]
                    self._alias[found.batch_id] = f"{run}:{seq}"
                    held -= found.cost
                    yield found
                    del found

    @staticmethod
    def _run_of(path: str) -> str:
        return os.path.basename(path).rsplit("-", 1)[0]

    def _frames(self, path: str, *, count_torn: bool = True
                ) -> Iterator[tuple[str, int, bytes, int, int, int]]:
        """Every complete line of a segment, read in chunks: ``(kind, seq, buf, lo, hi,
        end)`` with the line's body in ``buf[lo:hi]`` (valid until the next line) and
        ``end`` its end in the file; kind "H" (header), "D" (done mark) or "R" (a row of
        batch ``seq``). Stops at a torn last line (its bytes are counted in torn_bytes, and
        where the complete lines end is left in ``self._torn_tail[path]``)."""
        with open(path, "rb") as fh:
            buf = b""
            base = 0  # file offset of buf[0]
            pos = 0
            eof = False
            torn = False  # stopped at a line the end of the file cuts short
            while True:
                avail = len(buf) - pos
                if avail < _FRAME_MAX and not eof:
                    buf, base, pos, eof = self._refill(fh, buf, base, pos, _CHUNK)
                    continue
                if avail <= 0:
                    break
                if buf.startswith(_HEADER, pos) or buf.startswith(_DONE, pos):
                    nl = buf.find(b"\n", pos)
                    if nl < 0:
                        if eof:
                            torn = True
                            break  # torn header or mark
                        buf, base, pos, eof = self._refill(fh, buf, base, pos, _CHUNK)
                        continue
                    kind = "H" if buf.startswith(_HEADER, pos) else "D"
                    yield kind, 0, buf, pos + 2, nl, base + nl + 1
                    pos = nl + 1
                    continue
                tab = buf.find(b"\t", pos, pos + _FRAME_MAX)
                if tab < 0:
                    torn = eof
                    break  # torn frame
                seq_text, _, length_text = buf[pos:tab].partition(b":")
                if not (seq_text.isdigit() and length_text.isdigit()):
                    raise LoaderError(f"spill segment {path} is damaged at byte {base + pos} "
                                      "(not a record frame); move the directory away to "
                                      "start, and inspect it")
                start = tab + 1
                stop = start + int(length_text)
                if stop + 1 > len(buf):
                    if eof:
                        torn = True
                        break  # torn record
                    buf, base, pos, eof = self._refill(fh, buf, base, pos,
                                                       max(_CHUNK, stop + 1 - len(buf)))
                    continue
                if buf[stop] != 0x0A:
                    raise LoaderError(f"spill segment {path} is damaged at byte {base + pos} "
                                      "(a record does not end where its length says); move "
                                      "the directory away to start, and inspect it")
                yield "R", int(seq_text), buf, start, stop, base + stop + 1
                pos = stop + 1
            if count_torn:
                self.torn_bytes += len(buf) - pos
            if count_torn and torn and len(buf) > pos:  # the first pass (_plan) cuts it
                self._torn_tail[path] = base + pos

    @staticmethod
    def _refill(fh: IO[bytes], buf: bytes, base: int, pos: int,
                want: int) -> tuple[bytes, int, int, bool]:
        data = fh.read(want)
        return buf[pos:] + data, base + pos, 0, len(data) < want

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
                "spill_batches_live": len(self._where),
                "spill_done_marks": self.marks_written,
                "replay_sweeps": self.replay_sweeps,
                "replay_peak_bytes": self.replay_peak_bytes}
