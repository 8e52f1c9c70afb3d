"""Prometheus exposition: HikariCP's metric set, units in names, bounded labels, no SQL."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from poolkeeper import Pool
from poolkeeper.metrics import PoolCollector, exposition, metric_names, register

from ._db import create_table, drop_table, placeholder, unique_table

prometheus_client = importlib.import_module("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def _workload(pool: Pool, n: int = 30) -> None:
    for i in range(n):
        with pool.connection() as conn:
            conn.execute("SELECT 1").fetchall()
            if i % 10 == 0:
                conn.execute("SELECT 'secret-literal-778899'").fetchall()


def test_exposition_covers_hikaricp_set_plus_churn_leaks_and_abandoned(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, max_size=2, name="shop") as pool:
        _workload(pool)
        names = metric_names(exposition(pool))
    expected = {
        # HikariCP: total / idle / active / pending / max / min, timeouts, three timers
        "poolkeeper_connections", "poolkeeper_connections_idle", "poolkeeper_connections_active",
        "poolkeeper_connections_pending", "poolkeeper_connections_max",
        "poolkeeper_connections_min", "poolkeeper_connections_timeout_total",
        "poolkeeper_connections_acquire_seconds_bucket",
        "poolkeeper_connections_acquire_seconds_count",
        "poolkeeper_connections_acquire_seconds_sum",
        "poolkeeper_connections_usage_seconds_bucket",
        "poolkeeper_connections_usage_seconds_sum",
        "poolkeeper_connections_creation_seconds_count",
        "poolkeeper_connections_creation_seconds_sum",
        # poolkeeper's own: churn, leaks, abandoned, closes by reason
        "poolkeeper_connections_opened_last_hour", "poolkeeper_connections_created_total",
        "poolkeeper_connections_leaks_detected_total", "poolkeeper_connections_abandoned_total",
        "poolkeeper_connections_closed_total", "poolkeeper_ledger_bytes",
    }
    assert expected <= names, sorted(expected - names)
    for name in names:
        assert name.startswith("poolkeeper_"), name
        assert "_ms" not in name, f"{name}: time must be exported in seconds"


def test_values_match_pool_stats_at_scrape_time(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, max_size=3, name="shop") as pool:
        _workload(pool, 40)
        stats = pool.stats()
        samples = _samples(exposition(pool, ledger=None))
    assert _value(samples, "poolkeeper_connections", pool="shop") == stats["pool_size"]
    assert _value(samples, "poolkeeper_connections_idle", pool="shop") == stats["pool_available"]
    assert _value(samples, "poolkeeper_connections_max", pool="shop") == 3
    assert _value(samples, "poolkeeper_connections_requests_total",
                  pool="shop") == stats["requests_num"]
    assert _value(samples, "poolkeeper_connections_created_total",
                  pool="shop") == stats["connections_num"]
    assert _value(samples, "poolkeeper_connections_closed_total", pool="shop",
                  reason="lifetime") == stats["connections_closed_lifetime"]


def test_histograms_are_cumulative_in_seconds_with_matching_count_and_sum(
        sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, max_size=2, name="h") as pool:
        _workload(pool, 25)
        stats = pool.stats()
        samples = _samples(exposition(pool, ledger=None))
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in samples.items()
                      if k[0] == "poolkeeper_connections_usage_seconds_bucket"))
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "bucket counts must be cumulative"
    bounds_s = [b / 1000.0 for b in stats["histogram_bounds_ms"]]
    assert [le for le, _ in buckets][:-1] == pytest.approx(bounds_s)
    assert buckets[-1][0] == float("inf")
    assert buckets[-1][1] == sum(stats["usage_ms_histogram"])
    assert _value(samples, "poolkeeper_connections_usage_seconds_count",
                  pool="h") == sum(stats["usage_ms_histogram"])
    assert _value(samples, "poolkeeper_connections_usage_seconds_sum",
                  pool="h") == pytest.approx(stats["usage_ms"] / 1000.0)
    assert _value(samples, "poolkeeper_connections_acquire_seconds_count",
                  pool="h") == sum(stats["wait_ms_histogram"])


def test_labels_are_bounded_and_sql_never_appears(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=2, name="b") as pool:
        table = unique_table("pkmet")
        create_table(pool, table)
        try:
            ph = placeholder(pool)
            for i in range(20):
                with pool.connection() as conn:
                    conn.execute(f"INSERT INTO {table} (id, v) VALUES ({i}, 'literal-{i}-xyz')")
                    conn.execute(f"SELECT v FROM {table} WHERE id = {ph}", (i,)).fetchall()
            text = exposition(pool)
        finally:
            drop_table(pool, table)
    assert b"literal-" not in text and table.encode() not in text
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            assert set(s.labels) <= {"pool", "reason", "le", "quantile"}, (s.name, s.labels)


def test_hook_counters_are_exported_with_unit_suffixes(sqlite_dsn: str) -> None:
    hook_module = importlib.import_module("poolkeeper.hooks.stats")
    with Pool(sqlite_dsn, max_size=2, name="s") as pool:
        hooks = [] if hasattr(pool, "sql_stats") else [
            hook_module.StatsHook.from_config(pool.config, pool.driver.name)]
        for hook in hooks:
            pool.add_hook(hook)
        try:
            _workload(pool, 10)
            stats = pool.stats()
            samples = _samples(exposition(pool, ledger=None))
        finally:
            for hook in hooks:
                pool.remove_hook(hook)
    if "sql_executions" not in stats:
        pytest.skip("this build's statistics hook reports no sql_executions counter")
    assert _value(samples, "poolkeeper_sql_executions_total", pool="s") == stats["sql_executions"]
    assert _value(samples, "poolkeeper_sql_time_seconds_total",
                  pool="s") == pytest.approx(stats["sql_ms"] / 1000.0)
    assert _value(samples, "poolkeeper_sql_stats_bytes", pool="s") == stats["sql_stats_bytes"]


def test_query_timeouts_are_exported(sqlite_dsn: str) -> None:
    timeouts = importlib.import_module("poolkeeper.hooks.timeouts")
    with Pool(sqlite_dsn, max_size=2, name="t", query_timeout=30) as pool:
        # A pool with query_timeout installs its own timeout hook; older builds need one.
        hooks = [] if "timeouts_fired_num" in pool.stats() else [
            timeouts.TimeoutHook.for_pool(pool)]
        for hook in hooks:
            pool.add_hook(hook)
        try:
            _workload(pool, 5)
            stats = pool.stats()
            text = exposition(pool, ledger=None)
        finally:
            for hook in hooks:
                pool.remove_hook(hook)
                hook.close()
    if "timeouts_raised_num" not in stats:
        pytest.skip("this build's timeout hook reports no timeouts_raised_num counter")
    assert _value(_samples(text), "poolkeeper_query_timeouts_total", pool="t") == 0
    assert "poolkeeper_query_timeouts_pending" in metric_names(text)


class _BrokenPool:
    """A pool whose stats() fails, as a pool being torn down may."""

    name = "broken"

    def stats(self) -> dict[str, Any]:
        raise RuntimeError("stats unavailable")


def test_a_failing_pool_is_counted_and_the_others_still_exported(sqlite_dsn: str) -> None:
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    with Pool(sqlite_dsn, max_size=2, name="ok") as pool:
        collector = register(lambda: [_BrokenPool(), pool], registry=registry, ledger=None)
        text = prometheus_client.generate_latest(registry)
        samples = _samples(text)
        assert _value(samples, "poolkeeper_connections_max", pool="ok") == 2
        assert _value(samples, "poolkeeper_scrape_errors_total") == 1
        assert collector.errors == 1
        assert isinstance(collector, PoolCollector)


def test_two_pools_with_one_name_get_distinct_series(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, max_size=2, name="dup") as a, \
            Pool("sqlite://:memory:", max_size=4, name="dup") as b:
        samples = _samples(exposition([a, b], ledger=None))
    assert _value(samples, "poolkeeper_connections_max", pool="dup") == 2
    assert _value(samples, "poolkeeper_connections_max", pool="dup-2") == 4


def test_a_registered_collector_keeps_no_pool_alive_and_drops_closed_ones(
        sqlite_dsn: str) -> None:
    import gc
    import weakref

    from poolkeeper.metrics import PoolCollector

    pool = Pool(sqlite_dsn, name="weakly-held")
    collector = PoolCollector([pool], ledger=None)
    names = {s.labels.get("pool") for fam in collector.collect() for s in fam.samples}
    assert "weakly-held" in names
    pool.close()
    names = {s.labels.get("pool") for fam in collector.collect() for s in fam.samples}
    assert "weakly-held" not in names  # a closed pool's series go
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert ref() is None  # the collector (registered for the process's life) held it weakly
