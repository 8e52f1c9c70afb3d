"""sqlite3's statement cache, sized from both bounds and mirrored per connection.

The standard library keeps its own LRU of compiled statements per connection
(``cached_statements``) keyed by the SQL text, with no byte bound and no counters, and it caches
statements of any size. :func:`sqlite_cached_statements` sizes it as
``min(statement_cache_size, statement_cache_bytes // 4 KiB)`` so statements of typical size fit
the byte budget; :class:`SqliteMirror` mirrors its texts with their sizes and, past the byte
budget, pushes the oldest entries out of sqlite3's LRU with tiny statements of poolkeeper's own
until the mirror holds at most half the budget (issue #14 item 2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.stmtpolicy import StatementCachePolicy, check_cache_sizes
from ..sql.lru import LRU
from ..sql.querytext import text_bytes

__all__ = ["SQLITE_ENTRY_BYTES", "SQLITE_STATEMENT_BYTES", "SqliteMirror",
           "sqlite_cached_statements", "sqlite_policy"]

#: assumed memory of one cached sqlite3 statement (compiled program + key), to turn the byte
#: budget into a count
SQLITE_STATEMENT_BYTES = 4096
#: what the mirror counts per entry besides twice its text (the key and SQLite's compiled
#: copy): the statement objects and the LRU's node
SQLITE_ENTRY_BYTES = 512


def sqlite_cached_statements(statement_cache_size: int, statement_cache_bytes: int) -> int:
    """The ``cached_statements`` argument for ``sqlite3.connect`` from the pool's options.

    ``min(statement_cache_size, statement_cache_bytes // SQLITE_STATEMENT_BYTES)``.
    """
    return max(0, min(statement_cache_size, statement_cache_bytes // SQLITE_STATEMENT_BYTES))


def sqlite_policy(statement_cache_size: int, statement_cache_bytes: int) -> StatementCachePolicy:
    """The policy for sqlite3 from the pool's options."""
    check_cache_sizes(statement_cache_size, statement_cache_bytes)
    nbytes = statement_cache_bytes
    count = sqlite_cached_statements(statement_cache_size, nbytes)
    on = count > 0
    return StatementCachePolicy(
        "sqlite", True, "sqlite3 cached_statements", count, nbytes if on else 0,
        0, None, "count and bytes" if on else "none",
        (f"sqlite3 caches up to {count} compiled statements per connection; poolkeeper "
         f"mirrors their texts and, past {nbytes:,} bytes, pushes the oldest out of "
         "sqlite3's LRU with tiny statements of its own") if on
        else "sqlite3's statement cache is off")


class SqliteMirror:
    """sqlite3's LRU of one connection (keyed by text, ``cached_statements`` entries, a hit
    moves to the end, a miss inserts and drops the oldest), with each text's bytes.

    ``push(raw, texts)`` runs statements on the raw connection outside the hooks (the
    adapter's ``push_statements``): how entries are pushed out of sqlite3's LRU. It runs in
    ``after``, on the statement's own connection, once the statement returned.
    """

    __slots__ = ("cache", "fillers", "flushed", "last", "memo_hits", "policy", "push")

    def __init__(self, policy: StatementCachePolicy,
                 push: Callable[[Any, list[str]], None]) -> None:
        self.policy = policy
        self.push = push
        self.cache: LRU[int, bool] = LRU(max(policy.max_statements, 0))
        #: the text run last: still the newest entry of sqlite3's LRU, a hit that moves nothing
        self.last: Any = None
        self.memo_hits = 0
        #: filler statements run, and the entries they pushed out for the byte bound
        self.fillers = 0
        self.flushed = 0

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes

    def __len__(self) -> int:
        return len(self.cache)

    def before(self, raw: Any, cursor: Any, query: Any, many: bool) -> Any:
        if query is self.last:
            self.memo_hits += 1
            return None
        self.last = query
        key = hash(query)
        cache = self.cache
        if cache.get(key) is None:  # a miss (counted): sqlite3 compiles and caches it
            text = query if type(query) is str else str(query)
            # A statement that fails to compile is not cached by sqlite3, one that fails
            # while running is: the mirror keeps it either way (it may over-count).
            cache.put(key, True, SQLITE_ENTRY_BYTES + 2 * text_bytes(text))
        return None

    def after(self, token: Any, raw: Any, cursor: Any, error: BaseException | None) -> None:
        if self.cache.nbytes > self.policy.max_bytes:
            self.last = None  # the text may be pushed out now
            self._shrink(raw, self.policy.max_bytes // 2)

    def settle(self, raw: Any) -> None:
        """Nothing happens to sqlite3's cache between statements."""

    def _shrink(self, raw: Any, low: int) -> None:
        """Run fresh filler statements until the mirror holds at most ``low`` bytes (at most
        ``max_statements`` of them: by then every older entry is out)."""
        cache = self.cache
        texts: list[str] = []
        while cache.nbytes > low and len(texts) < self.policy.max_statements:
            self.fillers += 1
            text = f"SELECT {self.fillers} -- poolkeeper: statement cache bound"
            before = cache.evictions
            cache.put(hash(text), True, SQLITE_ENTRY_BYTES + 2 * len(text))
            self.flushed += cache.evictions - before
            texts.append(text)
        self.push(raw, texts)

    def stats(self) -> dict[str, int]:
        out = self.cache.stats()
        out["hits"] += self.memo_hits
        out["accesses"] += self.memo_hits
        out["deallocated"] = 0
        out["bypassed"] = 0
        return out
