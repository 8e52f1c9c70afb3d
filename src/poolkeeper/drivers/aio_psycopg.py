"""psycopg 3 asyncio adapter (PostgreSQL, ``psycopg.AsyncConnection``).

Everything answered without I/O (transaction state from libpq's ``PQtransactionStatus``,
errors, prepared-statement policy, secrets) is :class:`~poolkeeper.drivers.postgres.
PsycopgAdapter`'s, shared with the sync adapter. The ping sends an empty query through libpq
and waits for the socket in the event loop, bounded by its timeout. The cancel is psycopg's
``cancel_safe`` (a protocol cancel request; psycopg >= 3.2). When the task awaiting a
statement is cancelled, psycopg itself sends that cancel and drains the reply (up to 5 s, or
it closes the connection) before the ``CancelledError`` leaves its ``execute``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .aiobase import AsyncDriver
from .postgres import PQ_ACTIVE, PsycopgAdapter

__all__ = ["AsyncPsycopgDriver"]


class AsyncPsycopgDriver(PsycopgAdapter, AsyncDriver):
    """Adapter for psycopg 3's ``AsyncConnection``."""

    def _setup(self) -> None:
        super()._setup()
        #: server-side cursors stream their rows ``itersize`` at a time (set_fetch_size)
        self.streaming_cursor_types = (self._psycopg.AsyncServerCursor,)

    async def _connect(self) -> Any:
        conninfo, kwargs = self._conninfo_kwargs()
        return await self._psycopg.AsyncConnection.connect(conninfo, **kwargs)

    def abort(self, raw: Any) -> None:
        # libpq's PQfinish closes the socket at once (a Terminate message, no reply awaited)
        with contextlib.suppress(Exception):
            raw.pgconn.finish()

    async def commit(self, raw: Any) -> None:
        if self._ends_with_rollback(raw):
            await raw.rollback()
        else:
            await raw.commit()

    async def set_autocommit(self, raw: Any, on: bool) -> None:
        await raw.set_autocommit(on)

    def get_autocommit(self, raw: Any) -> bool | None:
        return bool(raw.autocommit)

    async def ping(self, raw: Any, timeout: float) -> None:
        pgconn = self._ping_start(raw)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    pgconn.consume_input()
                    if not pgconn.is_busy():
                        break
                    await _readable(pgconn.socket)
        except TimeoutError:
            raise self._ping_timed_out(timeout) from None
        self._ping_finish(pgconn)

    async def open_cursor(self, raw: Any, *args: Any, **kwargs: Any) -> Any:
        # psycopg's AsyncConnection.cursor() is a plain method (no I/O; a named cursor
        # declares itself on its first execute)
        return raw.cursor(*args, **kwargs)

    async def cancel(self, raw: Any, session_id: Any = None) -> bool | None:
        if raw.closed or raw.pgconn.transaction_status != PQ_ACTIVE:
            return False  # nothing in flight: a cancel would hit the next statement
        cancel_safe = getattr(raw, "cancel_safe", None)
        if cancel_safe is not None:  # psycopg >= 3.2: async, bounded
            await cancel_safe(timeout=self.cancel_timeout)
        else:  # psycopg 3.1: the blocking PQcancel, off the event loop
            await asyncio.wait_for(asyncio.to_thread(raw.cancel), self.cancel_timeout)
        return None

    async def recover_from_cancel(self, raw: Any, timeout: float) -> bool:
        # psycopg cancelled and drained the statement itself before re-raising; a connection
        # still ACTIVE is one it could not drain: cancel it on the server, and discard it.
        if not raw.closed and raw.pgconn.transaction_status == PQ_ACTIVE:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout):
                    await self.cancel(raw)
            return False
        return not self.is_broken(raw)


async def _readable(fd: int) -> None:
    """Wait until ``fd`` can be read, in the running event loop."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
