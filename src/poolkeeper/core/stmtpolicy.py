"""What a statement cache is allowed to hold, and the shape of a driver's mirror of it.

A driver adapter (``drivers/``) decides the policy for its driver and makes one mirror per
connection; the statement-cache hook (``hooks/stmtcache.py``) applies them without knowing the
driver. Data and protocols only: no I/O, no driver.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from ..errors import ConfigError

__all__ = ["StatementCacheMirror", "StatementCachePolicy", "check_cache_sizes"]


@dataclass(frozen=True, slots=True)
class StatementCachePolicy:
    """How one driver's statement cache is governed, and what it can and cannot do."""

    driver: str
    supported: bool
    #: "psycopg prepared statements" | "sqlite3 cached_statements" | "none"
    mechanism: str
    max_statements: int
    max_bytes: int
    #: statements longer than this are never cached / prepared (0: nothing is)
    max_statement_bytes: int
    prepare_threshold: int | None
    #: "count and bytes" | "count" | "none"
    bounded_by: str
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_cache_sizes(statement_cache_size: int, statement_cache_bytes: int) -> None:
    """Refuse sizes no policy can use (a ``ConfigError`` naming the option)."""
    for name, value in (("statement_cache_size", statement_cache_size),
                        ("statement_cache_bytes", statement_cache_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name}={value!r} must be a whole number >= 0")


class StatementCacheMirror(Protocol):
    """One connection's statement cache as its driver keeps it, replayed for the counters.

    Made by the driver adapter (``Driver.statement_cache_mirror``), one per physical
    connection, used by one statement at a time (a connection runs one statement at a time).
    ``before`` runs before the driver call and returns a token for ``after``; nothing may
    assume the driver call runs synchronously between them (the asyncio shell awaits it).
    """

    @property
    def nbytes(self) -> int: ...

    def __len__(self) -> int: ...

    def before(self, raw: Any, cursor: Any, query: Any, many: bool) -> Any: ...

    def after(self, token: Any, raw: Any, cursor: Any, error: BaseException | None) -> None: ...

    def settle(self, raw: Any) -> None:
        """Catch up with what the driver did since the last statement (for the counters)."""

    def stats(self) -> dict[str, int]:
        """At least: size, bytes, hits, misses, evictions, discarded, deallocated, bypassed."""
        ...
