"""Checkout-scoped connection and cursor proxies (DB-API 2.0, transparent).

A :class:`ConnectionProxy` lives for one borrow. When it goes back to the pool it turns inert:
any later call raises :class:`~poolkeeper.errors.ConnectionReturned` naming where it was
borrowed, instead of silently running on a connection that now belongs to someone else.
Cursors opened through it are closed on return. Anything the proxy does not define is looked
up on the driver's connection, so driver-specific features (psycopg's ``copy()``, PyMySQL's
``thread_id()``) stay reachable.

Statement execution goes through the pool's hook chain when one is installed (timeouts,
statistics, the resource monitor); with no hook it calls the driver directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .core.slot import Frame, Slot
from .errors import ConnectionReclaimed, ConnectionReturned

if TYPE_CHECKING:
    from .pool import Pool

__all__ = ["ConnectionProxy", "CursorProxy", "Execute", "format_site"]

#: the signature hooks wrap: (cursor proxy, driver cursor, query, params, many) -> driver result
Execute = Callable[["CursorProxy", Any, Any, Any, bool], Any]

# Prune closed cursors from a checkout's list once it holds this many, so a long checkout
# that opens a cursor per statement keeps a bounded list.
_CURSOR_PRUNE_AT = 64


def format_site(site: Frame | None) -> str:
    """``file:line in function`` for a call site, or ``unknown``."""
    if site is None:
        return "unknown"
    return f"{site[0]}:{site[1]} in {site[2]}"


class ConnectionProxy:
    """The connection a caller holds for one borrow.

    Use it as a context manager (commit on clean exit, rollback on exception, then return),
    or call :meth:`close` / ``pool.putconn(conn)`` to give it back.
    """

    __slots__ = ("__weakref__", "_autocommit_was", "_cursors", "_pool", "_raw", "_reclaimed",
                 "_site", "_slot")

    def __init__(self, pool: Pool, slot: Slot) -> None:
        self._pool = pool
        self._slot: Slot | None = slot
        self._raw: Any = slot.raw
        self._cursors: list[CursorProxy] | None = None
        self._autocommit_was: bool | None = None
        self._site = slot.borrow_site
        self._reclaimed = False

    # ------------------------------------------------------------------ inertness
    def _returned(self) -> ConnectionReturned:
        where = format_site(self._site)
        if self._reclaimed:
            return ConnectionReclaimed(
                f"pool {self._pool.name!r}: this connection (borrowed at {where}) was reclaimed "
                f"as abandoned after abandoned_timeout={self._pool.config.abandoned_timeout:g} s; "
                "borrow a new one, and return connections sooner"
            )
        return ConnectionReturned(
            f"pool {self._pool.name!r}: this connection (borrowed at {where}) has been returned "
            "to the pool; borrow a new one instead of keeping a reference"
        )

    @property
    def raw(self) -> Any:
        """The driver's own connection, valid only until this proxy is returned."""
        raw = self._raw
        if raw is None:
            raise self._returned()
        return raw

    @property
    def slot(self) -> Slot:
        """The physical connection's record (id, session id, created time, uses)."""
        slot = self._slot
        if slot is None:
            raise self._returned()
        return slot

    @property
    def pool(self) -> Pool:
        return self._pool

    @property
    def closed(self) -> bool:
        """True once the proxy went back to the pool."""
        return self._raw is None

    # ------------------------------------------------------------------ DB-API
    def cursor(self, *args: Any, **kwargs: Any) -> CursorProxy:
        raw = self._raw
        if raw is None:
            raise self._returned()
        cur = CursorProxy(self, raw.cursor(*args, **kwargs))
        cursors = self._cursors
        if cursors is None:
            self._cursors = [cur]
        else:
            cursors.append(cur)
            if len(cursors) >= _CURSOR_PRUNE_AT:
                self._cursors = [c for c in cursors if c._raw is not None]
        return cur

    def execute(self, query: Any, params: Any = None) -> Any:
        """Open a cursor, execute, return the cursor (sqlite3 / psycopg style)."""
        cur = self.cursor()
        cur.execute(query, params)
        return cur

    def executemany(self, query: Any, seq_of_params: Any) -> Any:
        cur = self.cursor()
        cur.executemany(query, seq_of_params)
        return cur

    def commit(self) -> None:
        raw = self._raw
        if raw is None:
            raise self._returned()
        try:
            raw.commit()
        except BaseException as exc:
            self._failed(exc)
            raise

    def rollback(self) -> None:
        raw = self._raw
        if raw is None:
            raise self._returned()
        try:
            raw.rollback()
        except BaseException as exc:
            self._failed(exc)
            raise

    def close(self) -> None:
        """Return the connection to the pool (the proxy, not the connection, is closed)."""
        if self._slot is not None:
            self._pool._give_back(self, None)

    @property
    def autocommit(self) -> bool:
        return self._pool.driver.get_autocommit(self.raw)

    @autocommit.setter
    def autocommit(self, on: bool) -> None:
        raw = self.raw
        if self._autocommit_was is None:
            self._autocommit_was = self.autocommit  # restored when the connection goes back
        self._pool.driver.set_autocommit(raw, on)

    def __enter__(self) -> ConnectionProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._slot is not None:
            self._pool._give_back(self, exc_type is None)

    def __getattr__(self, name: str) -> Any:
        raw = self._raw
        if raw is None:
            raise self._returned()
        return getattr(raw, name)

    def __del__(self) -> None:
        if self._slot is not None:
            self._pool._orphaned(self)

    def __repr__(self) -> str:
        state = "returned" if self._slot is None else f"slot {self._slot.id}"
        return f"<poolkeeper.ConnectionProxy {self._pool.name!r} {state}>"

    # ------------------------------------------------------------------ internals
    def _failed(self, exc: BaseException) -> None:
        slot = self._slot
        if slot is not None and self._pool.driver.is_broken(slot.raw, exc):
            slot.broken = True

    def _detach(self) -> tuple[Slot | None, Any]:
        """Turn inert; close the cursors left open. Returns the slot and driver connection."""
        slot, raw = self._slot, self._raw
        self._slot = None
        self._raw = None
        cursors = self._cursors
        if cursors is not None:
            self._cursors = None
            for cur in cursors:
                cur._drop()
        return slot, raw


class CursorProxy:
    """A cursor of a checked-out connection; closed when the connection goes back."""

    __slots__ = ("_conn", "_pool", "_raw", "_slot")

    def __init__(self, conn: ConnectionProxy, raw: Any) -> None:
        self._conn = conn
        self._pool = conn._pool
        self._slot: Slot = conn._slot  # type: ignore[assignment]
        self._raw: Any = raw

    def _gone(self) -> ConnectionReturned:
        if self._conn._raw is None:
            return self._conn._returned()
        return ConnectionReturned("this cursor is closed")

    @property
    def raw(self) -> Any:
        """The driver's cursor, valid only until this cursor or its connection is closed."""
        raw = self._raw
        if raw is None:
            raise self._gone()
        return raw

    @property
    def connection(self) -> ConnectionProxy:
        return self._conn

    def execute(self, query: Any, params: Any = None) -> Any:
        raw = self._raw
        if raw is None:
            raise self._gone()
        slot = self._slot
        slot.sql = query
        slot.executing = True
        try:
            hook = self._pool._execute
            if hook is not None:
                result = hook(self, raw, query, params, False)
            elif params is None:
                result = raw.execute(query)
            else:
                result = raw.execute(query, params)
        except BaseException as exc:
            self._conn._failed(exc)
            raise
        finally:
            slot.executing = False
        # sqlite3 and psycopg return the cursor (for chaining); PyMySQL returns a row count.
        return self if result is raw else result

    def executemany(self, query: Any, seq_of_params: Any) -> Any:
        raw = self._raw
        if raw is None:
            raise self._gone()
        slot = self._slot
        slot.sql = query
        slot.executing = True
        try:
            hook = self._pool._execute
            if hook is not None:
                result = hook(self, raw, query, seq_of_params, True)
            else:
                result = raw.executemany(query, seq_of_params)
        except BaseException as exc:
            self._conn._failed(exc)
            raise
        finally:
            slot.executing = False
        return self if result is raw else result

    def fetchone(self) -> Any:
        raw = self._raw
        if raw is None:
            raise self._gone()
        return raw.fetchone()

    def fetchmany(self, size: int | None = None) -> list[Any]:
        raw = self._raw
        if raw is None:
            raise self._gone()
        return list(raw.fetchmany() if size is None else raw.fetchmany(size))

    def fetchall(self) -> list[Any]:
        raw = self._raw
        if raw is None:
            raise self._gone()
        return list(raw.fetchall())

    def __iter__(self) -> Iterator[Any]:
        raw = self._raw
        if raw is None:
            raise self._gone()
        return iter(raw)

    @property
    def description(self) -> Sequence[Any] | None:
        raw = self._raw
        if raw is None:
            raise self._gone()
        return raw.description  # type: ignore[no-any-return]

    @property
    def rowcount(self) -> int:
        raw = self._raw
        if raw is None:
            raise self._gone()
        return int(raw.rowcount)

    @property
    def closed(self) -> bool:
        return self._raw is None

    def close(self) -> None:
        raw = self._raw
        if raw is not None:
            self._raw = None
            raw.close()

    def _drop(self) -> None:
        """Close quietly on the connection's return (the driver may be dead already)."""
        raw = self._raw
        if raw is not None:
            self._raw = None
            # Closing a cursor of a dead connection may fail; it is gone anyway.
            with contextlib.suppress(Exception):
                raw.close()

    def __enter__(self) -> CursorProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        raw = self._raw
        if raw is None:
            raise self._gone()
        return getattr(raw, name)

    def __repr__(self) -> str:
        return f"<poolkeeper.CursorProxy {'closed' if self._raw is None else 'open'}>"
