"""The one control connection an asyncio adapter keeps to cancel statements on the server.

MariaDB/MySQL can stop a statement only with ``KILL QUERY`` sent on *another* connection;
asyncpg offers no public cancel of a statement another task awaits, so its adapter sends
``pg_cancel_backend(pid)`` the same way. :class:`AsyncControl` is that other connection: opened
on the first cancel (never one per cancel), at most one, one cancel at a time, each bounded
by ``timeout``; reopened once when it went stale; after failed opens, refused at once until
the backoff (:class:`~poolkeeper.drivers.cancel.Backoff`, shared with the sync
``MysqlControl``) lets the next attempt through; closed by :meth:`AsyncControl.close` (the
adapter's ``dispose()``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import ConnectError
from .cancel import Backoff, ControlCounters, lost_connection

__all__ = ["AsyncControl"]


class AsyncControl(ControlCounters):
    """``open()`` opens a connection to the same server; ``kill(conn, session_id)`` stops what
    that session runs (answering as ``AsyncDriver.cancel`` does); ``close(conn)`` closes it
    and never raises or hangs."""

    def __init__(self, what: str, *, open: Callable[[], Awaitable[Any]],
                 kill: Callable[[Any, int], Awaitable[bool | None]],
                 close: Callable[[Any], Awaitable[Any]], timeout: float = 5.0,
                 connect_timeout: float = 10.0, backoff_min: float = 0.1,
                 backoff_max: float = 10.0) -> None:
        self.what = what
        self._open = open
        self._kill = kill
        self._close = close
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        #: the longest one cancel() can take: connect + one stale-connection retry + kills
        self.max_duration_s = 2 * connect_timeout + 3 * timeout
        self._backoff = Backoff(what, backoff_min, backoff_max)
        self._lock: asyncio.Lock | None = None  # made on first use, in the running loop
        self._conn: Any = None
        self._closed = False

    async def cancel(self, session_id: int) -> bool | None:
        """Stop what the session ``session_id`` runs (see the module docstring)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._closed:
                raise ConnectError(f"{self.what} is closed (pool closing)")
            fresh = self._conn is None
            conn = await self._control()
            try:
                return await self._counted_kill(conn, session_id)
            except Exception as exc:
                if fresh or not (lost_connection(exc) or isinstance(exc, TimeoutError)):
                    raise
            # The kept connection went stale (server restart, wait_timeout): one retry on a
            # new connection, then give up until the backoff allows another attempt.
            await self._drop()
            return await self._counted_kill(await self._control(), session_id)

    async def _counted_kill(self, conn: Any, session_id: int) -> bool | None:
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self._kill(conn, session_id)
        except TimeoutError:
            await self._drop()  # mid-round-trip: the connection is in doubt
            raise
        if answer is False:
            self.missed += 1
        else:
            self.kills += 1
        return answer

    async def _control(self) -> Any:
        if self._conn is not None:
            return self._conn
        self._backoff.check()
        try:
            async with asyncio.timeout(self.connect_timeout):
                conn = await self._open()
        except Exception as exc:
            self.connect_failures += 1
            raise self._backoff.failed(exc) from exc
        self.connects += 1
        self._backoff.succeeded()
        self._conn = conn
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._close(conn)

    async def close(self) -> None:
        """Close the control connection; later cancels raise :class:`ConnectError`."""
        self._closed = True
        await self._drop()
