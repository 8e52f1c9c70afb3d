"""What a checkout's proxies ask of the pool that lent it, as a protocol.

The proxies (:mod:`.proxies`) call back into their pool to return a checkout, to run a
statement through its hooks and to name it in errors; the pool makes the proxies. Typing the
proxies against this protocol instead of the pool class keeps the two modules from importing
each other (tests/test_architecture.py checks that no import circle exists, even one that only
``if TYPE_CHECKING`` closes), and states what a shell must offer its proxies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..config import PoolConfig
from ..drivers import Driver
from ..hooks.context import StatementContext
from ..hooks.timeouts import TimeoutHook
from ..observe.monitor import Probe

if TYPE_CHECKING:
    from ..core.slot import Checkout

__all__ = ["Lender", "RunHooks"]

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
