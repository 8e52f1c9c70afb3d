"""What ``poolkeeper doctor`` finds in a pool configuration: what it can cost, what is risky.

For each structure that grows with the workload it prints the worst case the configuration
allows (e.g. statement cache bytes x max_size connections), and for each risky setting the
reason and the public incident it repeats:

    Druid's SQL statistics       statistics keyed by raw SQL, bounded by a count, not bytes
                                 (1,000 multi-MB keys: 2 GB); PSCache row buffers
    BoneCP's idle churn          idle connections closed and reopened below the minimum; the
                                 MySQL driver kept one reference per connection ever opened
    Connector/J's cancelled      one timer task per statement with a query timeout, kept
      timer tasks                queued until its deadline (290,000 tasks, 2 GB)
    dble's leaked buffers        the buffer monitor built to find them walked the full stack
                                 on every allocation, ~20 % slower
    the StarRocks loader         per-table buffers, files and clients with no shared byte
                                 budget; its "fix" dropped unflushed data

Findings are ``danger`` (the exit code is 1), ``warning`` or ``info``. A configuration that
cannot be read exits with 2. Example::

    report = diagnose(PoolConfig.from_toml("pool.toml"))
    print(format_report(report)); sys.exit(report.exit_code)   # format_report: cli.doctor
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigWarning, PoolConfig, mask_dsn
from ..dsn import driver_of
from .sizes import format_bytes

__all__ = ["INCIDENTS", "Finding", "Report", "Structure", "diagnose", "diagnose_file"]

#: the public incidents findings refer to (key -> the incident, named, in one line)
INCIDENTS: dict[str, str] = {
    "druid": "Druid's SQL statistics: keyed by raw SQL, bounded by count not bytes; "
             "PSCache row buffers",
    "bonecp": "BoneCP's idle churn: idle connections closed and reopened below the minimum",
    "connector-j": "Connector/J's cancelled timer tasks: one per statement, kept until its "
                   "deadline",
    "dble": "dble's leaked buffers: its monitor walked the full stack per allocation, "
            "~20% slower",
    "starrocks": "the StarRocks loader: per-table buffers with no shared byte budget",
}
# The numbers the project's notes once used for them, still accepted as Finding keys.
_NUMBERED = {"000": "starrocks", "001": "dble", "002": "druid", "003": "bonecp",
             "004": "connector-j"}

# Estimates (bytes) of what one element costs in CPython; stated in the report.
WAITER_BYTES = 400  # a Waiter (lock, slot, times) plus its deque cell
DEADLINE_BYTES = 200  # a scheduler heap entry: tuple + Deadline object
CONNECTOR_J_TASK_BYTES = 7 * 1024  # one CancelTask, as measured in Connector/J's leak
FRAME_BYTES = 100  # one (file, line, function) tuple of a leak stack
SQLITE_PAGE_CACHE_BYTES = 2 * 1024 * 1024  # sqlite3's default cache_size=-2000 (KiB)
DEFAULT_ROW_BYTES = 1024
MYSQL_WAIT_TIMEOUT_S = 8 * 3600  # MySQL / MariaDB default wait_timeout

_DANGER_SHARE = 0.25  # one structure allowed to reach this share of memory: dangerous
_WARN_SHARE = 0.05


@dataclass(frozen=True)
class Structure:
    """A structure that grows with the workload, and its worst case under this config."""

    name: str
    bound: str  #: what bounds it, in the config's words
    worst_bytes: int | None  #: None: it has no byte bound
    note: str = ""


@dataclass(frozen=True)
class Finding:
    """A risky setting: how bad, which setting, why, and the incident it repeats."""

    severity: str  #: "danger" | "warning" | "info"
    setting: str
    value: str
    reason: str
    incident: str = ""  #: a key of INCIDENTS ("druid"), or "" when the reason says it all

    def __post_init__(self) -> None:
        if self.incident in _NUMBERED:
            object.__setattr__(self, "incident", _NUMBERED[self.incident])

    @property
    def source(self) -> str:
        """The incident in words, or "" (then the reason names its source, if any)."""
        return INCIDENTS.get(self.incident, "")


@dataclass
class Report:
    """What :func:`diagnose` found."""

    config: PoolConfig
    structures: list[Structure] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    memory_limit: int | None = None
    limit_source: str = "unknown"
    path: str | None = None

    @property
    def worst_total_bytes(self) -> int:
        return sum(s.worst_bytes or 0 for s in self.structures)

    @property
    def dangerous(self) -> bool:
        return any(f.severity == "danger" for f in self.findings)

    @property
    def exit_code(self) -> int:
        return 1 if self.dangerous else 0


def _driver(config: PoolConfig) -> str | None:
    if config.driver:
        return config.driver
    if config.dsn:
        return driver_of(config.dsn)
    return None


def _churn_cost(driver: str | None) -> str:
    """What each reopened connection costs on this driver (BoneCP's churn was a leak)."""
    if driver == "mysql":
        return ("the MySQL driver BoneCP used kept a reference per connection ever opened, "
                "so BoneCP's churn became a leak; every open also costs a handshake and an "
                "authentication")
    if driver == "sqlite":
        return ("every open reopens the database file and starts with a cold page cache "
                "and an empty statement cache")
    return ("every open costs a TCP and TLS handshake, an authentication and a server "
            "process or thread, and starts with an empty statement cache")


def _monitor_budget() -> int | None:
    try:
        from ..observe.monitor import MONITOR
    except Exception:  # noqa: BLE001 - the monitor is optional; its budget then is unknown
        return None
    return int(MONITOR.memory_usage()[1])


def _structures(c: PoolConfig, row_bytes: int) -> list[Structure]:
    out: list[Structure] = []
    driver = _driver(c)
    if c.statement_cache_size > 0:
        if driver == "mysql":
            out.append(Structure("statement caches", "none needed", 0,
                                 "PyMySQL sends text statements: nothing is cached"))
        else:
            out.append(Structure(
                "statement caches",
                f"statement_cache_bytes ({format_bytes(c.statement_cache_bytes)}) x "
                f"max_size ({c.max_size})", c.statement_cache_bytes * c.max_size,
                f"at most {c.statement_cache_size} statements per connection"))
    if c.stats:
        # The fingerprint cache beside the registry gets an eighth of the budget; each
        # connection remembers its last statements (hooks/stats.py MEMO_MAX_BYTES).
        from ..hooks.stats import MEMO_MAX_BYTES

        worst = (c.stats_max_bytes + max(64 << 10, c.stats_max_bytes // 8)
                 + c.max_size * MEMO_MAX_BYTES)
        out.append(Structure("SQL statistics",
                             f"stats_max_bytes ({format_bytes(c.stats_max_bytes)}) + "
                             f"its fingerprint cache (1/8) + max_size ({c.max_size}) x "
                             f"{format_bytes(MEMO_MAX_BYTES)} of remembered statements", worst,
                             f"at most {c.stats_max_entries:,} fingerprints"))
    out.append(Structure("fetch buffers", f"fetch_size ({c.fetch_size:,} rows) x max_size "
                         f"({c.max_size}) x {format_bytes(row_bytes)}/row",
                         c.fetch_size * c.max_size * row_bytes,
                         "rows one open result holds client-side; the row size is assumed"))
    out.append(Structure("waiting callers", f"max_waiting ({c.max_waiting:,}) x "
                         f"~{WAITER_BYTES} B", c.max_waiting * WAITER_BYTES,
                         "each also holds a blocked thread"))
    if c.query_timeout is not None or c.transaction_timeout is not None:
        out.append(Structure("timeout scheduler", f"statements in flight (<= max_size "
                             f"{c.max_size}) x ~{DEADLINE_BYTES} B", c.max_size * DEADLINE_BYTES,
                             "entries leave when their statement ends (the fix for "
                             "Connector/J's cancelled timer tasks)"))
    if c.leak_threshold is not None:
        out.append(Structure("leak stacks", f"max_size ({c.max_size}) x leak_stack_depth "
                             f"({c.leak_stack_depth}) frames",
                             c.max_size * c.leak_stack_depth * FRAME_BYTES))
    if c.monitor:
        budget = _monitor_budget()
        out.append(Structure("resource monitor", "the monitor's max_records (process-wide)",
                             budget, "shared by every pool with monitor=True"))
    if driver == "sqlite":
        out.append(Structure("sqlite page caches", f"max_size ({c.max_size}) x 2 MB default "
                             "cache_size", c.max_size * SQLITE_PAGE_CACHE_BYTES,
                             "set PRAGMA cache_size to change it"))
    return out


def diagnose(config: PoolConfig, *, memory_limit: int | None = None,
             limit_source: str | None = None, statements_per_second: float = 1000.0,
             row_bytes: int = DEFAULT_ROW_BYTES,
             conflicts: list[str] | None = None) -> Report:
    """Check ``config``; ``memory_limit`` defaults to the cgroup limit or physical memory.

    ``statements_per_second`` sizes what a per-statement timer design would hold (Connector/J);
    ``row_bytes`` sizes fetch buffers; ``conflicts`` are the config's own warnings.
    """
    if memory_limit is None:
        try:
            from ..observe.memory import read_memory_limit
            memory_limit, detected = read_memory_limit()
        except Exception:  # noqa: BLE001 - without a limit, only absolute rules apply
            memory_limit, detected = None, "unknown"
        limit_source = limit_source or detected
    report = Report(config, memory_limit=memory_limit,
                    limit_source=limit_source or ("configured" if memory_limit else "unknown"))
    c = config
    report.structures = _structures(c, row_bytes)
    add = report.findings.append

    for text in conflicts or ():
        add(Finding("warning", "config", "", f"the pool would change this setting: {text}"))

    # Memory: each structure against the limit.
    if memory_limit:
        for s in report.structures:
            if s.worst_bytes is None:
                continue
            share = s.worst_bytes / memory_limit
            incident = {"statement caches": "druid", "SQL statistics": "druid",
                        "fetch buffers": "druid", "resource monitor": "dble"}.get(s.name, "")
            if share >= _DANGER_SHARE:
                add(Finding("danger", s.name, format_bytes(s.worst_bytes),
                            f"worst case {format_bytes(s.worst_bytes)} is {share:.0%} of the "
                            f"{format_bytes(memory_limit)} memory limit ({report.limit_source}); "
                            f"bound: {s.bound}", incident))
            elif share >= _WARN_SHARE:
                add(Finding("warning", s.name, format_bytes(s.worst_bytes),
                            f"worst case {format_bytes(s.worst_bytes)} is {share:.0%} of the "
                            f"{format_bytes(memory_limit)} memory limit; bound: {s.bound}",
                            incident))
        total = report.worst_total_bytes
        if total >= memory_limit * 0.5 and not report.dangerous:
            add(Finding("danger", "all structures", format_bytes(total),
                        f"together the structures can reach {format_bytes(total)}, "
                        f"{total / memory_limit:.0%} of the memory limit"))

    # SQL statistics (Druid's).
    if c.stats and c.stats_max_bytes >= 1 << 30:
        add(Finding("danger", "stats_max_bytes", format_bytes(c.stats_max_bytes),
                    "a statistics budget this large is no bound at all: Druid's sqlStatMap "
                    "held 1,000 multi-MB SQL keys (2 GB); keep it to a few MB", "druid"))
    if c.log_params:
        add(Finding("warning", "log_params", "true", "statement parameters (customer data, "
                    "secrets) are written to the logs with slow statements"))

    # Statement caches (Druid's PSCache).
    if c.statement_cache_size > 1000 and _driver(c) != "mysql":
        add(Finding("warning", "statement_cache_size", str(c.statement_cache_size),
                    f"{c.statement_cache_size} statements x {c.max_size} connections = "
                    f"{c.statement_cache_size * c.max_size:,} server-side plans; HikariCP "
                    "leaves caching out for this reason (250 queries x 20 connections = "
                    "5,000 plans)", "druid"))
    if c.fetch_size > 10_000:
        add(Finding("warning", "fetch_size", f"{c.fetch_size:,}",
                    f"each open result may buffer {c.fetch_size:,} rows client-side per "
                    "connection; Druid's PSCache pinned row size x prefetch per statement",
                    "druid"))

    # What idle PostgreSQL connections pin: libpq's input buffer stays at the largest message.
    if _driver(c) in ("postgresql", None) and (
            c.max_idle_result_bytes == 0 or c.max_idle_result_bytes > 64 << 20):
        worst = ("unbounded" if c.max_idle_result_bytes == 0
                 else format_bytes(c.max_idle_result_bytes * c.max_size))
        add(Finding("warning", "max_idle_result_bytes",
                    "0 (off)" if c.max_idle_result_bytes == 0
                    else format_bytes(c.max_idle_result_bytes),
                    "libpq keeps each connection's input buffer at the largest result it "
                    f"received until it closes: idle connections may pin {worst} "
                    f"(x max_size {c.max_size}); set max_idle_result_bytes to 16 MiB or less",
                    "dble"))

    # Churn (BoneCP's).
    opens_per_hour = 0.0
    if c.max_lifetime is not None:
        opens_per_hour += c.max_size * 3600.0 / c.max_lifetime
    if c.idle_timeout is not None and c.max_size > c.min_idle:
        opens_per_hour += (c.max_size - c.min_idle) * 3600.0 / max(c.idle_timeout, 1.0)
    if opens_per_hour >= 36_000:
        add(Finding("danger", "max_lifetime / idle_timeout",
                    f"{c.max_lifetime} / {c.idle_timeout}",
                    f"up to {opens_per_hour:,.0f} connections opened per hour: "
                    f"{_churn_cost(_driver(c))}; keep connections for minutes, not seconds",
                    "bonecp"))
    elif opens_per_hour >= 1_000:
        add(Finding("warning", "max_lifetime / idle_timeout",
                    f"{c.max_lifetime} / {c.idle_timeout}",
                    f"up to {opens_per_hour:,.0f} connections opened per hour (churn); every "
                    "open costs a handshake and driver state", "bonecp"))
    if c.idle_timeout is not None and c.idle_timeout < 30 and c.max_size > c.min_idle:
        add(Finding("warning", "idle_timeout", f"{c.idle_timeout:g} s",
                    f"connections above min_idle={c.min_idle} close after {c.idle_timeout:g} s "
                    "idle and are reopened by the next burst; BoneCP's idleMaxAge churn is "
                    "the outage this repeats (poolkeeper never evicts below min_idle)", "bonecp"))
    if (c.max_lifetime is not None and c.lifetime_jitter == 0 and c.max_size > 1):
        add(Finding("warning", "lifetime_jitter", "0",
                    f"connections opened together all expire together: {c.max_size} "
                    f"reconnects at once every {c.max_lifetime:g} s (HikariCP jitters up "
                    "to 2.5%)"))
    if not c.validate_on_borrow and c.keepalive_interval is None:
        add(Finding("warning", "validate_on_borrow / keepalive_interval", "false / none",
                    "a connection the server closed (restart, MySQL wait_timeout of 8 h) is "
                    "handed out and fails on first use; BoneCP relied on idle tests alone",
                    "bonecp"))
    elif (_driver(c) == "mysql" and c.keepalive_interval is None
          and (c.idle_timeout is None or c.idle_timeout >= MYSQL_WAIT_TIMEOUT_S)
          and (c.max_lifetime is None or c.max_lifetime >= MYSQL_WAIT_TIMEOUT_S)):
        add(Finding("warning", "keepalive_interval", "none",
                    "MySQL closes connections idle past wait_timeout (8 h by default); "
                    "without keepalive or a shorter lifetime, idle ones die on the server",
                    "bonecp"))

    # Timeouts (Connector/J's).
    for name in ("query_timeout", "transaction_timeout"):
        value = getattr(c, name)
        if value is not None and value > 600:
            naive = statements_per_second * value
            add(Finding("warning", name, f"{value:g} s",
                        f"a statement may hold its connection for {value / 60:,.0f} min before "
                        "it is cancelled. A timer per statement that stays queued until its "
                        f"deadline (Connector/J) would keep {naive:,.0f} entries at "
                        f"{statements_per_second:,.0f} statements/s = "
                        f"{format_bytes(naive * CONNECTOR_J_TASK_BYTES)}; poolkeeper removes "
                        "entries when statements end, but a timeout this long protects nothing",
                        "connector-j"))
    if c.query_timeout is None:
        add(Finding("info", "query_timeout", "none",
                    "no query timeout: a runaway statement holds its connection until it "
                    "ends (set one; it cancels on the server)"))
    if c.max_wait > 300:
        add(Finding("warning", "max_wait", f"{c.max_wait:g} s",
                    "callers hang this long before PoolTimeout says the pool is exhausted "
                    "(HikariCP's default is 30 s)"))
    if c.max_waiting > 100_000:
        add(Finding("warning", "max_waiting", f"{c.max_waiting:,}",
                    f"{c.max_waiting:,} callers may queue, each holding a thread, before "
                    "TooManyWaiting turns newcomers away"))

    # Leaks and monitoring (dble's).
    if c.leak_threshold is None and c.abandoned_timeout is None:
        add(Finding("info", "leak_threshold", "none",
                    "a connection never returned is noticed only when the pool runs dry; "
                    "leak_threshold=<s> logs who holds it (costs a short stack per borrow)"))
    if c.leak_threshold is not None and c.leak_stack_depth > 32:
        add(Finding("warning", "leak_stack_depth", str(c.leak_stack_depth),
                    f"{c.leak_stack_depth} frames are walked on every borrow; dble's full "
                    "stack walk per allocation cost ~20% (8 frames are enough to find a "
                    "leak)", "dble"))
    if c.monitor:
        add(Finding("warning", "monitor", "true",
                    "the resource monitor records every checkout, cursor and buffer with its "
                    "call site: turn it on to find a leak, not permanently (dble's equivalent "
                    "cost ~20%)", "dble"))
    if not c.reset_on_return:
        add(Finding("warning", "reset_on_return", "false",
                    "a transaction left open by one caller (locks, uncommitted writes) is "
                    "inherited by the next borrower (Druid resets on every return)"))

    # Secrets in the file.
    if c.dsn and mask_dsn(c.dsn) != c.dsn:
        add(Finding("info", "dsn", mask_dsn(c.dsn),
                    "the password is stored in the configuration file; prefer the "
                    "POOLKEEPER_DSN environment variable or a .pgpass / option file"))
    order = {"danger": 0, "warning": 1, "info": 2}
    report.findings.sort(key=lambda f: order.get(f.severity, 3))
    return report


def diagnose_file(path: str | os.PathLike[str], table: str = "pool", **kwargs: Any) -> Report:
    """Read ``[pool]`` from a TOML file (:meth:`PoolConfig.from_toml`) and :func:`diagnose` it.

    Raises ConfigError (a ValueError) or OSError / tomllib.TOMLDecodeError when the file
    cannot be read as a pool configuration.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConfigWarning)
        config = PoolConfig.from_toml(path, table)
    conflicts = [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]
    report = diagnose(config, conflicts=conflicts, **kwargs)
    report.path = str(path)
    return report
