"""aiomysql adapter (MariaDB / MySQL, asyncio).

aiomysql is PyMySQL's protocol on asyncio streams: the same status flags in every OK packet,
the same ``pymysql.err`` classes, so transaction state, error classification and the
read-only-transaction blind spot are :class:`~poolkeeper.drivers.mysql.MysqlAdapter`'s, shared
with the sync adapter (see :mod:`poolkeeper.drivers.mysql`).

Two aiomysql facts shape this adapter:

* a statement whose await is cancelled makes aiomysql close the connection (its
  ``_close_on_cancel``); so a query timeout must not cancel the awaiting task but stop the
  statement on the server: :meth:`AiomysqlDriver.cancel` sends ``KILL QUERY`` (``KILL QUERY
  ID`` on MariaDB) over the adapter's one control connection (:class:`AsyncControl`), and the
  statement ends with error 1317 on a connection that stays usable;
* since aiomysql 0.3, ``LOAD DATA LOCAL INFILE`` needs ``local_infile=True`` passed to
  ``connect()``. The pool's connections never get it unless the user passes it (and is
  warned, as with PyMySQL); the loader asks :meth:`AiomysqlDriver.connect_for_local_files`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .aiobase import AsyncDriver
from .aiocontrol import AsyncControl
from .cancel import PROCESSLIST_QUERY, kill_missed, kill_statement
from .mysql import MysqlAdapter

__all__ = ["AiomysqlDriver"]


class AiomysqlDriver(MysqlAdapter, AsyncDriver):
    """Adapter for aiomysql."""

    driver_label = "aiomysql"

    def _setup(self) -> None:
        super()._setup()
        import aiomysql  # imported here so that `import poolkeeper` needs no driver

        self._aiomysql = aiomysql
        self.control = AsyncControl(
            "the MariaDB control connection for KILL QUERY", open=self._open_control,
            kill=_kill_query, close=self.close, timeout=self.cancel_timeout,
            connect_timeout=self.connect_timeout)

    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.params)
        # the DSN's (and PyMySQL's) "database" is aiomysql's "db"
        if "database" in kwargs:
            database = kwargs.pop("database")
            kwargs.setdefault("db", database)
        kwargs.setdefault("connect_timeout", self.connect_timeout)
        return kwargs

    async def _connect(self) -> Any:
        return await self._aiomysql.connect(**self._connect_kwargs())

    async def connect_for_local_files(self) -> Any:
        """A connection of this pool's parameters with aiomysql's ``local_infile`` on, for
        the loader's own ``LOAD DATA LOCAL INFILE``; never lent to the pool. aiomysql sends
        whatever file the server asks for on it: run only the loader's statement on it."""
        kwargs = self._connect_kwargs()
        kwargs["local_infile"] = True
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await self._aiomysql.connect(**kwargs)
        except BaseException as exc:
            self.secrets.scrub_exception(exc)
            raise

    def _is_open(self, raw: Any) -> bool:
        return not raw.closed

    async def _close(self, raw: Any) -> None:
        await raw.ensure_closed()  # COM_QUIT, then the socket

    def abort(self, raw: Any) -> None:
        with contextlib.suppress(Exception):
            raw.close()  # the transport, at once

    async def set_autocommit(self, raw: Any, on: bool) -> None:
        await raw.autocommit(on)

    async def ping(self, raw: Any, timeout: float) -> None:
        if raw.closed:
            raise self._pymysql.err.InterfaceError(0, "the connection is closed")
        try:
            async with asyncio.timeout(timeout):
                await raw.ping(reconnect=False)
        except TimeoutError:
            self.abort(raw)  # mid-packet: never lent again
            raise self._pymysql.err.OperationalError(
                2013, f"no answer to the validation ping within {timeout:g} s") from None

    async def cancel(self, raw: Any, session_id: Any = None) -> bool | None:
        if session_id is None:
            session_id = raw.thread_id()
        return await self.control.cancel(int(session_id))

    async def recover_from_cancel(self, raw: Any, timeout: float) -> bool:
        # aiomysql closes a connection whose read was cancelled, but the server runs the
        # statement on until it notices: KILL QUERY stops it. One cancelled elsewhere (a
        # write) may hold a reply nobody reads: the ping then fails and it is discarded.
        if raw.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout):
                    await self.cancel(raw)
            return False
        try:
            await self.ping(raw, timeout)
        except Exception:  # noqa: BLE001 - any failure: the connection is in doubt
            self.abort(raw)
            return False
        return True

    async def _open_control(self) -> Any:
        conn = await self.connect()
        try:
            await conn.autocommit(True)
        except BaseException:
            self.abort(conn)
            raise
        return conn

    def cancel_bound(self) -> float:
        return self.control.max_duration_s

    def cancel_stats(self) -> dict[str, int]:
        return self.control.stats()

    async def dispose(self) -> None:
        await self.control.close()
        await super().dispose()


async def _kill_query(conn: Any, session_id: int) -> bool | None:
    """Kill the statement session ``session_id`` runs, from the control connection ``conn``
    (the choice of KILL is :func:`~poolkeeper.drivers.cancel.kill_statement`'s)."""
    mariadb = "mariadb" in str(conn.get_server_info()).lower()
    async with conn.cursor() as cur:
        await cur.execute(PROCESSLIST_QUERY, (session_id,))
        kill = kill_statement(await cur.fetchone(), session_id, mariadb=mariadb)
        if kill is None:
            return False  # the session finished its statement (or is gone)
        try:
            await cur.execute(kill)
        except Exception as exc:
            if kill_missed(exc):
                return False  # finished between the two statements
            raise
    return True if mariadb else None
