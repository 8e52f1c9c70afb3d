"""psycopg 3's prepared statements, governed and mirrored per connection (PostgreSQL).

psycopg already manages server-side prepared statements per connection: it counts each
``(query, parameter types)`` it runs, prepares one (protocol-level Parse, no SQL ``PREPARE``)
after ``prepare_threshold`` executions, keeps at most ``prepared_max``, closes the least
recently used one on the server when over (the ``DEALLOCATE``), and forgets them all after
``ROLLBACK`` / ``DROP`` / ``DISCARD ALL``, where the server may have invalidated them.
Re-implementing that from outside would mean driving libpq by hand and racing psycopg's own
bookkeeping, so **psycopg is the mechanism and poolkeeper governs it**:

* ``prepared_max = statement_cache_size`` (0 turns preparation off: ``prepare_threshold =
  None``); ``prepare_threshold`` stays psycopg's 5 ("prepare on reuse", not for one-offs).
  psycopg closes an evicted statement on the server right after the *next* statement, so
  the server may hold ``prepared_max + 1`` for the span of one statement.
* psycopg bounds only the *number* of statements, and keeps the full text of the last
  ``prepared_max`` queries it counted even when it never prepares them: with 30,000-value
  IN lists that is Druid's failure again. So a statement longer than
  ``max_statement_bytes = statement_cache_bytes // (2 * statement_cache_size + 1)`` runs
  with preparation switched off for that one call (``prepare_threshold = None``, restored
  after), which makes psycopg neither prepare nor remember it (``executemany`` included).
  psycopg's two maps hold at most ``2 * prepared_max + 1`` texts, each under that cap, so
  their text stays within ``statement_cache_bytes`` per connection by construction.
* Counters and bytes come from a per-connection :class:`PsycopgMirror` keyed by a hash of
  the text (it does not copy the text), which replays psycopg's own steps on both of its
  maps, counted texts and prepared ones (issue #14 item 5). Only public psycopg settings
  (``prepare_threshold``, ``prepared_max``, ``statusmessage``) and libpq's transaction status
  are read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..core.stmtpolicy import StatementCachePolicy, check_cache_sizes
from ..sql.lru import LRU
from ..sql.querytext import remember, text_bytes

__all__ = ["PSYCOPG_PREPARE_THRESHOLD", "PsycopgMirror", "apply_psycopg_policy",
           "psycopg_policy"]

#: psycopg's own default: prepare a statement once it ran this many times on a connection
PSYCOPG_PREPARE_THRESHOLD = 5
#: libpq's PQtransactionStatus values the mirror tells apart
_PQ_IDLE = 0
_PQ_INERROR = 3
#: command tags after which psycopg forgets every statement (PrepareManager._should_discard)
_PSYCOPG_CLEARS = re.compile(r"^(?:DROP|ALTER|ROLLBACK|DISCARD ALL|DEALLOCATE ALL)\b").match


def psycopg_policy(statement_cache_size: int, statement_cache_bytes: int, *,
                   prepare_threshold: int = PSYCOPG_PREPARE_THRESHOLD) -> StatementCachePolicy:
    """The policy for psycopg from the pool's options (see the module docstring)."""
    size, nbytes = statement_cache_size, statement_cache_bytes
    check_cache_sizes(size, nbytes)
    on = size > 0 and nbytes > 0
    cap = nbytes // (2 * size + 1) if on else 0
    return StatementCachePolicy(
        "postgresql", True, "psycopg prepared statements", size if on else 0,
        nbytes if on else 0, cap, prepare_threshold if on else None,
        "count and bytes" if on else "none",
        (f"psycopg prepares a statement after {prepare_threshold} executions and keeps at "
         f"most {size} per connection; statements over {cap:,} bytes are never prepared "
         "or remembered") if on else "server-side prepared statements are off")


def apply_psycopg_policy(conn: Any, policy: StatementCachePolicy) -> None:
    """Set a psycopg connection's ``prepared_max`` and ``prepare_threshold`` from the policy."""
    if policy.max_statements > 0:
        conn.prepared_max = policy.max_statements
        conn.prepare_threshold = policy.prepare_threshold
    else:
        conn.prepare_threshold = None


class PsycopgMirror:
    """psycopg 3's ``PrepareManager`` replayed on hashes of the texts, with their sizes.

    psycopg keeps two maps per connection, each bounded by ``prepared_max``: ``counts`` (texts
    seen fewer than ``prepare_threshold`` times, with their count) and ``names`` (texts it
    prepared). Both hold the full text, so both are what the connection costs (issue #14 item
    5). The steps below follow psycopg 3.3's ``get`` / ``maybe_add_to_cache`` / ``validate`` /
    ``_rotate`` so the figures equal psycopg's maps: a new text is counted (or prepared at once
    by ``executemany``); a counted one is prepared when run with its count at the threshold
    (without a rotation: ``names`` may exceed ``prepared_max`` until the next new text); only a
    new text rotates, dropping the oldest counted text and deallocating the oldest prepared
    one, one of each at most; a new text that fails, or whose tag is ``ROLLBACK`` / ``DROP`` /
    ``ALTER`` / ``DISCARD ALL`` while something is prepared, is dropped or clears everything.
    Not mirrored: psycopg keys by text *and* parameter types, the mirror by text; a
    transaction rolled back by the application without an error is assumed committed: the
    mirror may then over-report. A failed transaction that ended is taken as rolled back
    (the PostgreSQL adapter commits a failed transaction as a rollback).

    The maps are :class:`~poolkeeper.sql.lru.LRU` s without bounds of their own: the rotation
    is psycopg's rule, applied here with ``pop_oldest``.
    """

    __slots__ = ("bypassed", "counts", "deallocated", "discarded", "evictions", "hits",
                 "in_error", "misses", "names", "policy", "recent", "render")

    def __init__(self, policy: StatementCachePolicy, conn: Any,
                 render: Callable[[Any, Any], str]) -> None:
        apply_psycopg_policy(conn, policy)
        self.policy = policy
        #: (query, cursor) -> its text, for a query that is not a str (the adapter's)
        self.render = render
        #: hash of a counted text -> times seen (its bytes are the entry's size)
        self.counts: LRU[int, int] = LRU(None)
        #: hash of a prepared text -> True (its bytes are the entry's size)
        self.names: LRU[int, bool] = LRU(None)
        #: the texts run recently on this connection -> (hash, bytes): one run again needs
        #: neither its size nor its hash
        self.recent: dict[str, tuple[int, int]] = {}
        self.hits = 0        #: runs of a text psycopg still held
        self.misses = 0      #: runs of a text it did not
        self.evictions = 0   #: counted texts dropped by the bound, plus deallocations
        self.deallocated = 0  #: prepared statements psycopg closed on the server
        self.discarded = 0   #: new texts that failed (psycopg drops them)
        self.bypassed = 0    #: statements over the size cap, run with preparation off
        #: the last statement left the transaction failed: its end clears psycopg's maps
        self.in_error = False

    @property
    def nbytes(self) -> int:
        return self.counts.nbytes + self.names.nbytes

    def __len__(self) -> int:
        return len(self.counts) + len(self.names)

    # ------------------------------------------------------------------ per statement
    def before(self, raw: Any, cursor: Any, query: Any, many: bool) -> Any:
        try:
            known = self.recent.get(query)
        except TypeError:  # unhashable (sql.Composed)
            known = None
        if known is not None:
            key, size = known
        else:
            text = query if type(query) is str else self.render(query, cursor)
            size = text_bytes(text)
            policy = self.policy
            if size > policy.max_statement_bytes or policy.max_statements == 0:
                self.bypassed += 1
                saved = raw.prepare_threshold
                raw.prepare_threshold = None  # psycopg neither prepares nor remembers it
                return (None, saved, None)
            key = hash(text)
            remember(self.recent, query, (key, size))
        if self.in_error and raw.pgconn.transaction_status == _PQ_IDLE:
            self.in_error = False
            self.clear()  # psycopg cleared its maps when the failed transaction ended
        # psycopg's execute() passes prepare=None, executemany() prepare=True
        return (key, size, True if many else None)

    def after(self, token: Any, raw: Any, cursor: Any, error: BaseException | None) -> None:
        key, size, prepare = token
        if key is None:  # oversize: preparation was off for this statement
            raw.prepare_threshold = size
            return
        if error is not None:
            self.in_error = raw.pgconn.transaction_status == _PQ_INERROR
            self.failed(key, size, raw.prepare_threshold, prepare,
                        getattr(error, "sqlstate", None))
            return
        self.in_error = False
        # A run that succeeded (the connection's public settings and command tag are read
        # only when needed).
        threshold = raw.prepare_threshold
        if threshold is None:
            return  # psycopg's get() says NO and maybe_add_to_cache() returns at once
        new, should = self._add(key, size, threshold, prepare)
        if not new:
            return
        prepared_max = raw.prepared_max
        if (len(self.names) or should) and (status := cursor.statusmessage) \
                and _PSYCOPG_CLEARS(status):
            self.clear()
            return
        if len(self.counts) > prepared_max:
            self.counts.pop_oldest()
            self.evictions += 1
        if len(self.names) > prepared_max:
            self.names.pop_oldest()
            self.evictions += 1
            self.deallocated += 1

    def settle(self, raw: Any) -> None:
        """A failed transaction since ended was rolled back, which cleared psycopg's maps:
        clear the mirror now rather than at the connection's next statement."""
        if not self.in_error or raw is None:
            return
        try:
            idle = raw.pgconn.transaction_status == _PQ_IDLE
        except Exception:  # noqa: BLE001 - a closed connection: its mirror goes with it
            return
        if idle:
            self.in_error = False
            self.clear()

    # ------------------------------------------------------------------ psycopg's steps
    def failed(self, key: int, size: int, threshold: int | None, prepare: bool | None,
               sqlstate: str | None) -> None:
        """A run that raised. Without a SQLSTATE it failed before psycopg looked at its
        maps (a parameter that does not adapt) or the connection broke (the pool closes it);
        a Parse refused (class 42) happens before psycopg records a statement it was about to
        prepare; otherwise psycopg recorded the run, and drops the text if it was new."""
        if threshold is None or sqlstate is None:
            return
        if key not in self.names:
            seen = self.counts.peek(key)
            if seen is None:
                self.misses += 1
                self.discarded += 1
                return
            if (prepare or seen >= threshold) and sqlstate.startswith("42"):
                return
        self._add(key, size, threshold, prepare)

    def _add(self, key: int, size: int, threshold: int, prepare: bool | None
             ) -> tuple[bool, bool]:
        """get() then maybe_add_to_cache(): (the text is new, psycopg prepared it now)."""
        names, counts = self.names, self.counts
        if names.get(key) is not None:  # moves it to the newest end
            self.hits += 1
            return False, False
        seen = counts.get(key)
        if seen is not None:
            self.hits += 1
            if prepare or seen >= threshold:
                counts.pop(key)
                names.put(key, True, size)
            else:
                counts.put(key, seen + 1, size)
            return False, bool(prepare or seen >= threshold)
        self.misses += 1
        if prepare:
            names.put(key, True, size)
        else:
            counts.put(key, 1, size)
        return True, bool(prepare)

    def clear(self) -> None:
        """psycopg forgot every statement (a rollback, ``DISCARD ALL``, a ``DROP``)."""
        self.counts.clear()
        self.names.clear()

    def stats(self) -> dict[str, int]:
        """size, bytes, counted, prepared, hits, misses, accesses, evictions, deallocated,
        discarded, bypassed."""
        return {
            "size": len(self.counts) + len(self.names),
            "bytes": self.nbytes,
            "counted": len(self.counts),
            "prepared": len(self.names),
            "hits": self.hits,
            "misses": self.misses,
            "accesses": self.hits + self.misses,
            "evictions": self.evictions,
            "deallocated": self.deallocated,
            "discarded": self.discarded,
            "bypassed": self.bypassed,
        }
