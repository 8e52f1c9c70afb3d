"""``poolkeeper demo``: a short, realistic workload through a pool, then the pool's report.

A small shop schema (customers, products, orders, order lines) is loaded with batch inserts,
then several threads run a mix of joins, aggregates, point lookups and order placements
against a pool with fewer connections than threads, so waiting, hand-off and leases show in
the statistics. It ends by itself (a bounded number of operations and a time limit).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass
class DemoResult:
    """What the demo did, for the report and for tests."""

    operations: int = 0
    errors: int = 0
    seconds: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


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


def run_demo(dsn: str = "sqlite://:memory:", *, threads: int = 6, operations: int = 3_000,
             max_size: int = 3, time_limit: float = 20.0, seed: int = 7,
             progress: Callable[[int], None] | None = None, keep_tables: bool = False,
             pool_options: dict[str, Any] | None = None) -> DemoResult:
    """Run the workload; ``progress(n)`` is called as operations complete."""
    rng = random.Random(seed)
    prefix = "pkdemo_"
    customers, products = 500, 200
    options = {"max_size": max_size, "min_idle": 1, "name": "demo", **(pool_options or {})}
    result = DemoResult()
    with Pool(dsn, **options) as pool:
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

        start = time.monotonic()
        workers = [threading.Thread(target=worker, args=(i,), name=f"demo-{i}")
                   for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(time_limit + 30)
        result.seconds = time.monotonic() - start
        result.by_kind = dict(sorted(counts.items()))
        result.stats = pool.stats()
        if not keep_tables:
            _teardown(pool, prefix)
    return result
