"""Bounded memory as a tested property: the soak benchmarks' quick runs, each of which measures
RSS and tracemalloc before and after a large workload and exits non-zero past its budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SOAKS = [
    # (script, why it exists)
    ("soak_sql_stats.py", "seed 002: statistics keyed by raw SQL grew to megabytes per key"),
    ("bench_timeouts_memory.py", "seed 004: cancelled timeout tasks stayed queued (2 GB)"),
    ("soak_pool_memory.py", "borrow/return cycles must leave no trace (seed 003: per-connection "
                            "records kept forever)"),
    ("soak_aio_memory.py", "issue #17: AsyncPool cycles and cancelled acquires (a cancelled "
                           "waiter must leave nothing queued)"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("script", "why"), SOAKS, ids=[s for s, _ in SOAKS])
def test_soak_stays_within_its_memory_budget(script: str, why: str) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{script} ({why}) failed:\n{result.stdout}\n{result.stderr}"
