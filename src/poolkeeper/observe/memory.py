"""The memory watchdog and ledger: how much memory the process uses, and where poolkeeper's is.

**Ledger.** Every bounded structure poolkeeper owns (SQL statistics, statement caches, the
scheduler, the resource monitor, loader buffers) registers a *provider* reporting its current
bytes and its budget; :meth:`MemoryLedger.entries` shows in one call where poolkeeper's memory
is and how close each part is to its bound. Providers that are bound methods, or objects with
a ``memory_usage()`` method, are held weakly, so registering never keeps an owner alive.

**Watchdog.** :class:`MemoryWatchdog` samples the process's resident memory (RSS) and the
memory limit (the cgroup v2 ``memory.max`` or v1 ``memory.limit_in_bytes`` when one is set,
else physical memory, or a limit you give) on an interval, keeps a bounded history, and logs
one line at its own interval (wrapped here)::

    poolkeeper memory 41.2% (845/2048 MB), pools 2, checkouts 9, stats 1.2 MB,
    statement caches 3.4 MB

Above ``warn_percent`` it warns once per crossing (re-armed when usage falls back below
``rearm_percent``); a ledger entry above ``budget_warn_fraction`` of its budget also warns once
per crossing. If tracemalloc is tracing (yours, or started with ``tracemalloc_frames=N``) and
``snapshot_dir`` is set, each crossing writes a report of the allocation sites that grew most
since the previous one: at most ``max_snapshots`` files. It never calls ``gc.collect()``: a
collection hides a leak for a while and fixes nothing.

Example::

    from poolkeeper.observe.memory import LEDGER, MemoryWatchdog

    LEDGER.register("stats:orders", stats.memory_usage, category="stats")
    with MemoryWatchdog(interval=5, log_interval=60, warn_percent=85) as dog:
        ...
        print(dog.history()[-1].percent, LEDGER.format())
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
import tracemalloc
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .monitor import MONITOR, registered_pools

__all__ = [
    "LEDGER",
    "POOL_CATEGORIES",
    "LedgerEntry",
    "LedgerRegistration",
    "MemoryLedger",
    "MemorySample",
    "MemoryWatchdog",
    "counted_bytes",
    "pool_entries",
    "read_memory_limit",
    "read_rss",
]

logger = logging.getLogger("poolkeeper.memory")

_MB = 1024 * 1024
# cgroup v1 reports "no limit" as a page-rounded 2**63-1; anything this large means none.
_UNLIMITED = 1 << 60


# ----------------------------------------------------------------------------- readings
def read_rss(statm: str = "/proc/self/statm") -> int | None:
    """The process's resident memory in bytes (``/proc/self/statm``), or None when unknown.

    Without ``/proc`` it falls back to ``resource.getrusage``, which gives the *peak* RSS.
    """
    try:
        with open(statm, "rb") as fh:
            fields = fh.read().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        import sys
    except ImportError:  # not on this platform (Windows)
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def read_memory_limit(cgroup_root: str = "/sys/fs/cgroup",
                      proc_cgroup: str = "/proc/self/cgroup") -> tuple[int | None, str]:
    """(limit in bytes, where it came from): the cgroup limit, else physical memory.

    The source is ``"cgroup v2"``, ``"cgroup v1"``, ``"physical"`` or ``"unknown"``. The
    effective cgroup limit is the smallest one set on the process's cgroup and its parents.
    """
    try:
        with open(proc_cgroup, encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        lines = []
    root = Path(cgroup_root)
    v1_path = v2_path = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2_path = parts[2]
        elif "memory" in parts[1].split(","):
            v1_path = parts[2]
    # A memory controller line means v1 owns memory (hybrid hosts mount v2 without it).
    if v1_path is not None:
        limit = _smallest_limit(root / "memory", v1_path, "memory.limit_in_bytes")
        if limit is not None:
            return limit, "cgroup v1"
    elif v2_path is not None:
        limit = _smallest_limit(root, v2_path, "memory.max")
        if limit is not None:
            return limit, "cgroup v2"
    physical = _physical_memory()
    return (physical, "physical") if physical is not None else (None, "unknown")


def _smallest_limit(base: Path, cgroup_path: str, filename: str) -> int | None:
    # Containers often see only part of the hierarchy: try every ancestor that exists.
    parts = [p for p in cgroup_path.strip("/").split("/") if p]
    found: list[int] = []
    for depth in range(len(parts), -1, -1):
        candidate = base.joinpath(*parts[:depth], filename)
        try:
            text = candidate.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text == "max":
            continue
        with contextlib.suppress(ValueError):
            value = int(text)
            if 0 < value < _UNLIMITED:
                found.append(value)
    return min(found) if found else None


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


# ----------------------------------------------------------------------------- ledger
@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One bounded structure: its current bytes, its budget and how full it is."""

    name: str
    category: str
    bytes: int
    budget_bytes: int | None  #: None: the structure has no byte budget of its own
    fraction: float | None  #: bytes / budget_bytes
    error: str | None = None  #: the provider failed; bytes is 0
    #: False for a part of another entry (one connection's share of a sum over connections):
    #: shown for its fraction, left out of every total so no byte is counted twice
    summed: bool = True


def counted_bytes(entries: Iterable[LedgerEntry]) -> int:
    """The bytes of ``entries`` added up, each byte once (parts of other entries left out)."""
    return sum(e.bytes for e in entries if e.summed)


class LedgerRegistration:
    """Handle returned by :meth:`MemoryLedger.register`; ``unregister()`` removes it."""

    __slots__ = ("_ledger", "category", "id", "name")

    def __init__(self, ledger: MemoryLedger, rid: int, name: str, category: str) -> None:
        self._ledger = ledger
        self.id = rid
        self.name = name
        self.category = category

    def unregister(self) -> None:
        self._ledger._providers.pop(self.id, None)

    def __repr__(self) -> str:
        return f"<poolkeeper ledger registration {self.name!r} ({self.category})>"


_Reading = Callable[[], Any]


class MemoryLedger:
    """Where poolkeeper's memory is: one provider per bounded structure.

    A provider is a callable returning ``(current_bytes, budget_bytes_or_None)``, or an
    object with a ``memory_usage()`` method returning that. Bound methods and such objects are
    held weakly and disappear with their owner; a plain function is held until unregistered.
    At most ``max_providers`` are registered; registrations beyond that are refused (the
    handle is inert) and counted in ``rejected``.

    ``pools``, a callable returning pools, adds each pool's own bounded structures with no
    registration: every ``<x>_bytes`` counter of ``pool.stats()`` (with ``<x>_budget_bytes``
    as its budget when present) becomes an entry ``"<x>:<pool name>"``; the process-wide
    :data:`LEDGER` reads the registered pools this way.
    """

    def __init__(self, max_providers: int = 4096,
                 pools: Callable[[], Iterable[Any]] | None = None) -> None:
        if not 1 <= max_providers <= 1_000_000:
            raise ValueError(f"max_providers={max_providers!r} is out of range: 1..1000000")
        self.max_providers = max_providers
        self._pools = pools
        self._providers: dict[int, tuple[str, str, Callable[[], _Reading | None]]] = {}
        self._ids = itertools.count(1)
        self.rejected = 0

    def register(self, name: str, provider: Any, *, category: str | None = None
                 ) -> LedgerRegistration:
        """Register ``provider`` under ``name`` (and ``category``, used to sum in the log line)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"ledger provider name={name!r} must be a non-empty string")
        getter = _weak_getter(provider)
        rid = next(self._ids)
        reg = LedgerRegistration(self, rid, name, category or name)
        if len(self._providers) >= self.max_providers:
            # weakly held providers whose owner is gone leave at the next entries(); a full
            # ledger does not wait for a reader before it refuses a live registration
            for old, (_name, _category, old_getter) in list(self._providers.items()):
                if old_getter() is None:
                    self._providers.pop(old, None)
        if len(self._providers) >= self.max_providers:
            self.rejected += 1
            logger.warning("poolkeeper memory ledger is full (%d providers): %r is not "
                           "registered; something registers without unregistering",
                           self.max_providers, name)
            return reg
        self._providers[rid] = (name, reg.category, getter)
        return reg

    def entries(self) -> list[LedgerEntry]:
        """Every live provider's reading, largest first. Dead providers are pruned."""
        out: list[LedgerEntry] = []
        for rid, (name, category, getter) in list(self._providers.items()):
            fn = getter()
            if fn is None:
                self._providers.pop(rid, None)
                continue
            try:
                current, budget = fn()
                current = int(current)
                budget = None if budget is None else int(budget)
            except Exception as exc:  # noqa: BLE001 - one bad provider must not hide the rest
                out.append(LedgerEntry(name, category, 0, None, None,
                                       f"{type(exc).__name__}: {exc}"))
                continue
            fraction = current / budget if budget else None
            out.append(LedgerEntry(name, category, current, budget, fraction))
        if self._pools is not None:
            for pool in list(self._pools()):
                out.extend(pool_entries(pool))
        out.sort(key=lambda e: (-e.bytes, e.name))
        return out

    def by_category(self, entries: Iterable[LedgerEntry] | None = None) -> dict[str, int]:
        """Bytes summed per category, largest first."""
        totals: dict[str, int] = {}
        for e in self.entries() if entries is None else entries:
            if e.summed:
                totals[e.category] = totals.get(e.category, 0) + e.bytes
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    def total(self) -> int:
        return counted_bytes(self.entries())

    def format(self) -> str:
        """A text table: name, category, size, budget, percent of budget, largest first."""
        rows = self.entries()
        lines = [f"{'name':<36} {'category':<18} {'size':>10} {'budget':>10} {'used':>6}"]
        for e in rows:
            budget = _human(e.budget_bytes) if e.budget_bytes else "-"
            used = f"{e.fraction * 100:.1f}%" if e.fraction is not None else "-"
            note = f"  ({e.error})" if e.error else ""
            lines.append(f"{e.name[:36]:<36} {e.category[:18]:<18} {_human(e.bytes):>10} "
                         f"{budget:>10} {used:>6}{note}")
        lines.append(f"{'total':<36} {'':<18} {_human(counted_bytes(rows)):>10}")
        return "\n".join(lines)

    def stats(self) -> dict[str, int]:
        return {"providers": len(self._providers), "providers_max": self.max_providers,
                "rejected": self.rejected}

    def __len__(self) -> int:
        return len(self._providers)


#: categories of the byte counters pools report (others use the counter's own name)
POOL_CATEGORIES = {
    "sql_stats": "stats",
    # what idle connections pin in their driver's buffers (libpq's input buffer)
    "idle_pinned": "connections",
    "sql_fingerprint_cache": "stats",
    "stmt_cache": "statement caches",
    "stmt_cache_conn": "statement caches",
}
#: counters that are a part of another counter (the fullest connection's share of the sum)
POOL_PARTS = frozenset({"stmt_cache_conn"})


def pool_entries(pool: Any) -> list[LedgerEntry]:
    """Ledger entries for one pool's bounded structures, read from ``pool.stats()``.

    Every integer ``<x>_bytes`` counter is an entry named ``"<x>:<pool name>"``, with
    ``<x>_budget_bytes`` as its budget when the pool reports one.
    """
    name = str(getattr(pool, "name", "") or "pool")
    try:
        stats = pool.stats()
    except Exception as exc:  # noqa: BLE001 - a closing pool must not break the ledger
        return [LedgerEntry(f"pool:{name}", "pools", 0, None, None,
                            f"{type(exc).__name__}: {exc}")]
    out = []
    for key, value in stats.items():
        if (not isinstance(key, str) or not key.endswith("_bytes")
                or key.endswith("_budget_bytes") or isinstance(value, bool)
                or not isinstance(value, int)):
            continue
        prefix = key[: -len("_bytes")]
        budget = stats.get(prefix + "_budget_bytes")
        budget = budget if isinstance(budget, int) and not isinstance(budget, bool) else None
        out.append(LedgerEntry(
            f"{prefix}:{name}", POOL_CATEGORIES.get(prefix, prefix.replace("_", " ")), value,
            budget, value / budget if budget else None, summed=prefix not in POOL_PARTS))
    return out


def _weak_getter(provider: Any) -> Callable[[], _Reading | None]:
    if hasattr(provider, "__self__") and hasattr(provider, "__func__"):
        return weakref.WeakMethod(provider)
    if callable(provider):
        return lambda: provider
    usage = getattr(provider, "memory_usage", None)
    if usage is None:
        raise TypeError(f"a ledger provider must be callable or have memory_usage(), not "
                        f"{type(provider).__name__}")
    ref = weakref.ref(provider)

    def get() -> _Reading | None:
        obj = ref()
        return None if obj is None else obj.memory_usage

    return get


#: the process-wide ledger (registered providers, and the registered pools' own counters)
LEDGER = MemoryLedger(pools=registered_pools)
LEDGER.register("resource monitor", MONITOR.memory_usage, category="monitor")


# ----------------------------------------------------------------------------- watchdog
@dataclass(frozen=True, slots=True)
class MemorySample:
    """One reading of the process's memory."""

    time: float  #: wall-clock time
    rss_bytes: int | None
    limit_bytes: int | None
    limit_source: str  #: "cgroup v2", "cgroup v1", "physical", "configured" or "unknown"
    percent: float | None  #: rss / limit * 100
    ledger_bytes: int  #: everything poolkeeper's bounded structures report
    pools: int
    checkouts: int
    categories: tuple[tuple[str, int], ...]  #: ledger bytes per category, largest first


class MemoryWatchdog:
    """Samples memory on an interval in a daemon thread named ``poolkeeper-memory``.

    Start it with :meth:`start` (or ``with``), stop it with :meth:`stop`; :meth:`sample` runs
    one step by hand. ``pools`` is an iterable or a zero-argument callable returning the pools
    to count (default: pools registered with :func:`poolkeeper.observe.register_pool`).
    ``limit_bytes`` overrides the detected limit (a budget for a process without a cgroup).
    """

    def __init__(self, *, interval: float = 5.0, log_interval: float | None = 60.0,
                 history: int = 720, warn_percent: float = 85.0,
                 rearm_percent: float | None = None, budget_warn_fraction: float = 0.9,
                 limit_bytes: int | None = None, ledger: MemoryLedger | None = None,
                 pools: Iterable[Any] | Callable[[], Iterable[Any]] | None = None,
                 snapshot_dir: str | os.PathLike[str] | None = None, max_snapshots: int = 5,
                 snapshot_top: int = 25, tracemalloc_frames: int = 0,
                 cgroup_root: str = "/sys/fs/cgroup",
                 proc_cgroup: str = "/proc/self/cgroup") -> None:
        _check("interval", interval, 0.01, 86_400)
        if log_interval is not None:
            _check("log_interval", log_interval, 0.01, 86_400)
        _check("history", history, 1, 1_000_000)
        _check("warn_percent", warn_percent, 0.0, 100.0)
        rearm = warn_percent - 5.0 if rearm_percent is None else rearm_percent
        _check("rearm_percent", rearm, 0.0, warn_percent)
        _check("budget_warn_fraction", budget_warn_fraction, 0.0, 10.0)
        _check("max_snapshots", max_snapshots, 0, 10_000)
        _check("snapshot_top", snapshot_top, 1, 10_000)
        _check("tracemalloc_frames", tracemalloc_frames, 0, 1_000)
        if limit_bytes is not None:
            _check("limit_bytes", limit_bytes, 1, 1 << 62)
        self.interval = float(interval)
        self.log_interval = log_interval
        self.warn_percent = float(warn_percent)
        self.rearm_percent = float(rearm)
        self.budget_warn_fraction = float(budget_warn_fraction)
        self.limit_bytes = limit_bytes
        self.ledger = LEDGER if ledger is None else ledger
        self._pools = pools
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir is not None else None
        self.max_snapshots = max_snapshots
        self.snapshot_top = snapshot_top
        self.tracemalloc_frames = tracemalloc_frames
        self._cgroup = (cgroup_root, proc_cgroup)
        self._history: deque[MemorySample] = deque(maxlen=history)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._registration: LedgerRegistration | None = None
        self._started_tracemalloc = False
        self._baseline: dict[tuple[str, int], int] | None = None
        self._last_log = -float("inf")
        self._above = False
        self._entries_above: set[tuple[str, str]] = set()
        self.samples_total = 0
        self.warnings_total = 0
        self.snapshots: list[Path] = []
        self.snapshots_skipped = 0
        self.sample_errors = 0

    # ------------------------------------------------------------------ life cycle
    def start(self) -> MemoryWatchdog:
        """Start the ``poolkeeper-memory`` thread (and tracemalloc if asked). Idempotent."""
        with self._lock:
            if self._thread is not None:
                return self
            if self.tracemalloc_frames and not tracemalloc.is_tracing():
                tracemalloc.start(self.tracemalloc_frames)
                self._started_tracemalloc = True
            if tracemalloc.is_tracing() and self.snapshot_dir is not None:
                self._baseline = _site_sizes(tracemalloc.take_snapshot())
            self._registration = self.ledger.register("memory watchdog", self.memory_usage,
                                                      category="monitor")
            # A fresh event per run: a thread still ending from a previous stop() keeps its
            # own (set) event and cannot be revived.
            self._stop = threading.Event()
            # The thread holds the watchdog weakly, so a watchdog dropped without stop()
            # is collected and its thread ends (the finalizer sets the event).
            self._thread = threading.Thread(
                target=_watch, args=(weakref.ref(self), self._stop, self.interval),
                name="poolkeeper-memory", daemon=True)
            weakref.finalize(self, self._stop.set)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread; True when it ended within ``timeout``. Idempotent."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
            if self._registration is not None:
                self._registration.unregister()
                self._registration = None
            if self._started_tracemalloc:
                tracemalloc.stop()
                self._started_tracemalloc = False
            self._baseline = None
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    close = stop

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def __enter__(self) -> MemoryWatchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ sampling
    def sample(self) -> MemorySample:
        """Read memory now: record it, warn on crossings, log if the log interval elapsed."""
        rss = read_rss()
        limit: int | None
        if self.limit_bytes is not None:
            limit, source = self.limit_bytes, "configured"
        else:
            limit, source = read_memory_limit(*self._cgroup)
        entries = self.ledger.entries()
        categories = self.ledger.by_category(entries)
        pools, checkouts = self._count_pools()
        percent = rss / limit * 100.0 if rss is not None and limit else None
        s = MemorySample(
            time=time.time(), rss_bytes=rss, limit_bytes=limit, limit_source=source,
            percent=percent,
            ledger_bytes=counted_bytes(entries), pools=pools, checkouts=checkouts,
            categories=tuple(categories.items()),
        )
        self._history.append(s)
        self.samples_total += 1
        self._check_process(s)
        self._check_entries(entries)
        now = time.monotonic()
        if self.log_interval is not None and now - self._last_log >= self.log_interval:
            self._last_log = now
            logger.info("%s", self.format_line(s))
        return s

    def history(self) -> list[MemorySample]:
        """The kept samples, oldest first (at most ``history`` of them)."""
        return list(self._history)

    @staticmethod
    def format_line(s: MemorySample) -> str:
        """``poolkeeper memory 41.2% (845/2048 MB), pools 2, checkouts 9, stats 1.2 MB, ...``"""
        rss_mb = f"{s.rss_bytes / _MB:.0f}" if s.rss_bytes is not None else "?"
        if s.percent is not None and s.limit_bytes:
            head = f"poolkeeper memory {s.percent:.1f}% ({rss_mb}/{s.limit_bytes / _MB:.0f} MB)"
        else:
            head = f"poolkeeper memory {rss_mb} MB (no limit known)"
        parts = [head, f"pools {s.pools}", f"checkouts {s.checkouts}"]
        parts += [f"{cat} {n / _MB:.1f} MB" for cat, n in s.categories if n > 0]
        return ", ".join(parts)

    def _count_pools(self) -> tuple[int, int]:
        source = self._pools
        if source is None:
            pools = registered_pools()
        else:
            pools = list(source() if callable(source) else source)
        checkouts = 0
        for pool in pools:
            with contextlib.suppress(Exception):  # a closing pool may refuse; count the rest
                checkouts += int(pool.stats().get("pool_active", 0))
        return len(pools), checkouts

    def _check_process(self, s: MemorySample) -> None:
        if s.percent is None:
            return
        if not self._above and s.percent >= self.warn_percent:
            self._above = True
            self.warnings_total += 1
            path = self._write_snapshot("process memory above "
                                        f"{self.warn_percent:g}%")
            logger.warning(
                "poolkeeper memory %.1f%% of the %s limit (%.0f/%.0f MB) crossed "
                "warn_percent=%g%%; poolkeeper's own structures hold %.1f MB (%s)%s. "
                "Look for what grows: poolkeeper.observe.LEDGER.format(), "
                "monitor views, or tracemalloc reports (snapshot_dir=...)",
                s.percent, s.limit_source, (s.rss_bytes or 0) / _MB, (s.limit_bytes or 0) / _MB,
                self.warn_percent, s.ledger_bytes / _MB,
                ", ".join(f"{c} {n / _MB:.1f} MB" for c, n in s.categories) or "none",
                f"; allocation report written to {path}" if path else "")
        elif self._above and s.percent < self.rearm_percent:
            self._above = False
            logger.info("poolkeeper memory back to %.1f%% (below rearm_percent=%g%%)",
                        s.percent, self.rearm_percent)

    def _check_entries(self, entries: list[LedgerEntry]) -> None:
        # Keyed by (name, category): entries have no other stable identity across samples,
        # and this set never outgrows the ledger's own bound.
        above: set[tuple[str, str]] = set()
        for e in entries:
            if e.fraction is None or e.fraction < self.budget_warn_fraction:
                continue
            key = (e.name, e.category)
            above.add(key)
            if key not in self._entries_above:
                self.warnings_total += 1
                logger.warning(
                    "poolkeeper %s (%s) holds %.2f MB, %.0f%% of its %.2f MB budget "
                    "(budget_warn_fraction=%g); it evicts or refuses beyond its bound: "
                    "raise its budget if that costs too much", e.name, e.category,
                    e.bytes / _MB, e.fraction * 100, (e.budget_bytes or 0) / _MB,
                    self.budget_warn_fraction)
        self._entries_above = above

    # ------------------------------------------------------------------ tracemalloc
    def _write_snapshot(self, reason: str) -> Path | None:
        if self.snapshot_dir is None or not tracemalloc.is_tracing():
            return None
        if len(self.snapshots) >= self.max_snapshots:
            self.snapshots_skipped += 1
            return None
        return self.dump_tracemalloc(reason)

    def dump_tracemalloc(self, reason: str = "requested") -> Path | None:
        """Write the top growing allocation sites since the last report (or since start).

        Returns the file written, or None when tracemalloc is not tracing or no
        ``snapshot_dir`` is set. Counts toward ``max_snapshots`` only when automatic.
        """
        if self.snapshot_dir is None or not tracemalloc.is_tracing():
            return None
        snapshot = tracemalloc.take_snapshot()
        current = _site_sizes(snapshot)
        baseline = self._baseline or {}
        growth = sorted(((size - baseline.get(site, 0), size, site)
                         for site, size in current.items()), reverse=True)
        lines = [f"# poolkeeper memory report: {reason}",
                 f"# time {time.strftime('%Y-%m-%d %H:%M:%S')}, pid {os.getpid()}, "
                 f"traced {sum(current.values()) / _MB:.1f} MB, "
                 f"growth since {'the previous report' if self._baseline else 'tracing began'}",
                 f"{'growth KB':>12} {'size KB':>12}  site"]
        for grew, size, (filename, lineno) in growth[: self.snapshot_top]:
            lines.append(f"{grew / 1024:12.1f} {size / 1024:12.1f}  {filename}:{lineno}")
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.snapshot_dir / f"poolkeeper-memory-{stamp}-{os.getpid()}-" \
                                   f"{len(self.snapshots) + 1}.txt"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(path)
        self.snapshots.append(path)
        self._baseline = current
        return path

    # ------------------------------------------------------------------ the watchdog's own cost
    def memory_usage(self) -> tuple[int, int]:
        """(bytes of kept history and baseline, their budget): for the ledger."""
        per_sample = 400
        baseline = len(self._baseline or ()) * 150
        return len(self._history) * per_sample + baseline, (
            (self._history.maxlen or 0) * per_sample + baseline)

    def stats(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "samples_total": self.samples_total,
            "history": len(self._history),
            "history_max": self._history.maxlen,
            "warnings_total": self.warnings_total,
            "snapshots_written": len(self.snapshots),
            "snapshots_skipped": self.snapshots_skipped,
            "sample_errors": self.sample_errors,
        }


def _watch(ref: weakref.ref[MemoryWatchdog], stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        dog = ref()
        if dog is None:
            return
        try:
            dog.sample()
        except Exception:  # keep watching; the log says what failed
            dog.sample_errors += 1
            logger.exception("poolkeeper memory watchdog: a sample failed")
        del dog


def _site_sizes(snapshot: tracemalloc.Snapshot) -> dict[tuple[str, int], int]:
    snapshot = snapshot.filter_traces((
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    ))
    out: dict[tuple[str, int], int] = {}
    for stat in snapshot.statistics("lineno"):
        frame = stat.traceback[0]
        out[(frame.filename, frame.lineno)] = stat.size
    return out


def _human(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < _MB:
        return f"{n / 1024:.1f} KB"
    return f"{n / _MB:.1f} MB"


def _check(name: str, value: object, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ValueError(f"memory watchdog {name}={value!r} is out of range: "
                         f"allowed {lo:g}..{hi:g}")
