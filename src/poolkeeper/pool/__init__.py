"""The thread shell: the pool, its checkout proxies and the work it runs on its own threads.

- :mod:`.sync`: :class:`Pool`, composing the I/O-free core (``core/``), a driver adapter
  (``drivers/``) and the statement hooks (``hooks/``), waiting on locks;
- :mod:`.proxies`: the checkout-scoped connection and cursor proxies;
- :mod:`.delegate`: the per-driver-class proxy subclasses that expose a driver's own API;
- :mod:`.worker`: the pool's worker threads (opening, closing, housekeeping);
- :mod:`.holders`: who holds which connection, and the diagnosis of a timeout.
"""

from __future__ import annotations

from ..core.slot import CloseReason
from .sync import Pool

__all__ = ["CloseReason", "Pool"]
