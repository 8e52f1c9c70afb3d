"""Statement caches bounded by count *and* bytes, their per-driver policy, adaptive fetch size.

Druid's PreparedStatement cache held 20 to 50 statements per connection, each pinning row
buffers of ``row size x prefetch``; with 30 connections that reached a gigabyte. Two fixes
carry over: bound the cache by bytes, not only by count; and size each statement's fetch to
the rows it really returns (``min(max_seen + 1, configured)``).

:class:`StatementCache` is the generic LRU: bounded by entries and bytes, with counters (size,
bytes, hits, misses, accesses, evictions) and an ``on_evict`` callback. It knows no driver.

Per driver (decided here, applied by :class:`StatementCacheHook` and the driver adapters):

PostgreSQL / psycopg 3
    psycopg already manages server-side prepared statements per connection: it counts each
    ``(query, parameter types)`` it runs, prepares one (protocol-level Parse, no SQL
    ``PREPARE``) after ``prepare_threshold`` executions, keeps at most ``prepared_max``, closes
    the least recently used one on the server when over (the ``DEALLOCATE``), and forgets them
    all after ``ROLLBACK`` / ``DROP`` / ``DISCARD ALL``, where the server may have invalidated
    them. Re-implementing that from outside would mean driving libpq by hand and racing
    psycopg's own bookkeeping, so **psycopg is the mechanism and poolkeeper governs it**:

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
    * Counters and bytes come from a per-connection :class:`PsycopgMirror` keyed by a hash
      of the text (it does not copy the text), which replays psycopg's own steps on both of
      its maps, counted texts and prepared ones (issue #14 item 5): ``stmt_cache_bytes`` is
      the text psycopg holds, ``evictions`` the counted texts it dropped plus the prepared
      statements it deallocated (``deallocated``), ``hits`` runs of a text it still held. A
      failed transaction that ended is taken as rolled back (psycopg then forgets all; the
      PostgreSQL driver commits a failed transaction as a rollback); a healthy transaction
      rolled back by the application is not seen, so the mirror may then over-report.
    * Client-side, a prepared statement holds only its name and key; result buffers belong to
      cursors, which the pool closes when the checkout ends.

sqlite3
    The standard library keeps its own LRU of compiled statements per connection
    (``cached_statements``) keyed by the SQL text, with no byte bound and no counters, and it
    caches statements of any size. :func:`sqlite_cached_statements` sizes it as
    ``min(statement_cache_size, statement_cache_bytes // 4 KiB)`` so statements of typical size
    fit the byte budget; a giant statement still sits in it until pushed out (reported as
    ``bounded_by: "count"``).

PyMySQL
    Sends every statement as text (``COM_QUERY``): there are no server-side prepared
    statements, so there is nothing to cache or count. The policy says ``supported: False``.

Adaptive fetch size: :class:`AdaptiveFetchSize` remembers, per fingerprint, the most rows one
execution returned and answers ``min(max_seen + 1, configured)`` (the +1 lets a server-side
cursor see the end of the result in the same round trip). Bounded like the caches.
"""

from __future__ import annotations

import collections
import itertools
import re
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

from ..errors import ConfigError
from .hook import MEMO_MAX_CHARS, MEMO_MAX_TEXTS, Execute, query_text

__all__ = [
    "PSYCOPG_PREPARE_THRESHOLD",
    "SQLITE_STATEMENT_BYTES",
    "AdaptiveFetchSize",
    "PsycopgMirror",
    "StatementCache",
    "StatementCacheHook",
    "StatementCachePolicy",
    "apply_psycopg_policy",
    "sqlite_cached_statements",
    "statement_cache_policy",
]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: psycopg's own default: prepare a statement once it ran this many times on a connection
PSYCOPG_PREPARE_THRESHOLD = 5
#: assumed memory of one cached sqlite3 statement (compiled program + key), to turn the byte
#: budget into a count
SQLITE_STATEMENT_BYTES = 4096
#: what the sqlite3 mirror counts per entry besides twice its text (the key and SQLite's
#: compiled copy): the statement objects and the LRU's node
SQLITE_ENTRY_BYTES = 512


class StatementCache(Generic[K, V]):
    """An LRU bounded by ``max_entries`` and ``max_bytes``, with counters and ``on_evict``.

    ``put(key, value, nbytes)``: the caller says what an entry costs; an entry larger than the
    whole budget is refused (``rejected``). ``on_evict(key, value)`` runs for every entry the
    bounds push out, after the cache's lock is released (it may do I/O); not for
    :meth:`discard`. Thread-safe.

    Example::

        cache: StatementCache[str, int] = StatementCache(max_entries=2, max_bytes=100)
        cache.put("a", 1, 10); cache.put("b", 2, 10); cache.put("c", 3, 10)
        cache.get("a")      # None: evicted
        cache.evictions     # 1
    """

    def __init__(self, max_entries: int, max_bytes: int,
                 on_evict: Callable[[K, V], None] | None = None) -> None:
        for name, value in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name}={value!r} must be a whole number >= 0")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.on_evict = on_evict
        self._map: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._nbytes = 0
        # Hits are counted without the lock: next() on itertools.count is one C call, atomic
        # under the GIL, so the count stays exact on a lock-free hit path.
        self._hits = itertools.count()
        self.misses = 0
        self.evictions = 0
        self.rejected = 0
        self.discarded = 0

    @property
    def hits(self) -> int:
        """Lookups that found their key."""
        return _count_value(self._hits)

    @property
    def accesses(self) -> int:
        """Lookups so far (hits + misses)."""
        return self.hits + self.misses

    @property
    def nbytes(self) -> int:
        """Bytes of the entries held now, as declared to :meth:`put`."""
        return self._nbytes

    @property
    def budget_bytes(self) -> int:
        return self.max_bytes

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def get(self, key: K) -> V | None:
        """The value for ``key`` (now the most recently used), or None; counts a hit or miss."""
        # Lock-free when the key is there: get and move_to_end are single C calls, atomic
        # under the GIL for keys hashed in C (str, int, bytes). An eviction racing between
        # them (KeyError, ignored) orders this hit just before it. Sizes, bounds and the
        # other counters change only under the lock.
        m = self._map
        item = m.get(key)
        if item is not None:
            try:  # noqa: SIM105 - contextlib.suppress costs a `with` per hit
                m.move_to_end(key)
            except KeyError:
                pass
            next(self._hits)
            return item[0]
        with self._lock:
            self.misses += 1
        return None

    def peek(self, key: K) -> V | None:
        """The value without counting an access or changing the order."""
        item = self._map.get(key)
        return None if item is None else item[0]

    def put(self, key: K, value: V, nbytes: int) -> bool:
        """Insert or replace; evict least recently used entries over a bound.

        Returns False (and counts ``rejected``) when the entry alone exceeds a bound.
        """
        if nbytes > self.max_bytes or self.max_entries == 0:
            with self._lock:
                self.rejected += 1
            return False
        evicted: list[tuple[K, V]] = []
        with self._lock:
            old = self._map.pop(key, None)
            if old is not None:
                self._nbytes -= old[1]
            self._map[key] = (value, nbytes)
            self._nbytes += nbytes
            while self._nbytes > self.max_bytes or len(self._map) > self.max_entries:
                k, (v, size) = self._map.popitem(last=False)
                self._nbytes -= size
                self.evictions += 1
                evicted.append((k, v))
        if self.on_evict is not None:
            for k, v in evicted:
                self.on_evict(k, v)
        return True

    def discard(self, key: K) -> bool:
        """Drop ``key`` without calling ``on_evict`` (e.g. its statement raised)."""
        with self._lock:
            item = self._map.pop(key, None)
            if item is None:
                return False
            self._nbytes -= item[1]
            self.discarded += 1
            return True

    def clear(self) -> None:
        """Drop every entry, calling ``on_evict`` for each (counters are kept)."""
        with self._lock:
            items = list(self._map.items())
            self._map.clear()
            self._nbytes = 0
        if self.on_evict is not None:
            for k, (v, _) in items:
                self.on_evict(k, v)

    def stats(self) -> dict[str, int]:
        """size, bytes, budget_bytes, hits, misses, accesses, evictions, rejected, discarded."""
        with self._lock:
            return {
                "size": len(self._map),
                "bytes": self._nbytes,
                "budget_bytes": self.max_bytes,
                "hits": (hits := self.hits),
                "misses": self.misses,
                "accesses": hits + self.misses,
                "evictions": self.evictions,
                "rejected": self.rejected,
                "discarded": self.discarded,
            }


def _count_value(counter: itertools.count[int]) -> int:
    """The next value of an ``itertools.count`` without consuming it (its repr is ``count(N)``;
    __reduce__ would warn on Python 3.12+)."""
    return int(repr(counter)[6:-1])


# ----------------------------------------------------------------------------- policy
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


def statement_cache_policy(driver: str, statement_cache_size: int,
                           statement_cache_bytes: int, *,
                           prepare_threshold: int = PSYCOPG_PREPARE_THRESHOLD
                           ) -> StatementCachePolicy:
    """The policy for ``driver`` ("postgresql", "sqlite", "mysql") from the pool's options."""
    size, nbytes = statement_cache_size, statement_cache_bytes
    for name, value in (("statement_cache_size", size), ("statement_cache_bytes", nbytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name}={value!r} must be a whole number >= 0")
    if driver == "postgresql":
        on = size > 0 and nbytes > 0
        cap = nbytes // (2 * size + 1) if on else 0
        return StatementCachePolicy(
            driver, True, "psycopg prepared statements", size if on else 0, nbytes if on else 0,
            cap, prepare_threshold if on else None, "count and bytes" if on else "none",
            (f"psycopg prepares a statement after {prepare_threshold} executions and keeps at "
             f"most {size} per connection; statements over {cap:,} bytes are never prepared "
             "or remembered") if on else "server-side prepared statements are off")
    if driver == "sqlite":
        count = sqlite_cached_statements(size, nbytes)
        on = count > 0
        return StatementCachePolicy(
            driver, True, "sqlite3 cached_statements", count, nbytes if on else 0,
            0, None, "count and bytes" if on else "none",
            (f"sqlite3 caches up to {count} compiled statements per connection; poolkeeper "
             f"mirrors their texts and, past {nbytes:,} bytes, pushes the oldest out of "
             "sqlite3's LRU with tiny statements of its own") if on
            else "sqlite3's statement cache is off")
    if driver == "mysql":
        return StatementCachePolicy(
            driver, False, "none", 0, 0, 0, None, "none",
            "PyMySQL sends every statement as text (COM_QUERY) and has no server-side "
            "prepared statements: nothing is cached")
    raise ConfigError(f"driver={driver!r} has no statement cache policy: "
                      "use 'postgresql', 'sqlite' or 'mysql'")


def sqlite_cached_statements(statement_cache_size: int, statement_cache_bytes: int) -> int:
    """The ``cached_statements`` argument for ``sqlite3.connect`` from the pool's options.

    ``min(statement_cache_size, statement_cache_bytes // SQLITE_STATEMENT_BYTES)``.
    """
    return max(0, min(statement_cache_size, statement_cache_bytes // SQLITE_STATEMENT_BYTES))


def apply_psycopg_policy(conn: Any, policy: StatementCachePolicy) -> None:
    """Set a psycopg connection's ``prepared_max`` and ``prepare_threshold`` from the policy."""
    if policy.max_statements > 0:
        conn.prepared_max = policy.max_statements
        conn.prepare_threshold = policy.prepare_threshold
    else:
        conn.prepare_threshold = None


#: libpq's PQtransactionStatus values the psycopg mirror tells apart
_PQ_IDLE = 0
_PQ_INERROR = 3
#: command tags after which psycopg forgets every statement (PrepareManager._should_discard)
_PSYCOPG_CLEARS = re.compile(r"^(?:DROP|ALTER|ROLLBACK|DISCARD ALL|DEALLOCATE ALL)\b").match


class PsycopgMirror:
    """psycopg 3's ``PrepareManager`` replayed on hashes of the texts, with their sizes.

    psycopg keeps two maps per connection, each bounded by ``prepared_max``: ``counts`` (texts
    seen fewer than ``prepare_threshold`` times, with their count) and ``names`` (texts it
    prepared). Both hold the full text, so both are what the connection costs (issue #14 item
    5: with a cache of 4, texts A1-A4 six times then B1-B4 once, psycopg holds 8 texts; a
    single LRU of 4 reported half the bytes and 4 evictions psycopg never made). The steps
    below follow psycopg 3.3's ``get`` / ``maybe_add_to_cache`` / ``validate`` / ``_rotate``
    so the figures equal psycopg's maps: a new text is counted (or prepared at once by
    ``executemany``); a counted one is prepared when run with its count at the threshold
    (without a rotation: ``names`` may exceed ``prepared_max`` until the next new text);
    only a new text rotates, dropping the oldest counted text and deallocating the oldest
    prepared one, one of each at most; a new text that fails, or whose tag is ``ROLLBACK`` /
    ``DROP`` / ``ALTER`` / ``DISCARD ALL`` while something is prepared, is dropped or clears
    everything. Not mirrored: psycopg keys by text *and* parameter types, the mirror by text;
    a transaction committed or rolled back by the application without an error is assumed
    committed (psycopg clears its maps on a rollback): the mirror may then over-report.
    One connection is used by one thread at a time, so no lock.
    """

    __slots__ = ("counts", "deallocated", "discarded", "evictions", "hits", "misses",
                 "names", "nbytes")

    def __init__(self) -> None:
        #: hash of a counted text -> [times seen, bytes]
        self.counts: OrderedDict[int, list[int]] = OrderedDict()
        #: hash of a prepared text -> bytes
        self.names: OrderedDict[int, int] = OrderedDict()
        self.nbytes = 0
        self.hits = 0        #: runs of a text psycopg still held
        self.misses = 0      #: runs of a text it did not
        self.evictions = 0   #: counted texts dropped by the bound, plus deallocations
        self.deallocated = 0  #: prepared statements psycopg closed on the server
        self.discarded = 0   #: new texts that failed (psycopg drops them)

    def __len__(self) -> int:
        return len(self.counts) + len(self.names)

    def ran(self, key: int, size: int, conn: Any, prepare: bool | None, cursor: Any) -> None:
        """A run of the text on psycopg connection ``conn`` and cursor ``cursor`` that
        succeeded (their public settings and command tag are read only when needed)."""
        threshold = conn.prepare_threshold
        if threshold is None:
            return  # psycopg's get() says NO and maybe_add_to_cache() returns at once
        new, should = self._add(key, size, threshold, prepare)
        if not new:
            return
        prepared_max = conn.prepared_max
        if (self.names or should) and (status := cursor.statusmessage) \
                and _PSYCOPG_CLEARS(status):
            self.clear()
            return
        counts, names = self.counts, self.names
        if len(counts) > prepared_max:
            self.nbytes -= counts.popitem(last=False)[1][1]
            self.evictions += 1
        if len(names) > prepared_max:
            self.nbytes -= names.popitem(last=False)[1]
            self.evictions += 1
            self.deallocated += 1

    def failed(self, key: int, size: int, threshold: int | None, prepare: bool | None,
               sqlstate: str | None) -> None:
        """A run that raised. Without a SQLSTATE it failed before psycopg looked at its
        maps (a parameter that does not adapt) or the connection broke (the pool closes it);
        a Parse refused (class 42) happens before psycopg records a statement it was about to
        prepare; otherwise psycopg recorded the run, and drops the text if it was new."""
        if threshold is None or sqlstate is None:
            return
        if key not in self.names:
            item = self.counts.get(key)
            if item is None:
                self.misses += 1
                self.discarded += 1
                return
            if (prepare or item[0] >= threshold) and sqlstate.startswith("42"):
                return
        self._add(key, size, threshold, prepare)

    def _add(self, key: int, size: int, threshold: int, prepare: bool | None
             ) -> tuple[bool, bool]:
        """get() then maybe_add_to_cache(): (the text is new, psycopg prepared it now)."""
        names = self.names
        if key in names:
            names.move_to_end(key)
            self.hits += 1
            return False, False
        counts = self.counts
        item = counts.get(key)
        if item is not None:
            self.hits += 1
            if prepare or item[0] >= threshold:
                del counts[key]
                names[key] = item[1]
                return False, True
            item[0] += 1
            counts.move_to_end(key)
            return False, False
        self.misses += 1
        if prepare:
            names[key] = size
        else:
            counts[key] = [1, size]
        self.nbytes += size
        return True, bool(prepare)

    def clear(self) -> None:
        """psycopg forgot every statement (a rollback, ``DISCARD ALL``, a ``DROP``)."""
        self.counts.clear()
        self.names.clear()
        self.nbytes = 0

    def stats(self) -> dict[str, int]:
        """size, bytes, counted, prepared, hits, misses, accesses, evictions, deallocated,
        discarded."""
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
        }


class _Strong:
    """A strong reference with weakref.ref's call interface (for unweakrefable handles)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __call__(self) -> Any:
        return self.obj


class _ConnState:
    __slots__ = ("bypassed", "cache", "fillers", "flushed", "in_error", "ref")

    def __init__(self, cache: Any, ref: Callable[[], Any]) -> None:
        #: a PsycopgMirror (PostgreSQL) or a StatementCache (sqlite3)
        self.cache = cache
        self.ref = ref
        self.bypassed = 0
        #: psycopg: the last statement left the transaction failed, so the next rollback
        #: clears psycopg's maps
        self.in_error = False
        #: sqlite3: filler statements run, and the entries pushed out for the byte bound
        self.fillers = 0
        self.flushed = 0


def _settle(state: _ConnState, conn: Any) -> None:
    """psycopg: a failed transaction since ended was rolled back, which cleared psycopg's
    maps (the PostgreSQL driver commits a failed transaction as a rollback): clear the
    mirror now rather than at the connection's next statement. Reads libpq's status only."""
    if not state.in_error or conn is None:
        return
    try:
        idle = conn.pgconn.transaction_status == _PQ_IDLE
    except Exception:  # noqa: BLE001 - a closed connection: its mirror goes with it
        return
    if idle:
        state.in_error = False
        state.cache.clear()


class StatementCacheHook:
    """Execute hook governing the driver's statement cache (psycopg), with counters.

    For PostgreSQL it applies the policy to each connection on first use, runs oversize
    statements with preparation off, and keeps a per-connection mirror for the counters (see
    the module docstring). For sqlite3 and PyMySQL ``wrap`` returns the inner function
    unchanged: their caches are sized at connect (sqlite3) or do not exist (PyMySQL), and
    :meth:`stats` says so.
    """

    def __init__(self, policy: StatementCachePolicy,
                 push: Callable[[Any, list[str]], None] | None = None) -> None:
        self.policy = policy
        #: runs statements on a raw connection without the hooks (the driver's
        #: ``push_statements``): how the sqlite3 mirror pushes entries out of its LRU
        self.push = push
        self._states: dict[int, _ConnState] = {}
        self._lock = threading.Lock()
        # Keys of connections that died. A weakref callback can fire during garbage
        # collection inside any code, even with self._lock held, so it only appends here
        # (atomic) and the next _state() / stats() call folds the counters.
        self._dead: collections.deque[int] = collections.deque()
        self._retired = {"hits": 0, "misses": 0, "evictions": 0, "bypassed": 0, "discarded": 0,
                         "deallocated": 0}

    @classmethod
    def from_config(cls, config: Any, driver: str,
                    push: Callable[[Any, list[str]], None] | None = None
                    ) -> StatementCacheHook:
        """A hook for the pool's ``statement_cache_size`` / ``statement_cache_bytes``."""
        return cls(statement_cache_policy(driver, config.statement_cache_size,
                                          config.statement_cache_bytes), push)

    def wrap(self, inner: Execute) -> Execute:
        policy = self.policy
        if policy.mechanism == "sqlite3 cached_statements" and self.push is not None \
                and policy.max_statements > 0:
            return self._wrap_sqlite(inner)
        if policy.mechanism != "psycopg prepared statements":
            return inner
        cap = policy.max_statement_bytes
        state_of = self._state
        states = self._states  # never rebound, only mutated

        def execute(cursor: Any, raw: Any, query: Any, params: Any, many: bool) -> Any:
            # The texts run recently on this connection (Slot.stmt_memo: [this hook's states,
            # {text: (state, key, size)}]): one run again needs neither the connection's
            # state lookup nor the text's size and hash.
            try:
                slot = cursor._slot
                memo = slot.stmt_memo
            except AttributeError:  # not one of the pool's cursors (a test, a custom chain)
                slot = memo = None
            known = None
            if memo is not None and memo[0] is states:
                try:  # noqa: SIM105 - contextlib.suppress costs a `with` per statement
                    known = memo[1][query]
                except (KeyError, TypeError):  # not remembered; or unhashable (sql.Composed)
                    pass
            conn = raw.connection
            if known is not None:
                state, key, size = known
            else:
                # _state()'s fast path inlined (a call less per statement); a miss or a reused
                # id goes through _state(), which checks again under its rules.
                state = states.get(id(conn))
                if state is None or state.ref() is not conn:
                    state = state_of(conn)
                text = query if type(query) is str else query_text(query, raw)
                size = len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
                if size > cap or policy.max_statements == 0:
                    state.bypassed += 1
                    saved = conn.prepare_threshold
                    conn.prepare_threshold = None  # psycopg neither prepares nor remembers it
                    try:
                        return inner(cursor, raw, query, params, many)
                    finally:
                        conn.prepare_threshold = saved
                key = hash(text)
                if slot is not None and type(query) is str and len(query) <= MEMO_MAX_CHARS:
                    # Remembered when at most MEMO_MAX_CHARS long, as the statistics hook
                    # does (8 texts per connection).
                    if memo is None or memo[0] is not states:
                        slot.stmt_memo = memo = [states, {}]
                    texts = memo[1]
                    if len(texts) >= MEMO_MAX_TEXTS and query not in texts:
                        texts.pop(next(iter(texts), None), None)  # the oldest (None: raced)
                    texts[query] = (state, key, size)
            mirror = state.cache
            pgconn = conn.pgconn
            if state.in_error and pgconn.transaction_status == _PQ_IDLE:
                mirror.clear()  # psycopg cleared its maps when the failed transaction ended
            # psycopg's execute() passes prepare=None, executemany() prepare=True
            prepare = True if many else None
            try:
                result = inner(cursor, raw, query, params, many)
            except BaseException as exc:
                state.in_error = pgconn.transaction_status == _PQ_INERROR
                mirror.failed(key, size, conn.prepare_threshold, prepare,
                              getattr(exc, "sqlstate", None))
                raise
            state.in_error = False
            mirror.ran(key, size, conn, prepare, raw)
            return result

        return execute

    def _wrap_sqlite(self, inner: Execute) -> Execute:
        """sqlite3: mirror its LRU (keyed by text, ``cached_statements`` entries, a hit moves
        to the end, a miss inserts and drops the oldest) with each text's bytes; past the
        byte budget, push the oldest entries out with tiny statements of poolkeeper's own
        until the mirror holds at most half the budget (issue #14 item 2)."""
        policy = self.policy
        budget = policy.max_bytes
        low = budget // 2
        push = self.push
        assert push is not None
        state_of = self._state
        states = self._states

        def execute(cursor: Any, raw: Any, query: Any, params: Any, many: bool) -> Any:
            # The text run last on this slot (Slot.stmt_memo: [this hook's states, the
            # connection's state, that text]) is still the newest entry of sqlite3's LRU:
            # a hit that moves nothing.
            try:
                slot = cursor._slot
                memo = slot.stmt_memo
            except AttributeError:  # not one of the pool's cursors
                slot = memo = None
            if memo is not None and memo[2] is query and memo[0] is states:
                next(memo[1].cache._hits)
                return inner(cursor, raw, query, params, many)
            conn = raw.connection
            state = states.get(id(conn))
            if state is None or state.ref() is not conn:
                state = state_of(conn)
            if slot is not None:
                slot.stmt_memo = [states, state, query]
            cache = state.cache
            key = hash(query)
            m = cache._map
            if m.get(key) is not None:
                try:  # noqa: SIM105 - contextlib.suppress costs a `with` per hit
                    m.move_to_end(key)
                except KeyError:
                    pass
                next(cache._hits)
                return inner(cursor, raw, query, params, many)
            text = query if type(query) is str else str(query)
            size = len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
            # sqlite3 keeps the text (its cache key) and SQLite a compiled copy of it.
            with self._lock:
                cache.misses += 1
            cache.put(key, True, SQLITE_ENTRY_BYTES + 2 * size)
            try:
                # A statement that fails to compile is not cached by sqlite3, one that fails
                # while running is: the mirror keeps it either way (it may over-count).
                return inner(cursor, raw, query, params, many)
            finally:
                if cache.nbytes > budget:
                    if slot is not None:
                        slot.stmt_memo = None  # the text may be pushed out now
                    self._shrink(conn, state, low)

        return execute

    def _shrink(self, conn: Any, state: _ConnState, low: int) -> None:
        """Run fresh filler statements until the mirror holds at most ``low`` bytes (at most
        ``max_statements`` of them: by then every older entry is out)."""
        cache = state.cache
        texts: list[str] = []
        with self._lock:
            n = 0
            while cache.nbytes > low and n < self.policy.max_statements:
                state.fillers += 1
                text = f"SELECT {state.fillers} -- poolkeeper: statement cache bound"
                before = cache.evictions
                cache.put(hash(text), True, SQLITE_ENTRY_BYTES + 2 * len(text))
                state.flushed += cache.evictions - before
                texts.append(text)
                n += 1
        assert self.push is not None
        self.push(conn, texts)

    def _state(self, conn: Any) -> _ConnState:
        key = id(conn)
        state = self._states.get(key)
        if state is not None and state.ref() is conn:
            return state
        self._reap()
        if self.policy.mechanism == "psycopg prepared statements":
            apply_psycopg_policy(conn, self.policy)
            cache: Any = PsycopgMirror()
        else:  # sqlite3's LRU bounds by count only; the bytes are bounded by _shrink()
            cache = StatementCache(max(self.policy.max_statements, 0), 1 << 62)
        dead = self._dead

        def gone(_ref: weakref.ref[Any], key: int = key) -> None:
            dead.append(key)

        try:
            ref: Callable[[], Any] = weakref.ref(conn, gone)
        except TypeError:  # sqlite3.Connection: held until forget(), which the pool calls
            ref = _Strong(conn)                # when it closes the connection
        state = _ConnState(cache, ref)
        with self._lock:
            old = self._states.get(key)
            if old is not None:  # a dead connection's id, reused before it was reaped
                self._fold(old)
            self._states[key] = state
        return state

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
        c = state.cache
        r = self._retired
        r["hits"] += c.hits
        r["misses"] += c.misses
        r["evictions"] += c.evictions
        r["discarded"] += c.discarded
        r["deallocated"] += getattr(c, "deallocated", 0)
        r["bypassed"] += state.bypassed

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
        _settle(state, conn)
        out: dict[str, Any] = dict(state.cache.stats())
        out["bypassed"] = state.bypassed
        return out

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
            if state.in_error:
                _settle(state, state.ref())
            c = state.cache
            size += len(c)
            nbytes += c.nbytes
            fullest = max(fullest, c.nbytes)
            totals["hits"] += c.hits
            totals["misses"] += c.misses
            totals["evictions"] += c.evictions
            totals["discarded"] += c.discarded
            totals["deallocated"] += getattr(c, "deallocated", 0)
            totals["bypassed"] += state.bypassed
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


# ----------------------------------------------------------------------------- fetch size
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
        self._seen: StatementCache[str, int] = StatementCache(max_entries, max_bytes)
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
            return  # the common case, lock-free: a key's value only ever grows while held
        with self._lock:
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
