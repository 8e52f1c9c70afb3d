"""OpenTelemetry metrics for a pool, after the database client semantic conventions.

Needs only ``opentelemetry-api`` (``pip install poolkeeper[otel]``); the application's SDK
decides where the metrics go. Example::

    from poolkeeper.integrations.otel import instrument

    handle = instrument(pool)          # the global MeterProvider's meter, or meter=...
    ...
    handle.uninstrument()              # callbacks removed, no more recording

What is reported (names, units and attributes of the conventions):

* observable gauges read from ``pool.stats()`` at collection time, so a pool that is never
  collected pays nothing: ``db.client.connection.count`` by ``db.client.connection.state``
  (``idle`` / ``used``), ``db.client.connection.idle.max``, ``.idle.min``, ``.max``,
  ``.pending_requests``, each with ``db.client.connection.pool.name``;
* ``db.client.connection.timeouts``: an observable counter of ``requests_timeouts`` (it drops
  when someone calls ``pool.pop_stats()``; exporters treat that as a counter reset);
* ``db.client.operation.duration`` (histogram, s) per statement, from a statement hook, with
  ``db.system.name``, ``db.namespace``, ``db.operation.name``, ``db.query.summary`` and, on
  failure, ``error.type``. The summary is the statement's fingerprint (every literal folded to
  ``?``, see :mod:`poolkeeper.sql.fingerprint`), never the raw SQL, so no value reaches a
  metric attribute.
"""

from __future__ import annotations

import os
from time import perf_counter
from typing import Any
from urllib.parse import unquote, urlsplit

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .. import parse_dsn
from ..sql.fingerprint import FingerprintCache

__all__ = ["Instrumentation", "instrument"]

#: poolkeeper's dialect -> the conventions' ``db.system.name``
_SYSTEMS = {"postgresql": "postgresql", "asyncpg": "postgresql", "mysql": "mysql",
            "sqlite": "sqlite"}
#: conventions' keys
_POOL = "db.client.connection.pool.name"
_STATE = "db.client.connection.state"


def _namespace(dsn: str | None) -> str | None:
    """The database name of the pool's DSN (sqlite: the file's name), or None."""
    if not dsn:
        return None
    params = parse_dsn(dsn).params
    conninfo = params.get("conninfo")  # psycopg takes the URI itself: its path is the name
    if isinstance(conninfo, str):
        path = urlsplit(conninfo).path.lstrip("/")
        return unquote(path) or None
    for key in ("dbname", "database", "db"):
        value = params.get(key)
        if isinstance(value, str) and value:
            return os.path.basename(value) if dsn.startswith("sqlite") else value
    return None


class _OperationHook:
    """Times each statement into ``db.client.operation.duration`` while attached."""

    def __init__(self, histogram: Any, base: dict[str, str], dialect: str | None) -> None:
        self.histogram = histogram
        self.base = base
        self.cache = FingerprintCache(max_entries=256, max_bytes=256 << 10, dialect=dialect)
        # fingerprint -> its attributes (bounded: the cache's size), so a statement run again
        # builds no dict
        self.attrs: dict[str, dict[str, str]] = {}

    def before(self, ctx: Any) -> float:
        return perf_counter()

    def _attributes(self, ctx: Any) -> dict[str, str]:
        query = ctx.query
        text = query if type(query) is str else ctx.driver.query_text(query, ctx.cursor)
        summary = self.cache.fingerprint(text)
        attrs = self.attrs.get(summary)
        if attrs is None:
            if len(self.attrs) >= 256:
                self.attrs.clear()
            attrs = dict(self.base)
            attrs["db.query.summary"] = summary
            op = summary.split(None, 1)[0] if summary else ""
            if op.isalpha():
                attrs["db.operation.name"] = op
            self.attrs[summary] = attrs
        return attrs

    def after(self, ctx: Any, token: float, result: Any, error: BaseException | None) -> None:
        elapsed = perf_counter() - token
        attrs = self._attributes(ctx)
        if error is not None:
            attrs = {**attrs, "error.type": type(error).__qualname__}
        self.histogram.record(elapsed, attrs)


class Instrumentation:
    """What :func:`instrument` returns: :meth:`uninstrument` (or ``close``) detaches it."""

    def __init__(self, pool: Any, meter: Meter) -> None:
        self.pool = pool
        name = pool.name
        self._pool_attrs = {_POOL: name}
        self._hook: _OperationHook | None = None
        self._instruments: list[Any] = []
        self._observe_gauges(meter)
        dialect = pool.driver.dialect
        base = {"db.system.name": _SYSTEMS.get(dialect, dialect), _POOL: name}
        namespace = _namespace(pool.config.dsn)
        if namespace:
            base["db.namespace"] = namespace
        histogram = meter.create_histogram(
            "db.client.operation.duration", unit="s",
            description="Duration of database client operations.")
        self._hook = _OperationHook(histogram, base, dialect)
        pool.add_hook(self._hook)

    def _observe_gauges(self, meter: Meter) -> None:
        attrs = self._pool_attrs

        def stat(key: str) -> Any:
            def read(options: CallbackOptions) -> list[Observation]:
                if self._hook is None:
                    return []
                return [Observation(self.pool.stats()[key], attrs)]
            return read

        def count(options: CallbackOptions) -> list[Observation]:
            if self._hook is None:
                return []
            s = self.pool.stats()
            return [Observation(s["pool_available"], {**attrs, _STATE: "idle"}),
                    Observation(s["pool_size"] - s["pool_available"], {**attrs, _STATE: "used"})]

        unit = "{connection}"
        self._instruments = [
            meter.create_observable_up_down_counter(
                "db.client.connection.count", [count], unit=unit,
                description="The number of connections that are currently in state described "
                            "by the state attribute."),
            # poolkeeper keeps no idle ceiling apart from max_size
            meter.create_observable_up_down_counter(
                "db.client.connection.idle.max", [stat("pool_max")], unit=unit,
                description="The maximum number of idle open connections allowed."),
            meter.create_observable_up_down_counter(
                "db.client.connection.idle.min", [stat("pool_min")], unit=unit,
                description="The minimum number of idle open connections allowed."),
            meter.create_observable_up_down_counter(
                "db.client.connection.max", [stat("pool_max")], unit=unit,
                description="The maximum number of open connections allowed."),
            meter.create_observable_up_down_counter(
                "db.client.connection.pending_requests", [stat("requests_waiting")],
                unit="{request}",
                description="The number of current pending requests for an open connection."),
            meter.create_observable_counter(
                "db.client.connection.timeouts", [stat("requests_timeouts")], unit="{timeout}",
                description="The number of connection timeouts that have occurred trying to "
                            "obtain a connection from the pool."),
        ]

    def uninstrument(self) -> None:
        """Stop recording: the hook leaves the pool, the callbacks observe nothing more.

        The API has no way to delete an instrument; its callbacks answer nothing from now on.
        """
        hook, self._hook = self._hook, None
        if hook is not None:
            self.pool.remove_hook(hook)

    close = uninstrument

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstrument()


def instrument(pool: Any, meter: Meter | None = None) -> Instrumentation:
    """Report ``pool``'s metrics through ``meter`` (default: the global provider's
    ``poolkeeper`` meter) until the returned object's :meth:`~Instrumentation.uninstrument`."""
    if meter is None:
        meter = metrics.get_meter("poolkeeper")
    return Instrumentation(pool, meter)
