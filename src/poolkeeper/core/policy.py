"""Decisions about connections, as pure functions of time and configuration.

Nothing here does I/O or takes a lock: the pool calls these with the numbers it holds, and the
tests drive them directly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

from .slot import Checkout, Slot

__all__ = [
    "abandoned",
    "backoff_delay",
    "expires_at",
    "idle_evictions",
    "jittered_idle_timeout",
    "keepalive_due",
    "leaked",
    "needs_validation",
    "opens_for_min_idle",
]


def expires_at(now: float, max_lifetime: float | None, jitter: float,
               rand: random.Random | None = None) -> float:
    """When a connection opened at ``now`` must retire.

    Each connection's lifetime is shortened by a random fraction up to ``jitter`` so that
    connections opened together do not all retire (and reconnect) in the same second.
    """
    if max_lifetime is None:
        return math.inf
    r = (rand or random).random()
    return now + max_lifetime * (1.0 - jitter * r)


def jittered_idle_timeout(idle_timeout: float | None, jitter: float,
                          rand: random.Random | None = None) -> float:
    """This connection's idle limit, spread like lifetimes for the same reason."""
    if idle_timeout is None:
        return math.inf
    return idle_timeout * (1.0 - jitter * (rand or random).random())


def needs_validation(slot: Slot, now: float, validate_on_borrow: bool, bypass: float) -> bool:
    """Whether to ping before lending: not if it was known alive within ``bypass`` seconds."""
    return validate_on_borrow and now - slot.last_alive > bypass


def idle_evictions(idle_oldest_first: Iterable[Slot], now: float, open_count: int,
                   min_idle: int) -> list[Slot]:
    """Idle connections past their idle limit, never taking the open count below ``min_idle``.

    ``min_idle`` counts open connections, idle or lent (see :func:`opens_for_min_idle`): the
    top-up and this expiry count the same thing, so one never undoes the other. Counting only
    the idle ones on either side churns under a light steady load: with one connection lent,
    an idle-counting top-up opens one more, and the next expiry closes it again. (BoneCP
    evicted below its minimum and re-opened at once: churn, and a driver that kept a record of
    every connection ever opened ran out of memory.)
    """
    spare = open_count - min_idle
    out: list[Slot] = []
    for slot in idle_oldest_first:
        if spare <= 0:
            break
        if now - slot.last_used >= slot.idle_timeout:
            out.append(slot)
            spare -= 1
    return out


def opens_for_min_idle(open_count: int, opening: int, min_idle: int) -> int:
    """Connections to open so that ``min_idle`` are open (idle or lent), counting those opening.

    The same count as :func:`idle_evictions`, which never closes below it.
    """
    return max(min_idle - open_count - opening, 0)


def keepalive_due(idle: Iterable[Slot], now: float, interval: float | None) -> list[Slot]:
    """Idle connections not known alive for ``interval``: ping them instead of replacing them."""
    if interval is None:
        return []
    return [s for s in idle if now - s.last_alive >= interval]


def leaked(checkouts: Iterable[Checkout], now: float, threshold: float | None
           ) -> list[Checkout]:
    """Checkouts held past the leak threshold and not reported yet."""
    if threshold is None:
        return []
    return [c for c in checkouts if not c.leak_reported and now - c.borrowed_at >= threshold]


def abandoned(checkouts: Iterable[Checkout], now: float, timeout: float | None
              ) -> list[Checkout]:
    """Checkouts that ran no statement for abandoned_timeout (DBCP's "last used" rule).

    The proxies only count statement starts and ends (``Checkout.statements``, odd while one
    runs), a cost of two increments; the housekeeper turns a changed count into "in use at
    ``now``". So idleness is measured to within one housekeeping period, and a checkout that
    keeps running statements is never abandoned, however long it is held.
    """
    if timeout is None:
        return []
    found = []
    for c in checkouts:
        if c.reclaimed_at:
            continue  # revoked already, waiting for its close (see reclaimable)
        count = c.statements
        if count & 1 or count != c.statements_seen:
            c.statements_seen = count
            c.active_at = now
        elif now - max(c.borrowed_at, c.active_at) >= timeout:
            found.append(c)
    return found


def reclaimable(checkouts: Iterable[Checkout], now: float, grace: float) -> list[Checkout]:
    """Revoked checkouts whose connection can be closed now.

    Closing a connection under a thread still inside a driver call can crash the driver
    (psycopg's C code did, in a fetchone), so a revoked checkout is closed only ``grace``
    seconds after its revocation and when no statement is running on it.
    """
    return [c for c in checkouts
            if c.reclaimed_at and now - c.reclaimed_at >= grace and not c.statements & 1]


def backoff_delay(failures: int, cap: float, rand: random.Random | None = None,
                  outage_s: float | None = None) -> float:
    """Delay before the next connection attempt after ``failures`` failures in a row.

    Exponential from 0.1 s, capped, with full jitter so that many pools restarting together
    do not reconnect in lockstep. ``outage_s`` (how long the failures have lasted) caps the
    delay at half of it: a server that was down for 3 s is tried again within 1.5 s of its
    return, not after a 3.2 s doubling step. ``failures`` counts steps, not attempts: the
    pool counts concurrent failed attempts of one outage as one step.
    """
    if failures <= 0:
        return 0.0
    ceiling = min(cap, 0.1 * 2.0 ** min(failures - 1, 30))
    if outage_s is not None:
        ceiling = min(ceiling, max(0.1, outage_s / 2.0))
    return ceiling * (0.5 + 0.5 * (rand or random).random())
