"""The bulk loader: many tables, one memory budget, every row loaded exactly once.

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

How it holds memory (see :mod:`.budget`): one region per table, all under ``budget_bytes``;
above half of it the largest region is flushed, at the budget ``write()`` blocks (up to
``write_timeout_s``, then :class:`~poolkeeper.errors.LoaderBackpressure`). Nothing is dropped to
make room. How it loads (see :mod:`.flusher`): worker threads, one pool connection each per
batch, one transaction per batch with a ledger row that makes retries idempotent. (MariaDB's
LOAD DATA LOCAL needs a connection opened with the LOCAL_FILES capability: when the pool's
connections lack it, each worker opens one of its own; see :mod:`.targets`.)

Threads: ``workers`` threads named ``poolkeeper-loader-<name>-<i>``, all stopped by
:meth:`Loader.close` or :meth:`Loader.abort` (and, as a last net, when an unclosed loader is
garbage-collected).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from ..errors import ConfigError, LoaderBackpressure, LoaderError
from .batch import Batch, FlushReason, Ledger, make_run_id
from .budget import REGION_OVERHEAD, ROW_OVERHEAD, Budget, Region, record_cost
from .codec import codec_for
from .flusher import Flusher, Outcome, describe_error
from .rejects import Reject, RejectSink
from .rowplan import plan_stats
from .spill import SpillLog
from .targets import Target, make_target

__all__ = ["Loader"]

logger = logging.getLogger("poolkeeper.loader")
_monotonic = time.monotonic
_loader_ids = itertools.count(1)

_OPEN, _CLOSING, _CLOSED, _ABORTED = "open", "closing", "closed", "aborted"
#: errors waiting to be raised are kept up to this many (the rest are counted)
_MAX_ERRORS = 100
#: the fast path of write() looks at the limits at least every this many bytes
_CREDIT_MAX = 256 << 10
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


def _check(name: str, value: Any, lo: float, hi: float, *, kind: type = int,
           nullable: bool = False) -> Any:
    if value is None and nullable:
        return None
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not lo <= value <= hi:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"Loader option {name}={value!r} is invalid: use {what} between "
                          f"{lo:g} and {hi:g}" + (" (or None)" if nullable else ""))
    return float(value) if kind is float else value


class _Engine:
    """Everything the loader's threads use; holds no reference to the Loader facade."""

    def __init__(self, pool: Any, *, budget_bytes: int,
                 columns: Mapping[str, Sequence[str]] | None, batch_rows: int,
                 batch_bytes: int | None, max_age_s: float | None, workers: int | None,
                 write_timeout_s: float, close_timeout_s: float, retry_deadline_s: float,
                 retry_backoff_s: float, retry_backoff_max_s: float, reject_limit: int,
                 rejects_path: str | None, on_reject: Callable[[Reject], Any] | None,
                 on_flushed: Callable[[str, str, int], Any] | None, spill_dir: str | None,
                 spill_segment_bytes: int, spill_fsync: bool, ledger: bool, ledger_table: str,
                 ledger_retention_s: float, label: str, mysql_local_infile: bool,
                 connection_timeout_s: float, name: str | None) -> None:
        self.pool = pool
        self.name = name or f"loader-{next(_loader_ids)}"
        driver = pool.driver.name
        if driver not in ("postgresql", "mysql", "sqlite"):
            raise ConfigError(f"the loader supports postgresql, mysql and sqlite pools, not "
                              f"{driver!r}")
        budget_bytes = _check("budget_bytes", budget_bytes, 4096, 1 << 42)
        if batch_bytes is None:
            # Small enough that loading overlaps writing (the last batch is the tail a close()
            # waits for), large enough that a commit per batch costs ~1%.
            batch_bytes = max(1, min(4 << 20, budget_bytes // 8))
        self.batch_bytes: int = _check("batch_bytes", batch_bytes, 1, budget_bytes)
        self.batch_rows: int = _check("batch_rows", batch_rows, 1, 1 << 40)
        self.max_age_s: float | None = _check("max_age_s", max_age_s, 0.001, 86_400 * 365,
                                              kind=float, nullable=True)
        if workers is None:
            workers = 1 if driver == "sqlite" else min(2, int(pool.config.max_size))
        self.workers: int = _check("workers", workers, 1, 256)
        self.write_timeout_s: float = _check("write_timeout_s", write_timeout_s, 0, 86_400 * 365,
                                      kind=float)
        self.close_timeout_s: float = _check("close_timeout_s", close_timeout_s, 0, 86_400 * 365,
                                      kind=float)
        retry_deadline_s = _check("retry_deadline_s", retry_deadline_s, 0, 86_400 * 365,
                                  kind=float)
        retry_backoff_s = _check("retry_backoff_s", retry_backoff_s, 0.001, 3_600, kind=float)
        retry_backoff_max_s = _check("retry_backoff_max_s", retry_backoff_max_s,
                                     retry_backoff_s, 3_600, kind=float)
        reject_limit = _check("reject_limit", reject_limit, 0, 1 << 40)
        spill_segment_bytes = _check("spill_segment_bytes", spill_segment_bytes, 4096, 1 << 40)
        ledger_retention_s = _check("ledger_retention_s", ledger_retention_s, 60,
                                    86_400 * 3650, kind=float)
        connection_timeout_s = _check("connection_timeout_s", connection_timeout_s, 0.01,
                                      86_400, kind=float)
        if not label or len(label) > 40 or ":" in label:
            raise ConfigError(f"Loader option label={label!r} is invalid: use 1 to 40 "
                              "characters without ':'")
        self.label = label
        self._columns: dict[str, tuple[str, ...]] = {}
        for table, cols in (columns or {}).items():
            self._columns[table] = self._check_columns(table, cols)
        self.on_flushed = on_flushed
        self.codec = codec_for(driver)
        # Each region formats with a formatter planned for its first row's types (the
        # codec's row_formatter); they all share this context.
        self._format_ctx = self.codec.formatter()[1]
        self._credit = 0
        self.run_id = make_run_id()

        # -- state under self._lock
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # workers: a batch to load, or stop
        self._room = threading.Condition(self._lock)  # writers, flush(): memory freed, done
        self.budget = Budget(budget_bytes)
        self._region_of = self.budget.regions.get
        self._loading_tables: dict[str, int] = {}  # table -> seq of its batch being loaded
        self._queued: dict[str, int] = {}  # table -> how many of its batches wait in _pending
        self._pending: deque[Batch] = deque()  # sealed batches, in seal order
        self._outstanding: set[int] = set()  # seqs of regions and batches not yet done
        self._outstanding_heap: list[int] = []
        self._seq = 0
        self._state = _OPEN
        self._stop = False
        self._loading = 0
        self._errors: deque[LoaderError] = deque()
        self._worker_idents: set[int] = set()
        self._keep_ledger_rows = False
        # -- counters (under the lock)
        self.rows_written = 0
        self.rows_loaded = 0
        self.rows_failed = 0
        self.rows_aborted = 0
        self.batches_committed = 0
        self.batches_duplicate = 0
        self.batches_failed = 0
        self.flushes = dict.fromkeys(FlushReason.ALL, 0)
        self.soft_limit_seals = 0
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
        self.rejects = RejectSink(rejects_path, on_reject)
        self._threads: list[threading.Thread] = []
        try:
            self.target = make_target(pool, self.codec, temp_dir=self._temp_dir or "",
                                      mysql_local_infile=mysql_local_infile,
                                      connect_timeout=float(pool.config.connect_timeout))
            self.ledger = Ledger(driver, ledger_table) if ledger else None
            self._stop_retrying = threading.Event()
            self.flusher = Flusher(
                pool, self.target, self.ledger, self.run_id, rejects=self.rejects,
                retry_deadline_s=retry_deadline_s, backoff_s=retry_backoff_s,
                backoff_max_s=retry_backoff_max_s, reject_limit=reject_limit,
                connection_timeout_s=connection_timeout_s, stop=self._stop_retrying)
            if self.ledger is not None:
                self._setup_ledger(self.ledger, ledger_retention_s, connection_timeout_s)
            if spill_dir is not None:
                self.spill = SpillLog(spill_dir, run_id=self.run_id,
                                      segment_bytes=spill_segment_bytes, fsync=spill_fsync,
                                      track=self._probe)
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
                    self.name, self.target.describe(), budget_bytes, self.workers, self.run_id,
                    f", durable in {self.spill.directory}" if self.spill else "")

    # ================================================================== setup
    @staticmethod
    def _check_columns(table: str, cols: Sequence[str]) -> tuple[str, ...]:
        if isinstance(cols, str) or not all(isinstance(c, str) and c for c in cols):
            raise ConfigError(f"columns for table {table!r} must be a sequence of column names, "
                              f"not {cols!r}")
        out = tuple(cols)
        if not out or len(set(out)) != len(out):
            raise ConfigError(f"columns for table {table!r} must be non-empty and distinct: "
                              f"{out!r}")
        return out

    def _setup_ledger(self, ledger: Ledger, retention_s: float, timeout: float) -> None:
        """Create and purge the ledger, retrying transient errors (a lost connection, a
        restart, a pool timeout) with the batches' backoff until ``retry_deadline_s``."""
        flusher = self.flusher
        start = _monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                with self.pool.connection(timeout) as conn:
                    conn.execute(ledger.create)
                    purged = conn.execute(ledger.purge, (int(retention_s),)).rowcount
                if purged and purged > 0:
                    logger.info("loader %r: purged %d ledger rows older than %g s", self.name,
                                purged, retention_s)
                return
            except Exception as exc:
                # Two loaders creating the ledger at once can collide in the catalog
                # (PostgreSQL reports a unique violation on pg_type): try again, as after
                # a lost connection.
                collision = getattr(exc, "sqlstate", None) in ("23505", "42P07")
                retryable = collision or flusher.classify(exc) in ("broken", "transient")
                waited = _monotonic() - start
                if retryable and waited < flusher.retry_deadline_s:
                    delay = min(flusher.backoff_max_s,
                                flusher.backoff_s * 2 ** min(attempts - 1, 20),
                                max(flusher.retry_deadline_s - waited, 0.0))
                    logger.info("loader %r: setting up the ledger failed (attempt %d: %s: %s); "
                                "retrying in %.2f s", self.name, attempts, type(exc).__name__,
                                _first_line(exc), delay)
                    time.sleep(delay)
                    continue
                why = (f"after {attempts} attempts in {waited:.1f} s (retry_deadline_s="
                       f"{flusher.retry_deadline_s:g})" if retryable else "not retryable")
                raise LoaderError(
                    f"loader {self.name!r}: cannot create or clean the ledger table "
                    f"{ledger.table!r} ({why}): {type(exc).__name__}: {_first_line(exc)}. "
                    f"Create it yourself ({ledger.create}), grant this user INSERT/DELETE on "
                    "it, or pass ledger=False (then a retry after a lost COMMIT may load a "
                    "batch twice)") from exc

    def _replay(self) -> None:
        """Load what earlier runs on this spill directory acknowledged but did not commit."""
        spill = self.spill
        assert spill is not None
        # Streamed (see SpillLog.replay): the rows held at any time cost at most the budget,
        # and are counted in it (bytes_peak) while they are.
        for found in spill.replay(self.budget.hard):
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
            self.flushes[FlushReason.REPLAY] += 1
            self._settle(batch, outcome)
            with self._lock:
                self._count(batch, outcome)
                if outcome.status == Outcome.DUPLICATE:
                    self.replay_skipped_batches += 1
                elif outcome.status == Outcome.COMMITTED:
                    self.replayed_batches += 1
                    self.replayed_rows += outcome.loaded
            del batch, found  # before the replay reads on: its rows are loaded
        self.budget.peak = max(self.budget.peak, spill.replay_peak_bytes)

    # ================================================================== writing
    def write(self, table: str, row: Sequence[Any] | Mapping[str, Any]) -> None:
        """One row through the general path (the facade's write() is :meth:`make_write`)."""
        if self._errors:
            self._raise_errors()
        with self._lock:
            self._write_locked(table, row)

    def make_write(self) -> Callable[[str, Sequence[Any] | Mapping[str, Any]], None]:
        """The ``write(table, row)`` of the facade: the per-row hot path, as a closure.

        Everything it reads on every row is bound to a local once (an attribute lookup per
        name per row adds up at a few hundred thousand rows a second). It refers to this
        engine but the engine keeps no reference to it, so it adds no reference cycle.
        """
        acquire = self._lock.acquire
        release = self._lock.release
        region_of = self._region_of
        ctx = self._format_ctx
        errors = self._errors
        budget = self.budget
        write_locked = self._write_locked
        after_write_locked = self._after_write_locked
        bad_row = self._bad_row
        raise_errors = self._raise_errors
        row_overhead = ROW_OVERHEAD
        batch_rows = self.batch_rows
        batch_bytes = self.batch_bytes
        tuple_ = tuple
        engine = self

        def write(table: str, row: Sequence[Any] | Mapping[str, Any]) -> None:
            if errors:
                raise_errors()
            # acquire()/release() rather than `with lock`: a third less per row.
            acquire()
            try:
                region = region_of(table)
                credit = engine._credit
                # The fast path: a tuple of the right width for a table already buffering,
                # and credit left (bytes that can be written before any limit needs a look).
                # Anything else, and every limit, is _write_locked()'s and
                # _after_write_locked()'s job.
                if (region is None or row.__class__ is not tuple_ or len(row) != region.width
                        or credit <= 0):
                    write_locked(table, row)
                    return
                data = region.data
                start = len(data)
                try:
                    region.format(row, ctx, data)  # type: ignore[misc]  # set with its 1st row
                except Exception as exc:
                    del data[start:]
                    raise bad_row(table, exc) from exc
                end = len(data)
                ends = region.ends
                ends.append(end)
                cost = end - start
                cost += (cost >> 3) + row_overhead  # see record_cost()
                region.nbytes += cost
                budget.buffered += cost
                credit -= cost
                engine._credit = credit
                engine.rows_written += 1
                if (credit <= 0 or len(ends) >= batch_rows
                        or region.nbytes >= batch_bytes):
                    after_write_locked(region)
                elif budget.heap_on:
                    budget.push(region)
            finally:
                release()

        return write

    def _bad_row(self, table: str, exc: BaseException) -> Exception:
        kind = ValueError if isinstance(exc, ValueError) else TypeError
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return kind(f"loader {self.name!r}: a row for table {table!r} cannot be loaded: {text}")

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

    def _write_locked(self, table: str, row: Sequence[Any] | Mapping[str, Any]) -> None:
        if self._state is not _OPEN:
            raise LoaderError(f"loader {self.name!r} is {self._state}: it accepts no more rows")
        budget = self.budget
        region = budget.regions.get(table)
        # A new table also costs its region's overhead: admit the row only if both fit, so
        # the budget is exceeded by at most the row itself.
        if budget.buffered + budget.inflight + (REGION_OVERHEAD if region is None else 0) \
                >= budget.hard:
            self._wait_room_locked(table)
            region = budget.regions.get(table)  # sealed while we waited?
        new = region is None
        if region is None:
            region = self._new_region_locked(table, row)
        try:
            values = self._values(region, row)
        except (TypeError, ValueError):
            if new:
                self._drop_region_locked(region)
            raise
        data = region.data
        start = len(data)
        fmt = region.format
        if fmt is None:
            fmt = region.format = self.codec.row_formatter(values)
        try:
            fmt(values, self._format_ctx, data)
        except Exception as exc:
            del data[start:]
            if new:
                self._drop_region_locked(region)
            raise self._bad_row(table, exc) from exc
        end = len(data)
        region.ends.append(end)
        if region.width < 0:
            region.width = len(values)
        if self.spill is not None:
            try:
                self._spill_locked(region, start, end)
            except OSError as exc:
                del data[start:]
                region.ends.pop()
                if new:
                    self._drop_region_locked(region)
                raise LoaderError(
                    f"loader {self.name!r}: could not append the row to the spill log "
                    f"({exc}); the row was NOT accepted. Free disk space in "
                    f"{self.spill.directory}") from exc
        cost = record_cost(end - start)
        region.nbytes += cost
        budget.buffered += cost
        self.rows_written += 1
        self._after_write_locked(region)

    def _after_write_locked(self, region: Region) -> None:
        """Limits after a row: batch triggers, the soft limit, the peak, the next credit.

        The fast path calls this only when its credit runs out or a batch trigger fires, so
        the budget's peak is brought up to date here and before anything frees memory.
        """
        budget = self.budget
        used = budget.buffered + budget.inflight
        budget.peak = max(budget.peak, used)
        if budget.heap_on:
            budget.push(region)
        if len(region.ends) >= self.batch_rows:
            self._request_locked(region, FlushReason.ROWS)
        elif region.nbytes >= self.batch_bytes:
            self._request_locked(region, FlushReason.SIZE)
        if used > budget.soft and len(self._pending) < self.workers:
            self._seal_largest_locked()
        self._refill_credit_locked()

    def _refill_credit_locked(self) -> None:
        """How many bytes the fast path may write before the limits need looking at."""
        budget = self.budget
        if self._state is not _OPEN or self.spill is not None:
            self._credit = 0
            return
        used = budget.buffered + budget.inflight
        room = budget.hard - used - REGION_OVERHEAD
        if len(self._pending) < self.workers:
            room = min(room, budget.soft - used)  # crossing the soft limit seals a region
        self._credit = max(0, min(room, _CREDIT_MAX))

    def _values(self, region: Region, row: Any) -> Sequence[Any]:
        cols = region.columns
        if isinstance(row, tuple | list):
            if cols is not None:
                if len(row) != len(cols):
                    raise ValueError(
                        f"loader {self.name!r}: a row for table {region.table!r} has "
                        f"{len(row)} values but the table's columns are {list(cols)}")
            elif region.width >= 0 and len(row) != region.width:
                raise ValueError(
                    f"loader {self.name!r}: a row for table {region.table!r} has {len(row)} "
                    f"values, earlier rows had {region.width}; declare the columns "
                    "(columns={table: (...)}) to load rows of the table's own width")
            return row
        if isinstance(row, Mapping):
            if cols is None:
                raise TypeError(
                    f"loader {self.name!r}: table {region.table!r} received tuple rows first "
                    "and now a dict: declare its columns (columns={table: (...)}) to mix them")
            try:
                values = tuple([row[c] for c in cols])
            except KeyError as exc:
                raise ValueError(
                    f"loader {self.name!r}: a row for table {region.table!r} has no value for "
                    f"column {exc.args[0]!r} (columns: {list(cols)})") from None
            if len(row) != len(cols):
                extra = sorted(str(k) for k in row if k not in cols)
                raise ValueError(
                    f"loader {self.name!r}: a row for table {region.table!r} has unknown "
                    f"column(s) {extra} (columns: {list(cols)})")
            return values
        raise TypeError(f"loader {self.name!r}: a row must be a tuple, list or dict, not "
                        f"{type(row).__name__}")

    def _new_region_locked(self, table: str, row: Any) -> Region:
        if not isinstance(table, str) or not table or "\x00" in table or len(table) > 255:
            raise ValueError(f"loader {self.name!r}: table must be a non-empty name of at most "
                             f"255 characters, not {table!r}")
        columns = self._columns.get(table)
        if columns is None and isinstance(row, Mapping):
            columns = self._check_columns(table, [str(k) for k in row])
        self._seq += 1
        seq = self._seq
        region = Region(table, seq, columns, _monotonic())
        region.batch_id = self.batch_id(table, seq)
        if columns is not None:
            region.width = len(columns)
        self.budget.add(region)
        self._outstanding.add(seq)
        heapq.heappush(self._outstanding_heap, seq)
        return region

    def _drop_region_locked(self, region: Region) -> None:
        if self.budget.regions.get(region.table) is region:
            self.budget.remove(region.table)
        self._outstanding.discard(region.seq)

    def _spill_locked(self, region: Region, start: int, end: int) -> None:
        spill = self.spill
        assert spill is not None
        record = memoryview(region.data)[start:end]
        try:
            header = None
            if not region.spilled:
                header = spill.header(region.seq, region.table, region.batch_id,
                                      self.codec.name, region.columns)
            spill.append(region.batch_id, region.seq, record, header)
            region.spilled = True
        finally:
            record.release()  # a live view would stop the bytearray from growing

    def batch_id(self, table: str, seq: int) -> str:
        """``<label>:<run>:<table>:<seq>``, at most 255 characters."""
        if len(table) > 150:
            table = table[:120] + "#" + hashlib.sha1(table.encode()).hexdigest()[:12]
        return f"{self.label}:{self.run_id}:{table}:{seq}"

    def _wait_room_locked(self, table: str) -> None:
        budget = self.budget
        start = _monotonic()
        deadline = start + self.write_timeout_s
        self.backpressure_waits += 1
        try:
            while budget.buffered + budget.inflight + (
                    0 if table in budget.regions else REGION_OVERHEAD) >= budget.hard:
                if self._state is not _OPEN:
                    raise LoaderError(f"loader {self.name!r} is {self._state}: it accepts no "
                                      "more rows")
                self._seal_largest_locked()
                left = deadline - _monotonic()
                if left <= 0:
                    self.backpressure_timeouts += 1
                    raise LoaderBackpressure(self._backpressure_message(table, start))
                self._room.wait(min(left, 0.5))
        finally:
            self.backpressure_wait_ms += (_monotonic() - start) * 1000.0

    def _backpressure_message(self, table: str, start: float) -> str:
        b = self.budget
        last = self._errors[-1] if self._errors else None
        return (
            f"loader {self.name!r}: write() to table {table!r} waited "
            f"{_monotonic() - start:.2f} s (write_timeout_s={self.write_timeout_s:g}) at the "
            f"hard memory limit: {b.used} bytes held of budget_bytes={b.hard} (soft limit "
            f"{b.soft}; {b.buffered} buffered in {len(b.regions)} tables, {b.inflight} in "
            f"{len(self._pending)} queued and {self._loading} loading batches). The database "
            f"is not taking rows as fast as they come"
            + (f"; last error: {last}" if last else "")
            + ". What to do: check the database and the loader's errors, raise workers or "
            "budget_bytes, or raise write_timeout_s; no row was dropped")

    # ================================================================== sealing
    def _request_locked(self, region: Region, reason: str) -> None:
        self._seal_locked(region.table, reason)

    def _seal_locked(self, table: str, reason: str) -> None:
        region = self.budget.seal(table)
        batch = Batch(table, region.batch_id, region.seq, region.columns, region.data,
                      region.ends, region.nbytes, reason, spilled=region.spilled)
        self._pending.append(batch)
        self._queued[table] = self._queued.get(table, 0) + 1
        self.flushes[reason] += 1
        self._buffer_token.set_size(self.budget.used)
        self._work.notify()

    def _seal_largest_locked(self) -> None:
        budget = self.budget
        while (budget.buffered + budget.inflight > budget.soft
               and len(self._pending) < self.workers):
            # A table whose earlier batch still waits in the queue is skipped: sealing it
            # again would only queue a smaller batch behind that one.
            region = budget.largest(self._queued)
            if region is None:
                return
            self.soft_limit_seals += 1
            self._seal_locked(region.table, FlushReason.SIZE)

    def _age_tick_locked(self) -> float | None:
        """Seal regions older than max_age_s; seconds until the next one is due."""
        max_age = self.max_age_s
        if max_age is None:
            return None
        now = _monotonic()
        cutoff = now - max_age
        due: list[Region] = []
        wait = max_age
        for region in self.budget.regions.values():
            if region.created > cutoff:
                wait = region.created + max_age - now
                break
            due.append(region)
        for region in due:
            self._seal_locked(region.table, FlushReason.AGE)
        return max(wait, 0.005)

    def _next_batch_locked(self) -> Batch | None:
        """The first queued batch whose table has no batch loading (keeps each table's
        batches, and their on_flushed calls, in write order)."""
        loading = self._loading_tables
        for i, batch in enumerate(self._pending):
            if batch.table not in loading:
                del self._pending[i]
                left = self._queued[batch.table] - 1
                if left:
                    self._queued[batch.table] = left
                else:
                    del self._queued[batch.table]
                loading[batch.table] = batch.seq
                self._credit = 0  # the queue shrank: the soft limit may seal again
                return batch
        return None

    # ================================================================== workers
    def _run(self, index: int) -> None:
        self._worker_idents.add(threading.get_ident())
        while True:
            with self._lock:
                while True:
                    if self._stop:
                        return
                    wait = self._age_tick_locked()
                    found = self._next_batch_locked() if self._pending else None
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
        for exc in self._take_callback_errors():
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

    def _take_callback_errors(self) -> list[BaseException]:
        errors = self.flusher.callback_errors
        if not errors:
            return []
        with self.flusher._lock:
            taken = list(errors)
            errors.clear()
        return taken

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
        self.budget.release(batch.nbytes)
        if self._loading_tables.get(batch.table) == batch.seq:
            del self._loading_tables[batch.table]
            if batch.table in self._queued:
                self._work.notify()  # its next batch can start now
        self._outstanding.discard(batch.seq)
        heap = self._outstanding_heap
        if len(heap) > 2 * len(self._outstanding) + 64:
            # Done seqs leave the heap lazily (flush() pops them); rebuild before they pile up.
            self._outstanding_heap = sorted(self._outstanding)
        self._credit = 0
        if self._state is not _ABORTED:
            self._seal_largest_locked()
        self._buffer_token.set_size(self.budget.used)
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
        with self._lock:
            if self._state is not _OPEN:
                raise LoaderError(f"loader {self.name!r} is {self._state}")
            regions = self.budget.regions
            if table is None:
                for t in list(regions):
                    self._request_locked(regions[t], FlushReason.EXPLICIT)
                upto = self._seq
                while self._oldest_outstanding_locked() <= upto:
                    left = deadline - _monotonic()
                    if left <= 0 or self._stop:
                        break
                    self._room.wait(min(left, 1.0))
                unfinished = sum(1 for s in self._outstanding if s <= upto)
            else:
                wanted: set[int] = set()
                region = regions.get(table)
                if region is not None:
                    wanted.add(region.seq)
                    self._request_locked(region, FlushReason.EXPLICIT)
                if table in self._loading_tables:
                    wanted.add(self._loading_tables[table])
                wanted.update(b.seq for b in self._pending if b.table == table)
                while not wanted.isdisjoint(self._outstanding):
                    left = deadline - _monotonic()
                    if left <= 0 or self._stop:
                        break
                    self._room.wait(min(left, 1.0))
                unfinished = len(wanted & self._outstanding)
        self._raise_errors()
        if unfinished:
            raise LoaderError(
                f"loader {self.name!r}: flush({'' if table is None else repr(table)}) timed out "
                f"after {limit:g} s with {unfinished} batch(es) not yet committed (they are "
                "still loading and nothing was lost); wait longer or check the database")

    def _oldest_outstanding_locked(self) -> float:
        heap = self._outstanding_heap
        while heap and heap[0] not in self._outstanding:
            heapq.heappop(heap)
        return heap[0] if heap else float("inf")

    def close(self, timeout: float | None = None) -> None:
        if threading.get_ident() in self._worker_idents:
            raise LoaderError(f"loader {self.name!r}: close() cannot be called from a loader "
                              "callback (it would wait for itself)")
        limit = self.close_timeout_s if timeout is None else timeout
        deadline = _monotonic() + limit
        with self._lock:
            if self._state in (_CLOSED, _ABORTED):
                return
            self._state = _CLOSING
            self._credit = 0
            regions = self.budget.regions
            for t in list(regions):
                self._request_locked(regions[t], FlushReason.CLOSE)
            while self._outstanding:
                left = deadline - _monotonic()
                if left <= 0:
                    break
                self._room.wait(min(left, 1.0))
            late = len(self._outstanding)
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
            self._forget_run()
        self._release_resources()
        if left_rows:
            where = ("they remain in the spill directory and the next loader on it replays "
                     "them") if self.spill is not None else "they were written to the rejects sink"
            self._record(LoaderError(
                f"loader {self.name!r}: close() ran out of time after {limit:g} s with "
                f"{left_rows} rows in {left_batches} batches not loaded; {where}. What to do: "
                "raise close_timeout_s, or check why the database is slow or failing"))
        logger.info("loader %r closed: %d rows written, %d loaded, %d rejected, %d failed",
                    self.name, self.rows_written, self.rows_loaded, self.rejects.rejected,
                    self.rows_failed)
        self._raise_errors()

    def abort(self) -> int:
        with self._lock:
            if self._state in (_CLOSED, _ABORTED):
                return 0
            self._state = _ABORTED
            self._credit = 0
            self._stop = True
            self._work.notify_all()
            self._room.notify_all()
        self._stop_retrying.set()
        self._stop_workers(_STOP_GRACE_S, cancel=True)
        dropped = 0
        with self._lock:
            while self._pending:
                batch = self._pending.popleft()
                dropped += batch.rows
                self.budget.release(batch.nbytes)
                self._outstanding.discard(batch.seq)
            for table in list(self.budget.regions):
                region = self.budget.remove(table)
                dropped += region.rows
                self._outstanding.discard(region.seq)
            self._loading_tables.clear()
            self._queued.clear()
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
            self._credit = 0
            self._stop = True
            rows = sum(r.rows for r in self.budget.regions.values()) + sum(
                b.rows for b in self._pending)
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
            batches = list(self._pending)
            self._pending.clear()
            for table in list(self.budget.regions):
                region = self.budget.seal(table)
                batches.append(Batch(table, region.batch_id, region.seq, region.columns,
                                     region.data, region.ends, region.nbytes,
                                     FlushReason.CLOSE, spilled=region.spilled))
        rows = 0
        for batch in batches:
            rows += batch.rows
            if not batch.spilled:
                self.rejects.deliver(self.flusher.reject_all(batch, why, None))
            with self._lock:
                self.batches_failed += 1
                self.rows_failed += batch.rows
                self.budget.release(batch.nbytes)
                self._outstanding.discard(batch.seq)
                self._loading_tables.pop(batch.table, None)
                self._queued.pop(batch.table, None)
        return rows, len(batches)

    def _forget_run(self) -> None:
        ledger = self.ledger
        assert ledger is not None
        try:
            with self.pool.connection(self.flusher.connection_timeout_s) as conn:
                conn.execute(ledger.delete_run, (self.run_id,))
        except Exception as exc:  # noqa: BLE001 - the retention purge removes them later
            logger.info("loader %r: could not delete this run's ledger rows (%s); they expire "
                        "after ledger_retention_s", self.name, _first_line(exc))

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
    def stats(self) -> dict[str, Any]:
        with self._lock:
            b = self.budget
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
                "batches_pending": len(self._pending),
                "batches_loading": self._loading,
                "rows_written": self.rows_written,
                "rows_loaded": self.rows_loaded,
                "rows_failed": self.rows_failed,
                "rows_aborted": self.rows_aborted,
                "batches_committed": self.batches_committed,
                "batches_duplicate": self.batches_duplicate,
                "batches_failed": self.batches_failed,
                "soft_limit_seals": self.soft_limit_seals,
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
            for reason, n in self.flushes.items():
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
        self._engine = _Engine(
            pool, budget_bytes=budget_bytes, columns=columns, batch_rows=batch_rows,
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
            name=name)
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
        engine = self._engine
        cols = engine._check_columns(table, columns)
        with engine._lock:
            region = engine.budget.regions.get(table)
            if region is not None and region.columns != cols:
                raise LoaderError(f"loader {engine.name!r}: table {table!r} already has "
                                  "buffered rows; declare its columns before writing them")
            engine._columns[table] = cols

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
        return list(self._engine._threads)

    @property
    def closed(self) -> bool:
        return self._engine._state in (_CLOSED, _ABORTED)

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Rows written before an exception were accepted: they are loaded, not discarded.
        self.close()

    def __repr__(self) -> str:
        e = self._engine
        return (f"<poolkeeper.Loader {e.name!r} {e._state} bytes={e.budget.used}/"
                f"{e.budget.hard} tables={len(e.budget.regions)}>")
