"""One housekeeping pass as decisions: what to retire, ping, report and reclaim.

The shell runs a pass every ``housekeeping_interval`` (a worker thread's timer, an asyncio
task) and carries the plan out with its own I/O: closing connections, pinging, logging. The
idle slots a plan names are taken out of the bag (reserved) before the plan is returned, so no
borrower can get one while the shell works on it; the in-use ones stay lent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from . import policy
from .bag import Bag
from .slot import Checkout, CloseReason, Slot, SlotState

__all__ = ["MaintenancePlan", "plan_maintenance"]


@dataclass
class MaintenancePlan:
    #: idle slots taken out of the bag, with why each retires
    retire: list[tuple[Slot, str]] = field(default_factory=list)
    #: idle slots taken out for a keepalive ping (then ``Bag.give_back_reserved``, or retire
    #: them with CloseReason.VALIDATION when the ping fails)
    ping: list[Slot] = field(default_factory=list)
    #: checkouts held past leak_threshold, not reported yet
    leaked: list[Checkout] = field(default_factory=list)
    #: checkouts abandoned (no statement for abandoned_timeout): revoke them now
    abandoned: list[Checkout] = field(default_factory=list)
    #: revoked checkouts whose connection can be closed now (CloseReason.ABANDONED)
    reclaimable: list[Checkout] = field(default_factory=list)


def plan_maintenance(bag: Bag, slots: Iterable[Slot], now: float, *, min_idle: int,
                     idle_timeout: float | None, keepalive_interval: float | None,
                     leak_threshold: float | None, abandoned_timeout: float | None,
                     reclaim_grace: float) -> MaintenancePlan:
    """One pass over ``bag`` and the pool's ``slots`` (a snapshot) at ``now``."""
    plan = MaintenancePlan()
    generation = bag.generation
    # Idle connections past their lifetime or from an older generation.
    for slot in bag.take_idle(lambda idle, t: [s for s in idle if s.expires_at <= t
                                               or s.generation != generation], now):
        plan.retire.append((slot, CloseReason.LIFETIME if slot.generation == generation
                            else CloseReason.EXPIRED))
    # Idle expiry, never below min_idle open connections (the count the top-up keeps):
    # those retiring above are still counted in bag.total, so they are taken off. pick()
    # runs under the bag's lock, so bag.total is consistent with the idle list there.
    if idle_timeout is not None:
        leaving = len(plan.retire)
        for slot in bag.take_idle(lambda idle, t: policy.idle_evictions(
                idle, t, bag.total - leaving, min_idle), now):
            plan.retire.append((slot, CloseReason.IDLE))
    # Keepalive: ping idle connections instead of replacing them.
    plan.ping = bag.take_idle(
        lambda idle, t: policy.keepalive_due(idle, t, keepalive_interval), now)
    # Each checkout read once: its holder may return it (the slot lets go) meanwhile.
    in_use = [c for s in slots if s.state is SlotState.IN_USE and (c := s.checkout) is not None]
    plan.leaked = policy.leaked(in_use, now, leak_threshold)
    if abandoned_timeout is not None:
        plan.reclaimable = policy.reclaimable(in_use, now, reclaim_grace)
        plan.abandoned = policy.abandoned(in_use, now, abandoned_timeout)
    return plan
