"""What a fingerprint costs: ordinary statements (us each) and adversarial runs (us per char).

Section 1 times :func:`poolkeeper.fingerprint` on a handful of ordinary statements (the
pool's hot path fingerprints every text it has not cached): the median over rounds of the
mean time per statement.

Section 2 feeds the scanner ``select 1 <run> 1`` where the run repeats one unit: every
operator character, the pairs that open or close comments (``*/``, ``/*``, ``--``), every quote
and comment opener left unfinished or repeated, and group openers; and ("nested ...") groups
nested k deep and closed, which the folder compares on closing. A linear scanner shows the
same us/char at 1k, 10k and 100k characters; a quadratic one multiplies it by 10 per step.
Before issue #15 item 7 a run of 1,000 ``+`` took ~5 s (the strip loop rescanned the run for
every character) and a run of ``*/`` grew quadratically. A family whose last size took over
``--budget`` seconds is not run at the next size (printed as "skipped").

    python benchmarks/bench_fingerprint.py [--rounds 7] [--sizes 1000,10000,100000]
                                           [--budget 5] [--families "op +;*/;nested IN ("]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from _common import load_note, loadavg, machine_summary, print_table

from poolkeeper import fingerprint

# The adversarial families are the unit test's (tests/test_fingerprint_linear.py), so the
# runs counted there are the runs timed here.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tests.test_fingerprint_linear import FAMILIES, NESTED, adversarial, nested

ORDINARY = [
    ("select", "SELECT id, name, email FROM users WHERE id = %s AND active = true"),
    ("join", "select o.id, o.total, c.name from orders o join customers c on c.id = o.cust_id "
             "where o.created_at > '2024-01-01' and o.status in ('open', 'paid') "
             "order by o.created_at desc limit 50"),
    ("insert", "INSERT INTO events (kind, payload, at) VALUES (%s, %s, now())"),
    ("values", "INSERT INTO t (a, b, c) VALUES (1, 'x', 2.5), (2, 'y', 3.5), (3, 'z', 4.5)"),
    ("update", "UPDATE accounts SET balance = balance - 100, updated = now() WHERE id = 42"),
    ("in_list", "SELECT * FROM items WHERE id IN (" + ", ".join(map(str, range(40))) + ")"),
    ("cast", "select %s::int + 1, x::text || 'a' from t -- note\nwhere y >= -5"),
    ("comment", "/* app=web */ SELECT count(*) FROM sessions WHERE expires < $1"),
]

DIALECTS = ("generic", "postgresql", "mysql", "sqlite")


def ordinary(rounds: int) -> list[tuple[str, ...]]:
    rows = []
    for name, sql in ORDINARY:
        loops = 2_000
        per_round = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(loops):
                fingerprint(sql)
            per_round.append((time.perf_counter() - start) / loops * 1e6)
        rows.append((name, f"{len(sql)}", f"{statistics.median(per_round):.2f}"))
    total = [float(r[2]) for r in rows]
    rows.append(("mean", "", f"{statistics.fmean(total):.2f}"))
    return rows


def one(sql: str, dialect: str, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        fingerprint(sql, dialect)
        best = min(best, time.process_time() - start)
    return best


def adversarial_table(families: list[str], sizes: list[int], rounds: int,
                      budget: float) -> tuple[list[tuple[str, ...]], float]:
    rows = []
    worst_ratio = 0.0
    for name in families:
        for dialect in DIALECTS:
            cells = []
            per_char = []
            skip = False
            for size in sizes:
                if skip:
                    cells.append("skipped")
                    continue
                sql = (adversarial(FAMILIES[name], size) if name in FAMILIES
                       else nested(name[len("nested "):], NESTED[name[len("nested "):]], size))
                seconds = one(sql, dialect, rounds if size <= 10_000 else max(1, rounds // 3))
                us = seconds / len(sql) * 1e6
                per_char.append(us)
                cells.append(f"{us:.3f}")
                skip = seconds > budget
            if len(per_char) == len(sizes):
                # flat = the largest size costs per char no more than ~2x the smallest one
                ratio = per_char[-1] / max(per_char[0], 1e-3)
                worst_ratio = max(worst_ratio, ratio)
                cells.append(f"{ratio:.2f}")
            else:
                cells.append("-")
            rows.append((name, dialect, *cells))
    return rows, worst_ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--budget", type=float, default=5.0,
                        help="skip a family's next size once one took longer (seconds)")
    parser.add_argument("--families", default="",
                        help="family names separated by ; (default: all)")
    parser.add_argument("--skip-ordinary", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    families = [f for f in args.families.split(";") if f] or \
        [*FAMILIES, *(f"nested {opener}" for opener in NESTED)]
    print(machine_summary())
    before = loadavg()
    if not args.skip_ordinary:
        print_table("1. ordinary statements: us per fingerprint (median of rounds)",
                    ("statement", "chars", "us"), ordinary(args.rounds))
    rows, worst = adversarial_table(families, sizes, args.rounds, args.budget)
    print_table("2. adversarial runs: us per char (best of rounds, process time)",
                ("family", "dialect", *(f"{s:,}" for s in sizes),
                 f"{sizes[-1]:,}/{sizes[0]:,}"),
                rows)
    print(load_note(before))
    print(f"worst ratio of us/char, largest size to smallest: {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
