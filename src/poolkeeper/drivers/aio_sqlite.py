"""aiosqlite adapter (asyncio over the standard library's sqlite3).

aiosqlite runs one sqlite3 connection in a worker thread of its own and forwards
``in_transaction`` and ``isolation_level`` to it directly, so transaction
state, errors, the shared in-memory database and the statement cache's size are
:class:`~poolkeeper.drivers.sqlite.SqliteAdapter`'s, shared with the sync adapter.

Cancelling an await does not stop the statement in the worker thread (aiosqlite #163/#254):
the thread runs it to its end, and every later call queues behind it. What stops it is
sqlite3's ``interrupt()``, which is safe from any thread: aiosqlite's public
``Connection.interrupt()`` calls it directly from the event loop, without going through the
worker's queue. :meth:`AiosqliteDriver.cancel` awaits it; :meth:`AiosqliteDriver.abort`, which
must not await, runs that coroutine to its end synchronously (it never suspends; if a later
aiosqlite's did, the adapter falls back to a task, see :func:`interrupt_now`);
:meth:`AiosqliteDriver.recover_from_cancel` interrupts, then waits for the worker to drain.

The statement cache is sqlite3's own ``cached_statements``, sized from both of the pool's
bounds as for the sync adapter; the mirror that pushes entries out past the byte budget runs
statements synchronously on the connection, which aiosqlite's thread owns, so here the cache
is bounded by count only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from typing import Any

from ..core.stmtpolicy import StatementCachePolicy
from .aiobase import AsyncDriver
from .sqlite import SqliteAdapter

__all__ = ["AiosqliteDriver", "interrupt_now"]


class AiosqliteDriver(SqliteAdapter, AsyncDriver):
    """Adapter for aiosqlite."""

    #: aiosqlite raises ValueError ("Connection closed", "no active connection") once closed
    closed_connection_error: type[BaseException] | None = ValueError
    closed_errors: tuple[type[BaseException], ...] = (sqlite3.ProgrammingError, ValueError)
    #: sqlite3_interrupt() is in force until no statement of the connection is active: one
    #: sent as a SELECT returned fails the fetches of its rows and every statement after it
    cancel_poisons_pending_rows = True

    def _setup(self) -> None:
        super()._setup()
        import aiosqlite  # imported here so that `import poolkeeper` needs no driver

        self._aiosqlite = aiosqlite
        #: ids of the connections whose close() is running
        self._closing: set[int] = set()

    async def _connect(self) -> Any:
        return await self._aiosqlite.connect(**self._open_kwargs())

    def _touch(self, raw: Any) -> None:
        # not total_changes: sqlite3_total_changes() takes the connection's mutex, which the
        # worker thread holds for as long as a statement runs, and would block the event
        # loop; in_transaction reads a flag without it (and raises ValueError once closed)
        raw.in_transaction  # noqa: B018

    async def _close(self, raw: Any) -> None:
        self._closing.add(id(raw))
        try:
            await raw.close()
        finally:
            self._closing.discard(id(raw))

    def abort(self, raw: Any) -> None:
        # Stop the running statement, then have the worker close the connection and end,
        # answering no one: aiosqlite's own close() and stop() answer through the loop, and
        # a loop that closed before the worker got to them (asyncio.run ending right after
        # an interrupted close) made the worker thread die on "Event loop is closed".
        interrupt_now(raw)
        if id(raw) in self._closing:
            # a close already waits in the worker's queue behind that statement; a second
            # close() would queue a second stop after the first ended the worker, and wait
            # for it forever
            return
        if _stop_unanswered(raw, self._aiosqlite):
            return
        try:  # an aiosqlite without the queue this relies on: its own close, in a task
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: aiosqlite's own stop(), answered to no one
            with contextlib.suppress(Exception):
                raw.stop()
            return
        self._keep(loop.create_task(raw.close()))

    async def dispose(self) -> None:
        await super().dispose()
        self._close_anchor()  # the shared in-memory database goes with the pool

    async def set_autocommit(self, raw: Any, on: bool) -> None:
        # Python 3.11: isolation_level None is autocommit; "" restores the implicit BEGIN.
        raw.isolation_level = None if on else ""

    async def ping(self, raw: Any, timeout: float) -> None:
        # No server to lose; what can hang is the worker thread, still busy with a statement.
        if self.is_broken(raw):
            raise ValueError("the connection is closed")
        try:
            async with asyncio.timeout(timeout):
                await raw.execute_fetchall("SELECT 1")
        except TimeoutError:
            raise sqlite3.OperationalError(
                f"aiosqlite's worker thread did not answer the validation query within "
                f"{timeout:g} s: a statement still runs on it") from None

    async def cancel(self, raw: Any, session_id: Any = None) -> bool | None:
        if self.is_broken(raw):
            return False
        await raw.interrupt()
        return None

    async def recover_from_cancel(self, raw: Any, timeout: float) -> bool:
        if self.is_broken(raw):
            return False
        try:
            async with asyncio.timeout(timeout):
                for _ in range(3):  # an interrupt may land on our own probe: bounded retries
                    await raw.interrupt()
                    try:
                        await raw.execute_fetchall("SELECT 1")  # queued behind the statement
                    except sqlite3.OperationalError as exc:
                        if "interrupt" not in str(exc):
                            raise
                        continue
                    return True
        except (TimeoutError, sqlite3.Error):
            pass
        return False

    def statement_cache_policy(self, statement_cache_size: int,
                               statement_cache_bytes: int) -> StatementCachePolicy:
        policy = super().statement_cache_policy(statement_cache_size, statement_cache_bytes)
        if not policy.supported or policy.max_statements == 0:
            return policy
        return dataclasses.replace(
            policy, bounded_by="count",
            note=(f"sqlite3 caches up to {policy.max_statements} compiled statements per "
                  f"connection (cached_statements, sized from {statement_cache_bytes:,} bytes "
                  "at 4 KiB a statement); aiosqlite's worker thread owns the connection, so "
                  "no statements are pushed out past the byte budget"))


def _stop_unanswered(raw: Any, aiosqlite: Any) -> bool:
    """Queue "close the sqlite3 connection, then end" on the worker of an aiosqlite
    connection, with no future to answer (what aiosqlite's stop() queues, minus the answer);
    False when this aiosqlite has no such queue. Reads aiosqlite's private fields: 0.22's
    ``_tx``, ``_connection``, ``_running`` and its stop sentinel."""
    tx = getattr(raw, "_tx", None)
    sentinel = getattr(aiosqlite.core, "_STOP_RUNNING_SENTINEL", None)
    if tx is None or sentinel is None or not hasattr(raw, "_connection"):
        return False

    def close_and_end() -> Any:  # in the worker thread
        conn = raw._connection
        raw._connection = None
        if conn is not None:
            conn.close()
        return sentinel

    if not raw._running:
        return True  # stopped already: the worker ends, or has
    raw._running = False  # later calls fail at once ("Connection closed")
    tx.put_nowait((None, close_and_end))
    return True


def interrupt_now(raw: Any) -> bool:
    """Interrupt what runs on an aiosqlite connection, without awaiting; True when done now.

    aiosqlite's ``interrupt()`` is a coroutine that never suspends (it calls sqlite3's
    thread-safe ``interrupt()`` directly), so it is run to its end here. Should a later
    aiosqlite suspend inside it, a fresh ``interrupt()`` runs in a task of the running loop
    instead (False); with no loop running, the statement runs on to its end (False).
    """
    try:
        coro = raw.interrupt()
    except Exception:  # noqa: BLE001 - closed: nothing runs
        return False
    try:
        coro.send(None)
    except StopIteration:
        return True
    except Exception:  # noqa: BLE001 - closed meanwhile: nothing runs
        return False
    # it suspended: that coroutine cannot be resumed outside the loop; a fresh one runs in
    # a task of the running loop (none running: the statement runs on to its end)
    coro.close()
    with contextlib.suppress(RuntimeError):
        task = asyncio.get_running_loop().create_task(raw.interrupt())
        _pending.add(task)
        task.add_done_callback(_pending.discard)
    return False


#: fallback interrupts still running: held so that they are not garbage-collected pending
_pending: set[asyncio.Task[Any]] = set()
