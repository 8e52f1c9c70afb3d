"""The records of one physical connection (:class:`Slot`) and of one borrow of it
(:class:`Checkout`).

A slot lives exactly as long as its connection. A :class:`Checkout` is made by the shell for
every borrow and referenced by two things: the slot (``slot.checkout``, while it is lent) and
the proxy the caller holds. The housekeeper finds leaks and abandoned checkouts through the
slots, so these facts cannot live on the proxy only (the pool must not keep a proxy alive: a
proxy dropped unreturned is found by its ``__del__``); and they are not the physical
connection's, so they do not live on the slot, which outlives every checkout. When the
checkout ends the slot lets go of it; a returned proxy keeps it, to say where it was borrowed
when it is used again.

A checkout is written by its holder (statement count, current SQL, cursors) and read by the
housekeeper and the views, without a lock: each field is one value, written whole. (The two
classes share a module because each refers to the other.)
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from .histogram import BUCKETS

__all__ = ["Checkout", "CloseReason", "Frame", "Slot", "SlotState", "line_of"]

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
        "broken",
        "checkout",
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
        "lease_owner",
        "lease_start",
        "mon",
        "monitored_class",
        "parked_until",
        "proxy_class",
        "raw",
        "session_id",
        "state",
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
        #: the current checkout (Checkout) while lent, else None
        self.checkout: Checkout | None = None
        #: what statement hooks remember of this physical connection, each under its own key
        #: (StatementContext.memo, see hooks/context.py); lives as long as the connection
        self.hook_memo: dict[Any, Any] = {}
        self.broken = False
        self.close_reason: str | None = None  #: why it was marked broken, when not plain broken
        self.dirty = False  #: came back with a transaction left open (reset_on_return=False)
        #: the proxy classes for this connection's checkouts, plain and monitored (the pool
        #: sets them: proxy.proxy_class)
        self.proxy_class: Any = None
        self.monitored_class: Any = None
        self.mon: Any = None  #: the resource monitor's record of this connection, if any
        # lease parking (see Bag)
        self.lease_start = 0.0  #: when the current holder got it from the idle stack or a hand-off
        #: the lease owner of the current holder (see Bag.borrow; None: never parked)
        self.lease_owner: Any = None
        self.parked_until = 0.0
        # counters of the lock-free paths, written only by the holder (see tally.SlotTally)
        self.fast_borrows = 0  #: borrows that took this slot from the idle stack without a lock
        self.usage_s = 0.0  #: total time held, over every checkout
        self.usage_hist = [0] * BUCKETS  #: checkouts per usage-histogram bucket

    def __repr__(self) -> str:
        return f"<Slot {self.id} {self.state.name.lower()} uses={self.uses}>"


class Checkout:
    """The record of one borrow (see the module docstring)."""

    __slots__ = (
        "active_at",
        "autocommit_was",
        "borrowed_at",
        "code",
        "cursors",
        "interrupted",
        "lasti",
        "leak_reported",
        "mon_frames",
        "mon_record",
        "owner",
        "proxy_ref",
        "raw",
        "reclaimed_at",
        "slot",
        "sql",
        "stack",
        "statements",
        "statements_seen",
    )

    def __init__(self, slot: Slot, owner: Any, now: float, code: Any, lasti: int) -> None:
        #: the connection's record; None once the checkout ended (a returned proxy its
        #: caller keeps must not keep the connection alive)
        self.slot: Slot | None = slot
        #: the driver's connection (the proxy reaches it only through here)
        self.raw = slot.raw
        #: the holder: a thread's ident, or an asyncio task (the reports name it)
        self.owner = owner
        self.borrowed_at = now
        #: the borrowing frame's code object and bytecode offset (see core.slot.line_of):
        #: reading f_lineno on every borrow would decode the line table; this is read when a
        #: report is written
        self.code = code
        self.lasti = lasti
        #: the statement running now, or the last one
        self.sql: Any = None
        # Statement starts and ends through the proxies, counted together: odd while one runs.
        # The housekeeper compares it with statements_seen to find a checkout in use.
        self.statements = 0
        self.statements_seen = 0
        self.active_at = 0.0  #: when the housekeeper last saw the checkout run statements
        #: an awaited driver call of this checkout was cancelled (asyncio shell): the
        #: connection may be mid-protocol, so before it is lent again the pool must put it
        #: through the driver's recover_from_cancel() (or discard it)
        self.interrupted = False
        self.reclaimed_at = 0.0  #: when it was revoked as abandoned (0: it was not)
        self.leak_reported = False
        #: the autocommit to restore on return, once the holder changed it
        self.autocommit_was: bool | None = None
        #: weak references to the cursors opened through the proxy (the monitor's watches on
        #: a monitored checkout), to close the ones left open on return
        self.cursors: list[Any] | None = None
        #: the borrow stack, with leak_stack_depth
        self.stack: tuple[Frame, ...] | None = None
        #: a weak reference to the proxy, with abandoned_timeout (a reclaim turns it inert)
        self.proxy_ref: Any = None
        #: the resource monitor's kept frames of the borrow (None: not recorded), and the
        #: record its views made of this checkout
        self.mon_frames: Sequence[Any] | None = None
        self.mon_record: Any = None

    @property
    def executing(self) -> bool:
        """True while a statement runs through the checkout's proxies."""
        return bool(self.statements & 1)

    def site(self) -> Frame | None:
        """(file, line, function) of the borrow."""
        code = self.code
        if code is None:
            return None
        return (code.co_filename, line_of(code, self.lasti), code.co_name)

    def __repr__(self) -> str:
        slot = self.slot
        return (f"<Checkout of connection {slot.id if slot else '(ended)'} "
                f"by {self.owner!r}>")
