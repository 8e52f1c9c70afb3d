"""The loader's rows between ``write()`` and a worker, with no I/O: what to flush, and when.

A :class:`Buffer` holds one region of encoded rows per table under one byte budget (see
:mod:`.budget`), seals regions into batches (a table's row or size limit, its age, the soft
limit, an explicit flush) and hands the sealed batches out in an order that keeps each
table's batches in write order: a table's next batch waits while its previous one loads.

No threads, no files, no sockets: the engine (:mod:`.engine`) holds its lock around every
call, waits where the buffer says there is no room, writes the spill log and runs the
batches. What the buffer decides comes back as return values, and every sealed batch is
passed to ``on_sealed`` (where the engine wakes a worker).

Example::

    buffer = Buffer(LoaderOptions(budget_bytes=1 << 20, batch_rows=2), SqliteCodec(),
                    name="demo", run_id="r1", workers=1, on_sealed=lambda batch: None)
    region, start, new = buffer.append("t", (1, "a"))
    buffer.accept(region, start)
    region, start, new = buffer.append("t", (2, "b"))
    buffer.accept(region, start)            # the second row reaches batch_rows: sealed
    batch = buffer.next_batch()
    assert batch is not None and batch.rows == 2
    buffer.finish(batch)                    # committed: its bytes are free
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import LoaderError
from .batch import Batch, FlushReason
from .budget import REGION_OVERHEAD, ROW_OVERHEAD, Budget, Region, record_cost
from .options import LoaderOptions, check_columns

if TYPE_CHECKING:  # the codec is given; only its formatters run here
    from .codec import Codec

__all__ = ["Buffer"]

#: the fast path of write() looks at the limits at least every this many bytes
_CREDIT_MAX = 256 << 10

Row = Sequence[Any] | Mapping[str, Any]


class Buffer:
    """Regions per table under one budget, and the queue of sealed batches.

    Every method expects the caller to hold the one lock that guards the buffer.
    """

    def __init__(self, options: LoaderOptions, codec: Codec, *, name: str, run_id: str,
                 workers: int, on_sealed: Callable[[Batch], Any],
                 clock: Callable[[], float] = time.monotonic, durable: bool = False) -> None:
        self.name = name
        self.run_id = run_id
        self.label = options.label
        self.batch_rows = options.batch_rows
        self.batch_bytes = options.effective_batch_bytes
        self.max_age_s = options.max_age_s
        self.workers = workers
        self.codec = codec
        # Each region formats with a formatter planned for its first row's types (the
        # codec's row_formatter); they all share this context.
        self._format_ctx = codec.formatter()[1]
        self._on_sealed = on_sealed
        self._clock = clock
        #: in durable mode every row goes to the spill log, so the fast path never runs
        self._durable = durable
        self.columns: dict[str, tuple[str, ...]] = {
            table: tuple(cols) for table, cols in (options.columns or {}).items()}
        self.budget = Budget(options.budget_bytes)
        self.loading_tables: dict[str, int] = {}  # table -> seq of its batch being loaded
        self.queued: dict[str, int] = {}  # table -> how many of its batches wait in pending
        self.pending: deque[Batch] = deque()  # sealed batches, in seal order
        self.outstanding: set[int] = set()  # seqs of regions and batches not yet done
        self._outstanding_heap: list[int] = []
        #: the seq of the last region opened
        self.seq = 0
        #: bytes the fast path may still write before the limits need a look
        self.credit = 0
        self.accepting = True
        # -- counters
        self.rows_written = 0
        self.flushes = dict.fromkeys(FlushReason.ALL, 0)
        self.soft_limit_seals = 0

    # ================================================================== rows
    def declare(self, table: str, columns: Sequence[str]) -> None:
        cols = check_columns(table, columns)
        region = self.budget.regions.get(table)
        if region is not None and region.columns != cols:
            raise LoaderError(f"loader {self.name!r}: table {table!r} already has "
                              "buffered rows; declare its columns before writing them")
        self.columns[table] = cols

    def needs_room(self, table: str) -> bool:
        """Whether a row for ``table`` must wait for memory to be freed.

        A new table also costs its region's overhead: a row is admitted only if both fit, so
        the budget is exceeded by at most the row itself.
        """
        budget = self.budget
        return budget.buffered + budget.inflight + (
            0 if table in budget.regions else REGION_OVERHEAD) >= budget.hard

    def append(self, table: str, row: Row) -> tuple[Region, int, bool]:
        """Encode ``row`` at the end of its table's region (opened for a new table).

        Returns ``(region, start, new)``: the record is ``region.data[start:]``. It is not
        counted yet: :meth:`accept` counts it, :meth:`take_back` removes it. Raises
        TypeError/ValueError for a row that cannot be encoded (nothing is left behind).
        """
        region = self.budget.regions.get(table)
        new = region is None
        if region is None:
            region = self._new_region(table, row)
        try:
            values = self._values(region, row)
        except (TypeError, ValueError):
            if new:
                self._drop_region(region)
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
                self._drop_region(region)
            raise self.bad_row(table, exc) from exc
        region.ends.append(len(data))
        if region.width < 0:
            region.width = len(values)
        return region, start, new

    def take_back(self, region: Region, start: int, new: bool) -> None:
        """Undo an :meth:`append` (the row could not be spilled)."""
        del region.data[start:]
        region.ends.pop()
        if new:
            self._drop_region(region)

    def accept(self, region: Region, start: int) -> None:
        """Count the record an :meth:`append` left at ``start``, then apply the limits."""
        cost = record_cost(region.ends[-1] - start)
        region.nbytes += cost
        self.budget.buffered += cost
        self.rows_written += 1
        self.after_write(region)

    def make_fast_append(self) -> Callable[[str, Row], bool]:
        """``append(table, row) -> bool``: the per-row hot path of ``write()``.

        It takes a tuple of the right width for a table already buffering while credit is
        left (bytes that can be written before any limit needs a look), and returns False
        for anything else: then the caller goes through :meth:`append` and :meth:`accept`.
        Everything it reads on every row is bound to a local once (an attribute lookup per
        name per row adds up at a few hundred thousand rows a second).
        """
        region_of = self.budget.regions.get
        ctx = self._format_ctx
        budget = self.budget
        after_write = self.after_write
        bad_row = self.bad_row
        row_overhead = ROW_OVERHEAD
        batch_rows = self.batch_rows
        batch_bytes = self.batch_bytes
        tuple_ = tuple
        buffer = self

        def fast_append(table: str, row: Row) -> bool:
            region = region_of(table)
            credit = buffer.credit
            if (region is None or row.__class__ is not tuple_ or len(row) != region.width
                    or credit <= 0):
                return False
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
            buffer.credit = credit
            buffer.rows_written += 1
            if credit <= 0 or len(ends) >= batch_rows or region.nbytes >= batch_bytes:
                after_write(region)
            elif budget.heap_on:
                budget.push(region)
            return True

        return fast_append

    def after_write(self, region: Region) -> None:
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
            self.seal(region.table, FlushReason.ROWS)
        elif region.nbytes >= self.batch_bytes:
            self.seal(region.table, FlushReason.SIZE)
        if used > budget.soft and len(self.pending) < self.workers:
            self.seal_largest()
        self.refill_credit()

    def refill_credit(self) -> None:
        """How many bytes the fast path may write before the limits need looking at."""
        budget = self.budget
        if not self.accepting or self._durable:
            self.credit = 0
            return
        used = budget.buffered + budget.inflight
        room = budget.hard - used - REGION_OVERHEAD
        if len(self.pending) < self.workers:
            room = min(room, budget.soft - used)  # crossing the soft limit seals a region
        self.credit = max(0, min(room, _CREDIT_MAX))

    def stop_accepting(self) -> None:
        """No more rows (closing or aborted): the fast path hands every row to the caller."""
        self.accepting = False
        self.credit = 0

    def bad_row(self, table: str, exc: BaseException) -> Exception:
        kind = ValueError if isinstance(exc, ValueError) else TypeError
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return kind(f"loader {self.name!r}: a row for table {table!r} cannot be loaded: {text}")

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

    def _new_region(self, table: str, row: Any) -> Region:
        if not isinstance(table, str) or not table or "\x00" in table or len(table) > 255:
            raise ValueError(f"loader {self.name!r}: table must be a non-empty name of at most "
                             f"255 characters, not {table!r}")
        columns = self.columns.get(table)
        if columns is None and isinstance(row, Mapping):
            columns = check_columns(table, [str(k) for k in row])
        self.seq += 1
        seq = self.seq
        region = Region(table, seq, columns, self._clock())
        region.batch_id = self.batch_id(table, seq)
        if columns is not None:
            region.width = len(columns)
        self.budget.add(region)
        self.outstanding.add(seq)
        heapq.heappush(self._outstanding_heap, seq)
        return region

    def _drop_region(self, region: Region) -> None:
        if self.budget.regions.get(region.table) is region:
            self.budget.remove(region.table)
        self.outstanding.discard(region.seq)

    def batch_id(self, table: str, seq: int) -> str:
        """``<label>:<run>:<table>:<seq>``, at most 255 characters."""
        if len(table) > 150:
            table = table[:120] + "#" + hashlib.sha1(table.encode()).hexdigest()[:12]
        return f"{self.label}:{self.run_id}:{table}:{seq}"

    # ================================================================== sealing
    def seal(self, table: str, reason: str) -> Batch:
        """Turn ``table``'s region into a batch at the end of the queue."""
        batch = _batch_of(self.budget.seal(table), reason)
        self.pending.append(batch)
        self.queued[table] = self.queued.get(table, 0) + 1
        self.flushes[reason] += 1
        self._on_sealed(batch)
        return batch

    def seal_all(self, reason: str) -> None:
        for table in list(self.budget.regions):
            self.seal(table, reason)

    def seal_table(self, table: str, reason: str) -> set[int]:
        """Seal ``table``'s region; the seqs of all its batches not yet done."""
        wanted: set[int] = set()
        region = self.budget.regions.get(table)
        if region is not None:
            wanted.add(region.seq)
            self.seal(table, reason)
        if table in self.loading_tables:
            wanted.add(self.loading_tables[table])
        wanted.update(b.seq for b in self.pending if b.table == table)
        return wanted

    def seal_largest(self) -> None:
        """Above the soft limit, seal the largest regions while a worker would be idle."""
        budget = self.budget
        while (budget.buffered + budget.inflight > budget.soft
               and len(self.pending) < self.workers):
            # A table whose earlier batch still waits in the queue is skipped: sealing it
            # again would only queue a smaller batch behind that one.
            region = budget.largest(self.queued)
            if region is None:
                return
            self.soft_limit_seals += 1
            self.seal(region.table, FlushReason.SIZE)

    def seal_aged(self) -> float | None:
        """Seal regions older than max_age_s; seconds until the next one is due."""
        max_age = self.max_age_s
        if max_age is None:
            return None
        now = self._clock()
        cutoff = now - max_age
        due: list[Region] = []
        wait = max_age
        for region in self.budget.regions.values():
            if region.created > cutoff:
                wait = region.created + max_age - now
                break
            due.append(region)
        for region in due:
            self.seal(region.table, FlushReason.AGE)
        return max(wait, 0.005)

    # ================================================================== batches
    def next_batch(self) -> Batch | None:
        """The first queued batch whose table has no batch loading (keeps each table's
        batches, and their on_flushed calls, in write order); it counts as loading."""
        loading = self.loading_tables
        for i, batch in enumerate(self.pending):
            if batch.table not in loading:
                del self.pending[i]
                left = self.queued[batch.table] - 1
                if left:
                    self.queued[batch.table] = left
                else:
                    del self.queued[batch.table]
                loading[batch.table] = batch.seq
                self.credit = 0  # the queue shrank: the soft limit may seal again
                return batch
        return None

    def finish(self, batch: Batch) -> bool:
        """A batch from :meth:`next_batch` is done (committed or not): free its memory.

        Returns whether a batch of the same table waits in the queue (it can start now).
        """
        self.budget.release(batch.nbytes)
        next_waits = False
        if self.loading_tables.get(batch.table) == batch.seq:
            del self.loading_tables[batch.table]
            next_waits = batch.table in self.queued
        self.outstanding.discard(batch.seq)
        if len(self._outstanding_heap) > 2 * len(self.outstanding) + 64:
            # Done seqs leave the heap lazily (see oldest_outstanding); rebuild before they
            # pile up.
            self._outstanding_heap = sorted(self.outstanding)
        self.credit = 0
        return next_waits

    def oldest_outstanding(self) -> float:
        """The lowest seq not yet done (infinity when all are)."""
        heap = self._outstanding_heap
        while heap and heap[0] not in self.outstanding:
            heapq.heappop(heap)
        return heap[0] if heap else float("inf")

    def rows_held(self) -> int:
        """Rows buffered or queued (not those loading)."""
        return (sum(r.rows for r in self.budget.regions.values())
                + sum(b.rows for b in self.pending))

    def drop_all(self) -> int:
        """Forget every queued batch and buffered region (abort); how many rows that was."""
        dropped = 0
        while self.pending:
            batch = self.pending.popleft()
            dropped += batch.rows
            self.budget.release(batch.nbytes)
            self.outstanding.discard(batch.seq)
        for table in list(self.budget.regions):
            region = self.budget.remove(table)
            dropped += region.rows
            self.outstanding.discard(region.seq)
        self.loading_tables.clear()
        self.queued.clear()
        return dropped

    def take_leftovers(self) -> list[Batch]:
        """Every queued batch, and every region as a batch, out of the queue (the workers
        have stopped); each is to be passed to :meth:`discard` once dealt with."""
        batches = list(self.pending)
        self.pending.clear()
        for table in list(self.budget.regions):
            batches.append(_batch_of(self.budget.seal(table), FlushReason.CLOSE))
        return batches

    def discard(self, batch: Batch) -> None:
        """A batch that will not be loaded: stop counting it."""
        self.budget.release(batch.nbytes)
        self.outstanding.discard(batch.seq)
        self.loading_tables.pop(batch.table, None)
        self.queued.pop(batch.table, None)


def _batch_of(region: Region, reason: str) -> Batch:
    return Batch(region.table, region.batch_id, region.seq, region.columns, region.data,
                 region.ends, region.nbytes, reason, spilled=region.spilled)
