"""Run one statement hook the way the pool does, on fake or raw driver cursors (tests only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from poolkeeper.drivers.base import Driver
from poolkeeper.hooks.context import StatementContext, chain

#: (connection scope, driver cursor, query, params, many) -> result: the driver call, faked
Inner = Callable[[Any, Any, Any, Any, bool], Any]


class Conn:
    """A pooled connection as hooks see it: a scope key and its per-connection memo."""

    def __init__(self) -> None:
        self.memo: dict[Any, Any] = {}
        self.session_id = None


def run_hook(hook: Any, inner: Inner, driver: Any = None) -> Callable[..., Any]:
    """``run(conn, cursor, query, params, many)``: one statement through ``hook``.

    ``conn`` is a :class:`Conn` (its memo lives across statements, as a pool's connection's
    does) or None (a fresh memo per statement: nothing remembered). ``cursor.connection`` is
    the driver connection when the cursor has one.
    """
    adapter = driver if driver is not None else Driver({})

    def call(ctx: StatementContext) -> Any:
        return inner(ctx.scope, ctx.cursor, ctx.query, ctx.params, ctx.many)

    chained = chain([hook], call)

    def run(conn: Conn | None, cursor: Any, query: Any, params: Any, many: bool) -> Any:
        memo = conn.memo if conn is not None else {}
        ctx = StatementContext(adapter, getattr(cursor, "connection", None), cursor, query,
                               params, many, memo, conn)
        return chained(ctx)

    return run


def execute(scope: Any, cursor: Any, query: Any, params: Any, many: bool) -> Any:
    """The real driver call on a raw DB-API cursor."""
    return cursor.executemany(query, params) if many else cursor.execute(query, params)
