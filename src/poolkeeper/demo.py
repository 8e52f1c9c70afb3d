"""``poolkeeper demo``: a short, realistic workload through a pool, then the pool's report.

A small shop schema (customers, products, orders, order lines) is loaded with batch inserts,
then several threads run a mix of joins, aggregates, point lookups and order placements
against a pool with fewer connections than threads, so waiting, hand-off and leases show in
the statistics. Meanwhile the demo plants two faults a real application has:

* a **slow query** run under a 0.3 s statement timeout, which is cancelled on the server;
* a **leak**: "application code" (a small module written to a temporary directory, standing
  in for yours) borrows a connection and forgets it; the pool's leak detector and, when the
  pool feeds it, the resource monitor name the file and line that took it.

The report adds the top SQL fingerprints, cache counters and the memory ledger. Each feature
is used only where this build has it; what is missing is listed as "not enabled". It ends by
itself (a bounded number of operations and a time limit).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import random
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pool import Pool

__all__ = ["DemoResult", "run_demo"]

_SCHEMA = (
    "CREATE TABLE {p}customers (id INTEGER PRIMARY KEY, name VARCHAR(80), city VARCHAR(40))",
    "CREATE TABLE {p}products (id INTEGER PRIMARY KEY, name VARCHAR(80), price_cents INTEGER)",
    "CREATE TABLE {p}orders (id INTEGER PRIMARY KEY, customer_id INTEGER, created VARCHAR(32))",
    "CREATE TABLE {p}order_lines (order_id INTEGER, product_id INTEGER, qty INTEGER)",
)
_CITIES = ("Lisbon", "Hangzhou", "Lagos", "Lima", "Oslo", "Pune", "Quito", "Tartu")

#: the statement timeout the slow query runs under (seconds)
SLOW_QUERY_TIMEOUT_S = 0.3
#: how long a checkout may be held before the demo pool reports it as a leak (seconds)
LEAK_THRESHOLD_S = 0.5
# The stand-in for application code that leaks: written to a temporary file so the leak is
# reported at a real file:line outside poolkeeper (the monitor skips poolkeeper's own files).
_LEAKY_APP = '''\
"""Stand-in for application code (written by poolkeeper demo)."""


def export_report(pool, table):
    conn = pool.getconn()  # the leak: this connection is never given back
    conn.execute("SELECT COUNT(*) FROM " + table).fetchall()
    return conn
'''
_LEAK_LINE = 5  # the getconn() line in _LEAKY_APP
_MAX_LOG_RECORDS = 200


@dataclass
class DemoResult:
    """What the demo did, for the report and for tests."""

    operations: int = 0
    errors: int = 0
    seconds: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    #: the slow query: sql, timeout_s, elapsed_s, error (None when timeouts are not enabled)
    timeout: dict[str, Any] | None = None
    #: the planted leak: expected site, detector's site, monitor's site, held_s
    leak: dict[str, Any] | None = None
    #: the top SQL fingerprints by total time (each a dict from the statistics registry)
    top_sql: list[dict[str, Any]] = field(default_factory=list)
    #: cache counters from pool.stats() (statement cache, fingerprint cache)
    caches: dict[str, Any] = field(default_factory=dict)
    #: memory ledger rows: name, category, bytes, budget_bytes, fraction
    ledger: list[dict[str, Any]] = field(default_factory=list)
    #: features of this build the demo could not use, with why
    not_enabled: dict[str, str] = field(default_factory=dict)
    #: poolkeeper's own log lines during the run (leak reports, timeouts), oldest first
    log: list[str] = field(default_factory=list)
    #: the prefix of the demo's table names
    prefix: str = "pkdemo_"


def _ph(pool: Pool) -> str:
    return "?" if pool.driver.name == "sqlite" else "%s"


def _setup(pool: Pool, prefix: str, customers: int, products: int, rng: random.Random) -> None:
    ph = _ph(pool)
    with pool.connection() as conn:
        for table in ("order_lines", "orders", "products", "customers"):
            conn.execute(f"DROP TABLE IF EXISTS {prefix}{table}")
        for ddl in _SCHEMA:
            conn.execute(ddl.format(p=prefix))
    with pool.connection() as conn:
        cur = conn.cursor()
        cur.executemany(f"INSERT INTO {prefix}customers (id, name, city) VALUES ({ph}, {ph}, {ph})",
                        [(i, f"customer {i}", rng.choice(_CITIES))
                         for i in range(1, customers + 1)])
        cur.executemany(
            f"INSERT INTO {prefix}products (id, name, price_cents) VALUES ({ph}, {ph}, {ph})",
            [(i, f"product {i}", rng.randint(100, 20_000)) for i in range(1, products + 1)])


def _teardown(pool: Pool, prefix: str) -> None:
    with pool.connection() as conn:
        for table in ("order_lines", "orders", "products", "customers"):
            conn.execute(f"DROP TABLE IF EXISTS {prefix}{table}")


class _LogCollector(logging.Handler):
    """Keeps poolkeeper's log lines of the run (bounded) instead of printing them mid-bar."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=_MAX_LOG_RECORDS)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname.lower()}: {record.getMessage()}")


@contextlib.contextmanager
def _collect_logs() -> Iterator[_LogCollector]:
    log = logging.getLogger("poolkeeper")
    handler = _LogCollector()
    old_level, old_propagate = log.level, log.propagate
    log.addHandler(handler)
    log.propagate = False
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate


# ----------------------------------------------------------------------------- features
def _install_hooks(pool: Pool, result: DemoResult) -> list[Any]:
    """Add the statistics, statement-cache and timeout hooks the pool lacks (if built)."""
    added: list[Any] = []
    stats = pool.stats()
    from .console.views import sql_stats_source

    if sql_stats_source(pool) is None:
        try:
            from .hooks.stats import StatsHook
            hook: Any = StatsHook.from_config(pool.config, pool.driver.name)
        except Exception as exc:  # noqa: BLE001 - a part of this build is missing or broken
            result.not_enabled["sql statistics"] = f"{type(exc).__name__}: {exc}"
        else:
            pool.add_hook(hook)
            added.append(hook)
    if not any(k.startswith("stmt_cache_") for k in stats):
        try:
            from .hooks.stmtcache import StatementCacheHook
            hook = StatementCacheHook.from_config(pool.config, pool.driver)
        except Exception as exc:  # noqa: BLE001 - a part of this build is missing or broken
            result.not_enabled["statement cache"] = f"{type(exc).__name__}: {exc}"
        else:
            pool.add_hook(hook)
            added.append(hook)
    if "timeouts_fired_num" not in stats and not _pool_has_timeouts():
        try:
            from .hooks.timeouts import TimeoutHook
            hook = TimeoutHook.for_pool(pool)
        except Exception as exc:  # noqa: BLE001 - a part of this build is missing or broken
            result.not_enabled["query timeouts"] = f"{type(exc).__name__}: {exc}"
        else:
            pool.add_hook(hook)  # added last: outermost, so it sees the whole statement
            added.append(hook)
    return added


def _pool_has_timeouts() -> bool:
    """Whether this build's pool takes per-statement timeouts (``execute(..., timeout=)``)."""
    from .proxy import ConnectionProxy

    try:
        return "timeout" in inspect.signature(ConnectionProxy.execute).parameters
    except (TypeError, ValueError):
        return False


def _remove_hooks(pool: Pool, hooks: list[Any]) -> None:
    for hook in reversed(hooks):
        pool.remove_hook(hook)
        close = getattr(hook, "close", None)
        if callable(close):
            close()


def _slow_sql(pool: Pool) -> str:
    if pool.driver.name == "postgresql":
        return "SELECT pg_sleep(5)"
    if pool.driver.name == "mysql":
        return "SELECT SLEEP(5)"
    # sqlite: a recursive CTE of some seconds; interrupt() stops it at once
    return ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000000) "
            "SELECT max(x) FROM c")


def _run_slow_query(pool: Pool, result: DemoResult) -> None:
    try:
        from .errors import QueryTimeout
        from .hooks.timeouts import statement_timeout
    except Exception as exc:  # noqa: BLE001 - the timeouts part of this build is missing
        result.not_enabled.setdefault("query timeouts", f"{type(exc).__name__}: {exc}")
        return
    built_in = _pool_has_timeouts()
    if not built_in and "timeouts_fired_num" not in pool.stats():
        result.not_enabled.setdefault("query timeouts", "no timeout hook on the pool")
        return
    sql = _slow_sql(pool)
    start = time.monotonic()
    outcome: dict[str, Any] = {"sql": sql, "timeout_s": SLOW_QUERY_TIMEOUT_S}
    try:
        with pool.connection() as conn:
            if built_in:
                conn.execute(sql, timeout=SLOW_QUERY_TIMEOUT_S).fetchall()
            else:
                with statement_timeout(SLOW_QUERY_TIMEOUT_S, conn):
                    conn.execute(sql).fetchall()
        outcome["error"] = None
    except QueryTimeout as exc:
        outcome["error"] = str(exc).splitlines()[0]
        outcome["sql"] = exc.sql or sql
    except Exception as exc:  # noqa: BLE001 - reported: the demo keeps going
        outcome["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    outcome["elapsed_s"] = round(time.monotonic() - start, 3)
    result.timeout = outcome


def _plant_leak(pool: Pool, table: str, workdir: Path) -> tuple[Any, str]:
    """Run the stand-in application code that leaks; returns (connection, expected site)."""
    path = workdir / "leaky_app.py"
    path.write_text(_LEAKY_APP, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("poolkeeper_demo_leaky_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    conn = module.export_report(pool, table)
    return conn, f"{path}:{_LEAK_LINE}"


def _find_leak(pool: Pool, conn: Any, expected: str, deadline: float,
               logs: _LogCollector) -> dict[str, Any]:
    """Wait (bounded) for the leak detector's report of this leak, then read what it and the
    monitor say."""
    def reported() -> bool:
        return any("possible leak" in line and expected in line for line in list(logs.lines))

    while not reported() and time.monotonic() < deadline:
        time.sleep(0.05)
    found: dict[str, Any] = {"expected_site": expected, "detected": reported()}
    slot_id = getattr(getattr(conn, "slot", None), "id", None)
    for row in pool.connections_info():
        if row.get("id") == slot_id:
            found["detector_site"] = row.get("borrow_site")
            found["held_s"] = row.get("held_s")
            found["holder_thread"] = row.get("holder_thread")
    try:
        from .observe.monitor import MONITOR
        groups = MONITOR.by_site(0.0, kind="checkout", pool=pool.name)
    except Exception:  # noqa: BLE001 - the monitor is optional
        groups = []
    site_file = expected.rsplit(":", 1)[0]
    match = [g for g in groups if g.site.startswith(site_file)]
    if match:
        found["monitor_site"] = match[0].site
        found["monitor_count"] = match[0].count
    found["monitor_checkouts"] = sum(g.count for g in groups)
    return found


def _top_sql(pool: Pool, limit: int = 5) -> list[dict[str, Any]]:
    from .console.views import _sql_entries

    enabled, rows, _counters = _sql_entries(pool)
    if not enabled:
        return []
    rows.sort(key=lambda r: -(r.get("total_ms") or 0))
    return rows[:limit]


def _ledger() -> list[dict[str, Any]]:
    try:
        from .observe.memory import LEDGER
    except Exception:  # noqa: BLE001 - the ledger is optional
        return []
    return [{"name": e.name, "category": e.category, "bytes": e.bytes,
             "budget_bytes": e.budget_bytes, "fraction": e.fraction} for e in LEDGER.entries()]


# ----------------------------------------------------------------------------- the run
def run_demo(dsn: str = "sqlite://:memory:", *, threads: int = 6, operations: int = 3_000,
             max_size: int = 3, time_limit: float = 20.0, seed: int = 7,
             progress: Callable[[int], None] | None = None, keep_tables: bool = False,
             pool_options: dict[str, Any] | None = None, faults: bool = True,
             on_pool: Callable[[Pool], None] | None = None,
             after: Callable[[Pool, DemoResult], None] | None = None,
             prefix: str = "pkdemo_") -> DemoResult:
    """Run the workload; ``progress(n)`` is called as operations complete.

    ``faults``: plant the slow query and the leak. ``on_pool(pool)`` runs once the pool is
    open (the CLI starts the console there); ``after(pool, result)`` runs with the report
    filled in, before the tables are dropped and the pool closed. ``prefix`` names the demo's
    tables (``<prefix>orders``, ...).
    """
    if not prefix.replace("_", "").isalnum():
        raise ValueError(f"prefix={prefix!r} must be letters, digits and underscores")
    rng = random.Random(seed)
    customers, products = 500, 200
    options: dict[str, Any] = {"max_size": max_size, "min_idle": 1, "name": "demo"}
    if faults:
        options.update(leak_threshold=LEAK_THRESHOLD_S, monitor=True)
    options.update(pool_options or {})
    result = DemoResult(prefix=prefix)
    with _collect_logs() as logs, Pool(dsn, **options) as pool, \
            tempfile.TemporaryDirectory(prefix="poolkeeper-demo-") as workdir:
        hooks = _install_hooks(pool, result)
        try:
            if on_pool is not None:
                on_pool(pool)
            _run(pool, result, prefix=prefix, customers=customers, products=products,
                 rng=rng, threads=threads, operations=operations, time_limit=time_limit,
                 seed=seed, progress=progress, faults=faults, workdir=Path(workdir),
                 logs=logs)
            result.top_sql = _top_sql(pool)
            result.stats = pool.stats()
            result.caches = {k: v for k, v in result.stats.items()
                             if ("cache" in k or k.startswith("stmt_")) and
                             not isinstance(v, list)}
            if not result.caches:
                result.not_enabled.setdefault("statement cache", "no cache counters reported")
            result.ledger = _ledger()
            result.log = list(logs.lines)
            if after is not None:
                after(pool, result)
            if not keep_tables:
                if pool.driver.name == "mysql":
                    # MariaDB does not flag a read-only transaction in the server status, so
                    # idle connections that only ran SELECTs may still hold metadata locks on
                    # the demo's tables; retiring them lets DROP TABLE proceed.
                    pool.expire_all()
                _teardown(pool, prefix)
        finally:
            _remove_hooks(pool, hooks)
    return result


def _run(pool: Pool, result: DemoResult, *, prefix: str, customers: int, products: int,
         rng: random.Random, threads: int, operations: int, time_limit: float, seed: int,
         progress: Callable[[int], None] | None, faults: bool, workdir: Path,
         logs: _LogCollector) -> None:
    ph = _ph(pool)
    _setup(pool, prefix, customers, products, rng)
    order_ids = iter(range(1, 10**9))
    ids_lock = threading.Lock()
    counts: dict[str, int] = {}
    counts_lock = threading.Lock()
    deadline = time.monotonic() + time_limit
    per_thread = operations // threads

    def place_order(conn: Any, r: random.Random) -> None:
        with ids_lock:
            order_id = next(order_ids)
        cur = conn.cursor()
        cur.execute(f"INSERT INTO {prefix}orders (id, customer_id, created) "
                    f"VALUES ({ph}, {ph}, {ph})",
                    (order_id, r.randint(1, customers), time.strftime("%Y-%m-%d %H:%M:%S")))
        cur.executemany(f"INSERT INTO {prefix}order_lines (order_id, product_id, qty) "
                        f"VALUES ({ph}, {ph}, {ph})",
                        [(order_id, r.randint(1, products), r.randint(1, 5))
                         for _ in range(r.randint(1, 6))])

    def revenue_by_city(conn: Any, r: random.Random) -> None:
        conn.execute(
            f"SELECT c.city, SUM(l.qty * p.price_cents) FROM {prefix}orders o "
            f"JOIN {prefix}customers c ON c.id = o.customer_id "
            f"JOIN {prefix}order_lines l ON l.order_id = o.id "
            f"JOIN {prefix}products p ON p.id = l.product_id GROUP BY c.city").fetchall()

    def customer_lookup(conn: Any, r: random.Random) -> None:
        conn.execute(f"SELECT id, name, city FROM {prefix}customers WHERE id = {ph}",
                     (r.randint(1, customers),)).fetchone()

    def top_products(conn: Any, r: random.Random) -> None:
        conn.execute(
            f"SELECT p.name, SUM(l.qty) AS n FROM {prefix}order_lines l "
            f"JOIN {prefix}products p ON p.id = l.product_id "
            f"GROUP BY p.name ORDER BY n DESC LIMIT 5").fetchall()

    def reprice(conn: Any, r: random.Random) -> None:
        conn.execute(f"UPDATE {prefix}products SET price_cents = price_cents + 1 "
                     f"WHERE id = {ph}", (r.randint(1, products),))

    mix: list[tuple[str, Callable[[Any, random.Random], None], int]] = [
        ("place_order", place_order, 30), ("customer_lookup", customer_lookup, 35),
        ("revenue_by_city", revenue_by_city, 10), ("top_products", top_products, 10),
        ("reprice", reprice, 15)]
    kinds = [m for m in mix for _ in range(m[2])]

    def worker(index: int) -> None:
        r = random.Random(seed * 1000 + index)
        for _ in range(per_thread):
            if time.monotonic() > deadline:
                return
            name, action, _weight = r.choice(kinds)
            try:
                with pool.connection() as conn:
                    action(conn, r)
            except Exception:  # noqa: BLE001 - counted; the demo keeps going
                with counts_lock:
                    result.errors += 1
                continue
            with counts_lock:
                counts[name] = counts.get(name, 0) + 1
                result.operations += 1
            if progress is not None:
                progress(1)

    leaked: Any = None
    expected = ""
    if faults:
        leaked, expected = _plant_leak(pool, f"{prefix}products", workdir)
    start = time.monotonic()
    workers = [threading.Thread(target=worker, args=(i,), name=f"demo-{i}")
               for i in range(threads)]
    for w in workers:
        w.start()
    if faults:
        _run_slow_query(pool, result)
    for w in workers:
        w.join(time_limit + 30)
    result.seconds = time.monotonic() - start
    result.by_kind = dict(sorted(counts.items()))
    if leaked is not None:
        result.leak = _find_leak(pool, leaked, expected,
                                 time.monotonic() + LEAK_THRESHOLD_S * 4 + 2.0, logs)
        pool.putconn(leaked)  # the demo cleans up after its own leak
