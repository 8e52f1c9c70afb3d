"""The resource monitor: every live resource poolkeeper hands out or owns, and who took it.

A *record* is kept per live resource (checkout, cursor, physical connection, scheduler entry,
loader buffer, spill file, background thread): its id, kind, size in bytes, created time,
thread, call site (the first frames outside poolkeeper), SQL currently or last run (literals
folded, at most 1 KB) and pool name. Closing the resource removes its record; a resource
garbage-collected without being closed moves to a bounded *collected* list with the site
that created it.

**Off costs nothing.** Code that owns resources holds a :class:`Probe` (one per pool, plus
the monitor's own for resources of no pool) and calls ``probe.track(...)``. While the probe
is off, ``probe.track`` *is* a function that returns :data:`NULL_TOKEN`, whose methods do
nothing: no flag is tested on any call. ``enable()`` / ``disable()`` rebind that attribute at
runtime, globally or per pool.

**Cheap when on.** The call site is captured by walking only the frames kept (``depth``,
default 4) past poolkeeper's own frames, keeping ``(code, instruction offset)`` pairs; line
numbers (decoding ``f_lineno`` costs more than the rest of the walk), file names, function
names and folded SQL are worked out only when someone reads a view. Each kept frame costs
about 0.2 us (three frame attribute reads), so the default keeps the site and three callers,
enough to tell which code path borrowed; ``configure(depth=...)`` keeps up to 256. Sampling
(``sample_every``) records one resource in N (a pool's cursors follow their checkout). The
registry holds at most ``max_records`` records; resources beyond that are not recorded and
counted in ``dropped_full``.

**A pool's checkouts have no record of their own** while they only live and go back: the
pool already keeps, in its checkout record (``core.slot.Checkout``), when and by which
holder it was borrowed and the SQL it runs, so a monitored borrow adds only its kept frames
(``probe.borrow_site``, which also samples) as ``Checkout.mon_frames``. The views make a
monitor record of a checkout the slots of the probes' pools hold (``probe.slots``,
``slot.checkout``: a return lets go of it) when they are read, or when the checkout's proxy
is garbage-collected without being returned (to the collected list, with its site); that
record is kept on the checkout (``mon_record``), for stable ids. Checkouts take no room in
the registry (a pool's ``max_size`` bounds them) and ``tracked_total`` counts those a view or
a collection gave a record.

**Nor have its cursors**, while they only live and close: the proxy hands the monitor a
:class:`CursorWatch` per cursor (the weak reference its checkout keeps to it anyway, with the
cursor's site, two ``(code, offset)`` pairs, its creation time and deadline), and its
statements show on its checkout's record (the checkout holds the SQL). The views find the
open cursors of each live checkout in its list of them (``Checkout.cursors``, the watches)
and make a cursor's record from its watch then (kept on the watch: stable ids). The monitor
reads nothing of a proxy: what it needs comes in the watch, the checkout and the calls.

**Leaks, not idioms.** :meth:`Monitor.collected` lists the leaks, each with why
(:attr:`Resource.leak`): a tracked resource garbage-collected unclosed; a checkout whose
proxy was collected unreturned; a pool's cursor still referenced and open when its checkout
went back (the pool closes it), one collected after its checkout was dropped unreturned, and
one open past its threshold (the pool's ``leak_threshold`` when set, else ``cursor_leak_s``,
60 s: listed when a view finds it so, or when it is freed). A cursor CPython frees while its
checkout is held and before its deadline (``conn.execute("...")``, the idiom the README
teaches) is no leak: the proxy counts it (``stats()["cursors_freed_total"]``) without a call.

Example::

    from poolkeeper.observe.monitor import MONITOR

    MONITOR.enable()                       # or MONITOR.enable(pool) for one pool
    token = MONITOR.track("spill_file", size=4096)
    ...
    for r in MONITOR.live(min_age=1.0):    # resources alive for at least 1 s
        print(r.kind, r.age_s, r.site, r.sql)
    for g in MONITOR.by_site():            # count, bytes, oldest per call site
        print(g.count, g.bytes, g.oldest_s, g.site)
    token.close()
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import sys
import textwrap
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import CodeType
from typing import Any, Protocol

from ..core.runtime import gil_enabled
from ..core.slot import line_of

__all__ = [
    "KINDS",
    "LEAK_COLLECTED",
    "LEAK_CURSOR_AFTER",
    "LEAK_CURSOR_OPEN",
    "LEAK_DROPPED",
    "MONITOR",
    "NULL_TOKEN",
    "CursorWatch",
    "Frame",
    "Monitor",
    "MonitorSnapshot",
    "Probe",
    "Resource",
    "SiteGroup",
    "Token",
    "TrackFn",
    "by_site",
    "disable",
    "enable",
    "fold_sql",
    "get_monitor",
    "register_pool",
    "registered_pools",
    "track",
]

#: the kinds of resource poolkeeper tracks
KINDS = frozenset({"checkout", "cursor", "connection", "scheduler_entry", "loader_buffer",
                   "spill_file", "thread"})

#: (filename, line, function) of one frame
Frame = tuple[str, int, str]

#: at most this many characters of a statement are kept per record (folded on read)
SQL_MAX_CHARS = 1024

# Why a record is listed in collected() (Resource.leak)
#: a tracked resource garbage-collected while its record was open
LEAK_COLLECTED = "collected unclosed"
#: a pool's checkout whose proxy was garbage-collected without being returned
LEAK_DROPPED = "checkout dropped unreturned"
#: a pool's cursor still referenced and open when its checkout went back (the pool closed it)
LEAK_CURSOR_OPEN = "cursor open when its checkout ended"
#: a pool's cursor garbage-collected unclosed after its checkout was dropped unreturned
LEAK_CURSOR_AFTER = "cursor collected after its checkout ended"

_monotonic = time.monotonic
_getframe = sys._getframe
# Wall time of a record = its monotonic time + this offset: one clock read per record.
_WALL_OFFSET = time.time() - time.monotonic()

# Frames in these files are poolkeeper's own plumbing (or contextlib's, which sits between a
# `with pool.connection()` line and the pool); the call site is the first frame outside them.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_DEFAULT_SKIP: tuple[str, ...] = (_PACKAGE_DIR, contextlib.__file__)

# Rough CPython sizes, for the memory ledger: a record object, one kept frame, a str header.
_RECORD_BYTES = 200
_FRAME_BYTES = 90
_STR_BYTES = 50


class Token(Protocol):
    """What ``track()`` returns: close it when the resource is released.

    The real token is the record itself; :data:`NULL_TOKEN` is returned while the monitor is
    off (or the resource was sampled out, or the registry is full), and ignores every call.
    """

    @property
    def id(self) -> int: ...

    def close(self) -> None:
        """The resource was released: forget its record (idempotent)."""

    def collected(self) -> None:
        """The resource was garbage-collected without being closed (an explicit path for
        owners that detect it themselves, e.g. from a finalizer)."""

    def set_sql(self, sql: object) -> None:
        """The statement the resource runs now (kept up to 1 KB, folded on read)."""

    def set_size(self, size: int) -> None:
        """The resource's current size in bytes."""


class TrackFn(Protocol):
    """The signature of ``track``: see :meth:`Monitor.record`. Pass all but ``kind`` and
    ``obj`` by keyword; the parameters are not keyword-only because filling keyword-only
    defaults costs a dictionary lookup each, on every call."""

    def __call__(self, kind: str, obj: object = None, size: int = 0, sql: object = None,
                 pool: str | None = None, depth: int | None = None,
                 parent: Token | None = None, frame: Any = None) -> Token: ...


class _NullToken:
    """The token of an unrecorded resource: every method does nothing."""

    __slots__ = ()
    id = 0

    def close(self) -> None:
        pass

    def collected(self) -> None:
        pass

    def set_sql(self, sql: object) -> None:
        pass

    def set_size(self, size: int) -> None:
        pass

    def __repr__(self) -> str:
        return "<poolkeeper NULL_TOKEN>"


#: returned by ``track()`` when nothing is recorded
NULL_TOKEN: Token = _NullToken()


def _null_track(kind: str, obj: object = None, size: int = 0, sql: object = None,
                pool: str | None = None, depth: int | None = None,
                parent: Token | None = None, frame: Any = None) -> Token:
    return NULL_TOKEN


#: the signature of ``borrow_site``: (the borrower's frame, its f_code, its f_lasti) -> the
#: kept frames, or None when the borrow is not recorded (monitor off, or sampled out)
BorrowSiteFn = Callable[[Any, Any, int], "Sequence[Any] | None"]


def _null_borrow_site(frame: Any, code: Any, lasti: int) -> Sequence[Any] | None:
    return None


class CursorWatch(weakref.ref):  # type: ignore[type-arg]
    """What a pool's proxy hands the monitor for one cursor of a recorded checkout.

    A weak reference to the cursor (the checkout's list of them, which it closes on return,
    is a list of these), plus where and when it was opened: the monitor reads nothing of the
    cursor itself but the public ``closed``. The proxy fills ``site`` (kept frames, as
    ``(code, offset, code, offset)``), ``created`` (monotonic), ``deadline`` (``created`` plus
    the probe's :attr:`Probe.cursor_leak_s`: open past it, the cursor is a leak). It belongs
    to the checkout whose list holds it (the cursor hands the monitor that checkout in every
    call). The monitor sets ``record`` (its record, once made: stable ids) and ``parent`` (its
    checkout's record, once the checkout was dropped unreturned). One object per cursor, the
    weak reference the proxy keeps anyway.
    """

    __slots__ = ("created", "deadline", "parent", "record", "site")

    created: float
    deadline: float
    parent: _Record
    record: _Record
    site: Sequence[Any]


class _Count:
    """A counter bumped from finalizers, read by ``stats()``: ``add()`` is itertools.count's
    C ``__next__`` (no Python frame, atomic while the GIL serialises C calls); where the GIL
    is off when the counter is made (``core.runtime.gil_enabled``), the locked twin.
    ``value()`` reads it without counting the read."""

    __slots__ = ("_it", "_lock", "_n", "_reads", "add")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads = 0
        self._n = 0
        self._it = itertools.count(1)
        self.add: Callable[[], object] = (self._it.__next__ if gil_enabled()
                                          else self._locked_add)

    def _locked_add(self) -> None:
        with self._lock:
            self._n += 1

    def value(self) -> int:
        with self._lock:
            if self.add == self._locked_add:
                return self._n
            # next() is the only way to read an itertools.count: count the reads apart
            self._reads += 1
            return next(self._it) - self._reads


# ----------------------------------------------------------------------------- records
class _Record:
    """One live resource. Doubles as its token, so tracking allocates one object.

    Made by calling the class, which runs no Python ``__init__`` (a Python frame per record
    saved), and filled in by the track functions (or by the views, for a pool's checkouts and
    cursors); ``sql``, ``_ref``, ``slot`` and ``collected_at`` stay unset until they have a
    value.
    Each monitor makes its own subclass holding ``_monitor`` and ``_records`` as class
    attributes: two stores fewer per record (see :func:`_record_class`).
    """

    __slots__ = ("_ref", "collected_at", "created", "frames", "id", "kind", "leak", "parent",
                 "pool", "size", "slot", "sql", "thread")

    _monitor: Monitor
    _records: dict[int, _Record]
    _ref: weakref.ref[Any] | None
    #: a pool's checkout: the connection's slot, whose current checkout (``slot.checkout``,
    #: while its ``mon_record`` is this record) holds the statement it runs or ran last and
    #: its open cursors, read by the views; None otherwise. The slot, not the checkout: the
    #: checkout keeps this record, and a reference back would make a cycle.
    slot: Any
    collected_at: float
    #: why it is listed among the leaks (one of the LEAK_* texts, or "cursor open past N s")
    leak: str
    created: float
    frames: Sequence[Any]
    id: int
    kind: str
    parent: _Record | None
    pool: str | None
    size: int
    sql: object
    thread: threading.Thread | int | str  #: a str (its name) once collected

    def close(self) -> None:
        # One dict deletion (cheaper than a pop call, or contextlib.suppress): a weakref
        # left on the record may still fire, but _collect finds the id gone and does nothing.
        try:  # noqa: SIM105 - see above
            del self._records[self.id]
        except KeyError:  # closed twice, collected, or cleared
            pass

    def collected(self) -> None:
        self._ref = None
        self._monitor._collect(self)

    def set_sql(self, sql: object) -> None:
        if sql.__class__ is not str or len(sql) > SQL_MAX_CHARS:
            sql = _clip(sql)
        self.sql = sql
        parent = self.parent
        if parent is not None:
            parent.sql = sql

    def set_size(self, size: int) -> None:
        self.size = size

    def _on_gc(self, _ref: object) -> None:
        self._ref = None
        self._monitor._collect(self)

    def nbytes(self) -> int:
        sql = getattr(self, "sql", None)
        return (_RECORD_BYTES + _FRAME_BYTES * (len(self.frames) // 2)
                + (len(sql) + _STR_BYTES if isinstance(sql, str | bytes) else 0))

    def __repr__(self) -> str:
        return f"<poolkeeper monitor record {self.id} {self.kind}>"


def _checkout_of(rec: _Record) -> Any:
    """The live checkout a pool checkout's record is of, or None once it ended."""
    slot = getattr(rec, "slot", None)
    co = None if slot is None else slot.checkout
    return co if co is not None and co.mon_record is rec else None


def _record_class(mon: Monitor) -> type[_Record]:
    """The record class of one monitor: ``_monitor`` and ``_records`` live on the class."""
    return type("_Record", (_Record,), {"__slots__": (), "_monitor": mon,
                                        "_records": mon._records})


def _walk_loop(f: Any, n: int) -> list[Any]:
    kept: list[Any] = []
    keep = kept.append
    while n and f is not None:
        keep(f.f_code)
        keep(f.f_lasti)
        f = f.f_back
        n -= 1
    return kept


def _walk_none(f: Any) -> list[Any]:
    return []


_WALKERS: dict[int, Callable[[Any], list[Any]]] = {}


def _walker(n: int) -> Callable[[Any], list[Any]]:
    """A function keeping ``n`` frames from ``f`` on as [code, offset, code, offset, ...].

    Unrolled (about 40 % cheaper than a loop: no counter, no per-frame test, no append
    calls); a stack shorter than ``n`` ends in AttributeError on None and falls back to the
    loop. Generated once per depth (0..256, checked before the call).
    """
    fn: Callable[[Any], list[Any]] | None = _WALKERS.get(n)
    if fn is not None:
        return fn
    if n == 0:
        _WALKERS[0] = fn = _walk_none
        return fn
    lines = ["def walk(f):", "    f0 = f", "    try:"]
    for i in range(n):
        lines.append(f"        c{i} = f.f_code; l{i} = f.f_lasti"
                     + ("; f = f.f_back" if i < n - 1 else ""))
    lines += ["    except AttributeError:", "        return loop(f0, n)",
              "    return [" + ", ".join(f"c{i}, l{i}" for i in range(n)) + "]"]
    namespace: dict[str, Any] = {"loop": _walk_loop, "n": n}
    # The source is built from the int n alone (checked by the callers), never from input.
    exec("\n".join(lines), namespace)
    fn = namespace["walk"]
    _WALKERS[n] = fn
    return fn


def _walk_on_lines(n: int) -> list[str]:
    """Source lines setting ``kept`` to ``(code, lasti)`` and the (code, offset) pairs of the
    next ``n - 1`` frames from ``frame.f_back`` on, unrolled as in :func:`_walker`: for a
    caller that has read the first frame already (the pool reads its caller's code and offset
    on every borrow, for its own reports). Needs ``loop`` and ``n`` in its namespace.

    A tuple (cheaper to make than a list: one allocation), made afresh by every call and never
    empty (the empty tuple is shared), so its identity tells one borrow from another.
    """
    if n <= 1:
        return ["kept = (code, lasti)"]
    lines = ["try:", "    f = frame.f_back"]
    for i in range(1, n):
        lines.append(f"    c{i} = f.f_code; l{i} = f.f_lasti"
                     + ("; f = f.f_back" if i < n - 1 else ""))
    lines += ["except AttributeError:  # a stack shorter than n frames",
              "    kept = [code, lasti] + loop(frame.f_back, n - 1)",
              "else:",
              "    kept = (code, lasti, " + ", ".join(f"c{i}, l{i}" for i in range(1, n)) + ")"]
    return lines


class _Opaque(str):
    """Stands for a statement object that is not text: shown as is, never folded."""

    __slots__ = ()


def _clip(sql: object) -> object:
    """Keep a bounded piece of the statement; folding waits until someone reads it."""
    if isinstance(sql, str | bytes):
        return sql if len(sql) <= SQL_MAX_CHARS else sql[:SQL_MAX_CHARS]
    if sql is None:
        return None
    # A composed statement object (psycopg.sql.Composed) may hold literals and needs a
    # connection to render: keep only its type name.
    return _Opaque(f"<{type(sql).__name__}>")


# ----------------------------------------------------------------------------- views
@dataclass(frozen=True, slots=True)
class Resource:
    """A readable copy of one record, made when a view is read."""

    id: int
    kind: str
    pool: str | None
    size: int
    created: float  #: wall-clock time (epoch seconds)
    age_s: float
    thread: str
    site: str  #: ``file:line in function`` of the first frame outside poolkeeper
    stack: tuple[Frame, ...]  #: the kept frames, innermost (the site) first
    sql: str | None  #: literals folded, at most 1 KB
    parent_id: int | None = None
    #: in :meth:`Monitor.collected`: wall-clock time it was listed (collected, its checkout
    #: ended, or found open past its threshold; then when it ended); None in the live views
    collected_at: float | None = None
    #: in :meth:`Monitor.collected`: why it is a leak, e.g. "checkout dropped unreturned",
    #: "cursor open when its checkout ended", "cursor open past 60 s"
    leak: str | None = None

    @property
    def file(self) -> str:
        return self.stack[0][0] if self.stack else ""

    @property
    def line(self) -> int:
        return self.stack[0][1] if self.stack else 0

    @property
    def function(self) -> str:
        return self.stack[0][2] if self.stack else ""


@dataclass(frozen=True, slots=True)
class SiteGroup:
    """Live resources of one kind grouped by the call site that created them."""

    kind: str
    site: str
    count: int
    bytes: int
    oldest_s: float
    pools: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MonitorSnapshot:
    """Everything the monitor knows at one instant (what :func:`poolkeeper.admin.query` reads)."""

    taken_at: float  #: wall-clock time
    resources: tuple[Resource, ...]
    collected: tuple[Resource, ...]
    stats: dict[str, Any] = field(default_factory=dict)


def by_site(resources: Iterable[Resource]) -> list[SiteGroup]:
    """Group resources by (kind, call site): count, bytes, oldest; largest count first."""
    groups: dict[tuple[str, str], list[Resource]] = {}
    for r in resources:
        groups.setdefault((r.kind, r.site), []).append(r)
    out = [SiteGroup(kind, site, len(rs), sum(r.size for r in rs), max(r.age_s for r in rs),
                     tuple(sorted({r.pool for r in rs if r.pool is not None})))
           for (kind, site), rs in groups.items()]
    out.sort(key=lambda g: (-g.count, -g.oldest_s, g.site))
    return out


# ----------------------------------------------------------------------------- SQL folding
_fold_impl: Callable[[str, str | None], str] | None = None
_FALLBACK = re.compile(
    r"""(?P<s>'(?:[^'\\]|''|\\.)*'?)"""  # a quoted string, possibly cut by the 1 KB clip
    r"""|(?P<d>\$(?P<tag>[A-Za-z_]*)\$.*?(?:\$(?P=tag)\$|$))"""  # PostgreSQL $$ strings
    r"""|(?P<n>(?<![\w$.])-?(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+))""",
    re.DOTALL,
)
_DOUBLE_QUOTED = re.compile(r'"(?:[^"\\]|""|\\.)*"?', re.DOTALL)


def _fallback_fold(sql: str, dialect: str | None = None) -> str:
    if dialect == "mysql":  # "x" is a string there, not an identifier
        sql = _DOUBLE_QUOTED.sub("?", sql)
    return _FALLBACK.sub("?", sql)


def fold_sql(sql: object, limit: int = SQL_MAX_CHARS, dialect: str | None = None) -> str | None:
    """The statement with its literals replaced by ``?``, at most ``limit`` characters.

    Uses ``poolkeeper.sql.fingerprint`` (with ``dialect``: "postgresql", "mysql", "sqlite"
    or None) when installed, else a small built-in folder that replaces quoted strings and
    numbers, so literals never reach a view either way.
    """
    global _fold_impl
    if sql is None:
        return None
    if isinstance(sql, _Opaque):
        return str(sql)
    text = sql.decode(errors="replace") if isinstance(sql, bytes) else str(sql)
    if _fold_impl is None:
        _fold_impl = _load_fold()
    try:
        folded = _fold_impl(text, dialect)
    except Exception:  # noqa: BLE001 - a view must not fail on an odd statement
        folded = _fallback_fold(text, dialect)
    return folded if len(folded) <= limit else folded[: limit - 3] + "..."


def _load_fold() -> Callable[[str, str | None], str]:
    try:
        from ..sql import fingerprint as fp_module
    except ImportError:
        return _fallback_fold
    fn: Any = getattr(fp_module, "fingerprint", None)
    if fn is None:
        return _fallback_fold

    def fold(text: str, dialect: str | None) -> str:
        result = fn(text, dialect)
        return result if isinstance(result, str) else _fallback_fold(text, dialect)

    return fold


# ----------------------------------------------------------------------------- probe
class Probe:
    """The switch one owner (a pool, or the monitor itself) calls ``track`` through.

    ``probe.track`` (and ``borrow_site``) are rebound when the probe turns on or off, so an
    owner calls them unconditionally. A probe follows the global switch unless set per pool::

        probe = monitor.probe("orders")      # follows monitor.enable()/disable()
        probe.enable()                       # on for this pool whatever the global switch
        probe.follow_global()                # back to following it
    """

    __slots__ = ("__weakref__", "_leak_threshold", "_monitor", "_setting", "borrow_site",
                 "cursor_leak_s", "name", "on_change", "slots", "track")

    def __init__(self, monitor: Monitor, name: str | None, enabled: bool | None = None,
                 leak_threshold: float | None = None) -> None:
        self._monitor = monitor
        self.name = name
        self._setting = enabled
        self._leak_threshold = leak_threshold
        #: seconds a cursor of this owner may stay open before it is listed as a leak: the
        #: owner's ``leak_threshold`` (a pool's option) when set, else the monitor's
        #: ``cursor_leak_s``; a plain attribute, read on every monitored cursor
        self.cursor_leak_s = monitor.cursor_leak_s if leak_threshold is None else leak_threshold
        self.track: TrackFn = _null_track
        #: the frames a pool's borrow keeps on its slot (see :func:`_make_borrow_site`)
        self.borrow_site: BorrowSiteFn = _null_borrow_site
        #: the owner's slots by id, when it is a pool: where the views find its checkouts
        self.slots: dict[int, Any] | None = None
        #: called with the new state whenever the probe turns on or off, so an owner that keeps
        #: its own fast-path flag (the pool does) can follow without testing the probe per call
        self.on_change: Callable[[bool], None] | None = None
        self._rebind()

    @property
    def enabled(self) -> bool:
        """Whether resources tracked through this probe are recorded now."""
        return self.track is not _null_track

    @property
    def setting(self) -> bool | None:
        """True/False when set for this probe, None when it follows the global switch."""
        return self._setting

    def enable(self) -> None:
        """Record this owner's resources whatever the global switch says."""
        self._setting = True
        self._rebind()

    def disable(self) -> None:
        """Stop recording this owner's resources (records already made stay readable)."""
        self._setting = False
        self._rebind()

    def follow_global(self) -> None:
        """Follow :meth:`Monitor.enable` / :meth:`Monitor.disable` again."""
        self._setting = None
        self._rebind()

    @property
    def leak_threshold(self) -> float | None:
        """The owner's own cursor leak threshold in seconds (None: the monitor's default)."""
        return self._leak_threshold

    @leak_threshold.setter
    def leak_threshold(self, seconds: float | None) -> None:
        self._leak_threshold = seconds
        self._rebind()

    def _rebind(self) -> None:
        mon = self._monitor
        threshold = self._leak_threshold
        self.cursor_leak_s = mon.cursor_leak_s if threshold is None else threshold
        on = mon.global_enabled if self._setting is None else self._setting
        if on:
            self.track = _make_track(mon, self.name)
            self.borrow_site = _make_borrow_site(mon)
        else:
            self.track = _null_track
            self.borrow_site = _null_borrow_site
        if self.on_change is not None:
            self.on_change(on)

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"<poolkeeper Probe {self.name!r} {state}>"


def _first_outside(mon: Monitor, f: Any) -> Any:
    """The first frame from ``f`` on that is not poolkeeper's own (None past the outermost).

    Remembers per file name whether it is poolkeeper's, so a file is tested once, and adds
    the files found outside to ``mon._outside``: the track functions test a frame's file
    against that set and come here only for poolkeeper's own files and files not seen yet.
    """
    internal = mon._internal
    skip = mon._skip
    while f is not None:
        filename = f.f_code.co_filename
        inside = internal.get(filename)
        if inside is None:
            inside = filename.startswith(skip)
            if len(internal) < 4096:  # bounded: past it, files are tested every time
                internal[filename] = inside
                if not inside:
                    mon._outside.add(filename)
        if not inside:
            return f
        f = f.f_back
    return None


def _current_thread(get_ident: Callable[[], int] = threading.get_ident,
                    active: dict[int, threading.Thread] = threading._active,  # type: ignore[attr-defined]
                    ) -> threading.Thread | int:
    """The Thread object of the calling thread, or its id for a thread threading does not
    know (the slow path of the track functions, which subscript ``threading._active``)."""
    ident = get_ident()
    return active.get(ident, ident)


def _make_track(mon: Monitor, default_pool: str | None) -> TrackFn:
    """Build the function a probe's ``track`` is bound to while on.

    Everything it needs is bound as a closure variable, so a call does no attribute lookups
    beyond the frame walk and makes one object (the record) besides the kept frames.
    """
    records = mon._records
    ids = mon._ids
    record_cls = mon._record_cls
    walkers = _WALKERS
    walk_default = _walker(mon.depth)
    outside = mon._outside
    max_records = mon.max_records
    every = mon.sample_every
    kinds = KINDS
    monotonic = _monotonic
    get_ident = threading.get_ident
    active = threading._active  # type: ignore[attr-defined]
    getframe = _getframe
    weak = weakref.ref
    null = NULL_TOKEN
    tick = 0

    def track(kind: str, obj: object = None, size: int = 0, sql: object = None,
              pool: str | None = None, depth: int | None = None,
              parent: Token | None = None, frame: Any = None) -> Token:
        if kind not in kinds:
            raise ValueError(f"kind={kind!r} is not a resource kind; use one of {sorted(kinds)}")
        if len(records) >= max_records:
            mon._dropped()
            return null
        # The call site is the first frame outside poolkeeper. A set lookup settles the usual
        # case (a file known to be outside); _first_outside walks past poolkeeper's frames,
        # and decides (and remembers) for a file not seen yet.
        f: Any = getframe(1) if frame is None else frame
        if f is not None and f.f_code.co_filename not in outside:
            f = _first_outside(mon, f)
        # Keep `depth` frames as one flat list [code, offset, code, offset, ...]: f_lasti is
        # read as is (f_lineno would decode the line table on every call), and no tuple per
        # frame is made to allocate and to count toward the next garbage collection.
        if depth is None:
            kept = walk_default(f)
        else:
            walk = walkers.get(depth)
            if walk is None:
                walk = _walker(_check_int("depth", depth, 0, 256))
            kept = walk(f)
        # The class call makes the record without running Python code (no __init__):
        # cheaper than object.__new__(record_cls), which goes through a wrapper.
        rec = record_cls()
        rec.id = rid = next(ids)
        rec.kind = kind
        rec.pool = default_pool if pool is None else pool
        rec.size = size
        rec.created = monotonic()
        # The Thread object, named when read (Thread.name is a property); a subscript is
        # cheaper than a .get() call, and a thread threading does not know is rare.
        try:
            rec.thread = active[get_ident()]
        except KeyError:
            rec.thread = _current_thread()
        rec.frames = kept
        rec.parent = parent if parent.__class__ is record_cls else None
        if sql is not None:
            rec.sql = _clip(sql)
        # Objects whose type has no weakref slot are not watched; testing the type is far
        # cheaper than catching weakref's TypeError on every call.
        if obj is not None and obj.__class__.__weakrefoffset__:
            rec._ref = weak(obj, rec._on_gc)
        records[rid] = rec
        return rec

    if every == 1:
        return track

    def track_sampled(kind: str, obj: object = None, size: int = 0, sql: object = None,
                      pool: str | None = None, depth: int | None = None,
                      parent: Token | None = None, frame: Any = None) -> Token:
        nonlocal tick
        # A lost increment under a thread race only shifts which resource is sampled.
        tick += 1
        if tick % every:
            return null
        return track(kind, obj, size, sql, pool, depth, parent,
                     getframe(1) if frame is None else frame)

    return track_sampled


# A probe's borrow_site, generated per depth with the frame walk written out in it (see
# _walk_on_lines): the walk is its costliest part, and calling a walker would add a Python
# frame to every monitored borrow. The names it uses are bound by _make_borrow_site.
# `last` is the code of the previous borrow found outside poolkeeper (held, so the identity
# test cannot match a new code object at a reused address): a borrow from the same code again,
# as a worker's loop does, skips the file test (reading co_filename costs about 0.3k
# instructions, the identity test a tenth of it).
_BORROW_SITE_SOURCE = """\
def borrow_site(frame, code, lasti):
    global last
    if code is not last:
        if code.co_filename not in outside:  # poolkeeper's own (the loader), or a new file
            return walk(first_outside(mon, frame))
        last = code
{walk_on}
    return kept
"""


def _make_borrow_site(mon: Monitor) -> BorrowSiteFn:
    """Build the function a probe's ``borrow_site`` is bound to while on.

    It is all a pool's monitored borrow does for the monitor: keep the call site's frames,
    starting from what the pool has read already for its own reports (the borrower's frame,
    code and offset, not read again), for the pool to store on the slot. Everything else a
    checkout's record holds is on the slot anyway, and the record is made when a view reads
    it (see :meth:`Monitor._checkout_record`). Sampled like ``track``: None means "not
    recorded".
    """
    namespace: dict[str, Any] = {
        "walk": _walker(mon.depth), "loop": _walk_loop, "n": mon.depth,
        "outside": mon._outside, "mon": mon, "first_outside": _first_outside, "last": None,
    }
    walk_on = textwrap.indent("\n".join(_walk_on_lines(mon.depth)), " " * 4)
    # Built from the int depth alone (checked by configure()), as in _walker, never from input.
    exec(_BORROW_SITE_SOURCE.format(walk_on=walk_on), namespace)
    borrow_site: BorrowSiteFn = namespace["borrow_site"]
    every = mon.sample_every
    tick = 0

    if every == 1:
        return borrow_site

    def borrow_site_sampled(frame: Any, code: Any, lasti: int) -> Sequence[Any] | None:
        nonlocal tick
        tick += 1  # racy on purpose, as in track()
        if tick % every:
            return None
        return borrow_site(frame, code, lasti)

    return borrow_site_sampled


#: frames kept per cursor: its own site and its caller (its checkout holds the stack)
CURSOR_DEPTH = 2


# ----------------------------------------------------------------------------- monitor
class Monitor:
    """The registry of live resources, its switches and its views.

    ``max_records`` bounds the registry (resources beyond it are counted, not recorded);
    ``depth`` is how many frames outside poolkeeper are kept per record; ``sample_every=N``
    records one resource in N; ``max_collected`` bounds the list of resources collected
    without being closed. There is one process-wide instance, :data:`MONITOR`.
    """

    def __init__(self, *, max_records: int = 10_000, depth: int = 4, sample_every: int = 1,
                 max_collected: int = 1_000, cursor_leak_s: float = 60.0,
                 skip: Sequence[str] = _DEFAULT_SKIP) -> None:
        self._records: dict[int, _Record] = {}
        self._record_cls = _record_class(self)
        self._ids = itertools.count(1)
        # Re-entrant: a weakref callback may run from a GC pass in a thread already inside.
        self._lock = threading.RLock()
        self._collected: deque[_Record] = deque()
        self._probes: weakref.WeakSet[Probe] = weakref.WeakSet()
        self._pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self.global_enabled = False
        self.max_records = 1
        self.depth = 1
        self.sample_every = 1
        self.max_collected = 1
        self._skip: tuple[str, ...] = tuple(skip)
        # pool name -> SQL dialect, to fold each pool's statements right when read
        self._dialects: dict[str, str] = {}
        # file name -> whether its frames are poolkeeper's own (str hashes are cached), and
        # the names found outside: the track functions' fast test (see _first_outside)
        self._internal: dict[str, bool] = {}
        self._outside: set[str] = set()
        self._record: TrackFn = _null_track
        self.dropped_full = 0
        self._stats_reads = 0
        self.collected_total = 0
        self.collected_dropped = 0
        #: a pool's cursors freed by reference counting while their checkout was held and
        #: younger than the threshold: the ``conn.execute(...)`` idiom, no leak, only counted
        self.cursors_freed = _Count()
        self.cursor_leak_s = 60.0
        # monotonic time of the last clear(): a pool's cursor opened before it is forgotten
        self._cleared_at = -1.0
        self.last_snapshot: MonitorSnapshot | None = None
        self.configure(max_records=max_records, depth=depth, sample_every=sample_every,
                       max_collected=max_collected, cursor_leak_s=cursor_leak_s)
        self._own = Probe(self, None)
        #: track a resource of no pool; follows the global switch (see :meth:`record`)
        self.track: TrackFn = self._own.track
        self._probes.add(self._own)

    # ------------------------------------------------------------------ configuration
    def configure(self, *, max_records: int | None = None, depth: int | None = None,
                  sample_every: int | None = None, max_collected: int | None = None,
                  cursor_leak_s: float | None = None) -> None:
        """Change limits at runtime; each is validated (ValueError naming the field).

        ``cursor_leak_s``: a pool's cursor open longer than this (seconds) is listed among
        the leaks (:meth:`collected`), for pools without a ``leak_threshold`` of their own
        (a pool's ``leak_threshold`` is its cursors' threshold too). Default 60 s.
        """
        if cursor_leak_s is not None:
            if (isinstance(cursor_leak_s, bool) or not isinstance(cursor_leak_s, int | float)
                    or not 0.001 <= cursor_leak_s <= 365 * 86_400):
                raise ValueError(f"monitor cursor_leak_s={cursor_leak_s!r} is out of range: "
                                 "allowed 0.001..31536000 seconds")
            self.cursor_leak_s = float(cursor_leak_s)
        if max_records is not None:
            self.max_records = _check_int("max_records", max_records, 1, 10_000_000)
        if depth is not None:
            self.depth = _check_int("depth", depth, 1, 256)
        if sample_every is not None:
            self.sample_every = _check_int("sample_every", sample_every, 1, 1_000_000)
        if max_collected is not None:
            self.max_collected = _check_int("max_collected", max_collected, 0, 1_000_000)
            with self._lock:
                while len(self._collected) > self.max_collected:
                    self._collected.popleft()
                    self.collected_dropped += 1
        self._rebind_all()

    @property
    def enabled(self) -> bool:
        """Whether the global switch is on (a pool may still be on or off by itself)."""
        return self.global_enabled

    def enable(self, pool: Any = None) -> None:
        """Turn recording on: globally, or for the probes of one pool (object or name)."""
        if pool is None:
            self.global_enabled = True
            self._rebind_all()
            return
        for probe in self._probes_of(pool):
            probe.enable()

    def disable(self, pool: Any = None) -> None:
        """Turn recording off, globally or for one pool. What was recorded stays readable:
        records of resources still open remain in the views (and leave them when closed),
        and :attr:`last_snapshot` keeps the exact state at the moment of a global disable."""
        if pool is None:
            self.global_enabled = False
            self._rebind_all()
            self.last_snapshot = self.snapshot()
            return
        for probe in self._probes_of(pool):
            probe.disable()

    def probe(self, name: str | None, *, enabled: bool | None = None,
              dialect: str | None = None, leak_threshold: float | None = None) -> Probe:
        """A new probe for one owner (usually a pool named ``name``).

        ``enabled=None`` follows the global switch; True/False sets it for this probe.
        ``dialect`` ("postgresql", "mysql", "sqlite") is how this owner's SQL is folded when
        read: MySQL's ``"x"`` is a string, elsewhere an identifier. ``leak_threshold``: the
        seconds this owner's cursors may stay open before they are listed as leaks (None:
        the monitor's ``cursor_leak_s``).
        """
        p = Probe(self, name, enabled, leak_threshold)
        self._probes.add(p)
        if dialect is not None and name is not None:
            with self._lock:
                self._prune_dialects()
                self._dialects[name] = dialect
        return p

    def _prune_dialects(self) -> None:
        """Forget the dialects of owners gone: no live probe and no collected record names
        them (issue #14 item 8: one entry was kept per pool ever created). Bounded by the live
        probes plus ``max_collected``."""
        keep = self.probe_names() | {r.pool for r in self._collected if r.pool is not None}
        for name in [n for n in self._dialects if n not in keep]:
            del self._dialects[name]

    def _probes_of(self, pool: Any) -> list[Probe]:
        name = pool if isinstance(pool, str) else getattr(pool, "name", None)
        found = [p for p in list(self._probes) if p.name is not None and p.name == name]
        if not found:
            raise ValueError(f"no pool named {name!r} has a monitor probe; "
                             f"pools with probes: {sorted(self.probe_names())}")
        return found

    def probe_names(self) -> set[str]:
        return {p.name for p in list(self._probes) if p.name is not None}

    def _rebind_all(self) -> None:
        # Limits are baked into the track functions: rebuild them all after any change.
        self._record = _make_track(self, None)
        for probe in list(self._probes):
            probe._rebind()
        own = getattr(self, "_own", None)
        if own is not None:
            self.track = own.track

    # ------------------------------------------------------------------ recording
    def record(self, kind: str, obj: object = None, *, size: int = 0, sql: object = None,
               pool: str | None = None, depth: int | None = None,
               parent: Token | None = None, frame: Any = None) -> Token:
        """Record one resource now, whatever the switches say (probes do this when on).

        ``obj``, when given and weak-referenceable, is watched: if it is garbage-collected
        while its record is open, the record moves to :meth:`collected`. ``parent`` links a
        cursor to its checkout: SQL set on the cursor is also shown on the checkout.
        ``frame``: where to start looking for the call site, when the caller already holds
        it (the pool has its caller's frame at hand); poolkeeper's own frames are skipped
        from there. Sampling (``sample_every``) applies here too.
        """
        return self._record(kind, obj, size, sql, pool, depth, parent,
                            _getframe(1) if frame is None else frame)

    def _dropped(self) -> None:
        with self._lock:
            self.dropped_full += 1

    def _collect(self, rec: _Record) -> None:
        if self._records.pop(rec.id, None) is None:
            return  # already closed, or cleared
        self._add_collected(rec, LEAK_COLLECTED)

    def _add_collected(self, rec: _Record, leak: str) -> None:
        """List ``rec`` among the leaks (:meth:`collected`), saying why."""
        slot = getattr(rec, "slot", None)
        if slot is not None:  # a pool's checkout: keep its last statement, not the slot
            co = _checkout_of(rec)
            if co is not None:
                _set_sql(rec, co.sql)
            rec.slot = None
        thread = rec.thread
        if isinstance(thread, threading.Thread):  # its name, not the object (and its target)
            rec.thread = thread.name
        rec.leak = leak
        rec.collected_at = _monotonic()
        with self._lock:
            self.collected_total += 1
            if self.max_collected == 0:
                self.collected_dropped += 1
                return
            if len(self._collected) >= self.max_collected:
                self._collected.popleft()
                self.collected_dropped += 1
            self._collected.append(rec)

    def _list_once(self, rec: _Record, leak: str, ended: bool = True) -> None:
        """List a pool's cursor among the leaks unless it is listed already (a view found it
        open past its threshold): then, when it ``ended`` now, only that time is noted."""
        with self._lock:  # two views, or a view and the cursor's end, at once: listed once
            if getattr(rec, "leak", None) is None:
                self._add_collected(rec, leak)
            elif ended:
                rec.collected_at = _monotonic()

    # ------------------------------------------------------------------ a pool's checkouts
    # A monitored borrow keeps its frames on its checkout (Checkout.mon_frames, see
    # Probe.borrow_site); the checkout holds the rest: borrow time, holder, SQL. The record is
    # made here, when a view reads the checkout, its proxy is collected unreturned, or it goes
    # back with a cursor still open.

    def _checkout_record(self, co: Any, pool: str | None) -> _Record | None:
        """The record of checkout ``co``, or None when it is not recorded (sampled out, or
        the monitor was cleared since its borrow). Kept on the checkout, so its id is stable
        across reads."""
        rec: _Record | None = co.mon_record
        if rec is not None:
            return rec
        with self._lock:  # one record per checkout, when two views read it at once
            rec = co.mon_record
            if rec is not None:
                return rec
            frames = co.mon_frames
            if frames is None:
                return None
            rec = self._record_cls()
            rec.kind = "checkout"
            rec.pool = pool
            rec.size = 0
            rec.created = co.borrowed_at
            ident = co.owner
            if isinstance(ident, int):  # a thread's ident: the thread, named when listed
                rec.thread = threading._active.get(ident, ident)  # type: ignore[attr-defined]
            else:  # an asyncio task: its name (a record must not keep the task alive)
                get_name = getattr(ident, "get_name", None)
                rec.thread = get_name() if get_name is not None else repr(ident)
            rec.frames = frames
            rec.parent = None
            rec.slot = co.slot
            rec.id = next(self._ids)
            co.mon_record = rec
        return rec

    def _checkout_dropped(self, co: Any, pool: str | None) -> None:
        """A monitored checkout's proxy was garbage-collected without being returned (the
        pool's ``_orphaned``): a leak, listed with its site. Its cursors collected after it
        are listed too, with it as their parent (see :meth:`cursor_collected`)."""
        rec = self._checkout_record(co, pool)
        co.mon_frames = None  # no longer shown live, though its slot holds it until taken back
        if rec is None:
            return  # not recorded (cleared)
        for watch in list(co.cursors or ()):
            watch.parent = rec
        self._add_collected(rec, LEAK_DROPPED)

    def _checkout_records(self) -> list[_Record]:
        """The records of the live checkouts of the probes' pools."""
        out: list[_Record] = []
        for probe in list(self._probes):
            slots = probe.slots
            if slots is None:
                continue
            for slot in slots.copy().values():
                co = slot.checkout  # read once: its holder may return it meanwhile
                if co is not None and co.mon_frames is not None:
                    rec = self._checkout_record(co, probe.name)
                    if rec is not None:
                        out.append(rec)
        return out

    # ------------------------------------------------------------------ a pool's cursors
    # A cursor of a recorded checkout has a CursorWatch (made by the proxy, kept in its
    # checkout's list of cursors, Checkout.cursors): its site and times. Its record is made
    # from the watch when a view reads it or it turns out leaked.

    def cursor_site(self, frame: Any) -> list[Any]:
        """The kept frames of a pool's cursor opened from ``frame`` on, when ``frame`` is
        poolkeeper's own or in a file not seen yet (the proxy keeps the usual case's frames
        itself: a Python call less per cursor)."""
        return _walker(CURSOR_DEPTH)(_first_outside(self, frame))

    def _cursor_record(self, watch: CursorWatch, parent: _Record) -> _Record:
        """The record of a pool's cursor: made on first need and kept on its watch, so a
        cursor keeps its id across reads of the views."""
        try:
            return watch.record
        except AttributeError:
            pass
        crec = self._record_cls()
        crec.id = next(self._ids)
        crec.kind = "cursor"
        crec.pool = parent.pool
        crec.size = 0
        crec.created = watch.created
        crec.thread = parent.thread  # opened in the checkout's thread, as a rule
        crec.frames = watch.site
        crec.parent = parent
        watch.record = crec
        return crec

    def _forgotten(self, watch: CursorWatch) -> bool:
        """Whether a cursor is none of the views' business: opened before a clear()."""
        return watch.created < self._cleared_at

    def cursor_collected(self, watch: CursorWatch, co: Any, pool: str | None,
                         checkout_live: bool) -> None:
        """A pool's cursor was garbage-collected without ``close()``, and it is no plain
        ``conn.execute(...)`` result freed under its held checkout (the proxy counts those in
        :attr:`cursors_freed` without calling here): it outlived its checkout ``co`` (dropped
        unreturned), or lived open past its deadline. Listed with its site and its
        checkout's SQL."""
        if self._forgotten(watch):
            return
        if checkout_live:
            parent = self._checkout_record(co, pool)
            leak = _overdue(watch)
        else:
            parent = getattr(watch, "parent", None)  # set by _checkout_dropped
            leak = LEAK_CURSOR_AFTER
        if parent is None:
            return  # its checkout is not recorded (cleared)
        rec = self._cursor_record(watch, parent)
        _set_sql(rec, co.sql if checkout_live else getattr(parent, "sql", None))
        self._list_once(rec, leak)

    def cursor_outlived(self, watch: CursorWatch, co: Any, pool: str | None) -> None:
        """Checkout ``co`` went back (or was reclaimed) with this cursor still referenced and
        open (the pool closes it now): a leak, listed with its site and its checkout as
        parent. Called by the returning proxy."""
        if self._forgotten(watch):
            return
        parent = self._checkout_record(co, pool)
        if parent is None:
            return
        rec = self._cursor_record(watch, parent)
        _set_sql(parent, co.sql)
        _set_sql(rec, co.sql)
        self._list_once(rec, LEAK_CURSOR_OPEN)

    def _open_cursors(self, checkouts: list[_Record]) -> list[_Record]:
        """The records of the open cursors of the live ``checkouts`` (each checkout's record
        takes its current SQL on the way). A cursor open past its deadline is listed among
        the leaks here, once."""
        out: list[_Record] = []
        now = _monotonic()
        for rec in checkouts:
            co = _checkout_of(rec)
            if co is None:  # returned or collected meanwhile
                continue
            _set_sql(rec, co.sql)
            for watch in list(co.cursors or ()):
                cur = watch()
                if cur is None or cur.closed or self._forgotten(watch):
                    continue
                crec = self._cursor_record(watch, rec)
                _set_sql(crec, co.sql)
                out.append(crec)
                if now >= watch.deadline and getattr(crec, "leak", None) is None:
                    self._list_once(crec, _overdue(watch), ended=False)
        return out

    def clear(self) -> None:
        """Forget every record and the collected list (their tokens become harmless), and the
        pools' live checkouts and cursors (they are not shown again, nor listed as leaks)."""
        with self._lock:
            self._records.clear()
            self._collected.clear()
            self.last_snapshot = None
            self._cleared_at = _monotonic()
            for probe in list(self._probes):
                if probe.slots is not None:
                    for slot in probe.slots.copy().values():
                        co = slot.checkout
                        if co is not None:
                            co.mon_frames = co.mon_record = None

    # ------------------------------------------------------------------ pools
    def register_pool(self, pool: Any) -> None:
        """Remember a pool (weakly) so the watchdog and admin views find it by default."""
        self._pools.add(pool)

    def unregister_pool(self, pool: Any) -> None:
        self._pools.discard(pool)

    def pools(self) -> list[Any]:
        """The registered pools still alive and not closed."""
        return [p for p in list(self._pools) if not getattr(p, "closed", False)]

    # ------------------------------------------------------------------ views
    def _raw_records(self) -> list[_Record]:
        """The registry's records and those of the pools' live checkouts and open cursors."""
        checkouts = self._checkout_records()
        return self._registry_records() + checkouts + self._open_cursors(checkouts)

    def _registry_records(self) -> list[_Record]:
        for _ in range(10):
            try:
                return list(self._records.values())
            except RuntimeError:  # resized by a GC callback mid-copy: copy again
                continue
        with self._lock:
            return list(self._records.copy().values())

    def _collected_records(self) -> list[_Record]:
        # A finalizer (MonitoredCursor.__del__, a weakref callback) run by a collection that
        # the copy's own allocation triggered appends to the deque on this very thread (the
        # lock is reentrant): the copy then raises RuntimeError. Copy again.
        for _ in range(10):
            try:
                with self._lock:
                    return list(self._collected)
            except RuntimeError:
                continue
        with self._lock:
            return list(self._collected)

    def live(self, min_age: float = 1.0, *, kind: str | None = None,
             pool: str | None = None) -> list[Resource]:
        """Live resources at least ``min_age`` seconds old (default 1 s hides the churn of
        short-lived checkouts), oldest first."""
        now = _monotonic()
        out = [_view(r, now, self._dialects) for r in self._raw_records()
               if now - r.created >= min_age and (kind is None or r.kind == kind)
               and (pool is None or r.pool == pool)]
        out.sort(key=lambda r: -r.age_s)
        return out

    def by_site(self, min_age: float = 1.0, *, kind: str | None = None,
                pool: str | None = None) -> list[SiteGroup]:
        """Live resources grouped by (kind, call site): count, bytes, oldest."""
        return by_site(self.live(min_age, kind=kind, pool=pool))

    def collected(self, *, kind: str | None = None, pool: str | None = None) -> list[Resource]:
        """The leaks, in the order found, each with its site and why (``Resource.leak``):
        resources garbage-collected without being closed, checkouts dropped unreturned, a
        pool's cursors that outlived their checkout or stayed open past their threshold.
        Not listed: a cursor CPython frees while its checkout is held (counted in
        ``stats()["cursors_freed_total"]``)."""
        self._open_cursors(self._checkout_records())  # lists the cursors open too long
        now = _monotonic()
        recs = self._collected_records()
        return [_view(r, now, self._dialects, listed=True) for r in recs
                if (kind is None or r.kind == kind) and (pool is None or r.pool == pool)]

    def stats(self) -> dict[str, Any]:
        """Counters of the monitor itself."""
        with self._lock:
            collected = len(self._collected)
            # The id counter cannot be read without taking an id: count those taken here.
            tracked = next(self._ids) - 1 - self._stats_reads
            self._stats_reads += 1
        return {
            "enabled": self.global_enabled,
            "pools_enabled": sorted({p.name for p in list(self._probes)
                                     if p.name is not None and p.enabled}),
            "records": len(self._records),
            "records_max": self.max_records,
            "tracked_total": tracked,
            "dropped_full": self.dropped_full,
            "collected": collected,
            "collected_max": self.max_collected,
            "collected_total": self.collected_total,
            "collected_dropped": self.collected_dropped,
            "cursors_freed_total": self.cursors_freed.value(),
            "cursor_leak_s": self.cursor_leak_s,
            "depth": self.depth,
            "sample_every": self.sample_every,
        }

    def snapshot(self) -> MonitorSnapshot:
        """All live records, the collected list and the counters, read at one instant."""
        now = _monotonic()
        records = self._raw_records()
        collected = self._collected_records()
        return MonitorSnapshot(
            taken_at=now + _WALL_OFFSET,
            resources=tuple(sorted((_view(r, now, self._dialects) for r in records),
                                   key=lambda r: -r.age_s)),
            collected=tuple(_view(r, now, self._dialects, listed=True) for r in collected),
            stats=self.stats(),
        )

    def memory_usage(self) -> tuple[int, int]:
        """(estimated bytes held by records, the budget those bounds allow): for the ledger."""
        collected = self._collected_records()
        used = sum(r.nbytes() for r in self._raw_records()) + sum(r.nbytes() for r in collected)
        per_record = _RECORD_BYTES + _FRAME_BYTES * self.depth + SQL_MAX_CHARS + _STR_BYTES
        return used, per_record * (self.max_records + self.max_collected)

    def __repr__(self) -> str:
        return (f"<poolkeeper Monitor {'on' if self.global_enabled else 'off'} "
                f"records={len(self._records)}/{self.max_records}>")


def _overdue(watch: CursorWatch) -> str:
    return f"cursor open past {watch.deadline - watch.created:g} s"


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"monitor {name}={value!r} is out of range: allowed {lo}..{hi}")
    return value


def _set_sql(rec: _Record, sql: object) -> None:
    """A record takes the statement its pool's connection runs, kept as set_sql() keeps it."""
    if sql is not None:
        rec.sql = _clip(sql)


def _frame(code: CodeType, lasti: int) -> Frame:
    return (code.co_filename, _lineno(code, lasti), code.co_qualname)


_lineno = line_of


def _view(rec: _Record, now: float, dialects: dict[str, str], listed: bool = False
          ) -> Resource:
    """A record as shown; ``listed``: as shown in the collected (leaks) view."""
    frames = rec.frames
    stack = tuple(_frame(frames[i], frames[i + 1]) for i in range(0, len(frames), 2))
    site = f"{stack[0][0]}:{stack[0][1]} in {stack[0][2]}" if stack else "unknown"
    # A cursor listed open past its threshold is still live: the live views show it as such
    collected_at: float | None = getattr(rec, "collected_at", None) if listed else None
    end = collected_at if collected_at is not None else now
    parent = rec.parent
    thread = rec.thread
    return Resource(
        id=rec.id, kind=rec.kind, pool=rec.pool, size=rec.size,
        created=rec.created + _WALL_OFFSET, age_s=round(end - rec.created, 6),
        thread=thread if isinstance(thread, str) else (
            thread.name if isinstance(thread, threading.Thread) else f"#{thread}"),
        site=site, stack=stack,
        sql=fold_sql(getattr(rec, "sql", None),
                     dialect=dialects.get(rec.pool) if rec.pool is not None else None),
        parent_id=parent.id if parent is not None else None,
        collected_at=collected_at + _WALL_OFFSET if collected_at is not None else None,
        leak=getattr(rec, "leak", None) if listed else None,
    )


# ----------------------------------------------------------------------------- process-wide
#: the process-wide monitor
MONITOR = Monitor()


def get_monitor() -> Monitor:
    """The process-wide :class:`Monitor`."""
    return MONITOR


def enable(pool: Any = None) -> None:
    """Turn the process-wide monitor on, globally or for one pool (object or name)."""
    MONITOR.enable(pool)


def disable(pool: Any = None) -> None:
    """Turn the process-wide monitor off, globally or for one pool; records stay readable."""
    MONITOR.disable(pool)


def track(kind: str, obj: object = None, *, size: int = 0, sql: object = None,
          pool: str | None = None, depth: int | None = None,
          parent: Token | None = None, frame: Any = None) -> Token:
    """Track a resource in the process-wide monitor (follows the global switch).

    Hot paths hold a :class:`Probe` instead (``MONITOR.probe(name)``) and call its ``track``.
    """
    return MONITOR.track(kind, obj, size, sql, pool, depth, parent,
                         _getframe(1) if frame is None else frame)


def register_pool(pool: Any) -> None:
    """Remember a pool (weakly) for the watchdog's counts and the admin views."""
    MONITOR.register_pool(pool)


def registered_pools() -> list[Any]:
    """Pools registered with :func:`register_pool`, still alive and open."""
    return MONITOR.pools()
