"""The buckets of the wait and usage histograms (their own module: slots and tallies use them)."""

from __future__ import annotations

__all__ = ["BOUNDS_S", "BUCKETS", "FIRST_BOUND_S", "HISTOGRAM_BOUNDS_MS"]

#: upper bounds (ms, inclusive like Prometheus' ``le``) of the wait / usage histogram buckets;
#: the last bucket is open-ended
HISTOGRAM_BOUNDS_MS: tuple[float, ...] = (0.1, 0.5, 1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000)
BOUNDS_S = tuple(b / 1000.0 for b in HISTOGRAM_BOUNDS_MS)
FIRST_BOUND_S = BOUNDS_S[0]
BUCKETS = len(BOUNDS_S) + 1
