"""The asyncio pool: the same core as the thread shell, with futures instead of locks.

Data flow of one borrow: :meth:`AsyncPool.getconn` -> ``Bag.borrow`` hands a slot, or queues
an :class:`AsyncWaiter` (a future) that this shell awaits until one absolute deadline -> the
slot's expiry and validation are checked (a ping is awaited) -> a
:class:`~poolkeeper.core.slot.Checkout` records the borrow (the holder is the task) and an
asyncio proxy (:mod:`.aioproxies`) hands it to the caller. Return: the proxy turns inert
synchronously; when the driver says no transaction is open and nothing else needs doing the
slot goes back at once, with no ``await``; otherwise the reset (commit, rollback, autocommit)
runs in a task the pool owns, shielded from the caller's cancellation and bounded by
``reset_timeout``, and past it the connection is discarded.

Cancellation never loses a connection: a waiter cancelled while queued leaves the queue
(``Bag.end_wait(cancelled=True)``), one cancelled after a slot was handed to it gives the slot
back before re-raising, and ``CancelledError`` is always re-raised. The bag hands a slot to the
oldest waiter under its lock and wakes it through its future, so no newcomer can take it in
between (first come, first served), and no ``await`` sits between choosing the waiter and
giving it the slot.

There is no lease: it cures a convoy of threads on the GIL, which an event loop does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any

from ..config import PoolConfig, mask_dsn, parse_dsn
from ..core.bag import Bag, Waiter, make_bag
from ..core.maintenance import plan_maintenance
from ..core.runtime import gil_enabled
from ..core.slot import Checkout, CloseReason, Slot, SlotState
from ..core.tally import count_usage
from ..drivers import create_async_driver
from ..drivers.aiobase import AsyncDriver
from ..errors import ConfigError, ConnectError, PoolClosed
from ..hooks.context import chain_async
from ..hooks.fetchsize import AdaptiveFetchSize
from ..hooks.stats import StatsHook
from ..hooks.stmtcache import StatementCacheHook
from ..observe.monitor import MONITOR, Probe, register_pool
from .aioproxies import async_proxy_class, close_cursors, run_statement
from .aiotxn import TransactionClock
from .base import PoolBase, capture_stack
from .holders import first_line, format_site, holder_name
from .lender import RunHooksAsync

__all__ = ["AsyncPool", "AsyncWaiter"]

logger = logging.getLogger("poolkeeper.pool")
_monotonic = time.monotonic
_getframe = sys._getframe
_IN_USE = SlotState.IN_USE
#: seconds between revoking an abandoned checkout and closing its connection (see _reclaim)
_RECLAIM_GRACE = 1.0


class AsyncWaiter(Waiter):
    """A task queued for a slot: the bag wakes it by resolving its future (under the bag's
    lock, in the event loop's thread, which is the only one that borrows and returns)."""

    __slots__ = ("future",)

    def __init__(self, now: float) -> None:
        super().__init__(now)
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class AsyncPool(PoolBase):
    """A pool of database connections for asyncio, with :class:`Pool`'s options, statistics
    names, errors and diagnosis.

    Example::

        async with AsyncPool("postgresql://app@127.0.0.1:5432/test", max_size=8) as pool:
            async with pool.connection() as conn:   # commit on clean exit, rollback on error
                cur = await conn.execute("SELECT %s::int", (1,))
                print(await cur.fetchone())

    ``dsn`` selects the driver: ``postgresql://`` (psycopg's AsyncConnection),
    ``postgresql+asyncpg://`` (asyncpg), ``mysql://`` (aiomysql), ``sqlite://`` (aiosqlite); or
    pass ``connect=`` a zero-argument coroutine function with ``driver=`` naming its adapter,
    or ``adapter=`` an :class:`~poolkeeper.drivers.aiobase.AsyncDriver` of your own.
    Open it with ``async with`` or :meth:`open`; :meth:`close` stops every task it started.
    """

    def __init__(self, dsn: str | None = None, *,
                 connect: Callable[[], Awaitable[Any]] | None = None,
                 config: PoolConfig | None = None, adapter: AsyncDriver | None = None,
                 **options: Any) -> None:
        if config is None:
            config = PoolConfig.from_mapping({"dsn": dsn, **options})
        elif dsn is not None or options:
            config = config.replace(**({"dsn": dsn} if dsn is not None else {}), **options)
        if config.dsn is None and connect is None:
            config = config.replace(dsn="sqlite://:memory:")
        config = self._init_state(config)
        self._orphans: queue.SimpleQueue[Checkout] = queue.SimpleQueue()
        self._execute: RunHooksAsync | None = None
        self._max_wait = config.max_wait
        self._validate = config.validate_on_borrow
        self._bypass = config.validation_bypass
        self._reset_on_return = config.reset_on_return
        self._capture_stack = config.leak_threshold is not None
        self._track_proxy = config.abandoned_timeout is not None
        # The event loop borrows and returns from one thread; the console and the metrics
        # read from theirs, so the bag keeps its lock (uncontended: a few tens of ns).
        self.lock_free = gil_enabled()
        self._bag: Bag = make_bag(lock=threading.Lock(), lease_s=0.0,
                                  max_waiting=config.max_waiting, lock_free=self.lock_free)
        if config.dsn is not None and connect is None:
            info = parse_dsn(config.dsn)
            driver_name, params = info.driver, dict(info.params)
            if config.driver is not None and config.driver != driver_name:
                raise ConfigError(f"driver={config.driver!r} does not match the dsn scheme "
                                  f"({driver_name}); drop one of them")
        else:
            driver_name, params = config.driver or "", {}
            if not driver_name and adapter is None:
                raise ConfigError("AsyncPool(connect=...) needs driver= (postgresql, asyncpg, "
                                  "mysql or sqlite): an asyncio connection cannot be opened "
                                  "to detect it in the constructor")
        params.update(config.connect_kwargs)
        # adapter=: an AsyncDriver made by the caller (a driver of its own, or a test's
        # fault-injecting one), used instead of the one the DSN names
        self.driver: AsyncDriver = adapter if adapter is not None else create_async_driver(
            driver_name, params, connect=connect, autocommit=config.autocommit,
            connect_timeout=config.connect_timeout,
            statement_cache_size=config.statement_cache_size,
            statement_cache_bytes=config.statement_cache_bytes)
        self.monitor: Probe = MONITOR.probe(self.name, enabled=True if config.monitor else None,
                                            dialect=self.driver.dialect,
                                            leak_threshold=config.leak_threshold)
        self.monitor.slots = self._slots
        self._stmt_cache = StatementCacheHook.from_config(config, self.driver)
        self._sql_stats = StatsHook.from_config(config, self.driver.dialect,
                                                fetch=AdaptiveFetchSize(config.fetch_size))
        self.add_hook(self._stmt_cache)
        self.add_hook(self._sql_stats)
        self._timeouts = None  # per-statement timeouts live in the proxies (asyncio.timeout)
        #: transaction_timeout's clocks, read by the proxies; a hook for its stats() only
        self._txn_clock: TransactionClock | None = None
        if config.transaction_timeout is not None:
            self._txn_clock = TransactionClock(self.name, self.driver, config.transaction_timeout)
            self.add_hook(self._txn_clock)
        self._tick_s = self._housekeeping_period()
        self._stats_logged_at = _monotonic()
        #: every task this pool started (opens, closes, resets, housekeeping): close() ends
        #: them all, so none outlives the pool
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        self._retry_handle: asyncio.TimerHandle | None = None

    # ================================================================== life cycle
    async def open(self, wait: bool | None = None, timeout: float | None = None) -> None:
        """Start the pool in the running event loop: its housekeeping task and the opens of
        ``min_idle`` connections. ``wait`` (default: the ``fail_fast`` option, when
        ``min_idle`` > 0) waits until the first connection is open and raises
        :class:`~poolkeeper.errors.ConnectError` if it cannot be."""
        if self._loop is not None:
            return
        if self._closed:
            raise PoolClosed(f"pool {self.name!r} is closed")
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        if wait is None:
            wait = cfg.fail_fast and cfg.min_idle > 0
        if wait:
            self._bag.reserve_one()
            try:
                raw = await self.driver.connect()
            except BaseException as exc:
                self._bag.open_failed()
                self._loop = None
                if not isinstance(exc, Exception):
                    raise
                where = mask_dsn(cfg.dsn) if cfg.dsn else "connect()"
                raise ConnectError(
                    f"pool {self.name!r}: could not open the first connection to {where}: "
                    f"{type(exc).__name__}: {first_line(exc)}. Check that the server is up "
                    "and the DSN is right, or pass fail_fast=False to start the pool anyway"
                ) from exc
            self._bag.add_new(self._new_slot(raw))
        self._housekeeper = self._spawn(self._housekeeping())
        self._request_opens()
        register_pool(self)
        logger.info("pool %r opened: %s, min_idle=%d, max_size=%d", self.name,
                    self.driver.describe(), cfg.min_idle, cfg.max_size)
        if timeout is not None:
            await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until ``min_idle`` connections are open (PoolTimeout after ``timeout``)."""
        await self.open()
        deadline = _monotonic() + timeout
        while self._bag.counts()["total"] < self.config.min_idle:
            if self._closed:
                raise PoolClosed(f"pool {self.name!r} is closed")
            if _monotonic() >= deadline:
                raise self._timeout_error(timeout, "open min_idle connections", queued=0)
            await asyncio.sleep(0.01)

    async def close(self, timeout: float = 5.0) -> None:
        """Close idle connections, stop every task this pool started, close the rest.

        Borrowed connections close when they come back; resets still running are given
        ``timeout`` seconds, then cancelled (their connections are discarded).
        """
        if self._closed:
            return
        self._closed = True
        self._opening.close()
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        for slot in self._bag.close():
            self._forget_closing(slot, CloseReason.POOL_CLOSED)
        self._drain_orphans()
        for checkout in self._revoked():
            self._close_reclaimed(checkout)
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _done, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        await self.driver.dispose()
        MONITOR.unregister_pool(self)
        logger.info("pool %r closed", self.name)

    async def __aenter__(self) -> AsyncPool:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        counts = self._bag.counts()
        return (f"<poolkeeper.AsyncPool {self.name!r} {self.driver.describe()} "
                f"total={counts['total']} active={counts['active']} idle={counts['idle']}>")

    @property
    def tasks(self) -> list[asyncio.Task[Any]]:
        """The tasks this pool started and that still run (none once closed)."""
        return [t for t in self._tasks if not t.done()]

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task the pool owns: kept until it ends, ended by close()."""
        loop = self._loop or asyncio.get_running_loop()
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("pool %r: a background task failed: %s: %s", self.name,
                         type(exc).__name__, first_line(exc), exc_info=exc)

    # ================================================================== borrow / return
    def connection(self, timeout: float | None = None) -> _Borrow:
        """``async with pool.connection() as conn``: borrow (waiting up to ``timeout``, by
        default ``max_wait``), commit on a clean exit, roll back on an exception, return.

        Raises :class:`PoolTimeout`, :class:`TooManyWaiting` or :class:`PoolClosed`."""
        return _Borrow(self, timeout)

    async def getconn(self, timeout: float | None = None) -> Any:
        """Borrow a connection; give it back with :meth:`putconn` or ``await conn.close()``."""
        return await self._borrow(timeout, _getframe(1))

    async def putconn(self, conn: Any) -> None:
        """Give back a connection borrowed with :meth:`getconn`."""
        if getattr(conn, "_pool", None) is not self:
            raise ValueError(f"putconn() takes a connection of pool {self.name!r}")
        if not conn.closed:
            await self._give_back(conn, None)

    async def _borrow(self, timeout: float | None, frame: Any) -> Any:
        if self._loop is None:
            await self.open()
        now = _monotonic()
        deadline = now + (self._max_wait if timeout is None else timeout)
        task = asyncio.current_task()
        bag = self._bag
        while True:
            got = bag.borrow(now, None, AsyncWaiter)
            if got.__class__ is not Slot:
                got = await self._wait(got, deadline)  # type: ignore[arg-type]
                now = _monotonic()
            slot: Slot = got
            if slot.expires_at <= now or slot.generation != bag.generation:
                self._retire(slot, CloseReason.LIFETIME if slot.expires_at <= now
                             else CloseReason.EXPIRED)
            elif self._validate and now - slot.last_alive > self._bypass:
                if await self._validate_slot(slot):
                    now = _monotonic()
                    break
            else:
                break
            now = _monotonic()
        slot.uses += 1
        code, lasti = frame.f_code, frame.f_lasti
        checkout = Checkout(slot, task, now, code, lasti)
        slot.checkout = checkout
        if self.monitor.enabled:
            # The resource monitor's part, as in the thread shell: the kept frames of the
            # borrow site (None: sampled out); the monitor's views make the checkout's
            # record from them, named after the task, and its cursors are watched.
            kept = self.monitor.borrow_site(frame, code, lasti)
            checkout.mon_frames = kept
            proxy = (slot.proxy_class if kept is None else slot.monitored_class)(self, checkout)
        else:
            proxy = slot.proxy_class(self, checkout)
        if self._capture_stack:
            checkout.stack = capture_stack(frame, self.config.leak_stack_depth)
        if self._track_proxy:
            checkout.proxy_ref = weakref.ref(proxy)
        return proxy

    async def _wait(self, waiter: AsyncWaiter, deadline: float) -> Slot:
        """Await the bag's hand-off to ``waiter`` until ``deadline`` (one absolute deadline for
        the whole borrow). Cancelled meanwhile: out of the queue, a slot handed over at that
        moment given back, and the CancelledError raised on."""
        bag = self._bag
        self._drain_orphans()
        self._request_opens()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + (deadline - _monotonic())):
                await waiter.future
        except TimeoutError:
            pass  # the deadline: end_wait below finds no slot (or one handed over just now)
        except BaseException:
            slot = None
            with contextlib.suppress(PoolClosed):
                slot = bag.end_wait(waiter, _monotonic(), cancelled=True)
            if slot is not None:
                self._put_back(slot, None)
            raise
        got = bag.end_wait(waiter, _monotonic())
        if got is None:
            raise self._timeout_error(_monotonic() - waiter.since)
        return got

    async def _validate_slot(self, slot: Slot) -> bool:
        """Ping ``slot`` (reserved by the caller); retire it if the ping fails or the caller
        is cancelled during it (the connection's state is then unknown)."""
        with self._stats_lock:
            self._validations += 1
        try:
            await self.driver.ping(slot.raw, self.config.validation_timeout)
        except Exception as exc:  # noqa: BLE001 - any failure means the connection is unusable
            logger.info("pool %r: connection %d failed validation (%s: %s); replacing it",
                        self.name, slot.id, type(exc).__name__, first_line(exc))
            self._retire(slot, CloseReason.VALIDATION)
            return False
        except BaseException:
            self._retire(slot, CloseReason.VALIDATION)
            raise
        slot.last_alive = _monotonic()
        return True

    async def _give_back(self, proxy: Any, commit: bool | None) -> None:
        """Return a checkout. ``commit``: True/False from an ``async with`` exit, None for
        putconn. The proxy turns inert at once; a reset that needs the server runs in a task
        of the pool's own, which the caller's cancellation does not stop."""
        checkout: Checkout = proxy._co
        slot = checkout.slot
        if slot is None or slot.checkout is not checkout:
            return  # ended already
        raw = checkout.raw
        slot.checkout = None
        cursors = proxy._retire()  # the driver cursors left open, closed by the reset
        usage = _monotonic() - checkout.borrowed_at
        autocommit_was = checkout.autocommit_was
        if checkout.leak_reported:
            self._report_unleaked(slot, checkout, usage)
        interrupted = checkout.interrupted
        state = self.driver.in_transaction(raw)
        if not (slot.broken or interrupted or state is None or state or cursors
                or autocommit_was is not None):
            self._put_back(slot, usage)  # nothing to do on the server: no await
            if self._closed:
                await self._finish_late_close()
            return
        reset = self._spawn(self._reset(slot, raw, state, commit, autocommit_was,
                                        interrupted, usage, cursors))
        try:
            failure = await asyncio.shield(reset)
        except asyncio.CancelledError:
            # the caller goes away; what the reset finds (a failed commit) must not vanish
            reset.add_done_callback(self._log_unheard_failure)
            raise
        if self._closed:
            await self._finish_late_close()
        if failure is not None:
            raise failure

    async def _finish_late_close(self) -> None:
        """A return after close(): close() no longer waits for that connection's close, so
        its returner does (else a loop ending next would leave the close task pending)."""
        pending = [t for t in self._tasks if not t.done() and t is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending, timeout=self.driver.close_timeout + 1.0)

    def _log_unheard_failure(self, reset: asyncio.Task[BaseException | None]) -> None:
        """A reset whose caller was cancelled while it ran: log a failure no one will hear."""
        if reset.cancelled() or reset.exception() is not None:
            return  # ended by close(), which says so itself
        failure = reset.result()
        if failure is not None:
            logger.warning("pool %r: the commit on return failed after its caller was "
                           "cancelled (%s: %s): the transaction was not committed and its "
                           "changes are lost; nobody else is told", self.name,
                           type(failure).__name__, first_line(failure))

    async def _commit_back(self, proxy: Any) -> None:
        """Return a checkout from a clean ``async with`` exit: commit; a transaction past
        transaction_timeout is rolled back instead and QueryTimeout raised (as in Pool)."""
        clock = self._txn_clock
        if clock is not None and (age := clock.overdue(proxy, proxy._co.raw)) is not None:
            refused = clock.refused(None, age, "the transaction was rolled back")
            await self._give_back_after(proxy, refused)
            raise refused
        await self._give_back(proxy, True)

    async def _give_back_after(self, proxy: Any, error: BaseException) -> None:
        """Return a checkout whose ``async with`` block raises ``error``: roll back; a rollback
        that fails too is logged and noted on ``error``, never raised instead of it."""
        try:
            await self._give_back(proxy, False)
        except Exception as failure:  # noqa: BLE001 - noted on the caller's error
            logger.warning("pool %r: rollback on return failed after %s was raised in the "
                           "`async with` block (%s); the connection was discarded", self.name,
                           type(error).__name__, first_line(failure))
            error.add_note(f"poolkeeper: the rollback on return failed as well "
                           f"({first_line(failure)}); the connection was discarded "
                           f"(pool {self.name!r})")

    async def _reset(self, slot: Slot, raw: Any, state: bool | None, commit: bool | None,
                     autocommit_was: bool | None, interrupted: bool, usage: float,
                     cursors: list[Any]) -> BaseException | None:
        """The server side of a return, in the pool's own task: recover from a cancelled
        statement, close the cursors left open, commit or roll back, restore autocommit;
        within the pool's ``reset_timeout``, else the connection is discarded. Returns the
        error for the caller (a failed commit)."""
        driver = self.driver
        limit = self.config.reset_timeout
        failure: BaseException | None = None
        try:
            async with asyncio.timeout(limit):
                # First the cancelled statement (for aiomysql this sends the KILL QUERY, so
                # even on a connection already judged broken), then the cursors left open
                # (aiosqlite closes them in its worker thread, behind that statement), then
                # the transaction.
                if interrupted and not await driver.recover_from_cancel(raw, limit):
                    slot.broken = True
                if cursors and not slot.broken:
                    await close_cursors(driver, cursors, limit)
                if interrupted or cursors:
                    state = driver.in_transaction(raw)
                if slot.broken:
                    pass
                elif state is None:
                    slot.broken = True
                    slot.close_reason = CloseReason.UNKNOWN_STATE
                elif state:
                    try:
                        if commit:
                            await driver.commit(raw)
                        elif commit is False or self._reset_on_return:
                            await driver.rollback(raw)
                        else:
                            slot.dirty = True  # reset_on_return=False left it open
                    except Exception as exc:  # noqa: BLE001 - given to the caller
                        failure = exc
                        if driver.is_broken(raw, exc):
                            slot.broken = True
                        else:
                            await driver.rollback(raw)
                if autocommit_was is not None and not slot.broken:
                    await driver.set_autocommit(raw, autocommit_was)
        except TimeoutError:
            logger.warning("pool %r: the reset of connection %d on return did not finish "
                           "within reset_timeout=%g s; discarding the connection (raise "
                           "reset_timeout if the server is that slow to commit or roll back)",
                           self.name, slot.id, limit)
            slot.broken = True
            slot.close_reason = CloseReason.RESET_FAILED
        except Exception as exc:  # noqa: BLE001 - a failed reset means discard
            logger.info("pool %r: reset of connection %d on return failed (%s: %s); "
                        "discarding it", self.name, slot.id, type(exc).__name__,
                        first_line(exc))
            slot.broken = True
            slot.close_reason = CloseReason.RESET_FAILED
        except BaseException:  # cancelled by close(): discard, and end as asked
            slot.broken = True
            slot.close_reason = CloseReason.RESET_FAILED
            self._put_back(slot, usage)
            raise
        self._put_back(slot, usage)
        return failure

    def _put_back(self, slot: Slot, usage: float | None) -> None:
        """The slot's last step home, with no await: retire it or give it to the bag."""
        now = _monotonic()
        reason = self._retire_reason(slot, now)
        if reason is not None:
            self._retire(slot, reason, usage)
            return
        slot.last_used = slot.last_alive = now
        for closing in self._bag.give_back(slot, now, usage):
            self._forget_closing(closing, CloseReason.POOL_CLOSED)

    def _orphaned(self, checkout: Checkout) -> None:
        """Called from a proxy's ``__del__``: a checkout was dropped without being returned.
        Queued (a reentrant-safe put); the next borrower or housekeeping pass takes it back."""
        slot = checkout.slot
        if slot is None or slot.checkout is not checkout:
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
                continue
            logger.warning(
                "pool %r: a connection borrowed at %s by %s was garbage-collected without "
                "being returned; the pool took it back (use `async with pool.connection()`)",
                self.name, format_site(checkout.site()), holder_name(checkout.owner))
            with self._stats_lock:
                self._orphans_returned += 1
            orphan = slot.proxy_class(self, checkout)
            if self._closed or self._loop is None:
                slot.checkout = None
                orphan._retire()
                self._forget_closing(slot, CloseReason.POOL_CLOSED)
            else:
                self._spawn(self._give_back_quietly(orphan))

    async def _give_back_quietly(self, proxy: Any) -> None:
        with contextlib.suppress(Exception):  # the reset discarded the connection already
            await self._give_back(proxy, False)

    # ================================================================== opening / closing
    def _set_proxy_classes(self, slot: Slot, raw: Any) -> None:
        slot.proxy_class = async_proxy_class(self.driver, raw)
        slot.monitored_class = async_proxy_class(self.driver, raw, monitored=True)

    def _request_opens(self) -> None:
        if self._closed or self._loop is None:
            return
        opens = self._bag.reserve_opens(self.config.min_idle, self.config.max_size)
        if opens:
            self._submit_opens(opens)

    def _submit_opens(self, count: int) -> None:
        now_count, retry_in = self._opening.start(count, _monotonic())
        self._queue_retry(retry_in)
        for _ in range(now_count):
            self._spawn(self._open(False))

    def _queue_retry(self, delay: float | None) -> None:
        if delay is None or self._loop is None:
            return
        handle = self._loop.call_later(delay, lambda: self._spawn(self._open(True)))
        self._retry_handle = handle
        self._opening.retry_queued(handle)

    async def _open(self, retry: bool) -> None:
        """Open one connection (a task of the pool's); on failure back off and try again.
        Never under the bag's lock, and never blocking a borrower: the waiters keep their
        place while a slow connect runs."""
        if self._closed:
            self._bag.open_failed()
            return
        start = _monotonic()
        ticket, retry_in = self._opening.begin(retry, start)
        if ticket is None:
            self._queue_retry(retry_in)
            return
        try:
            raw = await self.driver.connect()
        except Exception as exc:  # noqa: BLE001 - any connect failure is recorded and retried
            self._open_failed(exc, start, ticket, retry)
            return
        except BaseException:
            self._bag.open_failed()  # cancelled (close()): the reservation is given up
            raise
        with self._stats_lock:
            self._open_ms += (_monotonic() - start) * 1000.0
        release = self._opening.succeeded(retry, _cancel_handle)
        slot = self._new_slot(raw)
        if not self._bag.add_new(slot):
            self._forget_closing(slot, CloseReason.POOL_CLOSED)
        if release:
            self._submit_opens(release)

    def _retire(self, slot: Slot, reason: str, usage: float | None = None) -> None:
        """Take a slot out of the pool; its connection is closed in a task of the pool's."""
        if usage is not None:
            count_usage(slot, usage)
        self._bag.forget(slot)
        self._forget_closing(slot, reason)
        self._request_opens()

    def _forget_closing(self, slot: Slot, reason: str) -> None:
        """Count ``slot``'s close and close its connection (a task, or at once, without a
        goodbye, when no loop runs any more)."""
        slot.state = SlotState.CLOSED
        self._count_close(slot, reason)
        raw = slot.raw
        try:
            self._spawn(self._close_raw(raw))
        except RuntimeError:  # no running loop (a pool left to the garbage collector)
            self.driver.abort(raw)

    async def _close_raw(self, raw: Any) -> None:
        try:
            await self.driver.close(raw)
        except BaseException:
            # cancelled (close() ending the pool's tasks) or failed: closed all the same,
            # without a goodbye, and never left open
            self.driver.abort(raw)
            raise

    def expire_all(self) -> None:
        """Retire every connection: idle ones now, borrowed ones when they come back.

        Callable from any thread (an admin thread, a signal handler's): the retirement spawns
        close tasks and opens, loop-owned state, so from another thread it is handed to the
        loop (``call_soon_threadsafe``) and runs there at its next turn."""
        loop = self._loop
        if loop is not None and not loop.is_closed() and not _in_loop(loop):
            loop.call_soon_threadsafe(super().expire_all)
            return
        super().expire_all()

    # ================================================================== housekeeping
    async def _housekeeping(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._tick_s)
            try:
                await self._housekeep()
            except Exception as exc:
                logger.error("pool %r: housekeeping failed: %s: %s", self.name,
                             type(exc).__name__, first_line(exc), exc_info=exc)

    async def _housekeep(self) -> None:
        """One pass: the plan is core/maintenance.py's (the same as the thread shell's)."""
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
        for slot in plan.ping:  # last: the pings are the only awaits of a pass
            with self._stats_lock:
                self._keepalives += 1
            try:
                await self.driver.ping(slot.raw, cfg.validation_timeout)
            except Exception as exc:  # noqa: BLE001 - a dead idle connection is replaced
                logger.info("pool %r: idle connection %d failed its keepalive (%s: %s)",
                            self.name, slot.id, type(exc).__name__, first_line(exc))
                self._retire(slot, CloseReason.VALIDATION)
                continue
            except BaseException:
                self._retire(slot, CloseReason.VALIDATION)
                raise
            slot.last_alive = _monotonic()
            if not self._bag.give_back_reserved(slot):
                self._forget_closing(slot, CloseReason.POOL_CLOSED)
        self._request_opens()

    def _close_reclaimed(self, checkout: Checkout) -> None:
        slot = checkout.slot
        if slot is None:
            return
        checkout.slot = checkout.raw = None
        slot.checkout = None
        self._retire(slot, CloseReason.ABANDONED)

    def _revoked(self) -> list[Checkout]:
        return [co for s in list(self._slots.values())
                if s.state is _IN_USE and (co := s.checkout) is not None and co.reclaimed_at]

    # ================================================================== hooks
    def _chain(self, hooks: list[Any]) -> RunHooksAsync:
        return chain_async(hooks, run_statement)



class _Borrow:
    """What :meth:`AsyncPool.connection` returns: ``async with`` borrows and returns."""

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: AsyncPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: Any = None

    async def __aenter__(self) -> Any:
        self._conn = await self._pool._borrow(self._timeout, _getframe(1))
        return self._conn

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.closed:
            return
        if exc is not None:
            await self._pool._give_back_after(conn, exc)
        else:
            await self._pool._commit_back(conn)


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the caller runs in ``loop``'s thread, inside it."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _cancel_handle(handle: Any) -> bool:
    """Cancel a queued timed retry (OpenSchedule.succeeded): True when it will not run."""
    handle.cancel()
    return True
