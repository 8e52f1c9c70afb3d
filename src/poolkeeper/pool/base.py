"""What the thread shell and the asyncio shell share: their counters and statistics, the
diagnosis of who holds which connection, the statement hooks, and the leak reports.

A shell (:class:`~poolkeeper.pool.sync.Pool`, :class:`~poolkeeper.pool.aio.AsyncPool`)
subclasses :class:`PoolBase` and adds the waiting, the I/O and its own housekeeping task, so
both report the same ``stats()`` names, the same ``connections_info()`` rows and the same
``PoolTimeout`` text.
"""

from __future__ import annotations

import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from ..config import PoolConfig
from ..core import policy
from ..core.bag import HISTOGRAM_BOUNDS_MS, Bag
from ..core.opening import OpenSchedule
from ..core.slot import Checkout, CloseReason, Frame, Slot, SlotState
from ..core.tally import SlotTally
from ..errors import PoolTimeout
from ..hooks.stats import StatsHook
from ..hooks.stmtcache import StatementCacheHook
from ..observe.monitor import Probe
from .holders import (
    connection_rows,
    first_line,
    format_site,
    holder_name,
    safe_sql,
    timeout_error,
)

__all__ = ["PoolBase", "capture_stack", "next_slot_id"]

logger = logging.getLogger("poolkeeper.pool")
_monotonic = time.monotonic
_IDLE = SlotState.IDLE
_IN_USE = SlotState.IN_USE
_pool_ids = itertools.count(1)
#: the next slot id: unique in the process, across pools and shells
next_slot_id = itertools.count(1).__next__


class _Churn:
    """Connections opened in the last hour, in one-minute buckets (a fixed 60-entry ring)."""

    def __init__(self) -> None:
        self._buckets = [0] * 60
        self._minute = int(_monotonic() // 60)

    def add(self, now: float) -> None:
        self._advance(now)
        self._buckets[self._minute % 60] += 1

    def last_hour(self, now: float) -> int:
        self._advance(now)
        return sum(self._buckets)

    def _advance(self, now: float) -> None:
        minute = int(now // 60)
        if minute - self._minute >= 60:
            self._buckets = [0] * 60
        else:
            for m in range(self._minute + 1, minute + 1):
                self._buckets[m % 60] = 0
        self._minute = max(self._minute, minute)


class PoolBase:
    """The state and the reports both shells share (see the module docstring)."""

    config: PoolConfig
    name: str
    driver: Any
    _bag: Bag
    _execute: Any
    _stmt_cache: StatementCacheHook
    _sql_stats: StatsHook
    monitor: Probe

    def _init_state(self, config: PoolConfig) -> PoolConfig:
        """Set the shared counters; returns ``config`` with its name filled in."""
        if not config.name:
            config = config.replace(name=f"pool-{next(_pool_ids)}")
        self.config = config
        self.name = config.name
        self._closed = False
        self._stats_lock = threading.Lock()
        self._slots: dict[int, Slot] = {}
        self._tally = SlotTally()  # counters of the lock-free paths (under _stats_lock)
        self._opened = 0
        self._open_failures = 0
        self._open_ms = 0.0
        # When to open connections while connecting fails (the backoff: core/opening.py)
        self._opening = OpenSchedule(lock=threading.Lock(),
                                     backoff_max=config.reconnect_backoff_max)
        self._last_connect_error: BaseException | None = None
        self._closed_by: dict[str, int] = dict.fromkeys(CloseReason.ALL, 0)
        self._leaks_detected = 0
        self._leaks_returned = 0
        self._orphans_returned = 0
        self._returned_in_txn = 0
        self._validations = 0
        self._keepalives = 0
        self._churn = _Churn()
        # Checkouts dropped after the pool closed: their connection was closed at once (in
        # __del__, no lock); their close is counted by the next stats() (see _orphaned).
        self._late_closes: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        self._hooks: list[Any] = []
        self._closers: list[Callable[[], object]] = []  # run at close() and by the finalizer
        self._rand = random.Random()
        return config

    def _housekeeping_period(self) -> float:
        cfg = self.config
        period = cfg.housekeeping_interval
        for limit in (cfg.leak_threshold, cfg.abandoned_timeout):
            if limit is not None:
                period = min(period, limit / 4)
        return max(period, 0.01)

    # ================================================================== hooks
    def add_hook(self, hook: Any) -> None:
        """Install a statement hook (``before(ctx)`` / ``after(ctx, token, result, error)``,
        see :mod:`poolkeeper.hooks.context`); the one installed last is the outermost: its
        ``before`` runs first and its ``after`` last."""
        self._hooks.append(hook)
        self._rebuild_chain()

    @property
    def hooks(self) -> tuple[Any, ...]:
        """The installed statement hooks, innermost first."""
        return tuple(self._hooks)

    def remove_hook(self, hook: Any) -> None:
        self._hooks = [h for h in self._hooks if h is not hook]
        self._rebuild_chain()

    def _request_opens(self) -> None:
        raise NotImplementedError

    def _queue_retry(self, delay: float | None) -> None:
        raise NotImplementedError

    def _retire(self, slot: Slot, reason: str, usage: float | None = None) -> None:
        raise NotImplementedError

    def _rebuild_chain(self) -> None:
        # A hook with no work per statement (per_statement False) only reports its stats().
        active = [h for h in reversed(self._hooks) if getattr(h, "per_statement", True)]
        self._execute = self._chain(active) if active else None

    def _chain(self, hooks: list[Any]) -> Any:
        """The shell's hook chain around its driver call (chain, or chain_async)."""
        raise NotImplementedError

    # ================================================================== SQL statistics
    @property
    def stats_enabled(self) -> bool:
        """Whether per-fingerprint SQL statistics are recorded (switchable at runtime)."""
        return self._sql_stats.enabled

    @stats_enabled.setter
    def stats_enabled(self, on: bool) -> None:
        self._sql_stats.enabled = on

    def sql_stats(self, limit: int | None = None) -> dict[str, Any]:
        """Per-fingerprint statistics (literals folded), most total time first."""
        return self._sql_stats.sql_stats(limit)

    def pop_sql_stats(self, limit: int | None = None) -> dict[str, Any]:
        """Like :meth:`sql_stats`, then reset them (log-and-reset)."""
        return self._sql_stats.pop_sql_stats(limit)

    def statement_cache_info(self) -> dict[str, Any]:
        """The statement caches' counters (what the driver caches, and whether it can)."""
        return self._stmt_cache.stats()

    def statement_cache_policy(self) -> dict[str, Any]:
        """How this driver's statements are cached: the mechanism, its bounds and a note."""
        return self._stmt_cache.policy.as_dict()

    @property
    def closed(self) -> bool:
        return self._closed

    def _new_slot(self, raw: Any) -> Slot:
        now = _monotonic()
        cfg = self.config
        slot = Slot(next_slot_id(), raw, now=now,
                    expires_at=policy.expires_at(now, cfg.max_lifetime, cfg.lifetime_jitter,
                                                 self._rand),
                    idle_timeout=policy.jittered_idle_timeout(cfg.idle_timeout,
                                                              cfg.lifetime_jitter, self._rand),
                    generation=self._bag.generation, session_id=self.driver.session_id(raw))
        slot.mon = self.monitor.track("connection", raw)
        self._set_proxy_classes(slot, raw)
        with self._stats_lock:
            self._slots[slot.id] = slot
            self._opened += 1
            self._churn.add(now)
        return slot

    def _set_proxy_classes(self, slot: Slot, raw: Any) -> None:
        """Set ``slot.proxy_class`` (and ``monitored_class``) for this driver connection."""
        raise NotImplementedError

    def _open_failed(self, exc: Exception, start: float, ticket: int, retry: bool) -> None:
        now = _monotonic()
        with self._stats_lock:
            self._open_failures += 1
            self._last_connect_error = exc
        failures, delay = self._opening.failed(ticket, start, now, retry)
        self._bag.open_failed()
        log = logger.warning if failures <= 1 or failures % 10 == 0 else logger.debug
        log("pool %r: connecting to %s failed (%d in a row), next try in %.2f s: %s: %s",
            self.name, self.driver.describe(), failures, delay, type(exc).__name__,
            first_line(exc))
        self._request_opens()
        self._queue_retry(self._opening.arm(_monotonic()))

    def _reclaim(self, checkout: Checkout, now: float) -> None:
        """Revoke a checkout that ran no statement for abandoned_timeout.

        Its proxy and cursors turn inert at once (every later call raises
        ConnectionReclaimed); the connection itself is closed by a later housekeeping pass,
        a grace period on and with no statement running, because the holder may
        still be inside a driver call (a fetch) that a close would pull the rug from.
        """
        slot = checkout.slot
        if slot is None or slot.state is not _IN_USE or slot.checkout is not checkout:
            return  # returned meanwhile
        checkout.reclaimed_at = now  # first: a use racing the reclaim is told why
        proxy = checkout.proxy_ref() if checkout.proxy_ref is not None else None
        if proxy is not None:
            proxy._retire(reclaimed=True)
        sql = checkout.sql
        logger.warning(
            "pool %r: reclaimed abandoned connection %d held for %.2f s, idle for %.2f s "
            "(abandoned_timeout=%g s) by %s, borrowed at %s%s",
            self.name, slot.id, now - checkout.borrowed_at,
            now - max(checkout.borrowed_at, checkout.active_at), self.config.abandoned_timeout,
            holder_name(checkout.owner), format_site(checkout.site()),
            f"; last statement: {safe_sql(sql, self.driver.dialect)}" if sql else "")

    def expire_all(self) -> None:
        """Retire every connection: idle ones now, borrowed ones when they come back."""
        generation = self._bag.expire_all()
        for slot in self._bag.take_idle(
                lambda idle, now: [s for s in idle if s.generation != generation], _monotonic()):
            self._retire(slot, CloseReason.EXPIRED)

    def _retire_reason(self, slot: Slot, now: float) -> str | None:
        """Why a returning slot must retire instead of going back (None: it goes back)."""
        if slot.broken:
            return slot.close_reason or CloseReason.BROKEN
        if slot.expires_at <= now:
            return CloseReason.LIFETIME
        if slot.generation != self._bag.generation:
            return CloseReason.EXPIRED
        limit = self.config.max_idle_result_bytes
        if limit and slot.largest_result_bytes > limit:
            logger.info("pool %r: retiring connection %d: it received a result of %d bytes, "
                        "above max_idle_result_bytes=%d; its driver keeps a buffer that large "
                        "while idle (raise the option, or 0 to keep such connections)",
                        self.name, slot.id, slot.largest_result_bytes, limit)
            return CloseReason.LARGE_RESULT
        return None

    def _count_close(self, slot: Slot, reason: str) -> None:
        self._stmt_cache.forget(slot.raw)
        if slot.mon is not None:
            slot.mon.close()
        with self._stats_lock:
            self._closed_by[reason] = self._closed_by.get(reason, 0) + 1
            if self._slots.pop(slot.id, None) is not None:
                self._tally.retire(slot)
        logger.debug("pool %r: closing connection %d (%s) after %d uses", self.name, slot.id,
                     reason, slot.uses)

    def _report_leak(self, checkout: Checkout, now: float) -> None:
        slot = checkout.slot
        if slot is None:
            return  # returned meanwhile
        checkout.leak_reported = True
        with self._stats_lock:
            self._leaks_detected += 1
        stack = "".join(f"\n    {f[0]}:{f[1]} in {f[2]}" for f in checkout.stack or ())
        sql = checkout.sql
        logger.warning(
            "pool %r: possible leak: connection %d held for %.2f s (leak_threshold=%g s) by "
            "%s, borrowed at %s%s%s",
            self.name, slot.id, now - checkout.borrowed_at, self.config.leak_threshold,
            holder_name(checkout.owner), format_site(checkout.site()),
            f"; running: {safe_sql(sql, self.driver.dialect)}" if sql else "",
            f"\n  borrow stack (most recent call last):{stack}" if stack else "")

    def _report_unleaked(self, slot: Slot, checkout: Checkout, held: float) -> None:
        with self._stats_lock:
            self._leaks_returned += 1
        logger.info("pool %r: previously reported leak returned: connection %d borrowed at %s "
                    "came back after %.2f s", self.name, slot.id,
                    format_site(checkout.site()), held)

    # ================================================================== statistics
    def stats(self) -> dict[str, Any]:
        """Gauges and counters; names carry their unit (``_ms``, ``_num``)."""
        return self._stats(reset=False)

    def pop_stats(self) -> dict[str, Any]:
        """Like :meth:`stats`, then reset the counters (gauges are not reset)."""
        return self._stats(reset=True)

    def _stats(self, reset: bool) -> dict[str, Any]:
        while True:  # checkouts dropped after close(), their connection closed (_orphaned)
            try:
                late = self._late_closes.get_nowait()
            except queue.Empty:
                break
            self._bag.forget(late)
            self._count_close(late, CloseReason.POOL_CLOSED)
        counts = self._bag.counts()
        out: dict[str, Any] = {
            "pool_min": self.config.min_idle,
            "pool_max": self.config.max_size,
            "pool_size": counts["total"],
            "pool_available": counts["idle"],
            "pool_active": counts["active"],
            "pool_parked": counts["parked"],
            "requests_waiting": counts["waiting"],
            "connections_opening": counts["opening"],
        }
        with self._stats_lock:
            tally = self._tally.read(self._slots.values(), reset)
        out.update(self._bag.pop_counters(reset, tally))
        out["histogram_bounds_ms"] = list(HISTOGRAM_BOUNDS_MS)
        now = _monotonic()
        with self._stats_lock:
            out["connections_num"] = self._opened
            out["connections_errors"] = self._open_failures
            out["connections_ms"] = round(self._open_ms, 3)
            out["connections_opened_last_hour"] = self._churn.last_hour(now)
            for reason, n in self._closed_by.items():
                out[f"connections_closed_{reason}"] = n
            out["connections_lost"] = self._closed_by[CloseReason.BROKEN]
            out["validations_num"] = self._validations
            out["keepalives_num"] = self._keepalives
            out["leaks_detected"] = self._leaks_detected
            out["leaks_returned"] = self._leaks_returned
            out["abandoned_reclaimed"] = self._closed_by[CloseReason.ABANDONED]
            out["orphans_returned"] = self._orphans_returned
            # the bytes idle connections pin in their driver's buffers (memory ledger)
            out["idle_pinned_bytes"] = sum(s.largest_result_bytes for s in self._slots.values()
                                           if s.state is _IDLE)
            if self.config.max_idle_result_bytes:
                out["idle_pinned_budget_bytes"] = (self.config.max_idle_result_bytes
                                                   * self.config.max_size)
            if reset:
                self._opened = self._open_failures = 0
                self._open_ms = 0.0
                self._closed_by = dict.fromkeys(CloseReason.ALL, 0)
                self._validations = self._keepalives = 0
                self._leaks_detected = self._leaks_returned = self._orphans_returned = 0
        for hook in self._hooks:
            hook_stats = getattr(hook, "stats", None)
            if hook_stats is not None:
                out.update(hook_stats(reset))
        return out

    def connections_info(self) -> list[dict[str, Any]]:
        """One dict per physical connection: age, uses, state, holder, current SQL."""
        # the dialect, not the adapter's name: asyncpg's statements are PostgreSQL's
        return connection_rows(self._slots.copy().values(), _monotonic(), self.driver.dialect)

    def _timeout_error(self, waited: float, what: str = "get a connection",
                       queued: int = 1) -> PoolTimeout:
        """The diagnosis of a timeout; ``queued`` counts the caller itself among the waiting."""
        return timeout_error(self.name, waited=waited, what=what, counts=self._bag.counts(),
                             queued=queued, max_size=self.config.max_size,
                             rows=self.connections_info(),
                             last_connect_error=self._last_connect_error)


def capture_stack(frame: Any, depth: int) -> tuple[Frame, ...]:
    """The borrow stack, innermost frames kept (walks only the frames it keeps)."""
    frames: list[Frame] = []
    f = frame
    while f is not None and len(frames) < depth:
        code = f.f_code
        frames.append((code.co_filename, f.f_lineno, code.co_name))
        f = f.f_back
    frames.reverse()
    return tuple(frames)


