"""Loading one batch: ledger, transaction, retries, and isolation of bad rows.

The flusher runs every statement the loader sends besides the rows' own: it also creates and
purges the ledger at start (:meth:`Flusher.setup_ledger`, with the batches' retries) and
deletes a cleanly closed run's ledger rows (:meth:`Flusher.forget_run`).

One attempt, in one transaction on one connection::

    BEGIN
    INSERT INTO ledger (batch_id, ...)      -- first: a duplicate key means "already committed"
    COPY / LOAD DATA / INSERT the rows
    COMMIT

- **Transient** errors (connection lost, server restart, deadlock, serialization failure, no
  connection from the pool) retry the whole attempt with capped exponential backoff and
  jitter until ``retry_deadline_s``. An attempt whose COMMIT was lost is *ambiguous*; its
  retry finds the batch id in the ledger and stops there: loaded once.
- **Data** errors (bad value, constraint) roll back and switch to isolation: the same
  transaction structure, the rows loaded in spans under savepoints, a failing span split (at
  the row the database names when it names one, else in halves) until the offending rows
  stand alone. They are rejected with their error; the rest commits, with the ledger row,
  atomically. No row id of a half-loaded batch is ever committed.
- **Other** errors (missing table, permission denied, syntax) are not retried: the batch
  fails and the loader surfaces the error on the next ``write``/``flush``/``close``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from typing import Any

from ..errors import ConnectError, LoaderError, PoolClosed, PoolTimeout
from .batch import Batch, Ledger
from .rejects import Reject, RejectSink
from .targets import DataProblem, Session, Target

__all__ = ["ConnectionLost", "Flusher", "Outcome"]

logger = logging.getLogger("poolkeeper.loader")

BROKEN, TRANSIENT, DATA, OTHER = "broken", "transient", "data", "other"


class Outcome:
    """What became of a batch."""

    COMMITTED = "committed"  #: loaded now (maybe minus rejected rows)
    DUPLICATE = "duplicate"  #: the ledger says an earlier attempt or run committed it
    FAILED = "failed"  #: not loaded: ``error`` says why (``kind`` other, or retries ran out)

    __slots__ = ("attempts", "error", "kind", "loaded", "rejected", "status")

    def __init__(self, status: str, *, loaded: int = 0, rejected: int = 0,
                 error: BaseException | None = None, kind: str = "", attempts: int = 1) -> None:
        self.status = status
        self.loaded = loaded
        self.rejected = rejected
        self.error = error
        self.kind = kind
        self.attempts = attempts

    def __repr__(self) -> str:
        return (f"<Outcome {self.status} loaded={self.loaded} rejected={self.rejected} "
                f"attempts={self.attempts}{' ' + type(self.error).__name__ if self.error else ''}>")


class ConnectionLost(Exception):
    """The connection died under an attempt (whatever the driver raised about it)."""


class _AlreadyCommitted(Exception):
    pass


class _Isolate(Exception):
    pass


def describe_error(exc: BaseException) -> str:
    """The database's message, its detail, and its code: one or two lines."""
    text = str(exc).strip() or type(exc).__name__
    diag = getattr(exc, "diag", None)
    detail = getattr(diag, "message_detail", None) if diag is not None else None
    lines = text.splitlines()[:3]
    if detail and detail not in text:
        lines.append(f"DETAIL: {detail}")
    return "\n".join(lines)


class Flusher:
    """Runs batches against a target; shared by the loader's worker threads."""

    def __init__(self, pool: Any, target: Target, ledger: Ledger | None, run_id: str, *,
                 rejects: RejectSink, retry_deadline_s: float, backoff_s: float,
                 backoff_max_s: float, reject_limit: int, connection_timeout_s: float,
                 stop: threading.Event, name: str) -> None:
        #: the loader's name, for messages
        self.name = name
        self.pool = pool
        self.target = target
        self.ledger = ledger
        self.run_id = run_id
        self.rejects = rejects
        self.retry_deadline_s = retry_deadline_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.reject_limit = reject_limit
        self.connection_timeout_s = connection_timeout_s
        self.stop = stop
        self._rand = random.Random()
        self._lock = threading.Lock()
        self.retries = 0
        self.retry_wait_ms = 0.0
        self.isolations = 0
        self.isolation_statements = 0
        self.ambiguous_resolved = 0
        #: exceptions raised by the reject callback, for the loader to surface
        self.callback_errors: list[BaseException] = []

    # ------------------------------------------------------------------ the ledger
    def setup_ledger(self, retention_s: float) -> None:
        """Create and purge the ledger, retrying transient errors (a lost connection, a
        restart, a pool timeout) with the batches' backoff until ``retry_deadline_s``."""
        ledger = self.ledger
        assert ledger is not None
        start = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                with self.pool.connection(self.connection_timeout_s) as conn:
                    conn.execute(ledger.create)
                    purged = conn.execute(ledger.purge, (int(retention_s),)).rowcount
                if purged and purged > 0:
                    logger.info("loader %r: purged %d ledger rows older than %g s", self.name,
                                purged, retention_s)
                return
            except Exception as exc:
                # Two loaders creating the ledger at once can collide in the catalog
                # (PostgreSQL reports a unique violation on pg_type): try again, as after
                # a lost connection.
                collision = getattr(exc, "sqlstate", None) in ("23505", "42P07")
                retryable = collision or self.classify(exc) in (BROKEN, TRANSIENT)
                waited = time.monotonic() - start
                if retryable and waited < self.retry_deadline_s:
                    delay = min(self.backoff_max_s, self.backoff_s * 2 ** min(attempts - 1, 20),
                                max(self.retry_deadline_s - waited, 0.0))
                    logger.info("loader %r: setting up the ledger failed (attempt %d: %s: %s); "
                                "retrying in %.2f s", self.name, attempts, type(exc).__name__,
                                _first_line(exc, type(exc).__name__), delay)
                    time.sleep(delay)
                    continue
                why = (f"after {attempts} attempts in {waited:.1f} s (retry_deadline_s="
                       f"{self.retry_deadline_s:g})" if retryable else "not retryable")
                raise LoaderError(
                    f"loader {self.name!r}: cannot create or clean the ledger table "
                    f"{ledger.table!r} ({why}): {type(exc).__name__}: "
                    f"{_first_line(exc, type(exc).__name__)}. Create it yourself "
                    f"({ledger.create}), grant this user INSERT/DELETE on it, or pass "
                    "ledger=False (then a retry after a lost COMMIT may load a batch twice)"
                ) from exc

    def forget_run(self) -> None:
        """Delete this run's ledger rows (after a clean close nothing of it can be retried
        or replayed); on failure they stay until the retention purge."""
        ledger = self.ledger
        assert ledger is not None
        try:
            with self.pool.connection(self.connection_timeout_s) as conn:
                conn.execute(ledger.delete_run, (self.run_id,))
        except Exception as exc:  # noqa: BLE001 - the retention purge removes them later
            logger.info("loader %r: could not delete this run's ledger rows (%s); they expire "
                        "after ledger_retention_s", self.name,
                        _first_line(exc, type(exc).__name__))

    # ------------------------------------------------------------------ callbacks
    def take_callback_errors(self) -> list[BaseException]:
        """The reject callback's exceptions since the last call (for the loader to raise)."""
        with self._lock:
            taken = list(self.callback_errors)
            self.callback_errors.clear()
        return taken

    # ------------------------------------------------------------------ classification
    def classify(self, exc: BaseException) -> str:
        if isinstance(exc, DataProblem):
            return DATA
        if isinstance(exc, PoolTimeout | ConnectError):
            return TRANSIENT
        if isinstance(exc, ConnectionLost):
            return BROKEN
        if isinstance(exc, PoolClosed | LoaderError):
            return OTHER
        # No net here: every adapter has classify_error (the base answers "other"), so an
        # exception from it is a bug, and it surfaces as one (the worker logs it).
        kind = self.pool.driver.classify_error(exc)
        value = str(getattr(kind, "value", kind))
        if value == OTHER and getattr(exc, "poolkeeper_row", None) is not None:
            return DATA
        return value if value in (BROKEN, TRANSIENT, DATA) else OTHER

    def _is_duplicate_key(self, exc: BaseException) -> bool:
        if getattr(exc, "sqlstate", None) == "23505":
            return True
        args = getattr(exc, "args", ())
        if args and args[0] == 1062:
            return True
        return type(exc).__name__ == "IntegrityError" and "UNIQUE" in str(exc)

    # ------------------------------------------------------------------ one batch
    def run(self, batch: Batch) -> Outcome:
        """Load ``batch`` (retrying, isolating) and say what happened. Never raises."""
        attempts = 0
        isolate = False
        first_failure: float | None = None
        while True:
            attempts += 1
            try:
                loaded, rejected = self._attempt(batch, isolate)
            except _Isolate:
                isolate = True
                attempts -= 1
                continue
            except _AlreadyCommitted:
                rows = self._committed_rows(batch)
                if rows is not None:
                    with self._lock:
                        self.ambiguous_resolved += 1
                    logger.info("loader: batch %s was already committed (%d rows); not "
                                "loading it again", batch.batch_id, rows)
                    return Outcome(Outcome.DUPLICATE, loaded=rows, attempts=attempts)
                # Its key is taken but the row cannot be read back (yet): ask again later.
                failure: BaseException = ConnectError(
                    f"batch {batch.batch_id} is in the ledger but could not be read back")
            except Exception as exc:  # noqa: BLE001 - classified below; nothing escapes
                failure = exc
            else:
                if attempts > 1:
                    logger.info("loader: batch %s loaded after %d attempts", batch.batch_id,
                                attempts)
                return Outcome(Outcome.COMMITTED, loaded=loaded, rejected=rejected,
                               attempts=attempts)
            kind = self.classify(failure)
            now = time.monotonic()
            if first_failure is None:
                first_failure = now
            retryable = kind in (BROKEN, TRANSIENT)
            left = first_failure + self.retry_deadline_s - now
            if not retryable or left <= 0 or self.stop.is_set():
                if retryable:
                    logger.warning(
                        "loader: batch %s (%s, %d rows) still failing after %d attempts in "
                        "%.1f s (retry_deadline_s=%g): %s: %s", batch.batch_id, batch.table,
                        batch.rows, attempts, now - first_failure, self.retry_deadline_s,
                        type(failure).__name__, _first_line(failure))
                return Outcome(Outcome.FAILED, error=failure, kind=kind, attempts=attempts)
            delay = min(self.backoff_max_s, self.backoff_s * (2 ** min(attempts - 1, 20)))
            delay = min(delay * (0.5 + self._rand.random() / 2), max(left, 0.0))
            with self._lock:
                self.retries += 1
                self.retry_wait_ms += delay * 1000.0
            log = logger.info if attempts == 1 else logger.debug
            log("loader: batch %s attempt %d failed (%s: %s: %s); retrying in %.2f s",
                batch.batch_id, attempts, kind, type(failure).__name__, _first_line(failure),
                delay)
            if self.stop.wait(delay):
                return Outcome(Outcome.FAILED, error=failure, kind=kind, attempts=attempts)

    def _attempt(self, batch: Batch, isolate: bool) -> tuple[int, int]:
        with self.target.session(self.connection_timeout_s) as s:
            try:
                return self._in_session(s, batch, isolate)
            except (_AlreadyCommitted, _Isolate, DataProblem):
                raise
            except Exception as exc:
                # A driver may fail in its own way once its connection is gone (PyMySQL
                # raises AttributeError writing to a closed socket): the connection's state,
                # not the exception's class, says whether retrying can help.
                if self.classify(exc) not in (BROKEN, TRANSIENT) and self._lost(s):
                    raise ConnectionLost(f"the connection was lost: {type(exc).__name__}: "
                                         f"{_first_line(exc)}") from exc
                raise

    def _lost(self, s: Session) -> bool:
        try:
            return bool(self.pool.driver.is_broken(s.raw))
        except Exception as exc:  # noqa: BLE001 - in doubt the connection is lost
            # is_broken() reads local state only: failing is a bug worth seeing, and a
            # connection in doubt is treated as lost (retried on another, never reused).
            logger.warning("loader: the driver could not tell whether its connection is "
                           "broken (%s: %s); treating it as lost", type(exc).__name__, exc)
            return True

    def _in_session(self, s: Session, batch: Batch, isolate: bool) -> tuple[int, int]:
        target = self.target
        ledger = self.ledger
        n = batch.rows
        target.begin(s)
        if ledger is not None:
            try:
                s.run(ledger.insert, (batch.batch_id, self.run_id, batch.table, n))
            except Exception as exc:
                if self._is_duplicate_key(exc):
                    raise _AlreadyCommitted from exc
                raise
        if not isolate:
            try:
                target.load(s, batch, 0, n)
            except Exception as exc:
                if self.classify(exc) == DATA:
                    raise _Isolate from exc
                raise
            target.commit(s)
            return n, 0
        rejects = self._isolate(s, batch)
        loaded = n - len(rejects)
        if ledger is not None and rejects:
            s.run(f"UPDATE {ledger.table} SET row_count = {ledger.ph} "
                  f"WHERE batch_id = {ledger.ph}", (loaded, batch.batch_id))
        # Before COMMIT: a crash in between reports them again, never loses them.
        errors = self.rejects.deliver(rejects)
        if errors:
            with self._lock:
                self.callback_errors.extend(errors[:10])
        target.commit(s)
        return loaded, len(rejects)

    def _isolate(self, s: Session, batch: Batch) -> list[Reject]:
        """Load the good rows of ``batch`` under savepoints; return the rejected ones."""
        target = self.target
        with self._lock:
            self.isolations += 1
        bad: list[Reject] = []
        spans: deque[tuple[int, int]] = deque([(0, batch.rows)])
        statements = 0
        while spans:
            lo, hi = spans.popleft()
            if lo >= hi:
                continue
            if len(bad) >= self.reject_limit:
                spans.appendleft((lo, hi))
                note = (f"not attempted: {len(bad)} rows of this batch were already rejected "
                        f"(reject_limit={self.reject_limit})")
                for a, b in spans:
                    bad.extend(self._reject(batch, i, note, "reject_limit") for i in range(a, b))
                break
            statements += 1
            target.savepoint(s, "poolkeeper_isolate")
            try:
                target.load(s, batch, lo, hi)
            except Exception as exc:
                if self.classify(exc) != DATA:
                    raise
                target.rollback_to(s, "poolkeeper_isolate")
                if hi - lo == 1:
                    bad.append(self._reject(batch, lo, describe_error(exc),
                                            target.error_code(exc)))
                    continue
                hint = target.row_hint(exc)
                if hint is not None and 0 <= hint < hi - lo:
                    k = lo + hint
                    # the rows before the named one, the named one alone, the rest
                    spans.appendleft((k + 1, hi))
                    spans.appendleft((k, k + 1))
                    spans.appendleft((lo, k))
                else:
                    mid = (lo + hi) // 2
                    spans.appendleft((mid, hi))
                    spans.appendleft((lo, mid))
                continue
            target.release(s, "poolkeeper_isolate")
        with self._lock:
            self.isolation_statements += statements
        bad.sort(key=lambda r: r.index)
        if bad:
            logger.warning("loader: batch %s (%s): %d of %d rows rejected by the database "
                           "(first code %s); %d statements to isolate them", batch.batch_id,
                           batch.table, len(bad), batch.rows, bad[0].code, statements)
        return bad

    def _reject(self, batch: Batch, i: int, error: str, code: str | None) -> Reject:
        try:
            row = self.target.codec.decode(batch.record(i))
        except Exception:  # noqa: BLE001 - show the raw record rather than lose the row
            row = (batch.record(i),)
        return Reject(batch.table, batch.batch_id, i, row, error, code)

    def reject_all(self, batch: Batch, error: str, code: str | None) -> list[Reject]:
        """Every row of a batch that cannot be loaded at all, as rejects."""
        return [self._reject(batch, i, error, code) for i in range(batch.rows)]

    def _committed_rows(self, batch: Batch) -> int | None:
        ledger = self.ledger
        if ledger is None:
            return None
        try:
            with self.target.session(self.connection_timeout_s) as s:
                rows = s.query(ledger.lookup, (batch.batch_id,))
        except Exception as exc:  # noqa: BLE001 - the caller retries the whole attempt
            logger.info("loader: checking the ledger for %s failed: %s", batch.batch_id, exc)
            return None
        return int(rows[0][0]) if rows else None


def _first_line(exc: BaseException, empty: str = "") -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else empty
