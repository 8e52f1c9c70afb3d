"""OpenTelemetry metrics (poolkeeper.integrations.otel) against real sqlite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.metrics",
                    reason="opentelemetry-sdk not installed (pip install poolkeeper[dev])")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from poolkeeper import Pool
from poolkeeper.integrations.otel import instrument

SECRET = "s3cr3t-Hunter2"


def collect(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    out: dict[str, Any] = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = m
    return out


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_names_units_attributes(backend: str, reader: InMemoryMetricReader,
                                sqlite_dsn: str, request: pytest.FixtureRequest) -> None:
    dsn = sqlite_dsn if backend == "sqlite" else request.getfixturevalue("pg_dsn")
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    with Pool(dsn, max_size=2, min_idle=1, name="shop") as pool:
        handle = instrument(pool, meter)
        with pool.connection() as conn:
            cur = conn.cursor()
            cur.execute(f"SELECT 1 WHERE 'x' <> '{SECRET}'")
            with pytest.raises(Exception) as info:
                cur.execute("SELECT * FROM no_such_table_here")
        got = collect(reader)
        handle.uninstrument()
    units = {"db.client.connection.count": "{connection}", "db.client.connection.max":
             "{connection}", "db.client.connection.idle.max": "{connection}",
             "db.client.connection.idle.min": "{connection}",
             "db.client.connection.pending_requests": "{request}",
             "db.client.connection.timeouts": "{timeout}",
             "db.client.operation.duration": "s"}
    for name, unit in units.items():
        assert got[name].unit == unit, name
    states = {p.attributes["db.client.connection.state"]: p.value
              for p in got["db.client.connection.count"].data.data_points}
    assert set(states) == {"idle", "used"}
    assert states["idle"] + states["used"] >= 1
    assert [p.value for p in got["db.client.connection.max"].data.data_points] == [2]
    for p in got["db.client.connection.max"].data.data_points:
        assert p.attributes == {"db.client.connection.pool.name": "shop"}
    points = got["db.client.operation.duration"].data.data_points
    by_summary = {p.attributes["db.query.summary"]: p for p in points}
    system = "sqlite" if backend == "sqlite" else "postgresql"
    assert set(by_summary) >= {"SELECT ? WHERE ? <> ?"}, sorted(by_summary)
    ok = by_summary["SELECT ? WHERE ? <> ?"]
    assert ok.attributes["db.system.name"] == system
    assert ok.attributes["db.operation.name"] == "SELECT"
    assert ok.attributes["db.namespace"] == ("test.db" if backend == "sqlite" else "test")
    assert "error.type" not in ok.attributes
    assert ok.count == 1 and ok.sum >= 0
    failed = by_summary["SELECT * FROM no_such_table_here"]
    assert failed.attributes["error.type"] == type(info.value).__qualname__
    for p in points:  # no literal reaches an attribute
        assert all(SECRET not in str(v) for v in p.attributes.values())


def test_uninstrument_stops_recording(reader: InMemoryMetricReader, sqlite_dsn: str) -> None:
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    with Pool(sqlite_dsn, max_size=1, name="u") as pool:
        handle = instrument(pool, meter)
        with pool.connection() as conn:
            conn.cursor().execute("SELECT 1")
        first = collect(reader)["db.client.operation.duration"].data.data_points[0].count
        assert first == 1
        handle.uninstrument()
        assert pool.hooks == tuple(h for h in pool.hooks if h is not handle)  # detached
        with pool.connection() as conn:
            conn.cursor().execute("SELECT 1")
        got = collect(reader)
    points = got["db.client.operation.duration"].data.data_points
    assert [p.count for p in points] == [1]
    max_points = got.get("db.client.connection.max")  # callbacks answer nothing any more
    assert max_points is None or not max_points.data.data_points


def test_async_pool_records_the_same(reader: InMemoryMetricReader, sqlite_dsn: str) -> None:
    pytest.importorskip("aiosqlite", reason="aiosqlite not installed (poolkeeper[asyncio-sqlite])")
    from poolkeeper import AsyncPool
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")

    async def main() -> dict[str, Any]:
        async with AsyncPool(sqlite_dsn, max_size=1, name="a") as pool:
            handle = instrument(pool, meter)
            async with pool.connection() as conn:
                cur = await conn.cursor()
                await cur.execute(f"SELECT 1 WHERE 'x' <> '{SECRET}'")
            got = collect(reader)
            handle.uninstrument()
            return got

    got = asyncio.run(main())
    (point,) = got["db.client.operation.duration"].data.data_points
    assert point.attributes["db.query.summary"] == "SELECT ? WHERE ? <> ?"
    assert point.attributes["db.system.name"] == "sqlite"
    assert point.count == 1
    assert [p.value for p in got["db.client.connection.max"].data.data_points] == [1]
