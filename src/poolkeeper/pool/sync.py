"""The synchronous pool: composes the I/O-free core, a driver adapter and the hooks.

Data flow of one borrow: :meth:`Pool.getconn` -> ``Bag.borrow`` hands a slot (or queues the
caller's waiter, which this shell waits on) -> the slot's expiry and validation are checked ->
the adapter pings if needed -> a :class:`~poolkeeper.core.slot.Checkout` records the
borrow and a :class:`~poolkeeper.pool.proxies.ConnectionProxy` hands it to the caller. Return:
the slot lets go of the checkout, the proxy turns inert and closes open cursors, the adapter
rolls back only if it reports an open transaction (no round trip otherwise), and
``Bag.give_back`` parks the slot for its borrower's lease, hands it to the oldest waiter, or
makes it idle.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from ..config import PoolConfig, mask_dsn, parse_dsn
from ..core.bag import Bag, Waiter, make_bag
from ..core.maintenance import plan_maintenance
from ..core.runtime import gil_enabled
from ..core.slot import Checkout, CloseReason, Slot, SlotState
from ..core.tally import count_usage
from ..drivers import Driver, create_driver, detect_driver
from ..errors import ConfigError, ConnectError, PoolClosed
from ..hooks.context import chain, driver_call
from ..hooks.fetchsize import AdaptiveFetchSize
from ..hooks.stats import StatsHook
from ..hooks.stmtcache import StatementCacheHook
from ..hooks.timeouts import TimeoutHook
from ..observe.monitor import MONITOR, Probe, register_pool
from ..sql.errortext import error_text
from .base import PoolBase, capture_stack
from .holders import first_line, format_site, holder_name
from .lender import RunHooks
from .proxies import ConnectionProxy, ReturnedConnection, proxy_class
from .worker import Worker

__all__ = ["CloseReason", "Pool"]

logger = logging.getLogger("poolkeeper.pool")
_monotonic = time.monotonic
_get_ident = threading.get_ident
_getframe = sys._getframe
_IN_USE = SlotState.IN_USE
# Seconds between revoking an abandoned checkout and closing its connection (see _reclaim).
_RECLAIM_GRACE = 1.0
#: how often a waiting thread wakes to reclaim a parked slot whose owner went quiet (Bag.recheck)
_RECHECK_S = 0.05
#: the lease when the option is not set: 2 ms with the GIL (it cures a GIL convoy), none without
_DEFAULT_LEASE_MS = 2.0
_IDLE = SlotState.IDLE
_pool_ids = itertools.count(1)


class ThreadWaiter(Waiter):
    """A thread queued for a slot: it sleeps on a lock the bag's hand-off releases."""

    __slots__ = ("lock",)

    def __init__(self, now: float) -> None:
        super().__init__(now)
        self.lock = threading.Lock()
        self.lock.acquire()

    def wake(self) -> None:
        self.lock.release()


class Pool(PoolBase):
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
        config = self._init_state(config)
        self._orphans: queue.SimpleQueue[Checkout] = queue.SimpleQueue()
        # Retired connections whose close is queued on a worker thread, by slot id (at most
        # max_size): close() and the finalizer close what the stopped workers never ran, so
        # no socket is left to the garbage collector.
        self._closing: dict[int, Any] = {}
        self._execute: RunHooks | None = None
        self._max_wait = config.max_wait
        self._validate = config.validate_on_borrow
        self._bypass = config.validation_bypass
        self._reset = config.reset_on_return
        self._capture_stack = config.leak_threshold is not None
        self._track_proxy = config.abandoned_timeout is not None
        self._borrow_extras = self._capture_stack or self._track_proxy
        # Checked per pool (an extension can turn the GIL back on at import): without the GIL
        # the bag takes its locked twin and the lease is off unless asked for.
        self.lock_free = gil_enabled()
        lease_ms = config.lease_ms
        if lease_ms is None:
            lease_ms = _DEFAULT_LEASE_MS if self.lock_free else 0.0
        self._bag: Bag = make_bag(lock=threading.Lock(), lease_s=lease_ms / 1000.0,
                                  max_waiting=config.max_waiting, lock_free=self.lock_free)

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
        # A checkout held past leak_threshold is logged; a cursor open that long is listed
        # among the monitor's leaks (without the option: the monitor's cursor_leak_s)
        self.monitor: Probe = MONITOR.probe(self.name, enabled=True if config.monitor else None,
                                            dialect=self.driver.name,
                                            leak_threshold=config.leak_threshold)
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
            self._bag.reserve_one()
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
        thread = _get_ident()  # the lease's owner, and the holder the reports name
        slot = bag.borrow(now, thread, ThreadWaiter)
        if slot.__class__ is not Slot:
            deadline = now + (self._max_wait if timeout is None else timeout)
            slot = self._wait(slot, deadline)  # type: ignore[arg-type]
            now = _monotonic()
        if (slot.expires_at <= now or slot.generation != bag.generation
                or (self._validate and now - slot.last_alive > self._bypass)):
            slot, now = self._slow_borrow(slot, now, timeout)
        slot.uses += 1
        # Who to blame in timeout, leak and abandon reports: the caller's frame, formatted
        # only when a report is written.
        frame = _getframe(1)
        code = frame.f_code
        lasti = frame.f_lasti
        slot.checkout = checkout = Checkout(slot, thread, now, code, lasti)
        if self._monitoring:
            # The resource monitor's part: the kept frames of the call site, walked from what
            # the pool read for its own reports. A checkout it recorded is a
            # MonitoredConnection; one sampled out (None) runs no monitor code, nor do its
            # cursors.
            kept = self.monitor.borrow_site(frame, code, lasti)
            checkout.mon_frames = kept
            cls = slot.proxy_class if kept is None else slot.monitored_class
            proxy: ConnectionProxy = cls(self, checkout)
        else:
            proxy = slot.proxy_class(self, checkout)
        if self._borrow_extras:
            self._extras_on_borrow(checkout, proxy, frame)
        return proxy

    getconn = connection

    def putconn(self, conn: ConnectionProxy) -> None:
        """Give back a connection borrowed with :meth:`getconn` (same as ``conn.close()``)."""
        if not isinstance(conn, ConnectionProxy) or conn._pool is not self:
            self._wrong_putconn(conn)  # raises, unless it was returned (or reclaimed) already
            return
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
            got = bag.borrow(now, _get_ident(), ThreadWaiter)
            if got.__class__ is not Slot:
                got = self._wait(got, deadline)  # type: ignore[arg-type]
                now = _monotonic()
            slot = got

    def _extras_on_borrow(self, checkout: Checkout, proxy: ConnectionProxy, frame: Any
                          ) -> None:
        """Per-borrow work that only some options need (leak stacks, abandon tracking)."""
        if self._capture_stack:
            checkout.stack = capture_stack(frame, self.config.leak_stack_depth)
        if self._track_proxy:
            checkout.proxy_ref = weakref.ref(proxy)

    def _wait(self, waiter: ThreadWaiter, deadline: float) -> Slot:
        """Wait for the bag to hand ``waiter`` a slot, until ``deadline``.

        The thread wakes every _RECHECK_S to let the bag reclaim a parked slot whose owner
        went quiet. Whatever ends the wait (a hand-off, the deadline, PoolClosed, or an
        exception raised into this thread, such as KeyboardInterrupt), the bag hears of it
        through end_wait, so a slot handed over at that moment is never lost.
        """
        bag = self._bag
        try:
            self._drain_orphans()
            opens = bag.reserve_opens(self.config.min_idle, self.config.max_size)
            if opens:
                self._submit_opens(opens)
            lock = waiter.lock
            while True:
                remaining = deadline - _monotonic()
                if remaining <= 0 or lock.acquire(timeout=min(remaining, _RECHECK_S)):
                    break
                bag.recheck(_monotonic())
        except BaseException:
            self._abandon_wait(waiter)
            raise
        got = bag.end_wait(waiter, _monotonic(), _get_ident())
        if got is None:
            raise self._timeout_error(_monotonic() - waiter.since)
        return got

    def _abandon_wait(self, waiter: ThreadWaiter) -> None:
        """The waiting thread is leaving on an exception of its own: take it out of the queue
        and give back a slot handed to it meanwhile, without replacing that exception."""
        bag = self._bag
        try:
            slot = bag.end_wait(waiter, _monotonic(), cancelled=True)
        except PoolClosed:  # the bag closed under it: it was handed nothing
            return
        if slot is not None:
            slot.lease_owner = None
            self._close_all(bag.give_back(slot, _monotonic(), None))  # never lent: no usage

    def _give_back(self, proxy: ConnectionProxy, commit: bool | None) -> None:
        """Return a checkout. ``commit``: True/False from a ``with`` exit, None for putconn."""
        checkout = proxy._co
        slot = checkout.slot
        if slot is None or slot.checkout is not checkout:
            return  # ended already (returned from two threads at once, or reclaimed)
        raw = checkout.raw
        slot.checkout = None
        proxy._retire()
        failure: BaseException | None = None
        release = self._release_results
        if release is not None and not slot.broken and not release(raw):
            slot.broken = True
            slot.close_reason = CloseReason.UNKNOWN_STATE
        if (slot.broken or self._tx_state(raw) != self._tx_idle
                or checkout.autocommit_was is not None):
            failure = self._slow_reset(slot, raw, checkout.autocommit_was, commit)
        now = _monotonic()
        usage = now - checkout.borrowed_at
        # (One `if`, not a `rare = (...)` variable: CPython 3.11 specialises a comparison only
        # when a jump follows it, which an `or` chain assigned to a name does not give.)
        if (slot.broken or slot.expires_at <= now or slot.generation != self._bag.generation
                or checkout.leak_reported or slot.largest_result_bytes > self._max_result) \
                and not self._slow_return(slot, checkout, now, usage):  # retired instead
            if failure is not None:
                raise failure
            return
        slot.last_used = slot.last_alive = now
        # The slot is not touched after this: another thread may already hold it.
        closing = self._bag.give_back(slot, now, usage)
        if closing:  # the pool closed meanwhile (a test, not a loop: the usual tuple is empty)
            self._close_all(closing)
        if failure is not None:
            raise failure

    def _close_all(self, slots: Sequence[Slot]) -> None:
        """Close what a closed bag gave back (its connections are not lent again)."""
        for slot in slots:
            self._close_raw(slot, CloseReason.POOL_CLOSED)

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

    def _slow_reset(self, slot: Slot, raw: Any, autocommit_was: bool | None,
                    commit: bool | None) -> BaseException | None:
        """End an open transaction, restore ``autocommit_was`` (None: unchanged); mark the
        slot broken if that fails.

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
        if autocommit_was is not None and not slot.broken:
            try:
                driver.set_autocommit(raw, autocommit_was)
            except Exception:  # noqa: BLE001 - a failed reset means discard
                slot.broken = True
                slot.close_reason = CloseReason.RESET_FAILED
        return failure

    def _slow_return(self, slot: Slot, checkout: Checkout, now: float, usage: float) -> bool:
        """Rare cases of a return; False when the slot was retired instead of kept."""
        if checkout.leak_reported:
            self._report_unleaked(slot, checkout, usage)
        reason = self._retire_reason(slot, now)
        if reason is None:
            return True
        self._retire(slot, reason, usage)
        return False

    def _orphaned(self, checkout: Checkout) -> None:
        """Called from ConnectionProxy.__del__: a checkout was dropped without being returned.

        Only a reentrant-safe queue put happens here, because __del__ may run inside any code,
        including code holding the pool's locks. The slot is returned by the next waiter or
        housekeeping run.
        """
        slot = checkout.slot
        if slot is None or slot.checkout is not checkout:
            return
        if self._closed:
            # Nobody drains the queue of a closed pool: close the connection now (the driver's
            # close takes no pool lock) and leave the counting, which does, to stats().
            slot.checkout = None
            self.driver.close(slot.raw)
            self._late_closes.put(slot)
            return
        if checkout.mon_frames is not None:  # a monitored checkout: listed among the leaks
            MONITOR._checkout_dropped(checkout, self.name)
        self._orphans.put(checkout)

    def _drain_orphans(self) -> None:
        while True:
            try:
                checkout = self._orphans.get_nowait()
            except queue.Empty:
                return
            slot = checkout.slot
            if slot is None or slot.state is not _IN_USE or slot.checkout is not checkout:
                continue  # no longer the checkout that was dropped
            logger.warning(
                "pool %r: a connection borrowed at %s by %s was garbage-collected "
                "without being returned; the pool took it back (use `with pool.connection()`)",
                self.name, format_site(checkout.site()), holder_name(checkout.owner))
            with self._stats_lock:
                self._orphans_returned += 1
            orphan = slot.proxy_class(self, checkout)
            slot.lease_owner = None  # never park an orphan for the draining thread
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
                f"{type(exc).__name__}: {first_line(exc)}. Check that the server is up and the "
                "DSN is right, or pass fail_fast=False to start the pool anyway"
            ) from exc

    def _set_proxy_classes(self, slot: Slot, raw: Any) -> None:
        # the checkout proxies' classes, with this driver connection's attributes (delegate.py)
        slot.proxy_class = proxy_class(raw)
        slot.monitored_class = proxy_class(raw, monitored=True)

    def _request_opens(self) -> None:
        opens = self._bag.reserve_opens(self.config.min_idle, self.config.max_size)
        if opens:
            self._submit_opens(opens)

    def _submit_opens(self, count: int) -> None:
        """Start ``count`` reserved opens: now, or after the backoff while connecting fails."""
        now_count, retry_in = self._opening.start(count, _monotonic())
        self._queue_retry(retry_in)
        pool_ref = weakref.ref(self)
        for _ in range(now_count):
            self._worker.submit(lambda: _open_one(pool_ref, False))

    def _queue_retry(self, delay: float | None) -> None:
        """Queue the backoff's timed attempt, when the schedule asked for one."""
        if delay is None:
            return
        pool_ref = weakref.ref(self)
        self._opening.retry_queued(
            self._worker.call_later(delay, lambda: _open_one(pool_ref, True)))

    def _open(self, retry: bool = False) -> None:
        """Open one connection (worker thread); on failure back off and try again if needed.

        ``retry``: this is the backoff's timed attempt (see core/opening.py).
        """
        if self._closed:
            self._bag.open_failed()
            return
        start = _monotonic()
        ticket, retry_in = self._opening.begin(retry, start)
        if ticket is None:  # deferred until the outage ends
            self._queue_retry(retry_in)
            return
        try:
            raw = self.driver.connect()
        except Exception as exc:  # noqa: BLE001 - any connect failure is recorded and retried
            self._open_failed(exc, start, ticket, retry)
            return
        with self._stats_lock:
            self._open_ms += (_monotonic() - start) * 1000.0
        release = self._opening.succeeded(retry, self._worker.cancel)
        slot = self._new_slot(raw)
        if not self._bag.add_new(slot):
            self._close_raw(slot, CloseReason.POOL_CLOSED)
        if release:
            self._submit_opens(release)

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

    def _validate_slot(self, slot: Slot) -> bool:
        with self._stats_lock:
            self._validations += 1
        try:
            self.driver.ping(slot.raw, self.config.validation_timeout)
        except Exception as exc:  # noqa: BLE001 - any failure means the connection is unusable
            logger.info("pool %r: connection %d failed validation (%s: %s); replacing it",
                        self.name, slot.id, type(exc).__name__, first_line(exc))
            self._retire(slot, CloseReason.VALIDATION)
            return False
        slot.last_alive = _monotonic()
        return True

    # ================================================================== housekeeping
    def _housekeep(self) -> None:
        """One housekeeping pass: the plan is core/maintenance.py's; the I/O is done here."""
        if self._closed:
            return
        cfg = self.config
        self._drain_orphans()
        now = _monotonic()
        plan = plan_maintenance(
            self._bag, list(self._slots.values()), now, min_idle=cfg.min_idle,
            idle_timeout=cfg.idle_timeout, keepalive_interval=cfg.keepalive_interval,
            leak_threshold=cfg.leak_threshold, abandoned_timeout=cfg.abandoned_timeout,
            reclaim_grace=_RECLAIM_GRACE)
        for slot, reason in plan.retire:
            self._retire(slot, reason)
        for slot in plan.ping:
            with self._stats_lock:
                self._keepalives += 1
            try:
                self.driver.ping(slot.raw, cfg.validation_timeout)
            except Exception as exc:  # noqa: BLE001 - a dead idle connection is replaced
                logger.info("pool %r: idle connection %d failed its keepalive (%s: %s)",
                            self.name, slot.id, type(exc).__name__, first_line(exc))
                self._retire(slot, CloseReason.VALIDATION)
                continue
            slot.last_alive = _monotonic()
            if not self._bag.give_back_reserved(slot):
                self._close_raw(slot, CloseReason.POOL_CLOSED)
        for checkout in plan.leaked:
            self._report_leak(checkout, now)
        for checkout in plan.reclaimable:
            self._close_reclaimed(checkout)
        for checkout in plan.abandoned:
            self._reclaim(checkout, now)
        if cfg.stats_log_interval is not None and now - self._stats_logged_at >= \
                cfg.stats_log_interval:
            self._stats_logged_at = now
            self._sql_stats.registry.log_and_reset()
        self._request_opens()

    def _close_reclaimed(self, checkout: Checkout, now: bool = False) -> None:
        """Close a reclaimed checkout's connection (``now``: in this thread, the pool is
        closing); its inert proxy, if its caller keeps it, keeps no connection alive."""
        slot = checkout.slot
        if slot is None:
            return
        checkout.slot = checkout.raw = None
        if now:
            self._bag.forget(slot)
            self._close_raw(slot, CloseReason.ABANDONED)
        else:
            self._retire(slot, CloseReason.ABANDONED)

    def _chain(self, hooks: list[Any]) -> RunHooks:
        return chain(hooks, driver_call)

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

    # ================================================================== management
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
        self._opening.close()
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
        revoked = [co for s in list(self._slots.values())
                   if s.state is _IN_USE and (co := s.checkout) is not None and co.reclaimed_at]
        if not revoked:
            return
        wait = max(co.reclaimed_at for co in revoked) + _RECLAIM_GRACE - _monotonic()
        if wait > 0:
            time.sleep(min(wait, timeout))
        for checkout in revoked:
            self._close_reclaimed(checkout, now=True)

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
