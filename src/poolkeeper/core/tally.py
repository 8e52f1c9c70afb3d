"""Counters the lock-free borrow and return keep on the slots, summed when someone reads them.

The common borrow (an idle slot, nobody waiting) and the common return (nobody waiting) take
no lock (see :mod:`.bag`). Shared counters updated without a lock lose increments when two
threads interleave, so those paths count on the slot they hold instead: while a thread holds
a slot, no other thread writes its counters. A reader sums the live slots plus what retired
slots left behind (:meth:`SlotTally.retire`), and never sees more than one checkout's worth
of tearing per slot. The caller serialises :meth:`retire` and :meth:`read` with one lock (the
pool's statistics lock), so a slot is counted either live or retired, never both.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from .histogram import BOUNDS_S, BUCKETS, FIRST_BOUND_S, HISTOGRAM_BOUNDS_MS
from .slot import Slot

__all__ = ["HISTOGRAM_BOUNDS_MS", "SlotTally", "count_usage"]



def count_usage(slot: Slot, usage_s: float) -> None:
    """Count one checkout of ``usage_s`` seconds on ``slot``; only its holder calls this."""
    slot.usage_s += usage_s
    # Most checkouts are short: skip the bisect for the first bucket.
    slot.usage_hist[0 if usage_s <= FIRST_BOUND_S else bisect_left(BOUNDS_S, usage_s)] += 1


class SlotTally:
    """Totals over every slot a pool ever had: live ones summed on read, retired ones folded."""

    def __init__(self) -> None:
        self._retired_borrows = 0
        self._retired_usage_s = 0.0
        self._retired_hist = [0] * BUCKETS
        # pop_stats() resets by moving the baseline: the slots' own counters only grow.
        self._base_borrows = 0
        self._base_usage_s = 0.0
        self._base_hist = [0] * BUCKETS

    def retire(self, slot: Slot) -> None:
        """Fold a slot that leaves the pool for good (its holder is done with it)."""
        self._retired_borrows += slot.fast_borrows
        self._retired_usage_s += slot.usage_s
        hist = self._retired_hist
        for i, n in enumerate(slot.usage_hist):
            hist[i] += n

    def read(self, live: Iterable[Slot], reset: bool) -> dict[str, Any]:
        """Fast borrows, returns and usage since the last reset; ``reset`` starts over."""
        borrows = self._retired_borrows
        usage_s = self._retired_usage_s
        hist = list(self._retired_hist)
        for slot in live:
            borrows += slot.fast_borrows
            usage_s += slot.usage_s
            for i, n in enumerate(list(slot.usage_hist)):  # a copy: its holder may write
                hist[i] += n
        out = {
            "fast_borrows": borrows - self._base_borrows,
            "usage_s": usage_s - self._base_usage_s,
            "usage_hist": [n - b for n, b in zip(hist, self._base_hist, strict=True)],
        }
        if reset:
            self._base_borrows, self._base_usage_s, self._base_hist = borrows, usage_s, hist
        return out
