"""Statement hooks: statistics, statement cache, query timeouts, fetch size.

Each sees a statement through an explicit context, before and after it runs
(:mod:`.context` draws the protocol), so the thread shell and an asyncio shell use the same
hook objects. Hooks know no driver: what they need of one they ask the driver adapter in the
context.

* :mod:`.context`: :class:`StatementContext`, the protocol, :func:`chain` / :func:`chain_async`
* :mod:`.stats`: :class:`StatsHook`, feeding the SQL statistics registry
* :mod:`.stmtcache`: :class:`StatementCacheHook`, bounding each connection's statement cache
* :mod:`.timeouts`: :class:`TimeoutHook`, server-side cancels; :class:`statement_timeout`
* :mod:`.fetchsize`: :class:`AdaptiveFetchSize`
"""

from __future__ import annotations

from .context import Hook, StatementContext, chain, chain_async
from .fetchsize import AdaptiveFetchSize
from .stats import StatsHook
from .stmtcache import StatementCacheHook
from .timeouts import TimeoutHook, statement_timeout

__all__ = [
    "AdaptiveFetchSize",
    "Hook",
    "StatementCacheHook",
    "StatementContext",
    "StatsHook",
    "TimeoutHook",
    "chain",
    "chain_async",
    "statement_timeout",
]
