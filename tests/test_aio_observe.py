"""An AsyncPool seen by the console, ``/metrics``, admin SQL, the memory ledger and
``doctor`` exactly like a sync Pool (issue #17).

The AsyncPool runs in an event loop in a thread of its own, its checkouts held by named
tasks; the observers read it from the test's thread (and the console's), as they do in an
application, next to a sync Pool on the same server.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from poolkeeper import Pool, PoolConfig
from poolkeeper.admin import query, snapshot
from poolkeeper.cli.diagnosis import diagnose
from poolkeeper.console import serve
from poolkeeper.metrics import exposition
from poolkeeper.observe.memory import pool_entries
from poolkeeper.pool.aio import AsyncPool

#: how long the test waits for the loop thread to reach a state (a bound, not a timing claim)
_WAIT_S = 30.0


@dataclass
class LoopPool:
    """An AsyncPool in a loop thread, with ``holders`` tasks each holding one checkout."""

    pool: AsyncPool
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    release: asyncio.Event
    ready: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` in the loop's thread and give its result."""
        done: list[Any] = []
        ev = threading.Event()

        def run() -> None:
            try:
                done.append(fn(*args))
            finally:
                ev.set()
        self.loop.call_soon_threadsafe(run)
        assert ev.wait(_WAIT_S), "the loop thread did not run the call"
        return done[0] if done else None


async def _hold(pool: AsyncPool, release: asyncio.Event, sql: str) -> None:
    async with pool.connection() as conn:  # the borrow site the reports name
        if hasattr(conn, "fetchval"):
            await conn.fetchval(sql)
        else:
            cur = await conn.execute(sql)
            await cur.fetchall()
        await release.wait()


def _start(dsn: str, name: str, holders: tuple[str, ...], sql: str) -> LoopPool:
    """Start the loop thread; returns once every holder task holds its checkout."""
    box: dict[str, Any] = {}
    started = threading.Event()

    async def main() -> None:
        pool = AsyncPool(dsn, name=name, max_size=len(holders) + 1, monitor=True)
        release = asyncio.Event()
        box["lp"] = lp = LoopPool(pool, asyncio.get_running_loop(), threading.current_thread(),
                                  release)
        started.set()
        try:
            async with pool:
                for _ in range(3):  # a statement run a few times, for the SQL statistics
                    async with pool.connection() as conn:
                        if hasattr(conn, "fetchval"):
                            await conn.fetchval(sql)
                        else:
                            await (await conn.execute(sql)).fetchall()
                tasks = [asyncio.create_task(_hold(pool, release, sql), name=h)
                         for h in holders]
                while pool.stats()["pool_active"] < len(holders):
                    await asyncio.sleep(0.01)
                lp.ready.set()
                await asyncio.gather(*tasks)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            lp.errors.append(exc)
            lp.ready.set()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name=f"loop-{name}")
    thread.start()
    assert started.wait(_WAIT_S)
    lp: LoopPool = box["lp"]
    assert lp.ready.wait(_WAIT_S), "the holder tasks did not borrow in time"
    assert not lp.errors, lp.errors
    return lp


def _stop(lp: LoopPool) -> None:
    lp.loop.call_soon_threadsafe(lp.release.set)
    lp.thread.join(_WAIT_S)
    assert not lp.thread.is_alive()
    assert not lp.errors, lp.errors


@pytest.fixture(params=["postgresql", "asyncpg"])
def observed(request: pytest.FixtureRequest, pg_dsn: str) -> Iterator[tuple[LoopPool, Pool]]:
    """An AsyncPool (psycopg or asyncpg) with checkouts held by tasks 'holder-a' and
    'holder-b', and a sync Pool on the same server with one held by this thread."""
    dsn = pg_dsn if request.param == "postgresql" else pg_dsn.replace(
        "postgresql://", "postgresql+asyncpg://", 1)
    lp = _start(dsn, f"aio-{request.param}", ("holder-a", "holder-b"), "SELECT 41 + 1")
    try:
        with Pool(pg_dsn, name="sync-pg", max_size=2, monitor=True) as spool:
            for _ in range(3):
                with spool.connection() as conn:
                    conn.execute("SELECT 41 + 1").fetchall()
            with spool.connection() as held:
                held.execute("SELECT 41 + 1").fetchall()
                yield lp, spool
    finally:
        _stop(lp)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: str = response.read().decode()
    return body


def test_connections_info_names_the_holding_tasks_with_the_sync_columns(
        observed: tuple[LoopPool, Pool]) -> None:
    lp, spool = observed
    arows, srows = lp.pool.connections_info(), spool.connections_info()
    assert {tuple(sorted(r)) for r in arows} == {tuple(sorted(srows[0]))}
    held = sorted((r for r in arows if r["state"] == "in_use"), key=lambda r: r["holder"])
    assert [r["holder"] for r in held] == ["task 'holder-a'", "task 'holder-b'"]
    assert [r["holder_thread"] for r in held] == ["'holder-a'", "'holder-b'"]
    for r in held:
        assert re.search(r"test_aio_observe\.py:\d+ in _hold$", r["borrow_site"]), r
        assert r["sql"] == "SELECT ? + ?"  # literals folded, as for the sync pool
    sync_held = [r for r in srows if r["state"] == "in_use"]
    assert sync_held[0]["holder"] == "thread 'MainThread'"
    assert set(lp.pool.stats()) >= set(spool.stats()) - {"pool_leased", "lease"}


def test_console_pages_and_json_show_the_async_pool_like_the_sync_one(
        observed: tuple[LoopPool, Pool]) -> None:
    lp, spool = observed
    with serve([lp.pool, spool], sample_interval=0.05) as handle:
        conns = json.loads(_get(handle.url + "api/connections"))
        by_name = {p["name"]: p for p in conns["pools"]}
        apage, spage = by_name[lp.pool.name], by_name["sync-pg"]
        assert apage["columns"] == spage["columns"]
        assert apage["states"].get("in_use") == 2 and spage["states"].get("in_use") == 1
        assert {r["holder"] for r in apage["rows"] if r["state"] == "in_use"} == {
            "task 'holder-a'", "task 'holder-b'"}
        html = _get(handle.url + "connections")
        assert "holder-a" in html and "holder-b" in html and "_hold" in html
        overview = json.loads(_get(handle.url + "api/overview"))
        keys = {p["name"]: set(p) for p in overview["pools"]}
        assert keys[lp.pool.name] == keys["sync-pg"]
        sql = json.loads(_get(handle.url + "api/sql"))
        for entry in sql["pools"]:
            fps = {r["fingerprint"]: r for r in entry["rows"]}
            assert fps["SELECT ? + ?"]["executions"] >= 4, (entry["name"], fps)
        resources = json.loads(_get(handle.url + "api/resources?min_age=0"))
        text = json.dumps(resources)
        assert "holder-a" in text and "holder-b" in text, text[:2000]
        for page in ("/", "/sql", "/caches", "/resources", "/memory"):
            assert "<html" in _get(handle.url + page.lstrip("/")).lower()
        metrics = _get(handle.url + "metrics")
    series = _series(metrics)
    assert series[lp.pool.name] == series["sync-pg"] - {"poolkeeper_lease"}
    active = re.search(
        r'poolkeeper_connections_active\{pool="' + re.escape(lp.pool.name) + r'"\} (\S+)', metrics)
    assert active is not None and float(active.group(1)) == 2.0


def _series(text: str) -> dict[str, set[str]]:
    """The metric names each pool label has in an exposition."""
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        m = re.match(r'(\w+)\{(?:[^}]*,)?pool="([^"]+)"', line)
        if m:
            out.setdefault(m.group(2), set()).add(m.group(1))
    return out


def test_metrics_exposition_has_the_sync_names(observed: tuple[LoopPool, Pool]) -> None:
    lp, spool = observed
    series = _series(exposition([lp.pool, spool]).decode())
    assert series[lp.pool.name] and series[lp.pool.name] == series["sync-pg"]


def test_admin_sql_tables_show_the_async_pool_like_the_sync_one(
        observed: tuple[LoopPool, Pool]) -> None:
    lp, spool = observed
    pools = [lp.pool, spool]
    rows = query("select name, driver, size, active, monitor from pools order by name",
                 pools=pools).as_dicts()
    by = {r["name"]: r for r in rows}
    assert by[lp.pool.name]["active"] == 2 and by["sync-pg"]["active"] == 1
    assert by[lp.pool.name]["monitor"] == 1 == by["sync-pg"]["monitor"]
    held = query("select pool, holder, borrow_site from connections where state='in_use' "
                 "order by pool, holder", pools=pools).as_dicts()
    assert [(r["pool"], r["holder"]) for r in held] == sorted([
        (lp.pool.name, "task 'holder-a'"), (lp.pool.name, "task 'holder-b'"),
        ("sync-pg", "thread 'MainThread'")])
    with snapshot([lp.pool]) as asnap, snapshot([spool]) as ssnap:
        assert asnap.tables()["connections"] == ssnap.tables()["connections"]
    stats = query("select pool, fingerprint, executions from sql_stats "
                  "where fingerprint = 'SELECT ? + ?' order by pool", pools=pools).as_dicts()
    assert {r["pool"] for r in stats} == {lp.pool.name, "sync-pg"}
    assert all(r["executions"] >= 4 for r in stats), stats
    names = {p.name: {n for n, in query("select name from pool_stats where pool = ?",
                                         pools=[p], params=(p.name,)).rows} for p in pools}
    assert names[spool.name] - names[lp.pool.name] <= {"pool_leased"}
    checkouts = query("select pool, thread, site from resources where kind = 'checkout' "
                      "order by pool, thread", pools=pools).as_dicts()
    mine = [r for r in checkouts if r["pool"] in (lp.pool.name, "sync-pg")]
    assert [(r["pool"], r["thread"]) for r in mine] == [
        (lp.pool.name, "holder-a"), (lp.pool.name, "holder-b"), ("sync-pg", "MainThread")]
    assert all("in _hold" in r["site"] for r in mine if r["pool"] == lp.pool.name), mine


def test_memory_ledger_has_the_same_entries_for_both(observed: tuple[LoopPool, Pool]) -> None:
    lp, spool = observed
    a = {e.name.split(":")[0] for e in pool_entries(lp.pool)}
    s = {e.name.split(":")[0] for e in pool_entries(spool)}
    assert a and a == s


def test_doctor_judges_an_asyncpg_config_as_a_postgresql_one_but_for_libpq(
        pg_dsn: str) -> None:
    """doctor reads a config, not a pool: an asyncpg DSN gets the PostgreSQL checks, all but
    libpq's input buffer (asyncpg has no libpq)."""
    risky = {"statement_cache_size": 5000, "max_lifetime": 300.0, "idle_timeout": 60.0,
             "lifetime_jitter": 0.0, "max_size": 50, "max_idle_result_bytes": 0}
    pg = diagnose(PoolConfig.from_mapping({"dsn": pg_dsn, **risky}))
    apg = diagnose(PoolConfig.from_mapping({
        "dsn": pg_dsn.replace("postgresql://", "postgresql+asyncpg://", 1), **risky}))
    pg_settings = [f.setting for f in pg.findings]
    assert "max_idle_result_bytes" in pg_settings and "statement_cache_size" in pg_settings
    assert [f.setting for f in apg.findings] == [
        s for s in pg_settings if s != "max_idle_result_bytes"]
    assert [s.name for s in apg.structures] == [s.name for s in pg.structures]


def test_console_reset_and_expire_all_from_other_threads_run_in_the_loop(
        observed: tuple[LoopPool, Pool]) -> None:
    lp, _spool = observed
    pool = lp.pool
    token = "test-token-0123456789abcdef"
    with serve([pool], token=token) as handle:
        req = urllib.request.Request(handle.url + "api/reset?pool=" + pool.name, data=b"",
                                     headers={"X-Poolkeeper-Token": token}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as response:
            assert json.loads(response.read())["reset"] == [pool.name]
    assert pool.stats()["pool_active"] == 2
    generation = pool._bag.generation
    pool.expire_all()  # from this thread: handed to the loop
    lp.call(lambda: None)  # the loop ran what was queued before this
    assert pool._bag.generation == generation + 1
    assert pool.stats()["pool_active"] == 2  # borrowed ones retire when they come back


def test_a_leak_report_names_the_holding_task(sqlite_dsn: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with AsyncPool(sqlite_dsn, name="aio-leakreport", max_size=1,
                             leak_threshold=0.05) as pool:
            async def hold() -> None:
                async with pool.connection():
                    for _ in range(500):  # bounded: at most 5 s for the housekeeper
                        if pool.stats()["leaks_detected"]:
                            return
                        await asyncio.sleep(0.01)
            await asyncio.create_task(hold(), name="slow-holder")
            assert pool.stats()["leaks_detected"] == 1
    with caplog.at_level("WARNING", logger="poolkeeper.pool"):
        asyncio.run(main())
    [report] = [r.getMessage() for r in caplog.records if "possible leak" in r.getMessage()]
    assert "by task 'slow-holder', borrowed at " in report and " in hold" in report, report
