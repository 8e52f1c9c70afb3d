"""One physical connection's record, living exactly as long as the connection.

The slot also carries *who holds it now* (borrow time, site, thread, current SQL): the
housekeeper finds leaks and abandoned checkouts by looking at slots, and a checkout proxy
must not be kept alive by the pool, so those facts cannot live on the proxy.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from .histogram import BUCKETS

__all__ = ["CloseReason", "Frame", "Slot", "SlotState", "line_of"]

#: (filename, line, function) of one stack frame, formatted only when someone reads it
Frame = tuple[str, int, str]


def line_of(code: Any, lasti: int) -> int:
    """The line of the instruction at byte offset ``lasti`` in ``code`` (what f_lineno says).

    Borrow sites are recorded as (code, f_lasti) because reading ``f_lineno`` decodes the line
    table on every call, and costs more the further down a long function the call is; the line
    is worked out here only when a report is written.
    """
    if lasti >= 0:
        for start, end, line in code.co_lines():
            if start <= lasti < end:
                return code.co_firstlineno if line is None else int(line)
    return int(code.co_firstlineno)


class CloseReason:
    """Why a physical connection was closed (each is a ``connections_closed_<reason>`` counter)."""

    LIFETIME = "lifetime"  #: reached max_lifetime
    IDLE = "idle"  #: idle past idle_timeout, above min_idle
    BROKEN = "broken"  #: the driver reported it unusable (server restart, killed backend)
    VALIDATION = "validation"  #: failed the ping on borrow or the keepalive ping
    RESET_FAILED = "reset_failed"  #: rollback on return failed
    UNKNOWN_STATE = "unknown_state"  #: returned mid-statement or in an unknown state
    EXPIRED = "expired"  #: retired by expire_all()
    ABANDONED = "abandoned"  #: reclaimed after abandoned_timeout
    POOL_CLOSED = "pool_closed"  #: the pool was closed
    #: received a result above max_idle_result_bytes (libpq keeps its buffer that large)
    LARGE_RESULT = "large_result"
    ALL = (LIFETIME, IDLE, BROKEN, VALIDATION, RESET_FAILED, UNKNOWN_STATE, EXPIRED, ABANDONED,
           POOL_CLOSED, LARGE_RESULT)


class SlotState(enum.IntEnum):
    IDLE = 0  #: in the idle stack, free to borrow
    IN_USE = 1  #: borrowed by a caller
    PARKED = 2  #: kept for the thread that just returned it, for the rest of its lease
    RESERVED = 3  #: taken by the housekeeper (keepalive ping, retirement)
    CLOSED = 4  #: the physical connection is closed or being closed


class Slot:
    """The record of one physical connection."""

    __slots__ = (
        "active_at",
        "autocommit_was",
        "borrow_code",
        "borrow_lasti",
        "borrow_stack",
        "borrow_thread",
        "borrowed_at",
        "broken",
        "close_reason",
        "created_at",
        "dirty",
        "expires_at",
        "fast_borrows",
        "generation",
        "hook_memo",
        "id",
        "idle_timeout",
        "largest_result_bytes",
        "last_alive",
        "last_used",
        "leak_reported",
        "lease_owner",
        "lease_start",
        "mon",
        "mon_cursors",
        "mon_frames",
        "mon_record",
        "monitored_class",
        "parked_until",
        "proxy_class",
        "proxy_ref",
        "raw",
        "reclaim_at",
        "session_id",
        "sql",
        "state",
        "statements",
        "statements_seen",
        "usage_hist",
        "usage_s",
        "uses",
    )

    def __init__(self, slot_id: int, raw: Any, *, now: float, expires_at: float,
                 idle_timeout: float, generation: int, session_id: Any = None) -> None:
        self.id = slot_id
        self.raw = raw
        self.session_id = session_id
        self.created_at = now
        self.expires_at = expires_at  #: monotonic deadline, jitter included (inf: never)
        self.idle_timeout = idle_timeout  #: this slot's idle limit, jitter included (inf: none)
        self.generation = generation
        self.state = SlotState.RESERVED
        self.last_used = now  #: when a caller last returned it
        self.last_alive = now  #: when it was last known to work (use or ping)
        self.uses = 0
        #: the largest result this connection received, in bytes, as the driver measures it
        #: (0: none measured); libpq's input buffer stays that large while the connection idles
        self.largest_result_bytes = 0
        # the current checkout
        self.borrowed_at = 0.0
        self.borrow_code: Any = None  #: code object of the borrowing frame (formatted lazily)
        self.borrow_lasti = -1  #: bytecode offset in borrow_code (see line_of)
        self.borrow_stack: tuple[Frame, ...] | None = None
        self.borrow_thread = 0
        self.sql: str | None = None
        # Statement starts and ends through the proxies, counted together: odd while one runs.
        # The housekeeper compares it with statements_seen to find a checkout in use.
        self.statements = 0
        self.statements_seen = 0
        self.active_at = 0.0  #: when the housekeeper last saw the checkout run statements
        self.reclaim_at = 0.0  #: when the checkout was revoked as abandoned (0: it was not)
        #: what statement hooks remember of this physical connection, each under its own key
        #: (StatementContext.memo, see hooks/context.py); lives as long as the connection
        self.hook_memo: dict[Any, Any] = {}
        self.broken = False
        self.close_reason: str | None = None  #: why it was marked broken, when not plain broken
        self.dirty = False  #: came back with a transaction left open (reset_on_return=False)
        self.autocommit_was: bool | None = None  #: restore this autocommit on return
        self.leak_reported = False
        self.proxy_ref: Any = None
        #: the proxy classes for this connection's checkouts, plain and monitored (the pool
        #: sets them: proxy.proxy_class)
        self.proxy_class: Any = None
        self.monitored_class: Any = None
        self.mon: Any = None  #: the resource monitor's record of this connection, if any
        # The resource monitor's view of the current checkout, when it records it: a checkout
        # has no record of its own while it only lives and goes back (observe/monitor.py).
        #: the kept frames of the borrow, (code, offset, code, offset, ...) (None: the
        #: checkout is not recorded); made afresh by every borrow, its identity is the
        #: checkout's, for the views
        self.mon_frames: Sequence[Any] | None = None
        #: the checkout proxy's list of weak references to its cursors, once it opened one
        #: (left as it is on return: every cursor in it is closed or gone by then)
        self.mon_cursors: list[Any] | None = None
        #: the record the views made for the checkout of ``mon_frames`` (stable ids)
        self.mon_record: Any = None
        # lease parking (see Bag)
        self.lease_start = 0.0  #: when the current holder got it from the idle stack or a hand-off
        #: the lease owner of the current holder (see Bag.borrow; None: never parked)
        self.lease_owner: Any = None
        self.parked_until = 0.0
        # counters of the lock-free paths, written only by the holder (see tally.SlotTally)
        self.fast_borrows = 0  #: borrows that took this slot from the idle stack without a lock
        self.usage_s = 0.0  #: total time held, over every checkout
        self.usage_hist = [0] * BUCKETS  #: checkouts per usage-histogram bucket

    @property
    def executing(self) -> bool:
        """True while a statement runs through the checkout's proxies."""
        return bool(self.statements & 1)

    def site(self) -> Frame | None:
        """(file, line, function) of the current borrow."""
        code = self.borrow_code
        if code is None:
            return None
        return (code.co_filename, line_of(code, self.borrow_lasti), code.co_name)

    def __repr__(self) -> str:
        return f"<Slot {self.id} {self.state.name.lower()} uses={self.uses}>"
