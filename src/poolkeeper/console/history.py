"""The console's memory of the last minutes: a bounded ring of samples per pool.

Charts need a past, and ``pool.stats()`` only has a present. The console samples each pool
(and the process's memory) once per ``interval`` from its server thread and keeps the last
``seconds`` of samples: a fixed number per pool, a fixed number of pools, nothing else grows.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

__all__ = ["History"]

# One pool sample: wall time, then these stats keys in order.
_POOL_KEYS = ("pool_size", "pool_available", "pool_active", "requests_waiting", "requests_num",
              "requests_timeouts", "requests_wait_ms", "usage_ms", "returns_num")
# Rough CPython size of one kept sample (a tuple of 10 floats/ints): for the memory ledger.
_SAMPLE_BYTES = 56 + 8 * (len(_POOL_KEYS) + 1) + 24 * (len(_POOL_KEYS) + 1)
_MEMORY_SAMPLE_BYTES = 56 + 3 * 32


class History:
    """Bounded per-pool rings of samples, taken at most once per ``interval`` seconds.

    ``seconds / interval`` samples are kept per pool (600 by default: ten minutes at one per
    second), for at most ``max_pools`` pools; samples of further pools are not kept and are
    counted in ``pools_dropped``. A pool that stops reporting leaves once its samples are
    older than ``seconds``.
    """

    def __init__(self, *, seconds: float = 600.0, interval: float = 1.0,
                 max_pools: int = 16) -> None:
        if not 0.01 <= interval <= 3600:
            raise ValueError(f"history interval={interval!r} is out of range: 0.01..3600 s")
        if not interval <= seconds <= 7 * 86_400:
            raise ValueError(f"history seconds={seconds!r} is out of range: "
                             f"interval ({interval:g})..604800 s")
        if not 1 <= max_pools <= 10_000:
            raise ValueError(f"history max_pools={max_pools!r} is out of range: 1..10000")
        self.seconds = float(seconds)
        self.interval = float(interval)
        self.max_pools = max_pools
        self.maxlen = int(seconds / interval) + 1
        self._pools: dict[str, deque[tuple[float, ...]]] = {}
        self._memory: deque[tuple[float, int | None, int]] = deque(maxlen=self.maxlen)
        self._lock = threading.Lock()
        self._next = 0.0
        self.samples_total = 0
        self.pools_dropped = 0

    def due(self, now: float | None = None) -> bool:
        """True when the next sample is due (monotonic clock)."""
        return (time.monotonic() if now is None else now) >= self._next

    def sample(self, pools: Iterable[tuple[str, Any]], *, rss: int | None = None,
               ledger_bytes: int = 0, now: float | None = None) -> None:
        """Record one sample of each ``(name, pool)`` and of the process's memory."""
        self._next = time.monotonic() + self.interval
        wall = time.time() if now is None else now
        rows: list[tuple[str, tuple[float, ...]]] = []
        for name, pool in pools:
            try:
                stats = pool.stats()
            except Exception:  # noqa: BLE001 - a closing pool may refuse; sample the others
                continue
            rows.append((name, (wall, *(float(stats.get(k, 0) or 0) for k in _POOL_KEYS))))
        with self._lock:
            for name, row in rows:
                ring = self._pools.get(name)
                if ring is None:
                    if len(self._pools) >= self.max_pools:
                        self.pools_dropped += 1
                        continue
                    ring = self._pools[name] = deque(maxlen=self.maxlen)
                ring.append(row)
            self._memory.append((wall, rss, int(ledger_bytes)))
            cutoff = wall - self.seconds
            for name in [n for n, r in self._pools.items() if r and r[-1][0] < cutoff]:
                del self._pools[name]
            self.samples_total += 1

    def series(self, name: str) -> list[dict[str, float]]:
        """A pool's samples, oldest first, with rates over each interval.

        Keys: ``t`` (epoch seconds), the gauges ``size``, ``idle``, ``active``, ``waiting``,
        and per-interval ``requests_per_s``, ``timeouts`` and ``wait_ms_avg`` (mean wait of
        the requests of that interval). A counter that went down (``pop_stats()``) counts
        from zero.
        """
        with self._lock:
            rows = list(self._pools.get(name, ()))
        out: list[dict[str, float]] = []
        prev: tuple[float, ...] | None = None
        for row in rows:
            t, size, idle, active, waiting, requests, timeouts, wait_ms, _usage, _returns = row
            point = {"t": t, "size": size, "idle": idle, "active": active, "waiting": waiting}
            if prev is not None and t > prev[0]:
                dt = t - prev[0]
                d_requests = _delta(requests, prev[5])
                point["requests_per_s"] = round(d_requests / dt, 3)
                point["timeouts"] = _delta(timeouts, prev[6])
                d_wait = _delta(wait_ms, prev[7])
                point["wait_ms_avg"] = round(d_wait / d_requests, 3) if d_requests else 0.0
            out.append(point)
            prev = row
        return out

    def memory(self) -> list[dict[str, Any]]:
        """Process memory samples, oldest first: ``t``, ``rss_bytes``, ``ledger_bytes``."""
        with self._lock:
            rows = list(self._memory)
        return [{"t": t, "rss_bytes": rss, "ledger_bytes": ledger} for t, rss, ledger in rows]

    def pool_names(self) -> list[str]:
        with self._lock:
            return list(self._pools)

    def memory_usage(self) -> tuple[int, int]:
        """(estimated bytes held, the bound): for the memory ledger."""
        with self._lock:
            held = sum(len(r) for r in self._pools.values()) * _SAMPLE_BYTES
            held += len(self._memory) * _MEMORY_SAMPLE_BYTES
        budget = self.maxlen * (self.max_pools * _SAMPLE_BYTES + _MEMORY_SAMPLE_BYTES)
        return held, budget

    def stats(self) -> dict[str, Any]:
        with self._lock:
            pools = len(self._pools)
        return {"samples_total": self.samples_total, "pools": pools,
                "pools_max": self.max_pools, "pools_dropped": self.pools_dropped,
                "samples_per_pool_max": self.maxlen, "interval_s": self.interval}


def _delta(now: float, before: float) -> float:
    return now - before if now >= before else now
