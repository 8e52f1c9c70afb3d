"""Per-table regions under one byte budget: the loader's memory policy, with no I/O.

Every table being written has one *region*: the encoded rows not yet handed to a flush. A
region is *sealed* into a batch when it is flushed; its bytes stay counted (*in flight*) until
the batch is committed, so the budget covers everything the loader holds, loaded or not.

- below the soft limit (half the budget), regions grow until their own row/size/age limits;
- above it, the largest region is sealed and flushed;
- at the hard limit (the budget itself) ``write()`` blocks until flushes free memory.

Nothing is ever evicted: a region leaves memory only by being committed (or, when the
database refuses its rows for good, by being written to the rejects sink).

Finding the largest of 10,000 regions must not cost a scan per flush (with tiny regions at
the soft limit, that is a scan per write): past a few dozen regions a heap gets an entry each
time a region grows; stale entries are skipped when popped and the heap is rebuilt when they
outnumber the regions, so finding the largest costs a pop or two.

Example::

    budget = Budget(1 << 20)
    region = Region("orders", seq=1, columns=None, now=0.0)
    budget.add(region)
    budget.grew(region, 100)
    assert budget.largest(()) is region
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable, Container, Iterator, Sequence
from typing import Any

__all__ = ["REGION_OVERHEAD", "ROW_OVERHEAD", "Budget", "Region", "record_cost"]

#: bytes counted for one region's own objects (Region, bytearray, array, dict entry;
#: measured about 420 bytes on CPython 3.11 x86-64)
REGION_OVERHEAD = 512
#: bytes counted per row besides its record: its end offset in the region
ROW_OVERHEAD = 8
#: with more regions than this, the largest is kept in a heap; below, a scan is cheaper
_HEAP_FROM = 32


def record_cost(length: int) -> int:
    """Bytes counted for one record of ``length`` bytes.

    A bytearray over-allocates by up to an eighth when it grows, so an eighth is counted too:
    the budget bounds the memory really held, not only the bytes written.
    """
    return length + (length >> 3) + ROW_OVERHEAD


class Region:
    """The rows buffered for one table since its last flush, as encoded records."""

    __slots__ = ("batch_id", "columns", "created", "data", "ends", "format", "nbytes", "seq",
                 "spilled", "table", "width")

    def __init__(self, table: str, seq: int, columns: tuple[str, ...] | None,
                 now: float) -> None:
        self.table = table
        #: the batch sequence number this region becomes when sealed (fixed at creation)
        self.seq = seq
        self.columns = columns
        self.data = bytearray()
        #: offset just past each record in ``data``
        self.ends: array[int] = array("q")
        self.nbytes = REGION_OVERHEAD
        self.created = now
        self.batch_id = ""
        #: values per row (from the columns, or the first row); -1 until known
        self.width = -1
        #: whether rows of this region are in the spill log (durable mode)
        self.spilled = False
        #: ``fn(row, ctx, out)`` appending a row's record: the codec's formatter planned for
        #: the types of this region's first row (set by the loader with that row)
        self.format: Callable[[Sequence[Any], Any, bytearray], None] | None = None

    @property
    def rows(self) -> int:
        return len(self.ends)

    def __repr__(self) -> str:
        return f"<Region {self.table!r} seq={self.seq} rows={self.rows} bytes={self.nbytes}>"


class Budget:
    """Byte accounting of all regions and in-flight batches. The caller holds the lock."""

    def __init__(self, budget_bytes: int) -> None:
        self.hard = budget_bytes
        self.soft = budget_bytes // 2
        #: table -> region, in creation order (so the oldest region comes first)
        self.regions: dict[str, Region] = {}
        self.buffered = 0
        self.inflight = 0
        self.peak = 0
        self._heap: list[tuple[int, int, str]] = []
        self.heap_on = False

    @property
    def used(self) -> int:
        return self.buffered + self.inflight

    def over_soft(self) -> bool:
        return self.buffered + self.inflight > self.soft

    def over_hard(self) -> bool:
        return self.buffered + self.inflight >= self.hard

    def add(self, region: Region) -> None:
        self.regions[region.table] = region
        self.buffered += region.nbytes
        if self.heap_on:
            heapq.heappush(self._heap, (-region.nbytes, region.seq, region.table))
        elif len(self.regions) > _HEAP_FROM:
            self._rebuild(True)

    def grew(self, region: Region, delta: int) -> None:
        region.nbytes += delta
        self.buffered += delta
        used = self.buffered + self.inflight
        self.peak = max(self.peak, used)
        if self.heap_on:
            self.push(region)

    def push(self, region: Region) -> None:
        """Record a region's new size in the heap (callers that grow it inline)."""
        heap = self._heap
        heapq.heappush(heap, (-region.nbytes, region.seq, region.table))
        if len(heap) > 2 * len(self.regions) + 64:
            self._rebuild(True)

    def shrank(self, region: Region, delta: int) -> None:
        """Undo a :meth:`grew` (a row that could not be spilled is taken back)."""
        region.nbytes -= delta
        self.buffered -= delta
        if self.heap_on:
            heapq.heappush(self._heap, (-region.nbytes, region.seq, region.table))

    def seal(self, table: str) -> Region:
        """Take a region out for flushing; its bytes stay counted until :meth:`release`."""
        region = self.remove(table)
        self.inflight += region.nbytes
        return region

    def remove(self, table: str) -> Region:
        """Take a region out and stop counting it (an aborted, empty or failed region)."""
        region = self.regions.pop(table)
        self.peak = max(self.peak, self.buffered + self.inflight)
        self.buffered -= region.nbytes
        if self.heap_on and len(self.regions) < _HEAP_FROM // 2:
            self._rebuild(False)
        return region

    def release(self, nbytes: int) -> None:
        """A sealed batch is done (committed or rejected): its memory is free."""
        # The loader's fast path adds bytes without updating the peak; memory only goes
        # down here and in remove(), so the peak is brought up to date first.
        self.peak = max(self.peak, self.buffered + self.inflight)
        self.inflight -= nbytes

    def _rebuild(self, on: bool) -> None:
        self.heap_on = on
        self._heap = ([(-r.nbytes, r.seq, r.table) for r in self.regions.values()]
                      if on else [])
        heapq.heapify(self._heap)

    def largest(self, skip: Container[str]) -> Region | None:
        """The largest region whose table is not in ``skip`` (exact)."""
        regions = self.regions
        if not self.heap_on:
            best: Region | None = None
            for region in regions.values():
                if region.table not in skip and (best is None or region.nbytes > best.nbytes):
                    best = region
            return best
        heap = self._heap
        kept: list[tuple[int, int, str]] = []
        found: Region | None = None
        while heap:
            entry = heapq.heappop(heap)
            neg, seq, table = entry
            current = regions.get(table)
            if current is None or current.seq != seq or current.nbytes != -neg:
                continue  # stale: sealed since, or grown past this entry
            kept.append(entry)
            if table not in skip:
                found = current
                break
        for entry in kept:
            heapq.heappush(heap, entry)
        return found

    def aged(self, cutoff: float, skip: Container[str]) -> Iterator[Region]:
        """Regions created at or before ``cutoff``, oldest first (a snapshot list)."""
        found = []
        for region in self.regions.values():
            if region.created > cutoff:
                break
            if region.table not in skip:
                found.append(region)
        return iter(found)

    def oldest(self) -> Region | None:
        for region in self.regions.values():
            return region
        return None
