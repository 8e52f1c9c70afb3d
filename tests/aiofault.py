"""A fault-injecting asyncio driver for the pool's cancellation tests.

:class:`FaultDriver` is an :class:`~poolkeeper.drivers.aiobase.AsyncDriver` over a real
aiosqlite connection (a fake only to inject faults: every statement runs on SQLite). Each of its
coroutines (connect, ping, rollback, commit, close, set_autocommit, cancel,
recover_from_cancel, execute) suspends ``before`` times before the real call and ``after``
times after it (close twice over: ``close`` points in the caller's task, ``close_io`` points
inside the close's own time limit), and :class:`Faults` numbers every suspension, globally,
from 1. Armed with ``faults.arm(n, action)``, the n-th suspension:

* ``"cancel"``: cancels the task that runs it, for real (``Task.cancel()``, so
  ``Task.cancelling()`` and ``uncancel()`` behave as under ``asyncio.timeout``): the caller
  sees ``CancelledError`` at that await;
* ``"raise"``: raises ``faults.error()`` (by default a ``sqlite3.OperationalError``);
* ``"hang"``: waits until :meth:`Faults.release` (or until the task is cancelled).

So a test can run a scenario once to count its suspension points (``faults.count``) and then
loop ``n = 1..count`` with a fault at each one. The driver also counts the connections it
opened and closed (``opened``, ``closed``, ``live``), for "no connection lost" checks.

Example::

    faults = Faults()
    driver = FaultDriver(faults)
    for n in range(1, total + 1):
        faults.reset(); faults.arm(n, "cancel")
        ...
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any, Literal

from poolkeeper.core.stmtpolicy import StatementCachePolicy
from poolkeeper.drivers.aio_sqlite import AiosqliteDriver
from poolkeeper.drivers.aiobase import AsyncDriver
from poolkeeper.drivers.base import ErrorKind

__all__ = ["Action", "FaultDriver", "Faults"]

Action = Literal["cancel", "raise", "hang"]


class Faults:
    """The global numbering of suspension points and the one fault armed among them."""

    def __init__(self, *, before: int = 1, after: int = 1,
                 error: Callable[[], BaseException] | None = None) -> None:
        #: suspensions before / after each real driver call
        self.before = before
        self.after = after
        self.error = error or (lambda: sqlite3.OperationalError("injected fault"))
        self.count = 0
        #: (number, operation, "before" | "after") of every suspension so far
        self.log: list[tuple[int, str, str]] = []
        self.fired: tuple[int, str, str] | None = None
        self._at: int | None = None
        self._action: Action = "cancel"
        self._released: asyncio.Event | None = None

    def arm(self, n: int, action: Action) -> None:
        """Make the ``n``-th suspension (counted from the last :meth:`reset`) fail."""
        if n < 1:
            raise ValueError(f"suspension numbers start at 1, not {n}")
        self._at, self._action = n, action

    def disarm(self) -> None:
        self._at = None

    def reset(self) -> None:
        """Count from 0 again, with nothing armed and nothing hung."""
        self.count = 0
        self.log.clear()
        self.fired = None
        self._at = None
        self.release()
        self._released = None

    def release(self) -> None:
        """Let every suspension hung by ``"hang"`` go on."""
        if self._released is not None:
            self._released.set()

    async def suspend(self, op: str, phase: str, times: int) -> None:
        for _ in range(times):
            self.count += 1
            point = (self.count, op, phase)
            self.log.append(point)
            if self.count == self._at:
                self.fired = point
                await self._fire()
            else:
                await asyncio.sleep(0)

    async def _fire(self) -> None:
        if self._action == "raise":
            raise self.error()
        if self._action == "hang":
            if self._released is None:
                self._released = asyncio.Event()
            await self._released.wait()
            return
        task = asyncio.current_task()
        assert task is not None, "a fault driver's coroutine runs in a task"
        task.cancel()
        await asyncio.sleep(0)  # the CancelledError arrives here, as at any await
        raise AssertionError("the cancelled task went on")  # pragma: no cover


class FaultDriver(AsyncDriver):
    """An aiosqlite adapter whose every coroutine passes through :class:`Faults`."""

    def __init__(self, faults: Faults, database: str = ":memory:", **kwargs: Any) -> None:
        # autocommit is the outer adapter's to set (a faulted set_autocommit)
        self.inner = AiosqliteDriver({"database": database},
                                     **{k: v for k, v in kwargs.items() if k != "autocommit"})
        super().__init__(self.inner.params, **kwargs)
        self.faults = faults
        self.name = self.inner.name
        self.knows_transaction_state = self.inner.knows_transaction_state
        self.error_types = self.inner.error_types
        self.closed_connection_error = self.inner.closed_connection_error
        self.closed_cursor_error = self.inner.closed_cursor_error
        self.cancelled_error = self.inner.cancelled_error
        self.opened = 0
        self.closed = 0
        #: the connections opened and not yet closed or aborted, by id
        self.live: dict[int, Any] = {}

    async def _around(self, op: str, call: Callable[[], Any]) -> Any:
        await self.faults.suspend(op, "before", self.faults.before)
        result = await call()
        await self.faults.suspend(op, "after", self.faults.after)
        return result

    # ---------------------------------------------------------------- coroutines, faulted
    async def _connect(self) -> Any:
        await self.faults.suspend("connect", "before", self.faults.before)
        raw = await self.inner.connect()
        self.opened += 1
        self.live[id(raw)] = raw
        try:
            await self.faults.suspend("connect", "after", self.faults.after)
        except BaseException:
            # as a real driver does: a connect that fails after the socket exists closes it
            self.abort(raw)
            raise
        return raw

    async def close(self, raw: Any, timeout: float | None = None) -> bool:
        # "close" points run in the caller's task (a cancel there reaches the caller, which
        # must then abort the connection); the "close_io" points run inside the close's own
        # time limit (a hang there is what close_timeout bounds)
        await self.faults.suspend("close", "before", self.faults.before)
        closed = await super().close(raw, timeout)
        await self.faults.suspend("close", "after", self.faults.after)
        return closed

    async def _close(self, raw: Any) -> None:
        await self._around("close_io", lambda: self.inner._close(raw))
        self._forget(raw)

    def abort(self, raw: Any) -> None:
        self.inner.abort(raw)
        self._forget(raw)

    def _forget(self, raw: Any) -> None:
        if self.live.pop(id(raw), None) is not None:
            self.closed += 1

    async def ping(self, raw: Any, timeout: float) -> None:
        await self._around("ping", lambda: self.inner.ping(raw, timeout))

    async def commit(self, raw: Any) -> None:
        await self._around("commit", lambda: self.inner.commit(raw))

    async def rollback(self, raw: Any) -> None:
        await self._around("rollback", lambda: self.inner.rollback(raw))

    async def set_autocommit(self, raw: Any, on: bool) -> None:
        await self._around("set_autocommit", lambda: self.inner.set_autocommit(raw, on))

    async def cancel(self, raw: Any, session_id: Any = None) -> bool | None:
        answer: bool | None = await self._around("cancel", lambda: self.inner.cancel(raw))
        return answer

    async def recover_from_cancel(self, raw: Any, timeout: float) -> bool:
        ok: bool = await self._around(
            "recover_from_cancel", lambda: self.inner.recover_from_cancel(raw, timeout))
        return ok

    async def execute(self, raw: Any, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run one statement on the real connection; its rows."""
        rows: list[Any] = await self._around(
            "execute", lambda: _fetchall(raw, sql, params))
        return rows

    async def dispose(self) -> None:
        await self.inner.dispose()
        await super().dispose()

    # ---------------------------------------------------------------- answers, no I/O
    def in_transaction(self, raw: Any) -> bool | None:
        return self.inner.in_transaction(raw)

    def is_broken(self, raw: Any, exc: BaseException | None = None) -> bool:
        return self.inner.is_broken(raw, exc)

    def classify_error(self, exc: BaseException) -> ErrorKind:
        return self.inner.classify_error(exc)

    def get_autocommit(self, raw: Any) -> bool | None:
        return self.inner.get_autocommit(raw)

    def statement_cache_policy(self, statement_cache_size: int,
                               statement_cache_bytes: int) -> StatementCachePolicy:
        return self.inner.statement_cache_policy(statement_cache_size, statement_cache_bytes)

    def describe(self) -> str:
        return f"fault-injecting {self.inner.describe()}"


async def _fetchall(raw: Any, sql: str, params: tuple[Any, ...]) -> list[Any]:
    return list(await raw.execute_fetchall(sql, params))
