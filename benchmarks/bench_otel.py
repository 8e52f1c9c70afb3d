"""CPU per statement of OpenTelemetry instrumentation: pooled sqlite ``SELECT 1``, with and
without ``instrument(pool)``, in interleaved rounds (so drift hits both alike).

    PYTHONPATH=src python benchmarks/bench_otel.py [--rounds 7] [--statements 5000]

Prints the median CPU time (process_time) per statement of each, and the difference.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from poolkeeper import Pool
from poolkeeper.integrations.otel import instrument


def run(pool: Pool, statements: int) -> float:
    with pool.connection() as conn:
        cur = conn.cursor()
        start = time.process_time()
        for _ in range(statements):
            cur.execute("SELECT 1")
        return (time.process_time() - start) / statements


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--statements", type=int, default=5000)
    args = ap.parse_args()
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
    with tempfile.TemporaryDirectory() as tmp, \
            Pool(f"sqlite:///{Path(tmp) / 'b.db'}", max_size=1, name="bench") as pool:
        plain: list[float] = []
        traced: list[float] = []
        for _ in range(args.rounds):  # bounded: rounds x statements
            plain.append(run(pool, args.statements))
            handle = instrument(pool, meter)
            traced.append(run(pool, args.statements))
            handle.uninstrument()
    a, b = statistics.median(plain), statistics.median(traced)
    print(f"without: {a * 1e6:.2f} us CPU/statement; with instrument(): {b * 1e6:.2f} us; "
          f"cost: {(b - a) * 1e6:.2f} us/statement ({args.rounds} rounds x "
          f"{args.statements} statements)")


if __name__ == "__main__":
    main()
