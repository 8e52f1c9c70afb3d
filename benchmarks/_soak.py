"""The harness of the field-report soaks (``soak_reports.py``): one workload per fresh process.

A soak runs in a child process of its own, so its resident memory starts clean and nothing an
earlier soak left behind counts against it. The child gets ``MALLOC_ARENA_MAX=2`` and
``MALLOC_MMAP_THRESHOLD_=131072``: large buffers are then mapped and unmapped, so memory the
program really freed goes back to the operating system and RSS shows only what is still held
(driver and C memory included, which tracemalloc cannot see). Each measurement is taken after
two full garbage collections and glibc's ``malloc_trim(0)``.

The child prints one line ``SOAK-RESULT {json}`` with the figures; the parent turns it into a
:class:`Result` and the verdict: growth of RSS and of traced memory within the soak's bound
(its configured budgets plus a stated constant), and every extra check of the soak true.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CHILD_ENV",
    "MB",
    "Meter",
    "Outcome",
    "Result",
    "format_bytes",
    "run_child",
    "vm_rss",
]

MB = 1 << 20
KB = 1 << 10
#: the allocator settings every soak child runs with (see the module docstring)
CHILD_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072"}
RESULT_TAG = "SOAK-RESULT "


def vm_rss() -> int:
    """This process's resident set size in bytes (``VmRSS`` of /proc/self/status; 0 if absent)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _trim() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: RSS is read as it is
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    if abs(n) >= MB:
        return f"{n / MB:+.1f} MB"
    return f"{n / KB:+.0f} KB"


class Meter:
    """RSS and tracemalloc before and after the measured part of a soak."""

    def __init__(self, frames: int = 1) -> None:
        tracemalloc.start(frames)
        self.rss0 = self.traced0 = 0
        self.rss1 = self.traced1 = 0
        self.started = False
        self.ended = False

    @staticmethod
    def sample() -> tuple[int, int]:
        gc.collect()
        gc.collect()
        _trim()
        return vm_rss(), tracemalloc.get_traced_memory()[0]

    def start(self) -> None:
        """Call after the warm-up: the measured part begins here."""
        self.rss0, self.traced0 = self.sample()
        tracemalloc.reset_peak()
        self.started = True

    def stop(self) -> None:
        self.rss1, self.traced1 = self.sample()
        self.ended = True

    @property
    def rss_growth(self) -> int | None:
        return self.rss1 - self.rss0 if self.ended else None

    @property
    def traced_growth(self) -> int | None:
        return self.traced1 - self.traced0 if self.ended else None

    def peak_since_start(self) -> int:
        return tracemalloc.get_traced_memory()[1] - self.traced0


@dataclass
class Outcome:
    """What a soak function returns: its bound and its extra checks (the meter has the rest).

    ``bound`` limits the growth of RSS and of traced memory (None: no memory verdict, the
    soak is judged by its checks); ``checks`` are ``(what, ok)`` pairs; ``notes`` are figures
    worth printing (counts, counters).
    """

    bound: int | None
    bound_why: str
    checks: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rss_bound: int | None = None  #: when RSS needs its own bound (else ``bound``)

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, bool(ok)))


@dataclass
class Result:
    """One soak run on one backend with the monitor off or on, and its verdict."""

    soak: str
    backend: str
    monitor: bool
    rss_growth: int | None = None
    traced_growth: int | None = None
    bound: int | None = None
    rss_bound: int | None = None
    bound_why: str = ""
    checks: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def failures(self) -> list[str]:
        out = []
        if self.error:
            out.append(self.error)
        rss_bound = self.rss_bound if self.rss_bound is not None else self.bound
        if rss_bound is not None and self.rss_growth is not None and self.rss_growth > rss_bound:
            out.append(f"RSS grew {format_bytes(self.rss_growth)} "
                       f"(bound {format_bytes(rss_bound)})")
        if (self.bound is not None and self.traced_growth is not None
                and self.traced_growth > self.bound):
            out.append(f"traced memory grew {format_bytes(self.traced_growth)} "
                       f"(bound {format_bytes(self.bound)})")
        out += [f"check failed: {what}" for what, ok in self.checks if not ok]
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> Result:
        data = json.loads(text)
        data["checks"] = [tuple(c) for c in data["checks"]]
        return cls(**data)


def child_main(soak: str, backend: str, monitor: bool,
               run: Callable[[Meter], Outcome]) -> int:
    """Body of a soak child: run, measure, print the result line. Exit status 0 unless the
    soak itself crashed (the verdict is the parent's)."""
    meter = Meter()
    t0 = time.monotonic()
    result = Result(soak, backend, monitor)
    try:
        outcome = run(meter)
    except Exception as exc:  # noqa: BLE001 - reported as the soak's failure, with its type
        import traceback

        traceback.print_exc()
        result.error = f"{type(exc).__name__}: {exc}"
    else:
        if meter.started and not meter.ended:
            meter.stop()
        result.rss_growth, result.traced_growth = meter.rss_growth, meter.traced_growth
        result.bound, result.rss_bound = outcome.bound, outcome.rss_bound
        result.bound_why = outcome.bound_why
        result.checks, result.notes = outcome.checks, outcome.notes
    result.seconds = round(time.monotonic() - t0, 2)
    sys.stdout.write(RESULT_TAG + result.to_json() + "\n")
    sys.stdout.flush()
    return 0


def run_child(script: Path, args: Sequence[str], soak: str, backend: str, monitor: bool,
              timeout: float) -> Result:
    """Run ``script --child ...`` in a fresh process with CHILD_ENV; its Result."""
    env = dict(os.environ)
    env.update(CHILD_ENV)
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(script), *args], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Result(soak, backend, monitor, seconds=round(time.monotonic() - t0, 2),
                      error=f"the soak did not finish within {timeout:g} s")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return Result.from_json(line[len(RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return Result(soak, backend, monitor, seconds=round(time.monotonic() - t0, 2),
                  error=f"the soak child exited {proc.returncode} without a result: "
                        + " | ".join(tail))


def describe(result: Result) -> list[Any]:
    """One table row: soak, backend, monitor, RSS, traced, bound, verdict."""
    bound = format_bytes(result.bound).lstrip("+") if result.bound is not None else "checks"
    if result.rss_bound is not None and result.rss_bound != result.bound:
        bound += f" (RSS {format_bytes(result.rss_bound).lstrip('+')})"
    return [result.soak, result.backend, "on" if result.monitor else "off",
            format_bytes(result.rss_growth), format_bytes(result.traced_growth), bound,
            f"{result.seconds:.1f}", "PASS" if result.passed else "FAIL"]
