"""The hook protocol: a statement seen through an explicit context, before and after it runs.

A hook is any object with two methods::

    before(ctx) -> token             # before the driver call
    after(ctx, token, result, error) # after it, on success (error None) and on error

``ctx`` is a :class:`StatementContext`, made once per statement by the shell (the proxy): it
carries everything a hook may need (the driver adapter, the raw connection and cursor, the
query, its parameters, ``many`` for ``executemany``, a per-physical-connection ``memo`` dict
where a hook keeps what it remembers of that connection under its own key, and ``scope``,
the connection proxy of the checkout, an opaque key for timeouts). A hook reads nothing else
of a shell, a proxy or a slot.

Order: the hooks' ``before`` run from the outermost (installed last) to the innermost, then the
driver call, then their ``after`` in reverse order, each with the token its own ``before``
returned. ``error`` is the ``BaseException`` the driver call (or an inner hook) raised, and
``result`` then None. An ``after`` that raises replaces the outcome: the hooks outside it see
its exception as the error (the timeout hook turns a cancelled statement into
``QueryTimeout`` this way), and the caller gets it. A ``before`` that raises stops the
statement: the driver is not called, the hooks whose ``before`` ran see the error in their
``after``.

Nothing in a hook assumes the driver call happens synchronously between ``before`` and
``after``: the thread shell runs ``before; driver call; after`` (:func:`chain`), an asyncio
shell ``before; await driver call; after`` (:func:`chain_async`), with the same hook objects.
A connection runs one statement at a time, so a hook's per-connection memo needs no lock.

A hook may set ``per_statement = False`` (the statement-cache hook for a driver with nothing
to govern): the shell then leaves it out of the statement path; it still reports its
``stats()``.

Example, a hook counting statements by error class::

    class Errors:
        def __init__(self) -> None:
            self.seen: collections.Counter[str] = collections.Counter()

        def before(self, ctx: StatementContext) -> None:
            return None

        def after(self, ctx, token, result, error) -> None:
            if error is not None:
                self.seen[type(error).__name__] += 1

    pool.add_hook(Errors())
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

__all__ = ["Hook", "StatementContext", "chain", "chain_async", "driver_call", "driver_call_async"]


class StatementContext:
    """One statement as hooks see it (made by the shell, once per statement).

    ``discard``: set by a hook that judged the connection unusable (a cancel may still be in
    flight on it); the shell then retires the connection when it comes back.
    """

    __slots__ = ("connection", "cursor", "discard", "driver", "many", "memo", "params", "query",
                 "scope", "session_id")

    def __init__(self, driver: Any, connection: Any, cursor: Any, query: Any, params: Any,
                 many: bool, memo: dict[Any, Any], scope: Any, session_id: Any = None) -> None:
        #: the driver adapter (``poolkeeper.drivers.Driver``): what hooks ask of the driver
        self.driver = driver
        #: the driver's connection and cursor
        self.connection = connection
        self.cursor = cursor
        self.query = query
        #: the parameters; for ``executemany`` (``many``) the sequence of parameter sets
        self.params = params
        self.many = many
        #: per physical connection, kept while it lives: hooks store under their own key
        self.memo = memo
        #: the checkout (connection proxy): a key to match, never to read
        self.scope = scope
        #: the server's id of the session (backend pid, thread id), when known
        self.session_id = session_id
        self.discard = False

    def result_rows(self, result: Any) -> int:
        """The rows a statement without a driver cursor touched or returned, from its
        ``result``; -1 when unknown (a shell whose statements run on no cursor says more)."""
        return -1


class Hook(Protocol):
    """What :meth:`poolkeeper.Pool.add_hook` accepts (see the module docstring)."""

    def before(self, ctx: StatementContext) -> Any: ...

    def after(self, ctx: StatementContext, token: Any, result: Any,
              error: BaseException | None) -> None: ...


Call = Callable[[StatementContext], Any]


def chain(hooks: Sequence[Hook], call: Call) -> Call:
    """``call`` (the driver call) inside ``hooks``, outermost first, for a thread shell."""
    run = call
    for hook in reversed(hooks):
        run = _layer(hook, run)
    return run


def _layer(hook: Hook, inner: Call) -> Call:
    before = hook.before
    after = hook.after

    def run(ctx: StatementContext) -> Any:
        token = before(ctx)
        try:
            result = inner(ctx)
        except BaseException as exc:
            after(ctx, token, None, exc)  # raising here replaces exc (chained to it)
            raise
        after(ctx, token, result, None)
        return result

    return run


AsyncCall = Callable[[StatementContext], Awaitable[Any]]


def chain_async(hooks: Sequence[Hook], call: AsyncCall) -> AsyncCall:
    """The same for an asyncio shell: ``before; await call(ctx); after``, same hooks."""
    run = call
    for hook in reversed(hooks):
        run = _layer_async(hook, run)
    return run


def _layer_async(hook: Hook, inner: AsyncCall) -> AsyncCall:
    before = hook.before
    after = hook.after

    async def run(ctx: StatementContext) -> Any:
        token = before(ctx)
        try:
            result = await inner(ctx)
        except BaseException as exc:
            after(ctx, token, None, exc)
            raise
        after(ctx, token, result, None)
        return result

    return run


async def driver_call_async(ctx: StatementContext) -> Any:
    """The statement itself, awaited on the driver's cursor (an asyncio shell's innermost
    call, for a DB-API-like driver: psycopg's AsyncCursor, aiomysql's, aiosqlite's)."""
    cursor = ctx.cursor
    if ctx.many:
        return await cursor.executemany(ctx.query, ctx.params)
    if ctx.params is None:
        return await cursor.execute(ctx.query)
    return await cursor.execute(ctx.query, ctx.params)


def driver_call(ctx: StatementContext) -> Any:
    """The statement itself, on the driver's cursor (the innermost call of a thread shell)."""
    cursor = ctx.cursor
    if ctx.many:
        return cursor.executemany(ctx.query, ctx.params)
    if ctx.params is None:
        return cursor.execute(ctx.query)
    return cursor.execute(ctx.query, ctx.params)
