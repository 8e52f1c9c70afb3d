"""The hook protocol: before/after around the driver call, in nesting order, same tokens, and
the same hook objects serving an asyncio shell (``before; await driver; after``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from poolkeeper import Pool
from poolkeeper.config import PoolConfig
from poolkeeper.drivers.sqlite import SqliteDriver
from poolkeeper.hooks.context import StatementContext, chain, chain_async, driver_call
from poolkeeper.hooks.fetchsize import AdaptiveFetchSize
from poolkeeper.hooks.stats import StatsHook
from poolkeeper.hooks.stmtcache import StatementCacheHook
from poolkeeper.hooks.timeouts import TimeoutHook


class _Recorder:
    def __init__(self, name: str, log: list[Any], fail_before: bool = False,
                 replace: BaseException | None = None) -> None:
        self.name, self.log = name, log
        self.fail_before, self.replace = fail_before, replace

    def before(self, ctx: StatementContext) -> Any:
        self.log.append(("before", self.name))
        if self.fail_before:
            raise RuntimeError(f"{self.name} refused")
        return object()

    def after(self, ctx: StatementContext, token: Any, result: Any,
              error: BaseException | None) -> None:
        self.log.append(("after", self.name, token, result,
                         None if error is None else str(error)))
        if self.replace is not None and error is not None:
            raise self.replace from error


def _ctx() -> StatementContext:
    return StatementContext(None, None, None, "SELECT 1", None, False, {}, None)


def test_befores_run_outermost_first_and_afters_in_reverse_with_their_own_tokens() -> None:
    log: list[Any] = []
    outer, inner = _Recorder("outer", log), _Recorder("inner", log)
    def call(ctx: StatementContext) -> str:
        log.append(("call",))
        return "result"

    run = chain([outer, inner], call)
    assert run(_ctx()) == "result"
    assert [e[:2] for e in log] == [("before", "outer"), ("before", "inner"), ("call",),
                                    ("after", "inner"), ("after", "outer")]
    assert log[3][2] is not log[4][2]  # each after sees its own before's token
    assert log[3][3:] == ("result", None) and log[4][3:] == ("result", None)


def test_an_error_reaches_every_after_and_an_after_may_replace_it() -> None:
    log: list[Any] = []
    outer = _Recorder("outer", log)
    middle = _Recorder("middle", log, replace=TimeoutError("replaced"))
    inner = _Recorder("inner", log)

    def fail(ctx: StatementContext) -> Any:
        raise KeyboardInterrupt("driver")

    with pytest.raises(TimeoutError, match="replaced") as caught:
        chain([outer, middle, inner], fail)(_ctx())
    assert isinstance(caught.value.__cause__, KeyboardInterrupt)
    afters = {e[1]: e[4] for e in log if e[0] == "after"}
    assert afters == {"inner": "driver", "middle": "driver", "outer": "replaced"}


def test_a_before_that_raises_stops_the_statement() -> None:
    log: list[Any] = []
    run = chain([_Recorder("outer", log), _Recorder("inner", log, fail_before=True)],
                lambda ctx: log.append(("call",)))
    with pytest.raises(RuntimeError, match="inner refused"):
        run(_ctx())
    assert ("call",) not in log
    assert [e[:2] for e in log] == [("before", "outer"), ("before", "inner"), ("after", "outer")]
    assert log[-1][4] == "inner refused"


def test_the_pool_calls_hooks_installed_last_outermost(sqlite_dsn: str) -> None:
    log: list[Any] = []
    with Pool(sqlite_dsn, max_size=1, min_idle=0) as pool:
        first, second = _Recorder("first", log), _Recorder("second", log)
        pool.add_hook(first)
        pool.add_hook(second)
        assert pool.hooks[-2:] == (first, second)
        with pool.connection() as conn:
            conn.execute("SELECT 1").fetchall()
        pool.remove_hook(second)
        with pool.connection() as conn:
            conn.execute("SELECT 2").fetchall()
    assert [e[:2] for e in log] == [("before", "second"), ("before", "first"),
                                    ("after", "first"), ("after", "second"),
                                    ("before", "first"), ("after", "first")]


def test_the_pools_hooks_serve_an_asyncio_shell_unchanged() -> None:
    # Two tasks, each on its own connection, run statements through the very hook objects a
    # thread pool uses; every driver call is awaited with the other task running meanwhile.
    driver = SqliteDriver({"database": ":memory:"})
    config = PoolConfig(query_timeout=30)
    stats = StatsHook.from_config(config, driver.name, fetch=AdaptiveFetchSize(100))
    cache = StatementCacheHook.from_config(config, driver)
    timeouts = TimeoutHook(driver, query_timeout=30, name="aio")
    hooks: list[Any] = [timeouts, stats, cache]  # outermost first

    async def call(ctx: StatementContext) -> Any:
        await asyncio.sleep(0)  # the other task's statement starts here
        result = driver_call(ctx)
        await asyncio.sleep(0)
        return result

    run = chain_async(hooks, call)

    async def work(n: int) -> list[Any]:
        raw = driver.connect()
        memo: dict[Any, Any] = {}
        scope = object()
        rows = []
        try:
            for i in range(5):
                cur = raw.cursor()
                ctx = StatementContext(driver, raw, cur, "SELECT ?", (n * 10 + i,), False,
                                       memo, scope)
                await run(ctx)
                rows.append(cur.fetchone()[0])
            with pytest.raises(Exception, match="no such table"):
                await run(StatementContext(driver, raw, raw.cursor(), "SELECT * FROM nope",
                                           None, False, memo, scope))
        finally:
            cache.forget(raw)
            raw.close()
        return rows

    async def main() -> list[list[Any]]:
        return list(await asyncio.gather(work(1), work(2)))

    try:
        assert asyncio.run(main()) == [[10, 11, 12, 13, 14], [20, 21, 22, 23, 24]]
        snap = stats.sql_stats()
        by_fp = {s["fingerprint"]: s for s in snap["statements"]}
        assert by_fp["SELECT ?"]["executions"] == 10 and by_fp["SELECT ?"]["running_max"] == 2
        assert by_fp["SELECT * FROM nope"]["errors"] == 2 and snap["running"] == 0
        counters = cache.stats()
        assert counters["stmt_cache_misses"] == 4 and counters["stmt_cache_hits"] == 8
        t = timeouts.stats()
        assert t["timeouts_scheduled_num"] == 12 and t["timeouts_entries_now"] == 0
    finally:
        timeouts.close()
        driver.dispose()
