"""When to open connections while connecting fails: the backoff, as decisions without I/O.

The shell reserves opens in the bag (``Bag.reserve_opens``) and asks this schedule when to start
them. While the server answers, every reserved open starts at once. Once an attempt fails, the
pool is in an *outage*: one attempt at a time runs (a timed retry, after
:func:`.policy.backoff_delay`), and the opens wanted meanwhile wait as *deferred* (still counted
as opening in the bag). The first success ends the outage and releases every deferred open at
once, so the pool is back to ``min_idle`` as soon as the server is.

Attempts that overlap fail together in one outage: only the first failure reported since an
attempt began is a step of the backoff (eight parallel opens failing in a 3 s outage must not
push it to its cap). Each attempt carries a *ticket* (:meth:`OpenSchedule.begin`) that says
which failures it may count.

The shell runs the attempts and the timed retry (a thread pool's worker, an asyncio task) and
passes the schedule a lock (with ``with``) and a way to cancel a queued retry.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from .policy import backoff_delay

__all__ = ["OpenSchedule"]


class OpenSchedule:
    """The backoff state of one pool's connection attempts."""

    def __init__(self, *, lock: Any, backoff_max: float,
                 rand: random.Random | None = None) -> None:
        self.lock = lock
        self.backoff_max = backoff_max
        self.rand = rand or random.Random()
        self.failures = 0  #: backoff steps of the current outage (0: no outage)
        self.outage_since = 0.0
        self.events = 0  #: failures counted + successes: tells overlapping attempts apart
        self.next_at = 0.0  #: when the next timed retry may run
        self.deferred = 0  #: reserved opens waiting for the outage to end
        self.retry: Any = None  #: the shell's handle of the queued timed retry
        self.retry_busy = False  #: a timed retry is queued or running
        self.closed = False  #: no more retries (the pool closed)

    def start(self, count: int, now: float) -> tuple[int, float | None]:
        """``count`` reserved opens: how many to start now, and the delay of a timed retry the
        shell must queue (None: none). During an outage they are deferred instead."""
        with self.lock:
            if self.failures:
                self.deferred += count
                return 0, self._arm(now)
            return count, None

    def retry_queued(self, handle: Any) -> None:
        """The shell queued the timed retry that :meth:`start` / :meth:`failed` asked for."""
        with self.lock:
            self.retry = handle

    def begin(self, retry: bool, now: float) -> tuple[int | None, float | None]:
        """An attempt is about to connect: its ticket, or None when it must wait for the outage
        to end (it joins the deferred), with the delay of a retry to queue (None: none).

        ``retry``: this is the schedule's timed retry.
        """
        with self.lock:
            if not retry and self.failures:
                # queued before an attempt failed: wait for the backoff's retry like the rest
                self.deferred += 1
                return None, self._arm(now)
            if retry:
                self.retry = None
            return self.events, None

    def succeeded(self, retry: bool, cancel: Callable[[Any], bool]) -> int:
        """An attempt connected: the outage (if any) is over. Returns how many deferred opens
        to start now. ``cancel(handle)`` cancels the queued retry (True: it will not run), whose
        reservation is then started with the rest."""
        with self.lock:
            self.events += 1
            self.failures = 0
            self.next_at = 0.0
            release, self.deferred = self.deferred, 0
            if retry:
                self.retry_busy = False
            elif self.retry is not None and cancel(self.retry):
                release += 1  # the queued retry's own reservation
                self.retry = None
                self.retry_busy = False
            return release

    def failed(self, ticket: int, started: float, now: float, retry: bool) -> tuple[int, float]:
        """An attempt with ``ticket`` (from :meth:`begin`), started at ``started``, failed.

        Returns (failures in a row, seconds until the next try). The shell then gives the
        reservation back to the bag, reserves what is still wanted, and calls :meth:`arm`.
        """
        with self.lock:
            if self.events == ticket:
                self.events += 1
                if not self.failures:
                    self.outage_since = started
                self.failures += 1
                self.next_at = now + backoff_delay(self.failures, self.backoff_max, self.rand,
                                                   outage_s=now - self.outage_since)
            if retry:
                self.retry_busy = False
            return self.failures, max(0.0, self.next_at - now)

    def arm(self, now: float) -> float | None:
        """The delay of a timed retry the shell must queue now (None: none needed)."""
        with self.lock:
            return self._arm(now)

    def close(self) -> None:
        with self.lock:
            self.closed = True

    def _arm(self, now: float) -> float | None:
        if self.retry_busy or not self.deferred or self.closed:
            return None
        self.retry_busy = True
        self.deferred -= 1
        return max(0.0, self.next_at - now)
