"""The synchronous pool: composes the I/O-free core, a driver adapter and the housekeeper.

Data flow of one borrow: :meth:`Pool.getconn` -> ``Bag.acquire`` hands a slot (or queues the
caller) -> ``policy`` says whether it expired or needs a ping -> the adapter pings if so -> a
:class:`~poolkeeper.proxy.ConnectionProxy` wraps the slot for this checkout. Return: the proxy
turns inert, open cursors are closed, the adapter rolls back only if it reports an open
transaction (no round trip otherwise), and the bag parks the slot for the returning thread's
lease, hands it to the oldest waiter, or makes it idle.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import random
import sys
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from .config import PoolConfig, mask_dsn, parse_dsn
from .core import policy
from .core.bag import HISTOGRAM_BOUNDS_MS, Bag, ThreadLease, Waiter
from .core.slot import Frame, Slot, SlotState
from .core.tally import BOUNDS_S, FIRST_BOUND_S, SlotTally, count_usage
from .drivers import Driver, create_driver, detect_driver
from .errors import ConfigError, ConnectError, PoolClosed, PoolTimeout
from .hooks.context import chain, driver_call
from .hooks.fetchsize import AdaptiveFetchSize
from .hooks.stats import StatsHook
from .hooks.stmtcache import StatementCacheHook
from .hooks.timeouts import TimeoutHook
from .housekeeper import Worker
from .observe.monitor import MONITOR, Probe, register_pool
from .proxy import (
    ConnectionProxy,
    MonitoredConnection,
    ReturnedConnection,
    RunHooks,
    format_site,
    proxy_class,
)
from .sql.errortext import error_text
from .sql.fingerprint import MESSAGE_READ_CHARS, redact

__all__ = ["CloseReason", "Pool"]

logger = logging.getLogger("poolkeeper.pool")
_monotonic = time.monotonic
_get_ident = threading.get_ident
_getframe = sys._getframe
_new_object = object.__new__
_IN_USE = SlotState.IN_USE
# Seconds between revoking an abandoned checkout and closing its connection (see _reclaim).
_RECLAIM_GRACE = 1.0
_IDLE = SlotState.IDLE
_pool_ids = itertools.count(1)
_slot_ids = itertools.count(1)


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


class Pool:
    """A pool of database connections.

    Example::

        with Pool("postgresql://app@127.0.0.1:5432/test", max_size=8) as pool:
            with pool.connection() as conn:
                conn.execute("INSERT INTO t VALUES (%s)", (1,))
            print(pool.stats()["requests_num"])

    ``dsn`` selects the driver (``sqlite://``, ``postgresql://``, ``mysql://``); or pass
    ``connect=`` a zero-argument callable returning a DB-API connection, with ``driver=``
    naming its adapter (detected from the first connection when omitted). Every other keyword
    is an option of :class:`~poolkeeper.config.PoolConfig`.
    """

    def __init__(self, dsn: str | None = None, *, connect: Callable[[], Any] | None = None,
                 config: PoolConfig | None = None, **options: Any) -> None:
        if config is None:
            config = PoolConfig.from_mapping({"dsn": dsn, **options})
        elif dsn is not None or options:
            config = config.replace(**({"dsn": dsn} if dsn is not None else {}), **options)
        if config.dsn is None and connect is None:
            config = config.replace(dsn="sqlite://:memory:")
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
        # Backoff state (under _open_lock). While connecting fails, one attempt runs at a
        # time (a timed retry); the other opens wanted meanwhile wait as _deferred (still
        # counted as opening) and all start at once after the first success.
        self._open_lock = threading.Lock()
        self._consecutive_failures = 0  #: backoff steps of the current outage
        self._outage_since = 0.0
        self._connect_events = 0  #: failures counted + successes: tells overlapping attempts
        self._next_open_at = 0.0
        self._deferred = 0
        self._retry: int | None = None  #: the Worker handle of the timed retry, while queued
        self._retry_busy = False  #: a retry is queued or running
        self._last_connect_error: BaseException | None = None
        self._closed_by: dict[str, int] = dict.fromkeys(CloseReason.ALL, 0)
        self._leaks_detected = 0
        self._leaks_returned = 0
        self._orphans_returned = 0
        self._returned_in_txn = 0
        self._validations = 0
        self._keepalives = 0
        self._churn = _Churn()
        self._orphans: queue.SimpleQueue[tuple[Slot, int]] = queue.SimpleQueue()
        # Retired connections whose close is queued on a worker thread, by slot id (at most
        # max_size): close() and the finalizer close what the stopped workers never ran, so
        # no socket is left to the garbage collector.
        self._closing: dict[int, Any] = {}
        # Checkouts dropped after the pool closed: their connection was closed at once (in
        # __del__, no lock); their close is counted by the next stats() (see _orphaned).
        self._late_closes: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        self._hooks: list[Any] = []
        self._closers: list[Callable[[], object]] = []  # run at close() and by the finalizer
        self._execute: RunHooks | None = None
        self._tls = ThreadLease()
        self._rand = random.Random()
        self._max_wait = config.max_wait
        self._validate = config.validate_on_borrow
        self._bypass = config.validation_bypass
        self._reset = config.reset_on_return
        self._capture_stack = config.leak_threshold is not None
        self._track_proxy = config.abandoned_timeout is not None
        self._borrow_extras = self._capture_stack or self._track_proxy
        self._bag = Bag(lease_s=config.lease_ms / 1000.0, max_waiting=config.max_waiting)

        first_raw = None
        if config.dsn is not None and connect is None:
            info = parse_dsn(config.dsn)
            driver_name, params = info.driver, dict(info.params)
            if config.driver is not None and config.driver != driver_name:
                raise ConfigError(f"driver={config.driver!r} does not match the dsn scheme "
                                  f"({driver_name}); drop one of them")
        else:
            driver_name, params = config.driver or "", {}
            if not driver_name:
                first_raw = self._connect_first(connect)
                driver_name = detect_driver(first_raw)
        params.update(config.connect_kwargs)
        self.driver: Driver = create_driver(
            driver_name, params, connect=connect, autocommit=config.autocommit,
            connect_timeout=config.connect_timeout,
            statement_cache_size=config.statement_cache_size,
            statement_cache_bytes=config.statement_cache_bytes)
        self.monitor: Probe = MONITOR.probe(self.name, enabled=True if config.monitor else None,
                                            dialect=self.driver.name)
        self.monitor.slots = self._slots  # where the monitor's views find this pool's checkouts
        pool_ref = weakref.ref(self)
        #: whether a new checkout's proxy is a MonitoredConnection (the monitor is on)
        self._monitoring = False
        _monitor_changed(pool_ref, self.monitor.enabled)
        self.monitor.on_change = lambda on: _monitor_changed(pool_ref, on)
        if first_raw is not None and config.autocommit is not None:
            self.driver.set_autocommit(first_raw, config.autocommit)

        if first_raw is None and config.min_idle > 0 and config.fail_fast:
            first_raw = self._connect_first(None)
        if first_raw is not None:
            with self._bag.lock:
                self._bag.opening += 1
            self._bag.add_new(self._new_slot(first_raw))

        self._worker = Worker(self.name)
        self._thread_records = [self.monitor.track("thread", t) for t in self._worker.threads]
        self._tx_state, self._tx_idle = self.driver.transaction_probe()
        self._release_results = self.driver.release_results  # None: results live in cursors
        #: None: the driver's buffers go with their results (see Driver.result_bytes)
        self._result_bytes = self.driver.result_bytes
        self._max_result = config.max_idle_result_bytes or math.inf
        # Statement hooks, innermost first: the statement cache governs what the driver
        # prepares; statistics time everything inside them.
        self._stmt_cache = StatementCacheHook.from_config(config, self.driver)
        self._sql_stats = StatsHook.from_config(config, self.driver.name,
                                                fetch=AdaptiveFetchSize(config.fetch_size))
        self.add_hook(self._stmt_cache)
        self.add_hook(self._sql_stats)
        # The timeout hook is installed on first need (an option, or a per-call timeout), so a
        # pool without timeouts pays nothing for them; it is outermost, so statistics see the
        # cancelled statement as an error of its fingerprint.
        self._timeouts: TimeoutHook | None = None
        if config.query_timeout is not None or config.transaction_timeout is not None:
            self._timeout_hook()
        self._stats_logged_at = _monotonic()
        self._finalizer = weakref.finalize(self, _finalize, self._bag, self._worker, self.driver,
                                           self._closers, self._closing, self._stats_lock,
                                           self._thread_records)
        self._tick_s = self._housekeeping_period()
        pool_ref = weakref.ref(self)
        self._worker.call_later(self._tick_s, lambda: _housekeep(pool_ref))
        self._request_opens()
        register_pool(self)
        logger.info("pool %r opened: %s, min_idle=%d, max_size=%d", self.name,
                    self.driver.describe(), config.min_idle, config.max_size)

    # ================================================================== borrow / return
    # The fast path below is written for speed: every attribute load counts when the whole
    # borrow + return cycle is about a microsecond. Rare cases go to the _slow_* methods.

    def connection(self, timeout: float | None = None) -> ConnectionProxy:
        """Borrow a connection; waits up to ``timeout`` (default ``max_wait``) seconds.

        Use it in a ``with`` block (commit on clean exit, rollback on exception, then the
        connection goes back), or as ``conn = pool.getconn()`` ... ``pool.putconn(conn)``
        (or ``conn.close()``). Raises :class:`PoolTimeout`, :class:`TooManyWaiting` or
        :class:`PoolClosed`.
        """
        now = _monotonic()
        bag = self._bag
        # The common case takes no lock: nobody waiting, nothing parked, an idle slot to pop
        # (the protocol is in core/bag.py). Everything else goes through bag.acquire().
        if bag.waiters or bag.parked:
            slot = bag.acquire(self._tls, now)
        else:
            try:
                slot = bag.idle.pop()
            except IndexError:
                slot = bag.acquire(self._tls, now)
            else:
                slot.state = _IN_USE
                slot.lease_start = now
                slot.fast_borrows += 1
        if slot.__class__ is not Slot:
            deadline = now + (self._max_wait if timeout is None else timeout)
            slot = self._wait(slot, deadline)  # type: ignore[arg-type]
            now = _monotonic()
        if (slot.expires_at <= now or slot.generation != bag.generation
                or (self._validate and now - slot.last_alive > self._bypass)):
            slot, now = self._slow_borrow(slot, now, timeout)
        slot.borrowed_at = now
        slot.uses += 1
        slot.borrow_thread = _get_ident()
        # Who to blame in timeout, leak and abandon reports: the caller's frame, formatted
        # only when a report is written.
        frame = _getframe(1)
        slot.borrow_code = code = frame.f_code
        slot.borrow_lasti = lasti = frame.f_lasti
        # ConnectionProxy.__init__ inlined: a Python frame less on every borrow. The class is
        # MonitoredConnection while the monitor is on (made so at once: a class switch costs
        # about as much as a Python call), read once as the monitor may switch meanwhile.
        monitoring = self._monitoring
        proxy: ConnectionProxy = _new_object(
            slot.monitored_class if monitoring else slot.proxy_class)
        proxy._pool = self
        proxy._slot = slot
        proxy._raw = slot.raw
        proxy._cursors = None
        proxy._code = code
        proxy._line = lasti
        if monitoring:
            # The resource monitor's part, here rather than in _extras_on_borrow: a Python
            # frame less per monitored borrow. Its record is made from the slot when a view
            # reads it, so all the borrow adds is the kept frames of the call site, walked
            # from what the pool read for its own reports (not read again). The slot's other
            # fields are written above: the views take mon_frames as the sign they are set.
            kept = self.monitor.borrow_site(frame, code, lasti)
            slot.mon_frames = kept
            # Only a recorded checkout stays a MonitoredConnection; one sampled out (None) runs
            # no monitor code, nor do its cursors.
            if kept is None:
                proxy.__class__ = slot.proxy_class
        if self._borrow_extras:
            self._extras_on_borrow(slot, proxy, frame)
        return proxy

    getconn = connection

    def putconn(self, conn: ConnectionProxy) -> None:
        """Give back a connection borrowed with :meth:`getconn` (same as ``conn.close()``)."""
        if not isinstance(conn, ConnectionProxy) or conn._pool is not self:
            self._wrong_putconn(conn)
        self._give_back(conn, None)

    def _wrong_putconn(self, conn: Any) -> None:
        if isinstance(conn, ReturnedConnection) and conn._pool is self:
            return  # returning twice is harmless
        if not isinstance(conn, ConnectionProxy | ReturnedConnection):
            raise TypeError(f"putconn() takes a connection from getconn(), not "
                            f"{type(conn).__name__}")
        if conn._pool is not self:
            raise ValueError(f"this connection belongs to pool {conn._pool.name!r}, "
                             f"not to {self.name!r}")

    def _slow_borrow(self, slot: Slot, now: float, timeout: float | None) -> tuple[Slot, float]:
        """Retire expired slots and validate until a usable one is found."""
        bag = self._bag
        deadline = now + (self._max_wait if timeout is None else timeout)
        while True:
            if slot.expires_at <= now or slot.generation != bag.generation:
                self._retire(slot, CloseReason.LIFETIME if slot.expires_at <= now
                             else CloseReason.EXPIRED)
            elif self._validate and now - slot.last_alive > self._bypass:
                if self._validate_slot(slot):
                    return slot, _monotonic()
            else:
                return slot, now
            now = _monotonic()
            got = bag.acquire(self._tls, now)
            if got.__class__ is not Slot:
                got = self._wait(got, deadline)  # type: ignore[arg-type]
                now = _monotonic()
            slot = got

    def _extras_on_borrow(self, slot: Slot, proxy: ConnectionProxy, frame: Any) -> None:
        """Per-borrow work that only some options need (leak stacks, abandon tracking)."""
        if self._capture_stack:
            slot.borrow_stack = _capture_stack(frame, self.config.leak_stack_depth)
        if self._track_proxy:
            slot.proxy_ref = weakref.ref(proxy)

    def _wait(self, waiter: Waiter, deadline: float) -> Slot:
        self._drain_orphans()
        opens = self._bag.reserve_opens(self.config.min_idle, self.config.max_size)
        if opens:
            self._submit_opens(opens)
        slot = self._bag.wait(waiter, deadline)
        if slot is None:
            raise self._timeout_error(_monotonic() - waiter.since)
        slot.lease_start = _monotonic()
        return slot

    def _give_back(self, proxy: ConnectionProxy, commit: bool | None) -> None:
        """Return a checkout. ``commit``: True/False from a ``with`` exit, None for putconn."""
        slot = proxy._slot
        if slot is None:
            return
        raw = proxy._raw
        if proxy.__class__ is not slot.proxy_class:  # a monitored checkout: no longer shown
            slot.mon_frames = None
        proxy._slot = None
        proxy._raw = None
        if proxy._cursors is not None:
            proxy._close_cursors()
        proxy.__class__ = ReturnedConnection  # type: ignore[assignment]
        failure: BaseException | None = None
        release = self._release_results
        if release is not None and not slot.broken and not release(raw):
            slot.broken = True
            slot.close_reason = CloseReason.UNKNOWN_STATE
        if slot.broken or self._tx_state(raw) != self._tx_idle or slot.autocommit_was is not None:
            failure = self._slow_reset(slot, raw, commit)
        now = _monotonic()
        # Not the monitor's flag: its record was closed above, _slow_return has nothing for it.
        # (One `if`, not a `rare = (...)` variable: CPython 3.11 specialises a comparison only
        # when a jump follows it, which an `or` chain assigned to a name does not give.)
        if (slot.broken or slot.expires_at <= now or slot.generation != self._bag.generation
                or slot.leak_reported or self._capture_stack or self._track_proxy
                or slot.largest_result_bytes > self._max_result) \
                and not self._slow_return(slot, now):  # retired instead of kept
            if failure is not None:
                raise failure
            return
        slot.last_used = slot.last_alive = now
        slot.sql = None  # never keep a (possibly huge) statement alive while idle
        bag = self._bag
        if bag.waiters or bag.closed:  # hand-off, parking or closing: under the bag's lock
            if not bag.release(slot, self._tls, now, now - slot.borrowed_at):
                self._close_raw(slot, CloseReason.POOL_CLOSED)
        else:
            # No lock (see core/bag.py): count on the slot (tally.count_usage inlined), push
            # it, then check again for a waiter or a close that came in meanwhile. The slot
            # is not touched after the push: another thread may already hold it.
            usage = now - slot.borrowed_at
            slot.usage_s += usage
            slot.usage_hist[0 if usage <= FIRST_BOUND_S else bisect_left(BOUNDS_S, usage)] += 1
            slot.state = _IDLE
            bag.idle.append(slot)
            if bag.waiters or bag.closed:
                for closing in bag.settle():
                    self._close_raw(closing, CloseReason.POOL_CLOSED)
        if failure is not None:
            raise failure

    def _give_back_after(self, proxy: ConnectionProxy, error: BaseException) -> None:
        """Return a checkout whose ``with`` block is raising ``error`` (rollback, then return).

        A rollback that fails too (the server went away, the session was killed) must not
        replace the caller's exception: the caller's is raised, the rollback's is logged and
        noted on it, and the connection is discarded (``_slow_reset`` marked it) and counted.
        """
        try:
            self._give_back(proxy, False)
        except Exception as failure:  # noqa: BLE001 - logged, and noted on the caller's error
            text = error_text(failure)
            logger.warning("pool %r: rollback on return failed after %s was raised in the "
                           "`with` block (%s); the connection was discarded", self.name,
                           type(error).__name__, text)
            error.add_note(f"poolkeeper: the rollback on return failed as well ({text}); "
                           f"the connection was discarded (pool {self.name!r})")

    def _slow_reset(self, slot: Slot, raw: Any, commit: bool | None) -> BaseException | None:
        """End an open transaction, restore autocommit; mark the slot broken if that fails.

        Returns the error to raise to the caller (a failed commit) once the slot is back.
        """
        slot.dirty = False
        if slot.broken:
            return None
        driver = self.driver
        failure: BaseException | None = None
        state = driver.in_transaction(raw)
        try:
            if state is None:
                slot.broken = True
                slot.close_reason = CloseReason.UNKNOWN_STATE
            elif state and commit:
                driver.commit(raw)
            elif state and (commit is False or self._reset):
                driver.rollback(raw)
            elif state:
                slot.dirty = True  # reset_on_return=False left a transaction open: never park
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller, after the return
            failure = exc
            if driver.is_broken(raw, exc):
                slot.broken = True
            else:
                try:
                    driver.rollback(raw)
                except Exception:  # noqa: BLE001 - a failed rollback means discard
                    slot.broken = True
                    slot.close_reason = CloseReason.RESET_FAILED
        if slot.autocommit_was is not None:
            if not slot.broken:
                try:
                    driver.set_autocommit(raw, slot.autocommit_was)
                except Exception:  # noqa: BLE001 - a failed reset means discard
                    slot.broken = True
                    slot.close_reason = CloseReason.RESET_FAILED
            slot.autocommit_was = None
        return failure

    def _slow_return(self, slot: Slot, now: float) -> bool:
        """Rare cases of a return; False when the slot was retired instead of kept."""
        usage = now - slot.borrowed_at
        if slot.leak_reported:
            self._report_unleaked(slot, usage)
        slot.borrow_stack = None
        slot.proxy_ref = None
        reason = None
        if slot.broken:
            reason = slot.close_reason or CloseReason.BROKEN
        elif slot.expires_at <= now:
            reason = CloseReason.LIFETIME
        elif slot.generation != self._bag.generation:
            reason = CloseReason.EXPIRED
        elif slot.largest_result_bytes > self._max_result:
            reason = CloseReason.LARGE_RESULT
            logger.info("pool %r: retiring connection %d: it received a result of %d bytes, "
                        "above max_idle_result_bytes=%d; its driver keeps a buffer that large "
                        "while idle (raise the option, or 0 to keep such connections)",
                        self.name, slot.id, slot.largest_result_bytes,
                        self.config.max_idle_result_bytes)
        if reason is None:
            return True
        self._retire(slot, reason, usage)
        return False

    def _orphaned(self, proxy: ConnectionProxy) -> None:
        """Called from ConnectionProxy.__del__: a checkout was dropped without being returned.

        Only a reentrant-safe queue put happens here, because __del__ may run inside any code,
        including code holding the pool's locks. The slot is returned by the next waiter or
        housekeeping run.
        """
        slot = proxy._slot
        if slot is None:
            return
        proxy._slot = None
        if self._closed:
            # Nobody drains the queue of a closed pool: close the connection now (the driver's
            # close takes no pool lock) and leave the counting, which does, to stats().
            self.driver.close(slot.raw)
            self._late_closes.put(slot)
            return
        if isinstance(proxy, MonitoredConnection):  # shown among the resources collected
            MONITOR._checkout_dropped(proxy, slot, self.name)
        self._orphans.put((slot, slot.uses))

    def _drain_orphans(self) -> None:
        while True:
            try:
                slot, uses = self._orphans.get_nowait()
            except queue.Empty:
                return
            if slot.state is not _IN_USE or slot.uses != uses:
                continue  # not (or no longer) the checkout that was dropped
            logger.warning(
                "pool %r: a connection borrowed at %s by thread %s was garbage-collected "
                "without being returned; the pool took it back (use `with pool.connection()`)",
                self.name, format_site(slot.site()), _thread_name(slot.borrow_thread))
            with self._stats_lock:
                self._orphans_returned += 1
            orphan = slot.proxy_class(self, slot)
            slot.borrow_thread = -1  # never park an orphan for the draining thread
            try:
                self._give_back(orphan, False)
            except Exception:  # noqa: BLE001 - _give_back already discarded the connection
                logger.debug("pool %r: rollback of an orphaned connection failed", self.name)

    # ================================================================== opening / closing
    def _connect_first(self, connect: Callable[[], Any] | None) -> Any:
        try:
            if connect is not None:
                return connect()
            return self.driver.connect()
        except Exception as exc:
            where = mask_dsn(self.config.dsn) if self.config.dsn else "connect()"
            raise ConnectError(
                f"pool {self.name!r}: could not open the first connection to {where}: "
                f"{type(exc).__name__}: {_first_line(exc)}. Check that the server is up and the "
                "DSN is right, or pass fail_fast=False to start the pool anyway"
            ) from exc

    def _new_slot(self, raw: Any) -> Slot:
        now = _monotonic()
        cfg = self.config
        slot = Slot(next(_slot_ids), raw, now=now,
                    expires_at=policy.expires_at(now, cfg.max_lifetime, cfg.lifetime_jitter,
                                                 self._rand),
                    idle_timeout=policy.jittered_idle_timeout(cfg.idle_timeout,
                                                              cfg.lifetime_jitter, self._rand),
                    generation=self._bag.generation, session_id=self.driver.session_id(raw))
        slot.mon = self.monitor.track("connection", raw)
        # the checkout proxies' classes, with this driver connection's attributes (delegate.py)
        slot.proxy_class = proxy_class(raw)
        slot.monitored_class = proxy_class(raw, monitored=True)
        with self._stats_lock:
            self._slots[slot.id] = slot
            self._opened += 1
            self._churn.add(now)
        return slot

    def _request_opens(self) -> None:
        opens = self._bag.reserve_opens(self.config.min_idle, self.config.max_size)
        if opens:
            self._submit_opens(opens)

    def _submit_opens(self, count: int) -> None:
        """Start ``count`` reserved opens: now, or after the backoff while connecting fails."""
        with self._open_lock:
            if self._consecutive_failures:
                self._deferred += count
                self._arm_retry()
                return
        pool_ref = weakref.ref(self)
        for _ in range(count):
            self._worker.submit(lambda: _open_one(pool_ref, False))

    def _arm_retry(self) -> None:
        """Queue the one timed attempt of the backoff, if opens wait for it (under _open_lock)."""
        if self._retry_busy or not self._deferred or self._closed:
            return
        self._retry_busy = True
        self._deferred -= 1
        pool_ref = weakref.ref(self)
        self._retry = self._worker.call_later(max(0.0, self._next_open_at - _monotonic()),
                                              lambda: _open_one(pool_ref, True))

    def _open(self, retry: bool = False) -> None:
        """Open one connection (worker thread); on failure back off and try again if needed.

        ``retry``: this is the backoff's timed attempt. Its success (or any success) starts
        every deferred open at once, so the pool is back to min_idle as soon as the server is.
        """
        if self._closed:
            self._bag.open_failed()
            return
        with self._open_lock:
            if not retry and self._consecutive_failures:
                # queued before an attempt failed: wait for the backoff's retry like the rest
                self._deferred += 1
                self._arm_retry()
                return
            seen = self._connect_events
            if retry:
                self._retry = None
        start = _monotonic()
        try:
            raw = self.driver.connect()
        except Exception as exc:  # noqa: BLE001 - any connect failure is recorded and retried
            self._open_failed(exc, start, seen, retry)
            return
        with self._stats_lock:
            self._open_ms += (_monotonic() - start) * 1000.0
        release = 0
        with self._open_lock:
            self._connect_events += 1
            self._consecutive_failures = 0
            self._next_open_at = 0.0
            release, self._deferred = self._deferred, 0
            if retry:
                self._retry_busy = False
            elif self._retry is not None and self._worker.cancel(self._retry):
                release += 1  # the queued retry's own reservation
                self._retry = None
                self._retry_busy = False
        slot = self._new_slot(raw)
        if not self._bag.add_new(slot):
            self._close_raw(slot, CloseReason.POOL_CLOSED)
        if release:
            self._submit_opens(release)

    def _open_failed(self, exc: Exception, start: float, seen: int, retry: bool) -> None:
        now = _monotonic()
        with self._stats_lock:
            self._open_failures += 1
            self._last_connect_error = exc
        with self._open_lock:
            # Attempts that overlap fail together in one outage: only the first failure
            # reported since this attempt began is a step of the backoff (8 parallel opens
            # failing in a 3 s outage must not push it to its cap).
            if self._connect_events == seen:
                self._connect_events += 1
                if not self._consecutive_failures:
                    self._outage_since = start
                self._consecutive_failures += 1
                self._next_open_at = now + policy.backoff_delay(
                    self._consecutive_failures, self.config.reconnect_backoff_max, self._rand,
                    outage_s=now - self._outage_since)
            failures = self._consecutive_failures
            delay = max(0.0, self._next_open_at - now)
            if retry:
                self._retry_busy = False
        self._bag.open_failed()
        log = logger.warning if failures <= 1 or failures % 10 == 0 else logger.debug
        log("pool %r: connecting to %s failed (%d in a row), next try in %.2f s: %s: %s",
            self.name, self.driver.describe(), failures, delay, type(exc).__name__,
            _first_line(exc))
        self._request_opens()
        with self._open_lock:
            self._arm_retry()

    def _retire(self, slot: Slot, reason: str, usage: float | None = None) -> None:
        """Take a slot out of the pool and close its connection off the caller's path."""
        if usage is not None:
            count_usage(slot, usage)
        self._bag.forget(slot)
        self._count_close(slot, reason)
        sid = slot.id
        with self._stats_lock:
            self._closing[sid] = slot.raw
        if not self._closed:
            pool_ref = weakref.ref(self)
            self._worker.submit(lambda: _close_retired(pool_ref, sid))
            if not self._closed:
                self._request_opens()
                return
        # The pool is closed (or closing): its workers may never run the task, close now.
        self._close_retired(sid)

    def _close_retired(self, sid: int) -> None:
        """Close a retired connection once, whichever of the worker and close() comes first."""
        with self._stats_lock:
            raw = self._closing.pop(sid, None)
        if raw is not None:
            self.driver.close(raw)

    def _close_raw(self, slot: Slot, reason: str) -> None:
        """Close a slot's connection now, in this thread (the pool is closing)."""
        slot.state = SlotState.CLOSED
        self._count_close(slot, reason)
        self.driver.close(slot.raw)

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

    def _validate_slot(self, slot: Slot) -> bool:
        with self._stats_lock:
            self._validations += 1
        try:
            self.driver.ping(slot.raw, self.config.validation_timeout)
        except Exception as exc:  # noqa: BLE001 - any failure means the connection is unusable
            logger.info("pool %r: connection %d failed validation (%s: %s); replacing it",
                        self.name, slot.id, type(exc).__name__, _first_line(exc))
            self._retire(slot, CloseReason.VALIDATION)
            return False
        slot.last_alive = _monotonic()
        return True

    # ================================================================== housekeeping
    def _housekeeping_period(self) -> float:
        cfg = self.config
        period = cfg.housekeeping_interval
        for limit in (cfg.leak_threshold, cfg.abandoned_timeout):
            if limit is not None:
                period = min(period, limit / 4)
        return max(period, 0.01)

    def _housekeep(self) -> None:
        if self._closed:
            return
        cfg = self.config
        self._drain_orphans()
        # Retire idle connections past their lifetime or from an older generation.
        generation = self._bag.generation
        for slot in self._bag.take_idle(
                lambda idle, now: [s for s in idle
                                   if s.expires_at <= now or s.generation != generation]):
            self._retire(slot, CloseReason.LIFETIME if slot.generation == generation
                         else CloseReason.EXPIRED)
        # Idle expiry, never below min_idle open connections (the count the top-up keeps).
        if cfg.idle_timeout is not None:
            bag = self._bag  # pick() runs under the bag's lock: total is consistent there
            for slot in self._bag.take_idle(
                    lambda idle, now: policy.idle_evictions(idle, now, bag.total, cfg.min_idle)):
                self._retire(slot, CloseReason.IDLE)
        # Keepalive: ping idle connections instead of replacing them.
        for slot in self._bag.take_idle(
                lambda idle, now: policy.keepalive_due(idle, now, cfg.keepalive_interval)):
            with self._stats_lock:
                self._keepalives += 1
            try:
                self.driver.ping(slot.raw, cfg.validation_timeout)
            except Exception as exc:  # noqa: BLE001 - a dead idle connection is replaced
                logger.info("pool %r: idle connection %d failed its keepalive (%s: %s)",
                            self.name, slot.id, type(exc).__name__, _first_line(exc))
                self._retire(slot, CloseReason.VALIDATION)
                continue
            slot.last_alive = _monotonic()
            if not self._bag.give_back_reserved(slot):
                self._close_raw(slot, CloseReason.POOL_CLOSED)
        now = _monotonic()
        in_use = [s for s in list(self._slots.values()) if s.state is _IN_USE]
        for slot in policy.leaked(in_use, now, cfg.leak_threshold):
            self._report_leak(slot, now)
        if cfg.abandoned_timeout is not None:
            for slot in policy.reclaimable(in_use, now, _RECLAIM_GRACE):
                self._retire(slot, CloseReason.ABANDONED)
            for slot in policy.abandoned(in_use, now, cfg.abandoned_timeout):
                self._reclaim(slot, now)
        if cfg.stats_log_interval is not None and now - self._stats_logged_at >= \
                cfg.stats_log_interval:
            self._stats_logged_at = now
            self._sql_stats.registry.log_and_reset()
        self._request_opens()

    def _report_leak(self, slot: Slot, now: float) -> None:
        slot.leak_reported = True
        with self._stats_lock:
            self._leaks_detected += 1
        stack = "".join(f"\n    {f[0]}:{f[1]} in {f[2]}" for f in slot.borrow_stack or ())
        logger.warning(
            "pool %r: possible leak: connection %d held for %.2f s (leak_threshold=%g s) by "
            "thread %s, borrowed at %s%s%s",
            self.name, slot.id, now - slot.borrowed_at, self.config.leak_threshold,
            _thread_name(slot.borrow_thread), format_site(slot.site()),
            f"; running: {_safe_sql(slot.sql, self.driver.name)}" if slot.sql else "",
            f"\n  borrow stack (most recent call last):{stack}" if stack else "")

    def _report_unleaked(self, slot: Slot, held: float) -> None:
        slot.leak_reported = False
        with self._stats_lock:
            self._leaks_returned += 1
        logger.info("pool %r: previously reported leak returned: connection %d borrowed at %s "
                    "came back after %.2f s", self.name, slot.id, format_site(slot.site()),
                    held)

    def _reclaim(self, slot: Slot, now: float) -> None:
        """Revoke a checkout that ran no statement for abandoned_timeout.

        Its proxy and cursors turn inert at once (every later call raises
        ConnectionReclaimed); the connection itself is closed by a later housekeeping pass,
        _RECLAIM_GRACE seconds on and with no statement running, because the holder's thread
        may still be inside a driver call (a fetch) that a close would pull the rug from.
        """
        if slot.state is not _IN_USE:
            return
        proxy = slot.proxy_ref() if slot.proxy_ref is not None else None
        if proxy is not None:
            proxy._detach(reclaimed=True)
        slot.reclaim_at = now
        logger.warning(
            "pool %r: reclaimed abandoned connection %d held for %.2f s, idle for %.2f s "
            "(abandoned_timeout=%g s) by thread %s, borrowed at %s%s",
            self.name, slot.id, now - slot.borrowed_at,
            now - max(slot.borrowed_at, slot.active_at), self.config.abandoned_timeout,
            _thread_name(slot.borrow_thread), format_site(slot.site()),
            f"; last statement: {_safe_sql(slot.sql, self.driver.name)}" if slot.sql else "")

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

    def _rebuild_chain(self) -> None:
        # A hook with no work per statement (per_statement False) only reports its stats().
        active = [h for h in reversed(self._hooks) if getattr(h, "per_statement", True)]
        self._execute = chain(active, driver_call) if active else None

    # ================================================================== timeouts
    def _timeout_hook(self) -> TimeoutHook:
        """The pool's timeout hook, installed on first use."""
        hook = self._timeouts
        if hook is None:
            with self._stats_lock:
                hook = self._timeouts
                if hook is None:
                    hook = self._timeouts = TimeoutHook.for_pool(self)
                    self._closers.append(hook.close)
            self.add_hook(hook)
        return hook

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

    # ================================================================== management
    def expire_all(self) -> None:
        """Retire every connection: idle ones now, borrowed ones when they come back."""
        with self._bag.lock:
            self._bag.generation += 1
        generation = self._bag.generation
        for slot in self._bag.take_idle(
                lambda idle, now: [s for s in idle if s.generation != generation]):
            self._retire(slot, CloseReason.EXPIRED)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until min_idle connections are open (raises PoolTimeout after ``timeout``)."""
        deadline = _monotonic() + timeout
        while self._bag.counts()["total"] < self.config.min_idle:
            if self._closed:
                raise PoolClosed(f"pool {self.name!r} is closed")
            if _monotonic() >= deadline:
                raise self._timeout_error(timeout, "open min_idle connections", queued=0)
            time.sleep(0.01)

    def close(self, timeout: float = 5.0) -> None:
        """Close idle connections and stop every thread; borrowed ones close on return."""
        if self._closed:
            return
        self._closed = True
        for slot in self._bag.close():
            self._close_raw(slot, CloseReason.POOL_CLOSED)
        # Checkouts dropped unreturned before close() and still queued: nobody drains the
        # queue after this, and their slots would stay "in use" with the connection open
        # until the garbage collector found it. Given back to the closed pool, they close.
        self._drain_orphans()
        stuck = self._worker.stop(timeout)
        for sid in list(self._closing):  # closes the stopped workers dropped
            self._close_retired(sid)
        self._close_revoked(timeout)
        self._finalizer.detach()
        for close in self._closers:
            close()
        for record in self._thread_records:
            record.close()
        if all(s.state is SlotState.CLOSED for s in self._slots.values()):
            self.driver.dispose()
        if stuck:
            logger.warning("pool %r: threads still busy after %g s: %s", self.name, timeout,
                           ", ".join(stuck))
        logger.info("pool %r closed", self.name)

    def _close_revoked(self, timeout: float) -> None:
        """Close the connections of abandoned checkouts still in their grace (see _reclaim).

        Nobody returns those (their proxies are inert) and the housekeeper has stopped, so the
        pool waits out what is left of the grace, within ``timeout``, and closes them here.
        """
        revoked = [s for s in list(self._slots.values())
                   if s.reclaim_at and s.state is _IN_USE]
        if not revoked:
            return
        wait = max(s.reclaim_at for s in revoked) + _RECLAIM_GRACE - _monotonic()
        if wait > 0:
            time.sleep(min(wait, timeout))
        for slot in revoked:
            self._bag.forget(slot)
            self._close_raw(slot, CloseReason.ABANDONED)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def threads(self) -> list[threading.Thread]:
        """The threads this pool started (all stop on close())."""
        return self._worker.threads

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        counts = self._bag.counts()
        return (f"<poolkeeper.Pool {self.name!r} {self.driver.describe()} total={counts['total']} "
                f"active={counts['active']} idle={counts['idle']}>")

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
        now = _monotonic()
        rows = []
        for slot in sorted(self._slots.copy().values(), key=lambda s: s.id):
            in_use = slot.state is _IN_USE
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
                "sql": _safe_sql(slot.sql, self.driver.name) if slot.sql else None,
                "executing": in_use and slot.executing,
                "holder_thread": _thread_name(slot.borrow_thread) if in_use else None,
                "borrow_site": format_site(slot.site()) if in_use else None,
                "held_s": round(now - slot.borrowed_at, 3) if in_use else None,
            })
        return rows

    def _timeout_error(self, waited: float, what: str = "get a connection",
                       queued: int = 1) -> PoolTimeout:
        """The diagnosis of a timeout; ``queued`` counts the caller itself among the waiting."""
        counts = self._bag.counts()
        holders = [r for r in self.connections_info() if r["state"] == "in_use"]
        holders.sort(key=lambda r: -(r["held_s"] or 0.0))
        lines = [
            f"pool {self.name!r}: couldn't {what} after {waited:.2f} s "
            f"(total={counts['total']}, active={counts['active']}, idle={counts['idle']}, "
            f"waiting={counts['waiting'] + queued}, opening={counts['opening']}, "
            f"max_size={self.config.max_size})"
        ]
        error = self._last_connect_error
        if error is not None:
            lines.append(f"last connection error: {type(error).__name__}: {_first_line(error)}")
        if holders:
            lines.append(f"connections held by ({min(len(holders), 5)} of {len(holders)}):")
            for r in holders[:5]:
                running = f", running: {r['sql']}" if r["sql"] and r["executing"] else (
                    f", last ran: {r['sql']}" if r["sql"] else "")
                lines.append(f"  - connection {r['id']} held {r['held_s']:.2f} s by thread "
                             f"{r['holder_thread']} at {r['borrow_site']}{running}")
        lines.append("what to do: return connections sooner (`with pool.connection()`), raise "
                     "max_size, or raise max_wait; leak_threshold=<s> logs who holds them")
        exc = PoolTimeout("\n".join(lines))
        exc.__cause__ = error
        return exc


# ---------------------------------------------------------------------- module helpers
def _monitor_changed(pool_ref: weakref.ref[Pool], on: bool) -> None:
    """The pool's monitor probe turned on or off: follow it in the borrow fast path."""
    pool = pool_ref()
    if pool is not None:
        pool._monitoring = on


def _open_one(pool_ref: weakref.ref[Pool], retry: bool) -> None:
    pool = pool_ref()
    if pool is not None:
        pool._open(retry)


def _housekeep(pool_ref: weakref.ref[Pool]) -> None:
    pool = pool_ref()
    if pool is None or pool._closed:
        return
    try:
        pool._housekeep()
    finally:
        pool._worker.call_later(pool._tick_s, lambda: _housekeep(pool_ref))


def _close_retired(pool_ref: weakref.ref[Pool], sid: int) -> None:
    pool = pool_ref()
    if pool is not None:
        pool._close_retired(sid)


def _finalize(bag: Bag, worker: Worker, driver: Driver, closers: list[Callable[[], object]],
              closing: dict[int, Any], lock: threading.Lock, thread_records: list[Any]) -> None:
    """Last net for a pool dropped without close(): stop threads, close idle connections and
    the retired ones whose close was still queued, and close their monitor records (a
    connection record of a driver without weak references, sqlite3's, would otherwise stay
    among the monitor's live resources for good)."""
    for slot in bag.close():
        driver.close(slot.raw)
        if slot.mon is not None:
            slot.mon.close()
    worker.stop(0.0)
    for record in thread_records:
        record.close()
    with lock:
        pending = list(closing.values())
        closing.clear()
    for raw in pending:
        driver.close(raw)
    for close in closers:
        close()


def _capture_stack(frame: Any, depth: int) -> tuple[Frame, ...]:
    """The borrow stack, innermost frames kept (walks only the frames it keeps)."""
    frames: list[Frame] = []
    f = frame
    while f is not None and len(frames) < depth:
        code = f.f_code
        frames.append((code.co_filename, f.f_lineno, code.co_name))
        f = f.f_back
    frames.reverse()
    return tuple(frames)


def _thread_name(ident: int) -> str:
    for thread in threading.enumerate():
        if thread.ident == ident:
            return repr(thread.name)
    return f"#{ident} (ended)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _safe_sql(sql: Any, dialect: str | None = None) -> str:
    """The statement with literals folded, so errors and logs never show data or secrets.

    Only its first MESSAGE_READ_CHARS are read: connections_info() (the console's connections
    page) and PoolTimeout describe every held connection, each possibly running a 10 MB batch.
    """
    return redact(sql if isinstance(sql, str | bytes) else str(sql), dialect=dialect,
                  read_chars=MESSAGE_READ_CHARS)

