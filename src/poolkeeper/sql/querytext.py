"""The SQL text of a query object, and how much of it a connection remembers.

Shared by the statistics hook and the drivers' statement-cache mirrors: both remember, per
physical connection, the last few texts they saw, so a statement run again skips work.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MEMO_MAX_CHARS", "MEMO_MAX_TEXTS", "query_text", "remember", "text_bytes"]

#: Longest statement text remembered per connection: the memo keeps the text alive while the
#: connection lives, so a 10 MB batch statement is never kept.
MEMO_MAX_CHARS = 1024
#: Statement texts remembered per connection, the oldest forgotten first: enough for the
#: statements a unit of work repeats (at most 8 x 1 KiB of text per connection).
MEMO_MAX_TEXTS = 8


def query_text(query: Any) -> str:
    """The SQL text of a query: ``str`` or ``bytes``; any other object is named by its type
    (a driver's own query objects are rendered by its adapter, ``Driver.query_text``). Never
    ``repr()``, which could show literal values."""
    if isinstance(query, str):
        return query
    if isinstance(query, bytes | bytearray | memoryview):
        return bytes(query).decode("utf-8", "replace")
    return f"<{type(query).__name__} query>"


def text_bytes(text: str) -> int:
    """The UTF-8 size of ``text`` (its length when ASCII: no copy)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "replace"))


def remember(memo: dict[Any, Any], query: Any, value: Any) -> None:
    """Keep ``query -> value`` in a connection's memo of recent texts (``str`` of at most
    MEMO_MAX_CHARS; at most MEMO_MAX_TEXTS, the oldest forgotten first)."""
    if type(query) is not str or len(query) > MEMO_MAX_CHARS:
        return
    if len(memo) >= MEMO_MAX_TEXTS and query not in memo:
        memo.pop(next(iter(memo)))
    memo[query] = value
