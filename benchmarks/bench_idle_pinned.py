"""Idle RSS of 4 PostgreSQL connections that each fetched one 64 MiB row, bound on vs off.

Run: MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/bench_idle_pinned.py
(PK_PG_DSN overrides the server). Each setting runs in a fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys

DSN = os.environ.get("PK_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
ROW = "SELECT repeat('x', 64 * 1024 * 1024)"


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(bound: int) -> None:
    from poolkeeper import Pool

    with Pool(DSN, min_idle=0, max_size=4, max_idle_result_bytes=bound) as pool:
        base = _rss_mb()
        conns = [pool.getconn() for _ in range(4)]
        for c in conns:
            c.execute(ROW).fetchall()
        for c in conns:
            pool.putconn(c)
        with pool.connection() as c:  # let the retired ones close (worker thread)
            c.execute("SELECT 1").fetchall()
        import gc
        import time
        gc.collect()
        time.sleep(0.5)
        print(f"max_idle_result_bytes={bound}: idle RSS +{_rss_mb() - base:.0f} MB, "
              f"retired {pool.stats()['connections_closed_large_result']}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        child(int(sys.argv[1]))
    else:
        for bound in (16 << 20, 0):
            subprocess.run([sys.executable, __file__, str(bound)], check=True)
