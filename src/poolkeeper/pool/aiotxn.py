"""``transaction_timeout`` in the asyncio shell: a statement's deadline never goes past the end
of its transaction's time, with the thread shell's semantics and errors
(:mod:`poolkeeper.hooks.timeouts`, which keeps its clocks in the hook chain of ``Pool``).

A transaction starts with the first statement run while the driver reports none open (no
round trip: every adapter knows it locally), its clock kept per checkout proxy. Then:

* a statement's timeout is the smaller of its own and what is left of the transaction's time
  (:meth:`TransactionClock.bound`); one cut by the transaction's end raises
  :class:`~poolkeeper.errors.QueryTimeout` naming ``transaction_timeout`` and the transaction
  is rolled back (:meth:`TransactionClock.expired_statement`);
* a statement starting after the time is up is not run: the transaction is rolled back and
  QueryTimeout raised;
* a commit of a transaction past its time (``await conn.commit()``, a clean ``async with``
  exit) is refused: rolled back, QueryTimeout "it was not committed";
* a commit or rollback stops the clock (MariaDB reports a read-only transaction as none at all).

Its counter ``timeouts_transaction_num`` (the thread shell's name) is in ``pool.stats()``: the
clock is installed as a hook with no per-statement work (``per_statement = False``).
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from ..drivers.aiobase import AsyncDriver
from ..errors import QueryTimeout, as_driver_error
from .holders import first_line, safe_sql

__all__ = ["TransactionClock"]

_monotonic = time.monotonic


class TransactionClock:
    """The transaction clocks of one AsyncPool (``config.transaction_timeout`` seconds)."""

    #: a hook of the pool's for its stats() only: no work per statement in the chain
    per_statement = False

    def __init__(self, pool_name: str, driver: AsyncDriver, limit: float) -> None:
        self.name = pool_name
        self.limit = limit
        self._driver = driver
        #: when each checkout's transaction started, by its proxy (a returned proxy's clock
        #: goes with it)
        self._starts: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # stats() is read from other threads (console, metrics)
        self._expired = 0

    def bound(self, proxy: Any, raw: Any, timeout: float | None) -> tuple[float | None, bool]:
        """The statement's timeout capped by what is left of its transaction's time, and
        whether the cap is the transaction's; a remaining time of 0 or less means the
        statement must not run (the caller rolls back: :meth:`refused`)."""
        now = _monotonic()
        if not self._driver.in_transaction(raw):
            self._starts[proxy] = now
            remaining = self.limit
        else:
            started = self._starts.get(proxy)
            if started is None:
                self._starts[proxy] = started = now
            remaining = started + self.limit - now
        if timeout is None or remaining < timeout:
            return remaining, True
        return timeout, False

    def age(self, proxy: Any) -> float:
        started = self._starts.get(proxy)
        return 0.0 if started is None else _monotonic() - started

    def overdue(self, proxy: Any, raw: Any) -> float | None:
        """The age of ``proxy``'s open transaction when past the limit (None: not overdue)."""
        started = self._starts.get(proxy)
        if started is None or not self._driver.in_transaction(raw):
            return None
        age = _monotonic() - started
        return age if age > self.limit else None

    def ended(self, proxy: Any) -> None:
        """The transaction was committed or rolled back: stop its clock."""
        self._starts.pop(proxy, None)

    async def roll_back(self, proxy: Any, raw: Any) -> str:
        """Roll the expired transaction back; what happened, for the error message. A failed
        rollback marks the connection broken (discarded on return)."""
        self.ended(proxy)
        state = self._driver.in_transaction(raw)
        if state is False:
            return "no transaction was open"
        try:
            await self._driver.rollback(raw)
        except Exception as exc:  # noqa: BLE001 - any failure here means: discard
            slot = proxy._co.slot
            if slot is not None:
                slot.broken = True
            return (f"the connection will be discarded when returned: the rollback failed "
                    f"({type(exc).__name__}: {first_line(exc)})")
        return "the transaction was rolled back"

    def refused(self, query: Any, age: float, outcome: str) -> QueryTimeout:
        """The error for a statement not run, or a commit refused (``query`` None), because
        the transaction outlived the limit; ``outcome`` from :meth:`roll_back`."""
        with self._lock:
            self._expired += 1
        if query is None:
            sql, what = "", "it was not committed"
        else:
            sql = self._sql(query)
            what = f"the statement was not run: {sql}"
        return as_driver_error(QueryTimeout, self._driver.cancelled_error)(
            f"pool {self.name!r}: the transaction has been open {age:.3f} s, past "
            f"transaction_timeout={self.limit:g} s; {what}; {outcome}. Commit sooner, split "
            "the work into shorter transactions, or raise transaction_timeout",
            sql=sql, timeout_s=self.limit, elapsed_s=age)

    def cut(self, timeout: QueryTimeout, outcome: str) -> QueryTimeout:
        """The error for a statement the transaction's end cut (``timeout``: what the deadline
        raised, its cause kept): the thread shell's wording, ``transaction_timeout`` named."""
        with self._lock:
            self._expired += 1
        elapsed = timeout.elapsed_s or 0.0
        error = as_driver_error(QueryTimeout, self._driver.cancelled_error)(
            f"pool {self.name!r}: statement cancelled on the server after {elapsed:.3f} s "
            f"(the transaction reached transaction_timeout={self.limit:g} s): "
            f"{timeout.sql}; {outcome}. Commit sooner, split the work into shorter "
            "transactions, or raise transaction_timeout",
            sql=timeout.sql, timeout_s=timeout.timeout_s, elapsed_s=elapsed)
        error.__cause__ = timeout.__cause__
        return error

    def _sql(self, query: Any) -> str:
        driver = self._driver
        text = query if isinstance(query, str | bytes) else driver.query_text(query, None)
        return safe_sql(text, driver.dialect)

    def stats(self, reset: bool = False) -> dict[str, Any]:
        with self._lock:
            out = {"timeouts_transaction_num": self._expired}
            if reset:
                self._expired = 0
        return out
