"""The statement-cache hook: bounds each connection's statement cache by count *and* bytes.

Druid's PreparedStatement cache held 20 to 50 statements per connection, each pinning row
buffers of ``row size x prefetch``; with 30 connections that reached a gigabyte. The fix that
carries over: bound the cache by bytes, not only by count.

The hook knows no driver. The driver adapter decides the policy
(``Driver.statement_cache_policy``: psycopg's prepared statements capped with
``prepared_max`` and a per-statement size cap; sqlite3's ``cached_statements`` sized from both
bounds; PyMySQL: nothing to cache) and makes one mirror per connection
(``Driver.statement_cache_mirror``, see ``drivers/postgres_stmtcache.py`` and
``drivers/sqlite_stmtcache.py``) that governs and counts what the driver holds. The hook keeps
each connection's mirror in the statement context's per-connection memo, calls it before and
after every statement, and adds the mirrors' counters up for ``pool.stats()`` (counters of
closed connections are kept in the totals). For a driver with nothing to govern it stays out
of the statement path (``per_statement`` False) and only reports the policy.
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..core.stmtpolicy import StatementCacheMirror, StatementCachePolicy
from .context import StatementContext

__all__ = ["StatementCacheHook"]

_COUNTERS = ("hits", "misses", "evictions", "discarded", "deallocated", "bypassed")


class _Strong:
    """A strong reference with weakref.ref's call interface (for unweakrefable handles)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __call__(self) -> Any:
        return self.obj


class _ConnState:
    __slots__ = ("mirror", "ref")

    def __init__(self, mirror: StatementCacheMirror, ref: Callable[[], Any]) -> None:
        self.mirror = mirror
        self.ref = ref


class StatementCacheHook:
    """Statement hook governing the driver's statement cache, with counters.

    ``driver``: the pool's adapter; ``policy``: from ``driver.statement_cache_policy(size,
    bytes)`` (:meth:`from_config` reads the pool's options).

    Example::

        hook = StatementCacheHook.from_config(pool.config, pool.driver)
        pool.add_hook(hook)
        ...
        hook.stats()["stmt_cache_hits"]
    """

    def __init__(self, driver: Any, policy: StatementCachePolicy) -> None:
        self.driver = driver
        self.policy = policy
        #: whether the hook has work per statement (False: the pool leaves it out of the
        #: statement path; its stats() still report the policy)
        self.per_statement = bool(driver.governs_statements(policy))
        self._states: dict[int, _ConnState] = {}
        self._lock = threading.Lock()
        # Keys of connections that died. A weakref callback can fire during garbage
        # collection inside any code, even with self._lock held, so it only appends here
        # (deque.append takes no lock of ours) and the next lookup or stats() folds them.
        self._dead: collections.deque[int] = collections.deque()
        self._retired = dict.fromkeys(_COUNTERS, 0)

    @classmethod
    def from_config(cls, config: Any, driver: Any) -> StatementCacheHook:
        """A hook for the pool's ``statement_cache_size`` / ``statement_cache_bytes``."""
        return cls(driver, driver.statement_cache_policy(config.statement_cache_size,
                                                         config.statement_cache_bytes))

    # ------------------------------------------------------------------ per statement
    def before(self, ctx: StatementContext) -> Any:
        mirror = ctx.memo.get(self)
        if mirror is None:
            mirror = ctx.memo[self] = self._mirror(ctx.connection)
        return mirror.before(ctx.connection, ctx.cursor, ctx.query, ctx.many)

    def after(self, ctx: StatementContext, token: Any, result: Any,
              error: BaseException | None) -> None:
        ctx.memo[self].after(token, ctx.connection, ctx.cursor, error)

    # ------------------------------------------------------------------ connections
    def _mirror(self, conn: Any) -> StatementCacheMirror:
        """The mirror of ``conn``, made (and the policy applied) on its first statement."""
        key = id(conn)
        state = self._states.get(key)
        if state is not None and state.ref() is conn:
            return state.mirror
        self._reap()
        mirror: StatementCacheMirror = self.driver.statement_cache_mirror(self.policy, conn)
        dead = self._dead

        def gone(_ref: weakref.ref[Any], key: int = key) -> None:
            dead.append(key)

        try:
            ref: Callable[[], Any] = weakref.ref(conn, gone)
        except TypeError:  # sqlite3.Connection: held until forget(), which the pool calls
            ref = _Strong(conn)                # when it closes the connection
        with self._lock:
            old = self._states.get(key)
            if old is not None:  # a dead connection's id, reused before it was reaped
                self._fold(old)
            self._states[key] = _ConnState(mirror, ref)
        return mirror

    def _reap(self) -> None:
        dead = self._dead
        while dead:
            key = dead.popleft()
            with self._lock:
                state = self._states.get(key)
                if state is not None and state.ref() is None:
                    del self._states[key]
                    self._fold(state)

    def _fold(self, state: _ConnState) -> None:
        """Keep a gone connection's counters in the totals (lock held)."""
        counts = state.mirror.stats()
        for name in _COUNTERS:
            self._retired[name] += counts.get(name, 0)

    def forget(self, conn: Any) -> None:
        """Drop a connection's mirror now (call when the pool closes the connection)."""
        with self._lock:
            state = self._states.get(id(conn))
            if state is not None and state.ref() is conn:
                del self._states[id(conn)]
                self._fold(state)

    def connection_stats(self, conn: Any) -> dict[str, Any] | None:
        """One connection's counters, or None if this hook has not seen it."""
        state = self._states.get(id(conn))
        if state is None or state.ref() is not conn:
            return None
        state.mirror.settle(conn)
        return dict(state.mirror.stats())

    # ------------------------------------------------------------------ reading
    def stats(self, reset: bool = False) -> dict[str, Any]:
        """Flat ``stmt_cache_*`` counters over every connection (for ``pool.stats()``).

        Counters are cumulative (``reset`` is accepted for the hook protocol and ignored: they
        describe the connections' caches, which a stats reset does not empty).
        """
        self._reap()
        with self._lock:
            states = list(self._states.values())
            totals = dict(self._retired)
        size = nbytes = fullest = 0
        for state in states:
            mirror = state.mirror
            mirror.settle(state.ref())
            counts = mirror.stats()
            size += counts["size"]
            nbytes += counts["bytes"]
            fullest = max(fullest, counts["bytes"])
            for name in _COUNTERS:
                totals[name] += counts.get(name, 0)
        p = self.policy
        return {
            "stmt_cache_supported": int(p.supported),
            "stmt_cache_max_statements": p.max_statements,
            # The budget is per connection: the sum of the caches is compared with the sum
            # of their budgets, and the fullest connection with its own (issue #14 item 6:
            # 4 connections at 43 % each read 172 % of one connection's budget).
            "stmt_cache_budget_bytes": p.max_bytes * max(1, len(states)),
            "stmt_cache_statements": size,
            "stmt_cache_bytes": nbytes,
            "stmt_cache_conn_budget_bytes": p.max_bytes,
            "stmt_cache_conn_bytes": fullest,
            "stmt_cache_hits": totals["hits"],
            "stmt_cache_misses": totals["misses"],
            "stmt_cache_accesses": totals["hits"] + totals["misses"],
            "stmt_cache_evictions": totals["evictions"],
            "stmt_cache_discarded": totals["discarded"],
            # psycopg: prepared statements it closed on the server (part of the evictions)
            "stmt_cache_deallocated": totals["deallocated"],
            "stmt_cache_bypassed": totals["bypassed"],
        }

    def describe(self) -> dict[str, Any]:
        """The policy and the totals, for the console and ``sql_stats()``."""
        out = self.policy.as_dict()
        out.update(self.stats())
        return out
