"""Helpers shared by the benchmark scripts: servers, statistics, memory, tables.

Nothing here times anything by itself; the scripts decide what a round is. Every figure they
print is a median over interleaved rounds, because the benchmark machine (2 cores) is shared
with other engineers' test runs and any single measurement can be off by 2x.
"""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from typing import Any

__all__ = [
    "AIO_MODULES",
    "MYSQL_DSN",
    "PG_APP_NAME",
    "PG_DSN",
    "Budget",
    "code_fingerprint",
    "fmt_ratio",
    "load_note",
    "loadavg",
    "machine_summary",
    "median",
    "mysql_params",
    "percentile",
    "pg_dsn",
    "pin_current_thread",
    "pin_pg_backends",
    "pooled_query_loop",
    "print_table",
    "rss_bytes",
    "versions",
]

#: the asyncio shell's hot path: code_fingerprint(AIO_MODULES) in the asyncio benchmarks
AIO_MODULES = ("pool/aio.py", "pool/aioproxies.py")
#: the servers the benchmarks talk to (loopback only); override with these variables
PG_DSN = os.environ.get("POOLKEEPER_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_DSN = os.environ.get("POOLKEEPER_BENCH_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")
#: every PostgreSQL session a benchmark opens carries this name, so that its server processes
#: (and only those) can be found in pg_stat_activity and pinned
PG_APP_NAME = f"poolkeeper-bench-{os.getpid()}"


def pg_dsn() -> str:
    """PG_DSN tagged with this process's application_name."""
    return f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}application_name={PG_APP_NAME}"


def pin_current_thread(cpus: set[int] | None) -> set[int]:
    """Pin the calling thread (and threads it starts later) to ``cpus``; None = every CPU.

    Returns the previous set. Pinning the client and the server processes it talks to onto
    one CPU removes the dominant noise of a 2-vCPU virtual machine: whether a wake-up crosses
    CPUs (an inter-processor interrupt and a halted vCPU to resume: 30-100 us) or not.
    """
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus if cpus is not None else _all_cpus())
    return previous


def _all_cpus() -> set[int]:
    return set(range(os.cpu_count() or 1))


def pin_pg_backends(conn: Any, cpus: set[int]) -> int:
    """Pin the server processes of this benchmark's own PostgreSQL sessions; how many.

    Only sessions tagged with PG_APP_NAME are touched: they belong to this process and exit
    with it. Returns 0 where the operating system does not allow it (not the server's owner).
    """
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                        (PG_APP_NAME,)).fetchall()
    pinned = 0
    for (pid,) in rows:
        try:
            os.sched_setaffinity(pid, cpus)
            pinned += 1
        except OSError:  # not permitted, or the session ended meanwhile
            continue
    return pinned


def pooled_query_loop(pool: Any, query: str = "SELECT 1") -> Callable[[int], None]:
    """``run(n)``: n times borrow with ``pool.connection()``, open a cursor, execute ``query``,
    fetch one row, close the cursor, return the connection."""
    def run(n: int) -> None:
        connection = pool.connection
        for _ in range(n):
            with connection() as conn:
                cur = conn.cursor()
                cur.execute(query)
                cur.fetchone()
                cur.close()
    return run


class Budget:
    """A wall-clock allowance: loops stop early (after a minimum of work) when it runs out."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank: no interpolation across a gap in the tail."""
    if not values:
        return float("nan")
    data = sorted(values)
    rank = min(len(data) - 1, max(0, int(q * len(data) + 0.5) - 1))
    return data[rank]


def fmt_ratio(values: Sequence[float]) -> str:
    """``median (min-max)`` of per-round ratios: the range says how stable the figure was."""
    if not values:
        return "-"
    return f"{median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def mysql_params(dsn: str) -> dict[str, Any]:
    """PyMySQL connect() keyword arguments for a ``mysql://`` DSN (poolkeeper's own parser)."""
    from poolkeeper.config import parse_dsn

    info = parse_dsn(dsn)
    if info.driver != "mysql":
        raise ValueError(f"expected a mysql:// DSN, got {info.masked!r}")
    return {k: v for k, v in info.params.items() if v is not None}


def versions(*dists: str) -> str:
    out = []
    for dist in dists:
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


def code_fingerprint(extra: Sequence[str] = ()) -> str:
    """Short hashes of the hot-path modules (and of ``extra``, paths under the package), so a
    figure can be tied to the code it measured (the tree changes while benchmarks run)."""
    import poolkeeper

    root = os.path.dirname(poolkeeper.__file__)
    parts = []
    # the layout moved in #16 (pool.py -> pool/sync.py): the first of each pair that exists
    for names in (("pool/sync.py", "pool.py"), ("pool/proxies.py", "proxy.py"),
                  ("core/bag.py",), *((name,) for name in extra)):
        rel = next((n for n in names if os.path.exists(os.path.join(root, n))), names[0])
        try:
            with open(os.path.join(root, rel), "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()[:8]
        except OSError:
            digest = "missing"
        parts.append(f"{rel} {digest}")
    return f"poolkeeper from {root}: " + ", ".join(parts)


def load_note(before: float) -> str:
    """What else the machine was doing: the 1-minute load average before and after a section
    (our own threads count too; on 2 cores, above ~1.5 means another process competed)."""
    return f"machine load avg (1 min) before / after: {before:.2f} / {loadavg():.2f}"


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def machine_summary() -> str:
    try:
        one, five, fifteen = os.getloadavg()
        load = f"load avg {one:.2f} {five:.2f} {fifteen:.2f}"
    except OSError:
        load = "load avg unknown"
    return (f"Python {platform.python_version()} ({sys.implementation.name}), "
            f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, {load}")


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]],
                notes: Sequence[str] = ()) -> None:
    """A plain aligned text table (first column left-aligned, the others right-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [row[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(parts)

    print()
    print(title)
    print("-" * len(title))
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))
    for note in notes:
        print(f"  {note}")
    sys.stdout.flush()


def hook_runner(hook: Any, inner: Callable[[Any, Any, Any, Any, bool], Any],
                driver: Any = None) -> Callable[[Any, Any, Any, Any, bool], Any]:
    """``run(scope, cursor, query, params, many)``: one statement through a statement hook
    (``before`` / ``after``, poolkeeper.hooks.context), around ``inner`` instead of a driver;
    a fresh per-connection memo each statement unless ``scope`` has a ``memo`` dict."""
    from poolkeeper.drivers.base import Driver
    from poolkeeper.hooks.context import StatementContext, chain

    adapter = driver if driver is not None else Driver({})
    chained = chain([hook], lambda ctx: inner(ctx.scope, ctx.cursor, ctx.query, ctx.params,
                                              ctx.many))

    def run(scope: Any, cursor: Any, query: Any, params: Any, many: bool) -> Any:
        memo = getattr(scope, "memo", None)
        return chained(StatementContext(adapter, None, cursor, query, params, many,
                                        {} if memo is None else memo, scope))

    return run
