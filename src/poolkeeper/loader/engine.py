"""The loader's engine: the threads and the I/O around the buffer.

:class:`Engine` composes the parts: the :class:`~.buffer.Buffer` (regions, budget, what to
load next; no I/O) under one lock, the :class:`~.spill.SpillLog` (durable mode), the
:class:`~.flusher.Flusher` (one batch: transaction, retries, isolation of bad rows) running
against a :class:`~.targets.Target`, and the :class:`~.rejects.RejectSink`. It starts the
worker threads, makes writers wait at the hard limit, replays the spill log at start, turns
outcomes into counters and errors, and stops everything on close, abort or garbage
collection. :class:`~.loader.Loader` is its public face and the only place that holds it.

Threads: ``workers`` threads named ``poolkeeper-loader-<name>-<i>``, each loading one batch
at a time with one pool connection. (MariaDB's LOAD DATA LOCAL needs a connection opened with
the LOCAL_FILES capability: when the pool's connections lack it, each worker opens one of its
own; see :mod:`.targets`.)
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError, LoaderBackpressure, LoaderError
from .batch import Batch, FlushReason, Ledger, make_run_id
from .budget import Region
from .buffer import Buffer
from .codec import codec_for
from .flusher import Flusher, Outcome, describe_error
from .options import LoaderOptions
from .rejects import RejectSink
from .rowplan import plan_stats
from .spill import SpillLog
from .targets import Target, make_target

__all__ = ["Engine"]

logger = logging.getLogger("poolkeeper.loader")
_monotonic = time.monotonic
_loader_ids = itertools.count(1)

_OPEN, _CLOSING, _CLOSED, _ABORTED = "open", "closing", "closed", "aborted"
#: errors waiting to be raised are kept up to this many (the rest are counted)
_MAX_ERRORS = 100
#: abort() and a close() out of time wait this long for workers whose statements were
#: cancelled on the server, re-sending the cancel every _RECANCEL_S while one still runs
_STOP_GRACE_S = 10.0
_RECANCEL_S = 0.5
#: temp directories are named <prefix><pid>-<random>
_TEMP_PREFIX = "poolkeeper-loader-tmp-"


def _remove_stale_temp_dirs() -> None:
    """Remove temp directories left by loader processes that no longer exist."""
    base = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(base) if n.startswith(_TEMP_PREFIX)]
    except OSError:
        return
    for name in names:
        pid_text = name[len(_TEMP_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        except OSError:
            continue  # alive (or not ours to ask about): leave it


class Engine:
    """Everything the loader's threads use; holds no reference to the Loader facade."""

    def __init__(self, pool: Any, options: LoaderOptions) -> None:
        self.pool = pool
        self.options = options
        self.name = options.name or f"loader-{next(_loader_ids)}"
        driver = pool.driver.name
        if driver not in ("postgresql", "mysql", "sqlite"):
            raise ConfigError(f"the loader supports postgresql, mysql and sqlite pools, not "
                              f"{driver!r}")
        self.workers = options.workers_for(driver, pool.config.max_size)
        self.write_timeout_s = options.write_timeout_s
        self.close_timeout_s = options.close_timeout_s
        self.on_flushed = options.on_flushed
        self.codec = codec_for(pool.driver)
        self.run_id = make_run_id()

        # -- state under self._lock
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # workers: a batch to load, or stop
        self._room = threading.Condition(self._lock)  # writers, flush(): memory freed, done
        self.buffer = Buffer(options, self.codec, name=self.name, run_id=self.run_id,
                             workers=self.workers, on_sealed=self._sealed_locked,
                             durable=options.spill_dir is not None)
        self._state = _OPEN
        self._stop = False
        self._loading = 0
        self._errors: deque[LoaderError] = deque()
        self._worker_idents: set[int] = set()
        self._keep_ledger_rows = False
        # -- counters (under the lock; the buffer counts rows written and seals)
        self.rows_loaded = 0
        self.rows_failed = 0
        self.rows_aborted = 0
        self.batches_committed = 0
        self.batches_duplicate = 0
        self.batches_failed = 0
        self.backpressure_waits = 0
        self.backpressure_wait_ms = 0.0
        self.backpressure_timeouts = 0
        self.errors_dropped = 0
        self.callback_errors = 0
        self.replayed_batches = 0
        self.replayed_rows = 0
        self.replay_skipped_batches = 0

        self._probe = _monitor_probe(pool)
        self._buffer_token = self._probe("loader_buffer", size=0)
        # Only LOAD DATA needs files of its own; a process killed with SIGKILL cannot remove
        # its directory, so the next loader removes those of processes that are gone.
        self._temp_dir: str | None = None
        if driver == "mysql":
            _remove_stale_temp_dirs()
            self._temp_dir = tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-")
        self.spill: SpillLog | None = None
        self.target: Target | None = None
        self.rejects = RejectSink(options.rejects_path, options.on_reject)
        self._threads: list[threading.Thread] = []
        try:
            self.target = make_target(pool, self.codec, temp_dir=self._temp_dir or "",
                                      mysql_local_infile=options.mysql_local_infile,
                                      connect_timeout=float(pool.config.connect_timeout))
            self.ledger = Ledger(driver, options.ledger_table) if options.ledger else None
            self._stop_retrying = threading.Event()
            self.flusher = Flusher(
                pool, self.target, self.ledger, self.run_id, rejects=self.rejects,
                retry_deadline_s=options.retry_deadline_s, backoff_s=options.retry_backoff_s,
                backoff_max_s=options.retry_backoff_max_s, reject_limit=options.reject_limit,
                connection_timeout_s=options.connection_timeout_s, stop=self._stop_retrying,
                name=self.name)
            if self.ledger is not None:
                self.flusher.setup_ledger(options.ledger_retention_s)
            if options.spill_dir is not None:
                self.spill = SpillLog(options.spill_dir, run_id=self.run_id,
                                      segment_bytes=options.spill_segment_bytes,
                                      fsync=options.spill_fsync, track=self._probe)
                self._replay()
        except BaseException:
            self._release_resources()
            raise
        for i in range(self.workers):
            thread = threading.Thread(target=self._run, args=(i,), daemon=True,
                                      name=f"poolkeeper-loader-{self.name}-{i}")
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()
        self._thread_tokens = [self._probe("thread", size=0) for _ in self._threads]
        logger.info("loader %r started: target %s, budget %d bytes, %d workers, run %s%s",
                    self.name, self.target.describe(), options.budget_bytes, self.workers,
                    self.run_id, f", durable in {self.spill.directory}" if self.spill else "")

    # ================================================================== setup
    def _replay(self) -> None:
        """Load what earlier runs on this spill directory acknowledged but did not commit."""
        spill = self.spill
        assert spill is not None
        budget = self.buffer.budget
        # Streamed (see SpillLog.replay): the rows held at any time cost at most the budget,
        # and are counted in it (bytes_peak) while they are.
        for found in spill.replay(budget.hard):
            if found.codec != self.codec.name:
                self._record(LoaderError(
                    f"loader {self.name!r}: batch {found.batch_id} in {spill.directory} was "
                    f"written for another kind of database (codec {found.codec}, this pool "
                    f"needs {self.codec.name}); it was left in place: replay it with a loader "
                    "on the right database"))
                continue
            batch = Batch(found.table, found.batch_id, found.seq, found.columns, found.data,
                          found.ends, 0, FlushReason.REPLAY, spilled=True)
            logger.info("loader %r: replaying batch %s (%d rows of table %r)", self.name,
                        batch.batch_id, batch.rows, batch.table)
            outcome = self.flusher.run(batch)
            self.buffer.flushes[FlushReason.REPLAY] += 1
            self._settle(batch, outcome)
            with self._lock:
                self._count(batch, outcome)
                if outcome.status == Outcome.DUPLICATE:
                    self.replay_skipped_batches += 1
                elif outcome.status == Outcome.COMMITTED:
                    self.replayed_batches += 1
                    self.replayed_rows += outcome.loaded
            del batch, found  # before the replay reads on: its rows are loaded
        budget.peak = max(budget.peak, spill.replay_peak_bytes)

    # ================================================================== writing
    def write(self, table: str, row: Sequence[Any] | Mapping[str, Any]) -> None:
        """One row through the general path (the facade's write() is :meth:`make_write`)."""
        if self._errors:
            self._raise_errors()
        with self._lock:
            self._write_locked(table, row)

    def make_write(self) -> Callable[[str, Sequence[Any] | Mapping[str, Any]], None]:
        """The ``write(table, row)`` of the facade: the per-row hot path, as a closure.

        It refers to this engine but the engine keeps no reference to it, so it adds no
        reference cycle.
        """
        acquire = self._lock.acquire
        release = self._lock.release
        fast_append = self.buffer.make_fast_append()
        write_locked = self._write_locked
        errors = self._errors
        raise_errors = self._raise_errors

        def write(table: str, row: Sequence[Any] | Mapping[str, Any]) -> None:
            if errors:
                raise_errors()
            # acquire()/release() rather than `with lock`: a third less per row.
            acquire()
            try:
                if not fast_append(table, row):
                    write_locked(table, row)
            finally:
                release()

        return write

    def write_many(self, table: str, rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int:
        n = 0
        it = iter(rows)
        while True:
            chunk = list(itertools.islice(it, 512))
            if not chunk:
                return n
            # The lock is taken per chunk, so workers finishing batches wait little.
            with self._lock:
                for row in chunk:
                    self._write_locked(table, row)
                    n += 1
            if self._errors:
                self._raise_errors()

    def declare(self, table: str, columns: Sequence[str]) -> None:
        with self._lock:
            self.buffer.declare(table, columns)

    def _write_locked(self, table: str, row: Sequence[Any] | Mapping[str, Any]) -> None:
        if self._state is not _OPEN:
            raise LoaderError(f"loader {self.name!r} is {self._state}: it accepts no more rows")
        buffer = self.buffer
        if buffer.needs_room(table):
            self._wait_room_locked(table)
        region, start, new = buffer.append(table, row)
        if self.spill is not None:
            try:
                self._spill_locked(region, start)
            except OSError as exc:
                buffer.take_back(region, start, new)
                raise LoaderError(
                    f"loader {self.name!r}: could not append the row to the spill log "
                    f"({exc}); the row was NOT accepted. Free disk space in "
                    f"{self.spill.directory}") from exc
        buffer.accept(region, start)

    def _spill_locked(self, region: Region, start: int) -> None:
        spill = self.spill
        assert spill is not None
        record = memoryview(region.data)[start:region.ends[-1]]
        try:
            header = None
            if not region.spilled:
                header = spill.header(region.seq, region.table, region.batch_id,
                                      self.codec.name, region.columns)
            spill.append(region.batch_id, region.seq, record, header)
            region.spilled = True
        finally:
            record.release()  # a live view would stop the bytearray from growing

    def _wait_room_locked(self, table: str) -> None:
        buffer = self.buffer
        start = _monotonic()
        deadline = start + self.write_timeout_s
        self.backpressure_waits += 1
        try:
            while buffer.needs_room(table):
                if self._state is not _OPEN:
                    raise LoaderError(f"loader {self.name!r} is {self._state}: it accepts no "
                                      "more rows")
                buffer.seal_largest()
                left = deadline - _monotonic()
                if left <= 0:
                    self.backpressure_timeouts += 1
                    raise LoaderBackpressure(self._backpressure_message(table, start))
                self._room.wait(min(left, 0.5))
        finally:
            self.backpressure_wait_ms += (_monotonic() - start) * 1000.0

    def _backpressure_message(self, table: str, start: float) -> str:
        b = self.buffer.budget
        last = self._errors[-1] if self._errors else None
        return (
            f"loader {self.name!r}: write() to table {table!r} waited "
            f"{_monotonic() - start:.2f} s (write_timeout_s={self.write_timeout_s:g}) at the "
            f"hard memory limit: {b.used} bytes held of budget_bytes={b.hard} (soft limit "
            f"{b.soft}; {b.buffered} buffered in {len(b.regions)} tables, {b.inflight} in "
            f"{len(self.buffer.pending)} queued and {self._loading} loading batches). The "
            f"database is not taking rows as fast as they come"
            + (f"; last error: {last}" if last else "")
            + ". What to do: check the database and the loader's errors, raise workers or "
            "budget_bytes, or raise write_timeout_s; no row was dropped")

    def _sealed_locked(self, batch: Batch) -> None:
        """The buffer sealed a batch: show the memory held, wake a worker."""
        self._buffer_token.set_size(self.buffer.budget.used)
        self._work.notify()

    # ================================================================== workers
    def _run(self, index: int) -> None:
        self._worker_idents.add(threading.get_ident())
        buffer = self.buffer
        while True:
            with self._lock:
                while True:
                    if self._stop:
                        return
                    wait = buffer.seal_aged()
                    found = buffer.next_batch() if buffer.pending else None
                    if found is not None:
                        batch = found
                        self._loading += 1
                        break
                    self._work.wait(wait)
            try:
                outcome = self.flusher.run(batch)
            except BaseException as exc:
                logger.exception("loader %r: unexpected error loading %s", self.name,
                                 batch.batch_id)
                outcome = Outcome(Outcome.FAILED, error=exc, kind="other")
            try:
                self._settle(batch, outcome)
            except BaseException as exc:
                logger.exception("loader %r: unexpected error settling %s", self.name,
                                 batch.batch_id)
                self._record(LoaderError(f"loader {self.name!r}: internal error after batch "
                                         f"{batch.batch_id}: {exc!r}"))
            with self._lock:
                self._loading -= 1
                self._finish_locked(batch, outcome)

    def _settle(self, batch: Batch, outcome: Outcome) -> None:
        """After a batch's outcome, outside the lock: files, callbacks, rejects, errors."""
        for exc in self.flusher.take_callback_errors():
            self._record(LoaderError(f"loader {self.name!r}: the on_reject callback raised "
                                     f"{type(exc).__name__}: {exc}"), cause=exc)
        if outcome.status in (Outcome.COMMITTED, Outcome.DUPLICATE):
            if outcome.rejected and not self.rejects.durable:
                self._record(LoaderError(
                    f"loader {self.name!r}: {outcome.rejected} rows of batch {batch.batch_id} "
                    f"(table {batch.table!r}) were rejected by the database; they are only in "
                    "memory (loader.rejected()): pass rejects_path= or on_reject= to keep them"))
            if self.on_flushed is not None:
                try:
                    self.on_flushed(batch.table, batch.batch_id, outcome.loaded)
                except Exception as exc:  # noqa: BLE001 - surfaced on the next call
                    with self._lock:
                        self.callback_errors += 1
                    self._record(LoaderError(
                        f"loader {self.name!r}: on_flushed({batch.table!r}, "
                        f"{batch.batch_id!r}, {outcome.loaded}) raised {type(exc).__name__}: "
                        f"{exc}; the rows ARE committed"), cause=exc)
            # Forgotten after on_flushed: a crash in between leaves its rows in the log, and
            # the ledger tells the replay they are committed.
            if batch.spilled:
                self._spill_done(batch)
            return
        error = outcome.error
        assert error is not None
        what = describe_error(error)
        code = self.flusher.target.error_code(error)
        if batch.spilled and self.spill is not None:
            where = (f"its rows stay in the spill log in {self.spill.directory} and the next "
                     "loader on this spill_dir replays them")
            with self._lock:
                self._keep_ledger_rows = True
        else:
            self.rejects.deliver(self.flusher.reject_all(batch, what, code))
            where = ("its rows were written to the rejects sink" if self.rejects.durable else
                     "its rows are only in memory (loader.rejected()); pass rejects_path= or "
                     "on_reject= to keep them")
        hint = {"other": "check that the table exists, that its columns match, and that the "
                         "user may insert into it",
                "broken": "check that the database is up (retries ran out)",
                "transient": "the database kept failing transiently (retries ran out)",
                }.get(outcome.kind, "see the error")
        if self._stop_retrying.is_set():
            hint = (f"the loader was stopping (abort(), or close() out of time after "
                    f"close_timeout_s={self.close_timeout_s:g}) and cancelled the statement on "
                    "the server: raise close_timeout_s, or look for what holds the table "
                    "(another session's lock, a slow database)")
        self._record(LoaderError(
            f"loader {self.name!r}: batch {batch.batch_id} of table {batch.table!r} "
            f"({batch.rows} rows, {outcome.attempts} attempt(s)) was not loaded: "
            f"{type(error).__name__}: {what}. {where[:1].upper()}{where[1:]}. What to do: "
            f"{hint}"), cause=error)

    def _spill_done(self, batch: Batch) -> None:
        try:
            with self._lock:
                if self.spill is not None:
                    self.spill.done(batch.batch_id)
        except OSError as exc:
            with self._lock:
                self._keep_ledger_rows = True  # a replay needs them to skip the batch
            self._record(LoaderError(
                f"loader {self.name!r}: could not delete a spill segment after batch "
                f"{batch.batch_id} ({exc}); a later replay skips the batch by the ledger"),
                cause=exc)

    def _count(self, batch: Batch, outcome: Outcome) -> None:
        if outcome.status == Outcome.COMMITTED:
            self.batches_committed += 1
            self.rows_loaded += outcome.loaded
        elif outcome.status == Outcome.DUPLICATE:
            self.batches_duplicate += 1
        else:
            self.batches_failed += 1
            self.rows_failed += batch.rows

    def _finish_locked(self, batch: Batch, outcome: Outcome) -> None:
        self._count(batch, outcome)
        buffer = self.buffer
        if buffer.finish(batch):
            self._work.notify()  # the table's next batch can start now
        if self._state is not _ABORTED:
            buffer.seal_largest()
        self._buffer_token.set_size(buffer.budget.used)
        self._room.notify_all()

    # ================================================================== errors
    def _record(self, error: LoaderError, cause: BaseException | None = None) -> None:
        if cause is not None:
            error.__cause__ = cause
        with self._lock:
            if len(self._errors) >= _MAX_ERRORS:
                self._errors.popleft()
                self.errors_dropped += 1
            self._errors.append(error)
        logger.error("%s", error)

    def _raise_errors(self) -> None:
        with self._lock:
            if not self._errors:
                return
            errors = list(self._errors)
            self._errors.clear()
            dropped, self.errors_dropped = self.errors_dropped, 0
        first = errors[0]
        if len(errors) == 1 and not dropped:
            raise first
        more = len(errors) - 1 + dropped
        raised = LoaderError(f"{first} (and {more} more loader error(s) since the last call; "
                             f"the next: {errors[1] if len(errors) > 1 else 'not kept'})")
        raised.__cause__ = first.__cause__
        raise raised

    # ================================================================== flush / close
    def flush(self, table: str | None = None, timeout: float | None = None) -> None:
        if threading.get_ident() in self._worker_idents:
            raise LoaderError(f"loader {self.name!r}: flush() cannot be called from a loader "
                              "callback (it would wait for itself)")
        limit = self.close_timeout_s if timeout is None else timeout
        deadline = _monotonic() + limit
        buffer = self.buffer
        with self._lock:
            if self._state is not _OPEN:
                raise LoaderError(f"loader {self.name!r} is {self._state}")
            if table is None:
                buffer.seal_all(FlushReason.EXPLICIT)
                upto = buffer.seq
                while buffer.oldest_outstanding() <= upto:
                    left = deadline - _monotonic()
                    if left <= 0 or self._stop:
                        break
                    self._room.wait(min(left, 1.0))
                unfinished = sum(1 for s in buffer.outstanding if s <= upto)
            else:
                wanted = buffer.seal_table(table, FlushReason.EXPLICIT)
                while not wanted.isdisjoint(buffer.outstanding):
                    left = deadline - _monotonic()
                    if left <= 0 or self._stop:
                        break
                    self._room.wait(min(left, 1.0))
                unfinished = len(wanted & buffer.outstanding)
        self._raise_errors()
        if unfinished:
            raise LoaderError(
                f"loader {self.name!r}: flush({'' if table is None else repr(table)}) timed out "
                f"after {limit:g} s with {unfinished} batch(es) not yet committed (they are "
                "still loading and nothing was lost); wait longer or check the database")

    def close(self, timeout: float | None = None) -> None:
        if threading.get_ident() in self._worker_idents:
            raise LoaderError(f"loader {self.name!r}: close() cannot be called from a loader "
                              "callback (it would wait for itself)")
        limit = self.close_timeout_s if timeout is None else timeout
        deadline = _monotonic() + limit
        buffer = self.buffer
        with self._lock:
            if self._state in (_CLOSED, _ABORTED):
                return
            self._state = _CLOSING
            buffer.stop_accepting()
            buffer.seal_all(FlushReason.CLOSE)
            while buffer.outstanding:
                left = deadline - _monotonic()
                if left <= 0:
                    break
                self._room.wait(min(left, 1.0))
            late = len(buffer.outstanding)
        if late:
            # Out of time: stop retrying, interrupt running statements, then account for
            # every row that did not make it.
            self._stop_retrying.set()
        self._stop_workers(max(deadline - _monotonic(), 0.0) + _STOP_GRACE_S, cancel=bool(late))
        left_rows, left_batches = self._settle_leftovers(
            f"not loaded: close() ran out of time (close_timeout_s={limit:g})")
        with self._lock:
            self._state = _CLOSED
            clean = not late and not left_rows and not self._keep_ledger_rows
        if clean and self.ledger is not None:
            self.flusher.forget_run()
        self._release_resources()
        if left_rows:
            where = ("they remain in the spill directory and the next loader on it replays "
                     "them") if self.spill is not None else "they were written to the rejects sink"
            self._record(LoaderError(
                f"loader {self.name!r}: close() ran out of time after {limit:g} s with "
                f"{left_rows} rows in {left_batches} batches not loaded; {where}. What to do: "
                "raise close_timeout_s, or check why the database is slow or failing"))
        logger.info("loader %r closed: %d rows written, %d loaded, %d rejected, %d failed",
                    self.name, buffer.rows_written, self.rows_loaded, self.rejects.rejected,
                    self.rows_failed)
        self._raise_errors()

    def abort(self) -> int:
        with self._lock:
            if self._state in (_CLOSED, _ABORTED):
                return 0
            self._state = _ABORTED
            self.buffer.stop_accepting()
            self._stop = True
            self._work.notify_all()
            self._room.notify_all()
        self._stop_retrying.set()
        self._stop_workers(_STOP_GRACE_S, cancel=True)
        with self._lock:
            dropped = self.buffer.drop_all()
            self.rows_aborted += dropped
        self._release_resources()
        logger.warning("loader %r aborted: %d rows not loaded%s", self.name, dropped,
                       " (they remain in the spill directory for the next run)"
                       if self.spill is not None else "")
        return dropped

    def abandon(self) -> None:
        """Finalizer of an unclosed Loader: stop the threads, keep nothing open."""
        with self._lock:
            if self._state in (_CLOSED, _ABORTED):
                return
            self._state = _ABORTED
            self.buffer.stop_accepting()
            self._stop = True
            rows = self.buffer.rows_held()
            self._work.notify_all()
            self._room.notify_all()
        self._stop_retrying.set()
        logger.warning("loader %r was garbage-collected without close(): %d buffered rows not "
                       "loaded%s; use `with Loader(...)` or call close()", self.name, rows,
                       " (they remain in the spill directory)" if self.spill else "")
        self._release_resources()

    def _stop_workers(self, timeout: float, *, cancel: bool = False) -> None:
        """Stop the workers within ``timeout``; with ``cancel``, interrupt their statements
        on the server, again every _RECANCEL_S while one still runs (a cancel that reached
        a worker between two statements found nothing to interrupt)."""
        with self._lock:
            self._stop = True
            self._work.notify_all()
        deadline = _monotonic() + timeout
        target = self.target
        while True:
            if cancel and target is not None:
                target.cancel_all()
            round_end = min(deadline, _monotonic() + _RECANCEL_S) if cancel else deadline
            for thread in self._threads:
                thread.join(max(round_end - _monotonic(), 0.0))
            alive = [t for t in self._threads if t.is_alive()]
            if not alive or _monotonic() >= deadline:
                break
        stuck = [t.name for t in alive]
        for token in getattr(self, "_thread_tokens", ()):
            token.close()
        if stuck:
            logger.warning("loader %r: threads still busy after %g s: %s", self.name, timeout,
                           ", ".join(stuck))

    def _settle_leftovers(self, why: str) -> tuple[int, int]:
        """Rows still queued or buffered after the workers stopped: never silently lost."""
        with self._lock:
            batches = self.buffer.take_leftovers()
        rows = 0
        for batch in batches:
            rows += batch.rows
            if not batch.spilled:
                self.rejects.deliver(self.flusher.reject_all(batch, why, None))
            with self._lock:
                self.batches_failed += 1
                self.rows_failed += batch.rows
                self.buffer.discard(batch)
        return rows, len(batches)

    def _release_resources(self) -> None:
        target, self.target = self.target, None
        if target is not None:
            try:
                target.close()
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                logger.debug("loader %r: closing the target failed: %s", self.name, exc)
        spill, self.spill = self.spill, None
        if spill is not None:
            with self._lock:
                spill.close()
        self.rejects.close()
        temp, self._temp_dir = self._temp_dir, None
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        self._buffer_token.close()

    # ================================================================== views
    @property
    def state(self) -> str:
        """"open", "closing", "closed" or "aborted"."""
        return self._state

    @property
    def closed(self) -> bool:
        return self._state in (_CLOSED, _ABORTED)

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            buffer = self.buffer
            b = buffer.budget
            out: dict[str, Any] = {
                "state": self._state,
                "target": self.flusher.target.name if hasattr(self, "flusher") else None,
                "workers": self.workers,
                "budget_bytes": b.hard,
                "soft_limit_bytes": b.soft,
                "bytes_buffered": b.buffered,
                "bytes_inflight": b.inflight,
                "bytes_peak": b.peak,
                "tables_buffered": len(b.regions),
                "batches_pending": len(buffer.pending),
                "batches_loading": self._loading,
                "rows_written": buffer.rows_written,
                "rows_loaded": self.rows_loaded,
                "rows_failed": self.rows_failed,
                "rows_aborted": self.rows_aborted,
                "batches_committed": self.batches_committed,
                "batches_duplicate": self.batches_duplicate,
                "batches_failed": self.batches_failed,
                "soft_limit_seals": buffer.soft_limit_seals,
                "backpressure_waits": self.backpressure_waits,
                "backpressure_wait_ms": round(self.backpressure_wait_ms, 3),
                "backpressure_timeouts": self.backpressure_timeouts,
                "errors_pending": len(self._errors),
                "errors_dropped": self.errors_dropped,
                "callback_errors": self.callback_errors,
                "replayed_batches": self.replayed_batches,
                "replayed_rows": self.replayed_rows,
                **plan_stats(),
                "replay_skipped_batches": self.replay_skipped_batches,
            }
            for reason, n in buffer.flushes.items():
                out[f"flushes_{reason}"] = n
            if self.spill is not None:
                out.update(self.spill.stats())
                out["spill_torn_bytes"] = self.spill.torn_bytes
        f = self.flusher
        out.update({"retries": f.retries, "retry_wait_ms": round(f.retry_wait_ms, 3),
                    "isolations": f.isolations, "isolation_statements": f.isolation_statements,
                    "ambiguous_resolved": f.ambiguous_resolved,
                    "connections_opened": f.target.connections_opened,
                    "cancels_sent": f.target.cancels_sent,
                    "cancel_failures": f.target.cancel_failures,
                    "mysql_refused_paths": getattr(f.target, "refused_paths", 0)})
        out.update(self.rejects.stats())
        return out

    def __repr__(self) -> str:
        b = self.buffer.budget
        return (f"<poolkeeper.Loader {self.name!r} {self._state} bytes={b.used}/{b.hard} "
                f"tables={len(b.regions)}>")


def _monitor_probe(pool: Any) -> Callable[..., Any]:
    """A ``track(kind, size=...)`` for the resource monitor, or a no-op when it is absent.

    The probe object is kept by the returned function: the monitor rebinds ``probe.track``
    when it is switched on or off, so it is looked up on every call.
    """
    try:
        from ..observe.monitor import MONITOR
    except ImportError:  # pragma: no cover - the observe package ships with poolkeeper
        return _no_track
    probe = MONITOR.probe(getattr(pool, "name", None))

    def track(kind: str, obj: object = None, *, size: int = 0) -> Any:
        return probe.track(kind, obj, size=size)

    return track


class _NoToken:
    def close(self) -> None:
        pass

    def set_size(self, size: int) -> None:
        pass


def _no_track(kind: str, obj: object = None, **kwargs: Any) -> _NoToken:
    return _NoToken()

