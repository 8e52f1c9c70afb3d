"""Adaptive fetch size: fetch each statement's rows in round trips sized to what it returns.

Druid's PreparedStatement cache held 20 to 50 statements per connection, each pinning row
buffers of ``row size x prefetch``; one fix carries over: size each statement's fetch to the
rows it really returns (``min(max_seen + 1, configured)``; the +1 lets a server-side cursor
see the end of the result in the same round trip). The statistics hook asks and teaches it
(for the driver cursors that stream: ``Driver.streaming_cursor_types``).
"""

from __future__ import annotations

import sys
import threading

from ..errors import ConfigError
from ..sql.lru import LRU

__all__ = ["AdaptiveFetchSize"]


class AdaptiveFetchSize:
    """Per fingerprint, the most rows one execution returned; fetch ``min(max + 1, configured)``.

    Bounded like a statement cache (``max_entries``, ``max_bytes`` of fingerprint text plus
    an entry overhead); a fingerprint never seen, or evicted, gets ``configured``.

    Example::

        fetch = AdaptiveFetchSize(configured=1000)
        fetch.observe("SELECT * FROM orders WHERE id = ?", 1)
        fetch.fetch_size("SELECT * FROM orders WHERE id = ?")   # 2
    """

    #: estimated bytes per entry besides the fingerprint string (OrderedDict node, tuple, int)
    ENTRY_OVERHEAD_BYTES = 160

    def __init__(self, configured: int, max_entries: int = 5_000,
                 max_bytes: int = 1 << 20) -> None:
        if isinstance(configured, bool) or not isinstance(configured, int) or configured < 1:
            raise ConfigError(f"fetch_size={configured!r} must be a whole number >= 1")
        self.configured = configured
        self._seen: LRU[str, int] = LRU(max_entries, max_bytes)
        self._lock = threading.Lock()
        self.adapted = 0  #: answers smaller than ``configured``

    def fetch_size(self, fingerprint: str) -> int:
        """How many rows to fetch per round trip for this statement (counts an access)."""
        seen = self._seen.get(fingerprint)
        if seen is None or seen + 1 >= self.configured:
            return self.configured
        with self._lock:
            self.adapted += 1
        return seen + 1

    def current(self, fingerprint: str) -> int:
        """What :meth:`fetch_size` would answer, without counting an access (for displays)."""
        seen = self._seen.peek(fingerprint)
        return self.configured if seen is None else min(seen + 1, self.configured)

    def observe(self, fingerprint: str, rows: int) -> None:
        """Learn that one execution of ``fingerprint`` returned ``rows`` rows."""
        if rows < 0:
            return
        seen = self._seen.peek(fingerprint)
        if seen is not None and rows <= seen:
            return
        with self._lock:  # two threads raising the same maximum: the larger one stays
            seen = self._seen.peek(fingerprint)
            if seen is None or rows > seen:
                self._seen.put(fingerprint, rows,
                               sys.getsizeof(fingerprint) + self.ENTRY_OVERHEAD_BYTES)

    @property
    def nbytes(self) -> int:
        return self._seen.nbytes

    @property
    def budget_bytes(self) -> int:
        return self._seen.budget_bytes

    def stats(self) -> dict[str, int]:
        out = self._seen.stats()
        out["configured"] = self.configured
        out["adapted"] = self.adapted
        return out
