"""The memory watchdog and ledger: readings, bounded history, one warning per crossing,
bounded tracemalloc reports, a thread that stops, and no gc.collect() anywhere."""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from poolkeeper import Pool
from poolkeeper.observe.memory import (
    LEDGER,
    MemoryLedger,
    MemoryWatchdog,
    read_memory_limit,
    read_rss,
)

GIB = 1 << 30


class Bounded:
    """A bounded structure reporting to the ledger."""

    def __init__(self, used: int, budget: int | None) -> None:
        self.used = used
        self.budget = budget

    def memory_usage(self) -> tuple[int, int | None]:
        return self.used, self.budget


@pytest.fixture(autouse=True)
def no_gc_collect(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog must never call gc.collect() as a 'fix'."""
    def refuse(*args: object) -> int:
        raise AssertionError("the memory watchdog called gc.collect()")
    monkeypatch.setattr(gc, "collect", refuse)


# --------------------------------------------------------------------------- readings
def test_rss_is_read_from_proc() -> None:
    rss = read_rss()
    assert rss is not None and rss > 1 << 20


def test_rss_falls_back_when_proc_is_missing(tmp_path: Path) -> None:
    rss = read_rss(str(tmp_path / "no-statm"))
    assert rss is not None and rss > 0


def _cgroup(tmp_path: Path, proc_line: str, files: dict[str, str]) -> tuple[str, str]:
    proc = tmp_path / "cgroup"
    proc.write_text(proc_line + "\n")
    root = tmp_path / "fs"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return str(root), str(proc)


def test_cgroup_v2_limit_is_the_smallest_on_the_path(tmp_path: Path) -> None:
    root, proc = _cgroup(tmp_path, "0::/app/worker", {
        "app/worker/memory.max": "max",
        "app/memory.max": str(2 * GIB),
        "memory.max": str(8 * GIB),
    })
    assert read_memory_limit(root, proc) == (2 * GIB, "cgroup v2")


def test_cgroup_v1_limit_is_read(tmp_path: Path) -> None:
    root, proc = _cgroup(tmp_path, "4:memory:/docker/abc\n0::/", {
        "memory/docker/abc/memory.limit_in_bytes": str(512 * 1024 * 1024),
    })
    assert read_memory_limit(root, proc) == (512 * 1024 * 1024, "cgroup v1")


def test_unlimited_cgroup_falls_back_to_physical_memory(tmp_path: Path) -> None:
    root, proc = _cgroup(tmp_path, "4:memory:/x", {
        "memory/x/memory.limit_in_bytes": "9223372036854771712",
    })
    limit, source = read_memory_limit(root, proc)
    assert source == "physical" and limit is not None and limit > 0


def test_this_machines_limit_is_readable() -> None:
    limit, source = read_memory_limit()
    assert source in {"cgroup v1", "cgroup v2", "physical"}
    assert limit is not None and limit > 0


# --------------------------------------------------------------------------- ledger
def test_ledger_shows_each_structure_against_its_budget() -> None:
    ledger = MemoryLedger()
    stats, cache = Bounded(300, 1000), Bounded(50, None)
    ledger.register("stats:orders", stats, category="stats")
    ledger.register("cache:orders", cache.memory_usage, category="statement caches")
    ledger.register("fixed", lambda: (7, 10))
    entries = {e.name: e for e in ledger.entries()}
    assert entries["stats:orders"].fraction == pytest.approx(0.3)
    assert entries["cache:orders"].budget_bytes is None
    assert entries["fixed"].category == "fixed"
    assert [e.name for e in ledger.entries()] == ["stats:orders", "cache:orders", "fixed"]
    assert ledger.by_category() == {"stats": 300, "statement caches": 50, "fixed": 7}
    assert ledger.total() == 357
    text = ledger.format()
    assert "stats:orders" in text and "30.0%" in text


def test_ledger_holds_owners_weakly() -> None:
    ledger = MemoryLedger()
    owner, other = Bounded(1, 2), Bounded(3, 4)
    ledger.register("by object", owner)
    ledger.register("by method", other.memory_usage)
    assert len(ledger.entries()) == 2
    del owner, other
    assert ledger.entries() == []
    assert len(ledger) == 0


def test_unregister_and_failing_provider() -> None:
    ledger = MemoryLedger()

    def broken() -> tuple[int, int]:
        raise RuntimeError("boom")

    reg = ledger.register("broken", broken)
    [entry] = ledger.entries()
    assert entry.error == "RuntimeError: boom" and entry.bytes == 0
    reg.unregister()
    assert ledger.entries() == []


def test_ledger_is_bounded_and_counts_refusals(caplog: pytest.LogCaptureFixture) -> None:
    ledger = MemoryLedger(max_providers=2)
    keep = [Bounded(1, 1) for _ in range(3)]
    with caplog.at_level(logging.WARNING, "poolkeeper.memory"):
        for i, b in enumerate(keep):
            ledger.register(f"b{i}", b)
    assert len(ledger) == 2
    assert ledger.stats()["rejected"] == 1
    assert "ledger is full (2 providers)" in caplog.text


def test_bad_provider_is_refused() -> None:
    with pytest.raises(TypeError, match="memory_usage"):
        MemoryLedger().register("x", 42)
    with pytest.raises(ValueError, match="name"):
        MemoryLedger().register("", lambda: (1, 1))


def test_pools_bounded_structures_appear_without_registration(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, name="ledgered") as pool:
        with pool.connection() as conn:
            conn.execute("SELECT 1").fetchone()
        ledger = MemoryLedger(pools=lambda: [pool])
        entries = {e.name: e for e in ledger.entries()}
        stats = entries["sql_stats:ledgered"]
        assert stats.category == "stats" and stats.bytes > 0
        assert stats.budget_bytes == pool.config.stats_max_bytes
        assert entries["stmt_cache:ledgered"].category == "statement caches"
        assert set(ledger.by_category()) >= {"stats", "statement caches"}


def test_process_ledger_knows_the_resource_monitor() -> None:
    assert "resource monitor" in {e.name for e in LEDGER.entries()}


# --------------------------------------------------------------------------- watchdog
def test_sample_reports_percent_of_the_limit_and_history_is_bounded() -> None:
    dog = MemoryWatchdog(limit_bytes=64 * GIB, history=3, log_interval=None,
                         ledger=MemoryLedger(), pools=[])
    for _ in range(5):
        s = dog.sample()
    assert s.limit_source == "configured" and s.limit_bytes == 64 * GIB
    assert s.rss_bytes is not None and s.percent is not None
    assert s.percent == pytest.approx(s.rss_bytes / (64 * GIB) * 100, rel=1e-3)
    assert len(dog.history()) == 3
    assert dog.stats()["samples_total"] == 5


def test_log_line_names_pools_checkouts_and_categories(
        sqlite_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    ledger = MemoryLedger()
    stats, caches = Bounded(1_258_291, 4 << 20), Bounded(3_565_158, 8 << 20)
    ledger.register("stats:a", stats, category="stats")
    ledger.register("cache:a", caches, category="statement caches")
    with Pool(sqlite_dsn, max_size=2) as pool:
        dog = MemoryWatchdog(limit_bytes=2048 << 20, ledger=ledger, pools=[pool],
                             log_interval=3600)
        with pool.connection(), caplog.at_level(logging.INFO, "poolkeeper.memory"):
            s = dog.sample()
            dog.sample()  # within log_interval: no second line
    lines = [r.getMessage() for r in caplog.records if r.name == "poolkeeper.memory"]
    assert len(lines) == 1
    assert re.fullmatch(r"poolkeeper memory \d+\.\d% \(\d+/2048 MB\), pools 1, checkouts 1, "
                        r"statement caches 3\.4 MB, stats 1\.2 MB", lines[0]), lines[0]
    assert (s.pools, s.checkouts) == (1, 1)


def test_process_threshold_warns_once_per_crossing(caplog: pytest.LogCaptureFixture) -> None:
    dog = MemoryWatchdog(limit_bytes=1 << 20, warn_percent=80, log_interval=None,
                         ledger=MemoryLedger(), pools=[])
    with caplog.at_level(logging.WARNING, "poolkeeper.memory"):
        dog.sample()  # RSS is far above 1 MB: crossed
        dog.sample()  # still above: no new warning
        dog.limit_bytes = 1 << 50  # back below rearm_percent
        dog.sample()
        dog.limit_bytes = 1 << 20  # crossed again
        dog.sample()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "crossed warn_percent=80%" in warnings[0].getMessage()
    assert dog.stats()["warnings_total"] == 2


def test_structure_near_its_budget_warns_once_per_crossing(
        caplog: pytest.LogCaptureFixture) -> None:
    ledger = MemoryLedger()
    cache = Bounded(95, 100)
    ledger.register("cache:orders", cache, category="statement caches")
    dog = MemoryWatchdog(limit_bytes=1 << 50, ledger=ledger, pools=[], log_interval=None)
    with caplog.at_level(logging.WARNING, "poolkeeper.memory"):
        dog.sample()
        dog.sample()
        cache.used = 10
        dog.sample()
        cache.used = 99
        dog.sample()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 2
    assert "cache:orders (statement caches)" in messages[0] and "95%" in messages[0]


def test_crossings_write_a_bounded_number_of_tracemalloc_reports(tmp_path: Path) -> None:
    was_tracing = tracemalloc.is_tracing()
    dog = MemoryWatchdog(limit_bytes=1 << 20, ledger=MemoryLedger(), pools=[],
                         log_interval=None, snapshot_dir=tmp_path, max_snapshots=2,
                         tracemalloc_frames=1, interval=3600)
    dog.start()
    try:
        assert tracemalloc.is_tracing()
        hoard = [bytearray(1024) for _ in range(4000)]  # the growth the report must name
        for _ in range(3):
            dog.limit_bytes = 1 << 20
            dog.sample()
            dog.limit_bytes = 1 << 50
            dog.sample()
    finally:
        dog.stop()
    assert tracemalloc.is_tracing() == was_tracing  # stopped only what it started
    files = sorted(tmp_path.glob("poolkeeper-memory-*.txt"))
    assert len(files) == 2
    assert dog.stats()["snapshots_skipped"] == 1
    report = files[0].read_text()
    assert "growth KB" in report and f"{__file__}:" in report
    assert len(hoard) == 4000


def test_thread_is_named_and_stops(caplog: pytest.LogCaptureFixture) -> None:
    dog = MemoryWatchdog(interval=0.01, log_interval=None, ledger=MemoryLedger(), pools=[])
    with dog:
        assert any(t.name == "poolkeeper-memory" for t in threading.enumerate())
        deadline = time.monotonic() + 10
        while dog.stats()["samples_total"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dog.running
    assert not dog.running
    assert not any(t.name == "poolkeeper-memory" for t in threading.enumerate())
    assert dog.stats()["samples_total"] > 0
    assert dog.stop() is True  # idempotent


def test_watchdog_reports_its_own_memory_to_the_ledger() -> None:
    ledger = MemoryLedger()
    dog = MemoryWatchdog(interval=3600, ledger=ledger, pools=[], log_interval=None)
    with dog:
        assert [e.name for e in ledger.entries()] == ["memory watchdog"]
    assert ledger.entries() == []


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="interval=0"):
        MemoryWatchdog(interval=0)
    with pytest.raises(ValueError, match="warn_percent=150"):
        MemoryWatchdog(warn_percent=150)
    with pytest.raises(ValueError, match="history=0"):
        MemoryWatchdog(history=0)


def test_watchdog_dropped_without_stop_ends_its_thread() -> None:
    dog = MemoryWatchdog(interval=0.01, log_interval=None, ledger=MemoryLedger(), pools=[])
    dog.start()
    thread = dog._thread
    assert thread is not None
    del dog  # no stop(): the thread holds it weakly, the finalizer stops it
    thread.join(10)
    assert not thread.is_alive()


def test_a_full_ledger_makes_room_from_dead_providers_before_it_refuses() -> None:
    from poolkeeper.observe.memory import MemoryLedger

    class Owner:
        def usage(self) -> tuple[int, None]:
            return (10, None)

    ledger = MemoryLedger(max_providers=3)
    owners = [Owner() for _ in range(3)]
    for o in owners:
        ledger.register("cache", o.usage)
    del owners, o  # freed by reference counting (no cycle)
    live = Owner()
    ledger.register("cache", live.usage)  # the three dead ones go; nobody read entries()
    assert ledger.rejected == 0
    assert [e.bytes for e in ledger.entries()] == [10]
