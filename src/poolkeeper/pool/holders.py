"""Who holds which connection: the rows of ``connections_info()`` and the diagnosis a
:class:`~poolkeeper.errors.PoolTimeout` carries. Shared by the shells; it reads slots only.

Every statement shown is redacted (literals folded) from its first MESSAGE_READ_CHARS: the
console's connections page and a PoolTimeout describe every held connection, each possibly
running a 10 MB batch, and must never show data or secrets.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import Any

from ..core.slot import Checkout, Frame, Slot, SlotState
from ..errors import ConnectionReclaimed, ConnectionReturned, PoolTimeout, as_driver_error
from ..sql.fingerprint import MESSAGE_READ_CHARS, redact

__all__ = ["connection_rows", "first_line", "format_site", "holder_name", "returned_error",
           "safe_sql", "thread_name",
           "timeout_error"]

_IN_USE = SlotState.IN_USE
#: holders a PoolTimeout names, longest held first
_HOLDERS_SHOWN = 5


def format_site(site: Frame | None) -> str:
    """``file:line in function`` for a call site, or ``unknown``."""
    if site is None:
        return "unknown"
    return f"{site[0]}:{site[1]} in {site[2]}"


def thread_name(owner: Any) -> str:
    """The holder's name as the tables show it: a thread's (by its ident), or a task's."""
    if not isinstance(owner, int):  # an asyncio task (AsyncPool)
        get_name = getattr(owner, "get_name", None)
        return repr(get_name()) if get_name is not None else repr(owner)
    for thread in threading.enumerate():
        if thread.ident == owner:
            return repr(thread.name)
    return f"#{owner} (ended)"


def holder_name(owner: Any) -> str:
    """The holder as the reports name it: "thread 'MainThread'", "task 'Task-7'"."""
    return f"{'thread' if isinstance(owner, int) else 'task'} {thread_name(owner)}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def safe_sql(sql: Any, dialect: str | None = None) -> str:
    """The statement with literals folded, read from its first MESSAGE_READ_CHARS only."""
    return redact(sql if isinstance(sql, str | bytes) else str(sql), dialect=dialect,
                  read_chars=MESSAGE_READ_CHARS)


def connection_rows(slots: Iterable[Slot], now: float, dialect: str | None
                    ) -> list[dict[str, Any]]:
    """One dict per physical connection: age, uses, state, holder, current SQL (by id)."""
    rows = []
    for slot in sorted(slots, key=lambda s: s.id):
        co = slot.checkout  # read once: its holder may return it meanwhile
        in_use = slot.state is _IN_USE and co is not None
        rows.append({
            "id": slot.id,
            "session_id": slot.session_id,
            "state": slot.state.name.lower(),
            "age_s": round(now - slot.created_at, 3),
            "idle_s": 0.0 if in_use else round(now - slot.last_used, 3),
            "expires_in_s": (None if math.isinf(slot.expires_at)
                             else round(slot.expires_at - now, 3)),
            "uses": slot.uses,
            "largest_result_bytes": slot.largest_result_bytes,
            "generation": slot.generation,
            "sql": safe_sql(co.sql, dialect) if co is not None and co.sql else None,
            "executing": co is not None and co.executing,
            "holder_thread": thread_name(co.owner) if co is not None else None,
            "holder": holder_name(co.owner) if co is not None else None,
            "borrow_site": format_site(co.site()) if co is not None else None,
            "held_s": round(now - co.borrowed_at, 3) if co is not None else None,
        })
    return rows


def timeout_error(pool_name: str, *, waited: float, what: str, counts: dict[str, int],
                  queued: int, max_size: int, rows: list[dict[str, Any]],
                  last_connect_error: BaseException | None) -> PoolTimeout:
    """The diagnosis of a timeout; ``queued`` counts the caller itself among the waiting."""
    # A slot can be in use with no checkout for a moment: handed to a waiter that has not run
    # yet, being validated for it, or being reset on return (the asyncio shell awaits these).
    # It has no holder to name (held_s is None): counted apart, never formatted as one.
    in_use = [r for r in rows if r["state"] == "in_use"]
    holders = [r for r in in_use if r["held_s"] is not None]
    holders.sort(key=lambda r: -r["held_s"])
    between = len(in_use) - len(holders)
    lines = [
        f"pool {pool_name!r}: couldn't {what} after {waited:.2f} s "
        f"(total={counts['total']}, active={counts['active']}, idle={counts['idle']}, "
        f"waiting={counts['waiting'] + queued}, opening={counts['opening']}, "
        f"max_size={max_size})"
    ]
    if last_connect_error is not None:
        lines.append(f"last connection error: {type(last_connect_error).__name__}: "
                     f"{first_line(last_connect_error)}")
    if holders:
        lines.append(f"connections held by ({min(len(holders), _HOLDERS_SHOWN)} of "
                     f"{len(holders)}):")
        for r in holders[:_HOLDERS_SHOWN]:
            running = f", running: {r['sql']}" if r["sql"] and r["executing"] else (
                f", last ran: {r['sql']}" if r["sql"] else "")
            lines.append(f"  - connection {r['id']} held {r['held_s']:.2f} s by "
                         f"{r['holder']} at {r['borrow_site']}{running}")
    if between:
        lines.append(f"{between} more in use with no holder at this moment (being handed to a "
                     "waiter, validated, or reset on return)")
    lines.append("what to do: return connections sooner (`with pool.connection()`), raise "
                 "max_size, or raise max_wait; leak_threshold=<s> logs who holds them")
    exc = PoolTimeout("\n".join(lines))
    exc.__cause__ = last_connect_error
    return exc


def returned_error(pool_name: str, checkout: Checkout, driver_class: type[BaseException] | None,
                   abandoned_timeout: float | None) -> ConnectionReturned:
    """The error a returned (or reclaimed) proxy raises on use: ConnectionReturned or
    ConnectionReclaimed, also the driver's class, naming where it was borrowed."""
    where = format_site(checkout.site())
    if checkout.reclaimed_at:
        return as_driver_error(ConnectionReclaimed, driver_class)(
            f"pool {pool_name!r}: this connection (borrowed at {where}) was reclaimed as "
            f"abandoned after abandoned_timeout={abandoned_timeout:g} s; borrow a new one, "
            "and return connections sooner")
    return as_driver_error(ConnectionReturned, driver_class)(
        f"pool {pool_name!r}: this connection (borrowed at {where}) has been returned to the "
        "pool; borrow a new one instead of keeping a reference")
