"""The asyncio adapter protocol: what the asyncio shell (``AsyncPool``) asks of a driver.

:class:`AsyncDriver` mirrors the sync :class:`~poolkeeper.drivers.base.Driver`, and shares its
answers through :class:`~poolkeeper.drivers.base.AdapterBase` and the per-driver mixins
(``PsycopgAdapter``, ``MysqlAdapter``, ``SqliteAdapter``): one error classification, one
transaction-state reading, one statement-cache policy and one secrets scrubber per driver.

The rule is where the I/O is:

* **Coroutines** are everything that may touch the network, the server, or aiosqlite's worker
  thread: :meth:`~AsyncDriver.connect` (bounded by ``connect_timeout``),
  :meth:`~AsyncDriver.close` (bounded by ``close_timeout``, then the connection is aborted: a
  close never hangs), :meth:`~AsyncDriver.commit`, :meth:`~AsyncDriver.rollback`,
  :meth:`~AsyncDriver.ping` (bounded by its ``timeout``), :meth:`~AsyncDriver.set_autocommit`,
  :meth:`~AsyncDriver.cancel` (stops the running statement *on the server*),
  :meth:`~AsyncDriver.recover_from_cancel` (after a caller's await was cancelled: cancel on
  the server and wait until the connection is idle again) and :meth:`~AsyncDriver.dispose`
  (the adapter's own control connection). Each is a cancellation point: the shell wraps the
  ones that must finish in a task it owns.
* **Plain methods** answer from the driver's client-side state, with no round trip and no
  ``await``, so the shell can call them between choosing a waiter and handing it a connection:
  :meth:`~AsyncDriver.in_transaction`, :meth:`~AsyncDriver.is_broken`,
  :meth:`~AsyncDriver.left_mid_call`, :meth:`~AsyncDriver.classify_error`,
  :meth:`~AsyncDriver.session_id`, :meth:`~AsyncDriver.get_autocommit`,
  :meth:`~AsyncDriver.rowcount`, :meth:`~AsyncDriver.query_text`,
  :meth:`~AsyncDriver.describe`, the statement-cache policy, and :meth:`~AsyncDriver.abort`
  (closes the socket at once, without a goodbye: what a cancelled release does synchronously).

An error a coroutine raises is the driver's own, its message scrubbed of the password (as in
``Driver``), except a connect past ``connect_timeout``: :class:`~poolkeeper.errors.ConnectError`.

Cancellation, for the shell:

* ``is_broken(raw, exc)`` is True for a ``CancelledError`` (as for any exception that is not
  the driver's: the connection may be mid-protocol). After a statement's await was cancelled
  the shell asks :meth:`~AsyncDriver.recover_from_cancel` instead, which knows what the driver
  did: psycopg and asyncpg send a cancel request themselves and drain the reply; aiomysql
  closes the connection (the adapter then sends ``KILL QUERY`` so the server stops too);
  aiosqlite's worker thread runs on until it is interrupted and drained.
* :meth:`~AsyncDriver.close` runs the driver's close in a task of its own and waits for it
  at most ``close_timeout``; cancelled or past the limit, it aborts the connection and keeps
  the task until it ends; :meth:`~AsyncDriver.dispose` waits for such tasks (bounded), so no
  task outlives the pool.
* :meth:`~AsyncDriver.cancel` answers like the sync cancellers
  (:mod:`poolkeeper.drivers.cancel`): True stopped, None sent, False nothing ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import ConnectError
from .base import AdapterBase

__all__ = ["AsyncDriver"]

logger = logging.getLogger("poolkeeper.drivers")

#: what an asyncio adapter's ``connect=`` is: a zero-argument callable returning an awaitable
AsyncConnect = Callable[[], Awaitable[Any]]


class AsyncDriver(AdapterBase):
    """Base asyncio adapter. Subclasses implement ``_connect``, ``_close``, ``abort`` and the
    driver's I/O; the answers without I/O come from :class:`AdapterBase` or a driver mixin.

    ``close_timeout`` bounds :meth:`close` before it aborts; ``cancel_timeout`` bounds one
    :meth:`cancel` (and the control connection it may open).
    """

    #: how long :meth:`close` waits for a clean close before it aborts the connection
    close_timeout = 5.0
    #: how long one :meth:`cancel` may take (a control connection's round trips)
    cancel_timeout = 5.0

    def _setup(self) -> None:
        super()._setup()
        # close() calls that outlived their time limit and still run (aiosqlite's worker
        # thread finishing a statement): held so that they are not garbage-collected pending
        self._lingering: set[asyncio.Task[Any]] = set()

    # ---------------------------------------------------------------- life cycle (I/O)
    async def connect(self) -> Any:
        """Open one physical connection within ``connect_timeout`` seconds.

        A driver error comes scrubbed of the password and the DSN; past the time limit a
        :class:`ConnectError` says so with the numbers.
        """
        try:
            async with asyncio.timeout(self.connect_timeout):
                raw = await (self._connect_fn() if self._connect_fn is not None
                             else self._connect())
        except TimeoutError as exc:
            raise ConnectError(
                f"{self.describe()}: no connection within connect_timeout="
                f"{self.connect_timeout:g} s; check that the server is up and reachable, or "
                "raise connect_timeout") from exc
        except BaseException as exc:
            self.secrets.scrub_exception(exc)
            self.forget_connection_of(exc)
            raise
        if self.autocommit is not None:
            try:
                await self.set_autocommit(raw, self.autocommit)
            except BaseException:
                self.abort(raw)  # a connection nobody holds yet: never leak it
                raise
        return raw

    async def _connect(self) -> Any:
        raise NotImplementedError(f"{self.name}: pass connect= to the pool")

    async def close(self, raw: Any, timeout: float | None = None) -> bool:
        """Close a connection within ``timeout`` (default ``close_timeout``) seconds; never
        raises a driver error, never hangs.

        True when it closed cleanly; False when the time ran out or the close failed and the
        connection was aborted instead (:meth:`abort`). Cancelling the caller aborts the
        connection, then re-raises ``CancelledError``.
        """
        limit = self.close_timeout if timeout is None else timeout
        task = asyncio.ensure_future(self._close(raw))
        try:
            done, _ = await asyncio.wait({task}, timeout=limit)
        except asyncio.CancelledError:
            self._abort_and_keep(raw, task)
            raise
        if not done:
            logger.warning("%s: closing a connection took over %g s (close_timeout): aborted "
                           "it instead", self.describe(), limit)
            self._abort_and_keep(raw, task)
            return False
        if task.cancelled() or task.exception() is not None:
            # A dead connection often fails to close; it is gone anyway.
            self.abort(raw)
            return False
        return True

    def _abort_and_keep(self, raw: Any, task: asyncio.Task[Any]) -> None:
        self.abort(raw)
        if not task.done():
            self._keep(task)

    def _keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a task of the adapter's own (a close finishing late) until it ends, and
        retrieve its outcome: no "Task was destroyed but it is pending", no "exception was
        never retrieved"."""
        self._lingering.add(task)
        task.add_done_callback(_consume_and_forget(self._lingering))

    async def _close(self, raw: Any) -> None:
        """The driver's clean close (a goodbye to the server; may wait)."""
        await raw.close()

    def abort(self, raw: Any) -> None:
        """Close the connection now, without a round trip or an ``await`` (terminate the
        socket); never raises. What :meth:`close` falls back to."""

    async def dispose(self) -> None:
        """Release what the adapter itself holds (its control connection), and wait up to
        ``close_timeout`` for closes that outlived their time limit to end (aiosqlite's
        worker finishing an interrupted statement); once, when the pool closes, before its
        event loop ends. Subclasses extend it (``await super().dispose()``)."""
        if self._lingering:
            await asyncio.wait(set(self._lingering), timeout=self.close_timeout)

    # ---------------------------------------------------------------- transactions (I/O)
    async def commit(self, raw: Any) -> None:
        await raw.commit()

    async def rollback(self, raw: Any) -> None:
        await raw.rollback()

    async def set_autocommit(self, raw: Any, on: bool) -> None:
        raise NotImplementedError(f"{self.name}: no autocommit setting")

    def get_autocommit(self, raw: Any) -> bool | None:
        """The autocommit mode from the driver's local state; None when it keeps none."""
        return None

    # ---------------------------------------------------------------- checks and cancel
    async def ping(self, raw: Any, timeout: float) -> None:
        """A cheap round trip that raises if the connection is dead or slower than
        ``timeout`` seconds (a connection that failed its ping is discarded)."""
        raise NotImplementedError(f"{self.name}: no ping")

    async def cancel(self, raw: Any, session_id: Any = None) -> bool | None:
        """Stop the statement running on ``raw`` now, on the server (called from another
        task than the one awaiting it). ``session_id`` defaults to :meth:`session_id`.

        True: it was interrupted; None: a cancel was delivered, its effect unknown (the
        statement's own error tells); False: nothing was running, nothing was sent. Raises
        when the cancel could not be delivered (the statement runs on).
        """
        raise NotImplementedError(f"{self.name}: no cancel")

    async def recover_from_cancel(self, raw: Any, timeout: float) -> bool:
        """After the await of a statement on ``raw`` was cancelled: make sure the statement
        is stopped on the server and the connection idle again, within ``timeout`` seconds.
        True when ``raw`` may be lent again; False when it must be discarded."""
        return not self.is_broken(raw)

    def cancel_bound(self) -> float:
        """The longest one :meth:`cancel` can take, in seconds (a control connection's
        connect and retry included): how long a statement's deadline waits for the cancel to
        be delivered before it cancels the statement's await instead."""
        return self.cancel_timeout

    #: True when a cancel arriving just after the statement returned still poisons the rows
    #: it left to fetch, and the connection's next statements while that result is open
    #: (sqlite3: interrupt() stays in force while a statement has rows pending)
    cancel_poisons_pending_rows = False

    def cancel_stats(self) -> dict[str, int]:
        """Counters of the adapter's cancel mechanism (its control connection)."""
        return {}

    # ---------------------------------------------------------------- cursors
    #: whether the driver's connection has DB-API cursors (``cursor()``, ``execute``, the
    #: fetches); False for asyncpg, whose own API (``fetch``, ``fetchrow``, ...) the pool
    #: keeps on its proxy instead
    dbapi = True

    async def open_cursor(self, raw: Any, *args: Any, **kwargs: Any) -> Any:
        """A new driver cursor of ``raw`` (``raw.cursor(*args, **kwargs)``): aiomysql's and
        aiosqlite's ``cursor()`` are awaited (aiosqlite's runs in its worker thread)."""
        cursor = raw.cursor(*args, **kwargs)
        if inspect.isawaitable(cursor):
            cursor = await cursor
        return cursor

    def statement_text(self, method: str, args: tuple[Any, ...]) -> str:
        """The SQL a call of the connection's ``method`` with ``args`` runs, for statistics
        and fingerprints: its first argument's text (asyncpg's adapter knows its copies)."""
        return self.query_text(args[0] if args else "", None)

    def result_rows(self, method: str, result: Any) -> int:
        """The rows a call of the connection's ``method`` touched or returned, read from its
        ``result``, for a driver whose statements run on no cursor (asyncpg's adapter); -1
        when unknown (DB-API drivers: the cursor's ``rowcount`` says)."""
        return -1

    async def close_cursor(self, cursor: Any) -> None:
        """Close a driver cursor (psycopg's, aiomysql's and aiosqlite's ``close()`` are
        coroutines: a server-side cursor's CLOSE, the rest of an unbuffered result, the
        worker thread's queue)."""
        closing = cursor.close()
        if inspect.isawaitable(closing):
            await closing


def _consume_and_forget(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            with contextlib.suppress(BaseException):
                task.exception()  # retrieved: no "exception was never retrieved" warning
    return done
