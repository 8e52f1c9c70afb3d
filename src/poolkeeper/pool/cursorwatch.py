"""A monitored cursor's watch, for both shells: where it was opened (the
:class:`~poolkeeper.observe.monitor.CursorWatch` made by :func:`watch_cursor`) and what its
being freed unclosed means (:func:`cursor_freed`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import CodeType
from typing import Any

from ..observe.monitor import MONITOR, CursorWatch

__all__ = ["cursor_freed", "watch_cursor"]

_monotonic = time.monotonic
# The files the monitor knows to be outside poolkeeper (every pool's probe is the process-wide
# monitor's): a module global, the cheapest read per monitored cursor.
_OUTSIDE = MONITOR._outside
# A monitored cursor freed while its checkout is held: counted, no record
_count_freed = MONITOR.cursors_freed.add


def watch_cursor(cur: Any, f: Any, entries: tuple[CodeType, CodeType],
                 frames: Sequence[Any] | None, leak_s: float) -> CursorWatch:
    """The watch of ``cur``, opened from frame ``f``: its site, times and deadline.

    ``entries``: the codes of the connection's ``execute`` and ``executemany``, whose caller
    is the site; ``frames``: the checkout's kept borrow frames (None once the monitor was
    cleared); ``leak_s``: the monitor's cursor_leak_s."""
    # Where the cursor was opened, kept as the monitor keeps a site (code and offset,
    # decoded when read) with its caller: the site and its caller, written out here for the
    # usual case; the monitor's cursor_site() walks past poolkeeper's own frames and decides
    # for a file not seen yet.
    code = f.f_code
    if code is entries[0] or code is entries[1]:
        # conn.execute(...): the site is its caller's. Two identity tests instead of the
        # monitor's walk past poolkeeper's frames: 0.55 us less per monitored statement
        # (in-memory SQLite conn.execute cycle, monitor on: +1.50 -> +0.96 us over off).
        f = f.f_back  # conn.execute() has a caller
        code = f.f_code
    # Outside poolkeeper: the code the checkout was borrowed from, as a rule (the borrow found
    # it outside; an identity test costs a fraction of reading co_filename), or a file known
    # to be.
    site: Sequence[Any]
    if (frames and code is frames[0]) or code.co_filename in _OUTSIDE:
        back = f.f_back
        site = ((code, f.f_lasti) if back is None
                else (code, f.f_lasti, back.f_code, back.f_lasti))
    else:
        site = MONITOR.cursor_site(f)
    cur._mon = watch = CursorWatch(cur)
    watch.site = site
    watch.created = now = _monotonic()
    watch.deadline = now + leak_s
    return watch


def cursor_freed(watch: CursorWatch, co: Any, pool_name: str) -> None:
    """A monitored cursor freed without close() (its ``__del__``, in both shells).

    While its checkout is held and before its deadline, that is the `conn.execute(...)` idiom
    (CPython frees the result when the caller is done with it): counted, no record. (Making
    its checkout's and its own record here cost 1.9 us per statement: in-memory SQLite
    conn.execute cycle, monitor on +3.37 us over off with them, +1.50 us without, both
    without the site shortcut above.) Otherwise it outlived its checkout (dropped
    unreturned), or lived open past its threshold: a leak for the monitor."""
    # Its checkout is held while its slot holds it and the monitor has not heard of its
    # proxy being dropped (which clears mon_frames, as a clear() does).
    slot = co.slot
    live = co.mon_frames is not None and slot is not None and slot.checkout is co
    if live and _monotonic() < watch.deadline:
        _count_freed()
        return
    MONITOR.cursor_collected(watch, co, pool_name, live)
