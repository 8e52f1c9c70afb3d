"""The two shells: the thread pool and the asyncio pool, their checkout proxies, and what
they share.

- :mod:`.sync`: :class:`Pool`, composing the I/O-free core (``core/``), a driver adapter
  (``drivers/``) and the statement hooks (``hooks/``), waiting on locks;
- :mod:`.aio`: :class:`AsyncPool`, the same core and hooks with an asyncio adapter, waiting
  on futures; :mod:`.aioproxies` its proxies, :mod:`.aiodeadline` their statement deadlines;
- :mod:`.base`: what both shells share (counters, ``stats()``, diagnosis, hooks, reports);
- :mod:`.lender`: what proxies ask of their pool (protocols);
- :mod:`.proxies`: the checkout-scoped connection and cursor proxies;
- :mod:`.delegate`: the per-driver-class proxy subclasses that expose a driver's own API;
- :mod:`.worker`: the pool's worker threads (opening, closing, housekeeping);
- :mod:`.holders`: who holds which connection, and the diagnosis of a timeout.
"""

from __future__ import annotations

from ..core.slot import CloseReason
from .aio import AsyncPool
from .sync import Pool

__all__ = ["AsyncPool", "CloseReason", "Pool"]
