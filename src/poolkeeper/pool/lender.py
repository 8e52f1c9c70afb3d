"""What a checkout's proxies ask of the pool that lent it, as a protocol.

The proxies (:mod:`.proxies`) call back into their pool to return a checkout, to run a
statement through its hooks and to name it in errors; the pool makes the proxies. Typing the
proxies against this protocol instead of the pool class keeps the two modules from importing
each other (tests/test_architecture.py checks that no import circle exists, even one that only
``if TYPE_CHECKING`` closes), and states what a shell must offer its proxies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..config import PoolConfig
from ..drivers import Driver
from ..drivers.aiobase import AsyncDriver
from ..hooks.context import StatementContext
from ..hooks.timeouts import TimeoutHook
from ..observe.monitor import Probe

if TYPE_CHECKING:
    from ..core.slot import Checkout
    from .aiotxn import TransactionClock

__all__ = ["AsyncLender", "Lender", "RunHooks", "RunHooksAsync"]

#: the pool's hook chain around the driver call (hooks.context.chain): context -> result
RunHooks = Callable[[StatementContext], Any]


class Lender(Protocol):
    """The pool as its proxies see it (:class:`poolkeeper.Pool` is one)."""

    name: str
    config: PoolConfig
    driver: Driver
    monitor: Probe
    #: the statement hooks chained around the driver call (None: no hook installed)
    _execute: RunHooks | None
    #: the driver's measure of a result's memory (None: the driver has none)
    _result_bytes: Callable[[Any], int] | None
    #: the query-timeout hook, once installed
    _timeouts: TimeoutHook | None

    def stats(self) -> dict[str, Any]: ...

    def _timeout_hook(self) -> TimeoutHook:
        """The query-timeout hook, installed on first need (a per-statement timeout)."""
        ...

    def _give_back(self, proxy: Any, commit: bool | None) -> None:
        """Return ``proxy``'s checkout (commit True/False from a ``with`` exit, None else)."""
        ...

    def _give_back_after(self, proxy: Any, error: BaseException) -> None:
        """Return it from a ``with`` block raising ``error``: roll back, keep ``error``."""
        ...

    def _orphaned(self, checkout: Checkout) -> None:
        """``checkout``'s proxy was garbage-collected without being returned."""
        ...


#: the asyncio pool's hook chain around the driver's awaited call (hooks.context.chain_async)
RunHooksAsync = Callable[[StatementContext], Awaitable[Any]]


class AsyncLender(Protocol):
    """The asyncio pool as its proxies see it (:class:`poolkeeper.AsyncPool` is one).

    The same as :class:`Lender`, with the return a coroutine: the proxy's ``async with`` exit
    awaits it. A proxy calls ``_give_back`` at most once per checkout; the pool makes the
    return safe against cancellation (the reset runs in a task the pool owns, shielded, with
    its own time limit), so a proxy needs no ``shield`` of its own.
    """

    name: str
    config: PoolConfig
    driver: AsyncDriver
    #: the pool's resource monitor probe (its ``cursor_leak_s``, for a monitored cursor)
    monitor: Probe
    #: the statement hooks chained around the awaited driver call (None: no hook)
    _execute: RunHooksAsync | None
    #: transaction_timeout's clocks (None: the option is off)
    _txn_clock: TransactionClock | None

    def stats(self) -> dict[str, Any]: ...

    async def _give_back(self, proxy: Any, commit: bool | None) -> None:
        """Return ``proxy``'s checkout (commit True/False from ``async with``, None else)."""
        ...

    async def _commit_back(self, proxy: Any) -> None:
        """Return it from a clean ``async with`` exit: commit (refused past
        transaction_timeout: rolled back, QueryTimeout raised), return."""
        ...

    async def _give_back_after(self, proxy: Any, error: BaseException) -> None:
        """Return it from an ``async with`` block raising ``error``: roll back, keep it."""
        ...

    def _orphaned(self, checkout: Checkout) -> None:
        """``checkout``'s proxy was garbage-collected without being returned."""
        ...
