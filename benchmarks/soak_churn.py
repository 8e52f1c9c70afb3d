"""BoneCP's idle churn: bursts to max_size and a one-connection trickle, opens per scaled hour.

    .venv/bin/python benchmarks/soak_churn.py [DSN] [--bursts N] [--scale S]

Time runs ``scale`` times faster than in production: idle_timeout=600 s becomes 600/scale s.
Prints opens against the exact need: initial + bursts x (max_size - min_idle) + lifetime
retirements, and both per scaled hour.
"""

from __future__ import annotations

import argparse
import threading
import time

from poolkeeper import Pool


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dsn", nargs="?", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--bursts", type=int, default=4)
    ap.add_argument("--scale", type=float, default=1200.0)
    args = ap.parse_args()
    idle_timeout = 600.0 / args.scale
    min_idle, max_size = 2, 6
    with Pool(args.dsn, min_idle=min_idle, max_size=max_size, idle_timeout=idle_timeout,
              keepalive_interval=idle_timeout / 2, housekeeping_interval=idle_timeout / 10,
              max_lifetime=None, validation_bypass=60) as pool:
        pool.wait_ready(10)
        start = time.monotonic()
        for _ in range(args.bursts):
            barrier = threading.Barrier(max_size)

            def hold(barrier: threading.Barrier = barrier) -> None:
                with pool.connection(timeout=10) as conn:
                    barrier.wait()
                    conn.execute("SELECT 1")

            threads = [threading.Thread(target=hold) for _ in range(max_size)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            trickle_end = time.monotonic() + idle_timeout * 3
            while time.monotonic() < trickle_end:
                with pool.connection() as conn:
                    conn.execute("SELECT 1")
                time.sleep(0.01)
        elapsed = time.monotonic() - start
        s = pool.stats()
        need = min_idle + args.bursts * (max_size - min_idle) + s["connections_closed_lifetime"]
        hours = elapsed * args.scale / 3600.0
        print(f"{args.bursts} bursts in {elapsed:.1f} s ({hours:.2f} scaled h): opens "
              f"{s['connections_num']} (need {need}); per scaled hour "
              f"{s['connections_num'] / hours:.2f} (need {need / hours:.2f}); idle closes "
              f"{s['connections_closed_idle']}")


if __name__ == "__main__":
    main()
