"""Soak: the seed's batch workload through fingerprints and the statistics registry.

The Druid outage (seed 002): a nightly batch sent ``... customer_id IN (?, ?, ... 30,000 ...)``
and multi-row INSERTs of varying length; the statistics map was keyed by raw SQL, so every
statement was a new multi-KB/MB key and 1,000 of them filled the heap. Here the same workload
goes through poolkeeper's execute hook (fingerprint cache + registry + adaptive fetch size,
sized from the default PoolConfig), with no database, so only poolkeeper's memory is measured.

Checks (exit status 1 if any fails):
  * the registry holds a handful of fingerprints (<= 32) however long the lists get;
  * the registry and the fingerprint cache stay within their byte budgets;
  * after warm-up, RSS and tracemalloc growth stay under 5 MB.

Also prints the per-statement cost of a fingerprint (cache hit, cache miss by shape) and of a
registry update. What the statistics cost on a pooled PostgreSQL ``SELECT 1`` is measured by
``bench_sql_stats.py``.

    python benchmarks/soak_sql_stats.py            # 200,000 statements
    python benchmarks/soak_sql_stats.py --quick    # 12,000 statements, < 60 s
"""

from __future__ import annotations

import argparse
import collections
import gc
import math
import os
import random
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from _common import hook_runner

from poolkeeper.config import PoolConfig
from poolkeeper.hooks.fetchsize import AdaptiveFetchSize
from poolkeeper.hooks.stats import StatsHook
from poolkeeper.sql.fingerprint import fingerprint

BUDGET_GROWTH_BYTES = 5 << 20
MAX_FINGERPRINTS = 32
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


# ----------------------------------------------------------------------------- workload
class Workload:
    """Statements like the seed's batch: IN lists of 1..30,000, INSERTs of 1..1,000 rows."""

    WORDS = ("active", "closed", "overdue", "north", "south", "it's", "O'Brien", "a\\b", "中文")

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        # A pool of literal texts to slice from, so building a 30,000-value list is one join.
        self.ints = [str(self.rnd.randint(1, 2_000_000_000)) for _ in range(30_000)]

    def log_uniform(self, hi: int) -> int:
        return max(1, int(math.exp(self.rnd.uniform(0, math.log(hi)))))

    def _word(self) -> str:
        return self.rnd.choice(self.WORDS).replace("\\", "\\\\").replace("'", "\\'")

    def in_list(self, n: int) -> str:
        start = self.rnd.randrange(0, 30_000 - n + 1)
        if self.rnd.random() < 0.5:  # values inlined by the application
            values = ", ".join(self.ints[start:start + n])
        else:  # bound parameters: the text differs only in how many placeholders
            values = ", ".join(["%s"] * n)
        return ("select IFNULL(sum(remain_principal),0) from t_loan where customer_id in ("
                + values + ")")

    def insert(self, rows: int) -> str:
        r = self.rnd
        base = r.randint(1, 10**9)
        parts = [f"({base + i}, {r.randint(1, 10**6)}, {r.randint(0, 10**7) / 100}, "
                 f"'{self._word()}', '2024-0{1 + i % 9}-1{i % 10} 12:00:00')"
                 for i in range(rows)]
        return ("INSERT INTO t_repay (id, loan_id, amount, note, created_at) VALUES "
                + ", ".join(parts))

    def ordinary(self) -> str:
        r = self.rnd
        k = r.randrange(8)
        if k == 0:
            return f"SELECT id, name, status FROM customer WHERE id = {r.randint(1, 10**7)}"
        if k == 1:
            return (f"SELECT * FROM t_loan WHERE customer_id = {r.randint(1, 10**7)} AND "
                    f"status = '{self._word()}' ORDER BY created_at DESC LIMIT {r.randint(1, 50)}")
        if k == 2:
            return (f"UPDATE t_loan SET remain_principal = remain_principal - "
                    f"{r.randint(1, 10**6) / 100}, updated_at = NOW() "
                    f"WHERE id = {r.randint(1, 10**7)}")
        if k == 3:
            return f"DELETE FROM session WHERE token = '{r.getrandbits(128):032x}'"
        if k == 4:
            return (f"SELECT c.id, SUM(l.remain_principal) FROM customer c JOIN t_loan l "
                    f"ON l.customer_id = c.id WHERE c.region = '{self._word()}' GROUP BY c.id "
                    f"HAVING SUM(l.remain_principal) > {r.randint(0, 10**6)}")
        if k == 5:
            ip = f"10.0.{r.randint(0, 255)}.{r.randint(0, 255)}"
            return ("INSERT INTO audit_log (actor, action, detail) VALUES "
                    f"('{self._word()}', 'login', 'from {ip}')")
        if k == 6:
            return "SELECT id, email FROM users WHERE email = %s"  # repeated text: cache hits
        return "SELECT 1"

    def statements(self, count: int) -> Iterator[str]:
        # The largest shapes first, so the warm-up phase has met them.
        yield self.in_list(30_000)
        yield self.insert(1_000)
        for _ in range(count - 2):
            x = self.rnd.random()
            if x < 0.2:
                yield self.in_list(self.log_uniform(30_000))
            elif x < 0.4:
                yield self.insert(self.log_uniform(1_000))
            else:
                yield self.ordinary()


class FakeCursor:
    """What the hook reads after an execute: a row count and whether a result set exists."""

    __slots__ = ("description", "rowcount")

    def __init__(self) -> None:
        self.rowcount = -1
        self.description: Any = None


# ----------------------------------------------------------------------------- micro costs
def per_call_us(fn: Callable[[], object], n: int, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def micro_costs(quick: bool) -> list[tuple[str, float]]:
    w = Workload(7)
    ordinary = ("SELECT * FROM t_loan WHERE customer_id = 42 AND status = 'active' "
                "ORDER BY created_at DESC LIMIT 10")
    big_in = w.in_list(30_000).replace("%s", "7")
    big_insert = w.insert(1_000)
    hook = StatsHook.from_config(PoolConfig(), "mysql")
    cache, reg = hook.cache, hook.registry
    cache.fingerprint(ordinary)
    cur = FakeCursor()
    cur.rowcount, cur.description = 1, (("x",),)

    def inner(c: Any, raw: Any, q: Any, p: Any, many: bool) -> Any:
        return raw

    run = hook_runner(hook, inner)
    n = 20_000 if quick else 100_000
    return [
        ("fingerprint, cache miss: ordinary statement (105 chars)",
         per_call_us(lambda: fingerprint(ordinary, "mysql"), n // 20)),
        (f"fingerprint, cache miss: IN list of 30,000 values ({len(big_in):,} chars)",
         per_call_us(lambda: fingerprint(big_in, "mysql"), 10 if quick else 30, 3)),
        (f"fingerprint, cache miss: INSERT of 1,000 rows ({len(big_insert):,} chars)",
         per_call_us(lambda: fingerprint(big_insert, "mysql"), 10 if quick else 30, 3)),
        ("fingerprint, cache hit", per_call_us(lambda: cache.fingerprint(ordinary), n)),
        ("registry update (begin + end)",
         per_call_us(lambda: reg.end(reg.begin("SELECT ?"), 0.0001, 1), n)),
        ("whole hook around a no-op execute (cache hit)",
         per_call_us(lambda: run(None, cur, ordinary, None, False), n)),
        ("no-op execute alone", per_call_us(lambda: inner(None, cur, ordinary, None, False), n)),
    ]


# ----------------------------------------------------------------------------- PG overhead
# ----------------------------------------------------------------------------- soak
def soak(count: int, seed: int) -> bool:
    config = PoolConfig()
    fetch = AdaptiveFetchSize(config.fetch_size)
    hook = StatsHook.from_config(config, "mysql", fetch=fetch)
    reg, cache = hook.registry, hook.cache
    cur = FakeCursor()

    def inner(c: Any, raw: Any, q: Any, p: Any, many: bool) -> Any:
        return raw

    run = hook_runner(hook, inner)
    workload = Workload(seed)
    warmup = max(2_000, count // 20)
    raw_bytes = 0
    druid_window: collections.deque[int] = collections.deque(maxlen=1_000)
    druid_bytes = druid_peak = 0
    kinds = {"select": (("x",),), "insert": None}
    started = time.perf_counter()
    rss0 = traced0 = 0
    deadline = started + (3_600 if count > 50_000 else 600)
    for i, sql in enumerate(workload.statements(count)):
        if i == warmup:
            gc.collect()
            rss0 = rss_bytes()
            tracemalloc.start()
            traced0 = tracemalloc.get_traced_memory()[0]
        if time.perf_counter() > deadline:
            print(f"stopped at the time bound after {i:,} statements")
            break
        is_select = sql[0] in "sS"
        cur.description = kinds["select" if is_select else "insert"]
        cur.rowcount = (i % 7) if is_select else 1 + i % 1_000
        run(None, cur, sql, None, False)
        size = sys.getsizeof(sql)
        raw_bytes += size
        # What Druid's 1,000-entry map keyed by raw SQL would hold: every text is distinct.
        if len(druid_window) == druid_window.maxlen:
            druid_bytes -= druid_window[0]
        druid_window.append(size)
        druid_bytes += size
        druid_peak = max(druid_peak, druid_bytes)
        del sql
    elapsed = time.perf_counter() - started
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - traced0 if tracemalloc.is_tracing() else 0
    tracemalloc.stop()
    rss_growth = rss_bytes() - rss0
    snap = hook.sql_stats()
    fps = snap["fingerprints"]
    cache_stats = snap["fingerprint_cache"]
    ok_fps = fps <= MAX_FINGERPRINTS
    ok_reg = reg.nbytes <= reg.budget_bytes
    ok_cache = cache.nbytes <= cache.budget_bytes
    ok_fetch = fetch.nbytes <= fetch.budget_bytes
    ok_rss = rss_growth < BUDGET_GROWTH_BYTES
    ok_traced = traced < BUDGET_GROWTH_BYTES

    def mark(ok: bool) -> str:
        return "ok" if ok else "FAIL"

    print(f"\nsoak: {snap['executions']:,} statements in {elapsed:.1f} s "
          f"({snap['executions'] / elapsed:,.0f}/s, warm-up {warmup:,}); "
          f"{raw_bytes / 1e6:,.1f} MB of SQL text")
    rows = [
        ("fingerprints in the registry", f"{fps}", f"<= {MAX_FINGERPRINTS}", mark(ok_fps)),
        ("registry bytes (estimate)", f"{reg.nbytes:,}", f"<= {reg.budget_bytes:,}",
         mark(ok_reg)),
        ("fingerprint cache bytes", f"{cache.nbytes:,}", f"<= {cache.budget_bytes:,}",
         mark(ok_cache)),
        ("adaptive fetch-size bytes", f"{fetch.nbytes:,}", f"<= {fetch.budget_bytes:,}",
         mark(ok_fetch)),
        ("RSS growth after warm-up", f"{rss_growth / 1e6:+.2f} MB",
         f"< {BUDGET_GROWTH_BYTES / 1e6:.1f} MB", mark(ok_rss)),
        ("tracemalloc growth after warm-up", f"{traced / 1e6:+.2f} MB",
         f"< {BUDGET_GROWTH_BYTES / 1e6:.1f} MB", mark(ok_traced)),
        ("Druid-style raw-SQL map (1,000 entries), peak", f"{druid_peak / 1e6:,.1f} MB",
         "(for comparison)", ""),
    ]
    table(("measure", "value", "bound", ""), rows)
    print(f"\nfingerprint cache: {cache_stats['hits']:,} hits, {cache_stats['misses']:,} misses, "
          f"{cache_stats['uncacheable']:,} too long to cache, {cache_stats['evictions']:,} "
          f"evictions; registry evictions: {snap['evictions']}")
    print("\nfingerprints:")
    for s in snap["statements"]:
        print(f"  {s['executions']:>8,} x  {s['fingerprint'][:110]}")
    return all((ok_fps, ok_reg, ok_cache, ok_fetch, ok_rss, ok_traced))


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print(line)
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    print(line)
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="12,000 statements (< 60 s)")
    parser.add_argument("--statements", type=int, default=None)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args(argv)
    count = args.statements or (12_000 if args.quick else 200_000)

    print("per-statement cost (best of 5, CPython "
          f"{sys.version_info.major}.{sys.version_info.minor})")
    table(("operation", "us"), [(name, f"{us:,.2f}") for name, us in micro_costs(args.quick)])
    ok = soak(count, args.seed)
    print("\nresult:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
