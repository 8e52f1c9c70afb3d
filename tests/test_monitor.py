"""The resource monitor: planted leaks are shown at the line that took them, off costs nothing,
every structure is bounded and what it drops is counted."""

from __future__ import annotations

import gc
import inspect
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from poolkeeper import Pool
from poolkeeper.observe import monitor as monitor_module
from poolkeeper.observe.monitor import (
    MONITOR,
    NULL_TOKEN,
    Monitor,
    Probe,
    Token,
    by_site,
    fold_sql,
)

HERE = __file__


class Resource:
    """Something weak-referenceable standing for a cursor or a connection."""


# --------------------------------------------------------------------------- planted leaks
def borrow_and_forget(probe: Probe) -> int:
    """Takes a 'connection' and never gives it back; returns the line that took it."""
    _token, line = probe.track("checkout", sql="SELECT 1"), sys._getframe().f_lineno
    return line


def open_cursor_and_drop(probe: Probe) -> int:
    """Opens a 'cursor' that is never closed; the object is dropped on return."""
    cur = Resource()
    _token, line = probe.track("cursor", cur), sys._getframe().f_lineno
    return line


@pytest.fixture
def mon() -> Monitor:
    return Monitor()


@pytest.fixture
def global_monitor() -> Iterator[Monitor]:
    """The process-wide monitor, switched back off and emptied afterwards."""
    MONITOR.clear()
    yield MONITOR
    MONITOR.disable()
    MONITOR.clear()


def test_function_that_borrows_and_never_returns_is_shown_at_its_line(mon: Monitor) -> None:
    probe = mon.probe("orders", enabled=True)
    line = borrow_and_forget(probe)
    [leak] = mon.live(min_age=0)
    assert leak.kind == "checkout"
    assert leak.pool == "orders"
    assert leak.site == f"{HERE}:{line} in borrow_and_forget"
    assert (leak.file, leak.line, leak.function) == (HERE, line, "borrow_and_forget")
    assert leak.stack[1][2] == ("test_function_that_borrows_and_never_returns_is_shown_at_"
                                "its_line")
    assert leak.thread == threading.current_thread().name
    assert leak.sql == "SELECT ?"


def test_cursor_never_closed_and_collected_is_shown_with_its_creating_site(
        mon: Monitor) -> None:
    probe = mon.probe("orders", enabled=True)
    line = open_cursor_and_drop(probe)
    gc.collect()  # the test forces the collection; the monitor never does
    assert mon.live(min_age=0) == []
    [gone] = mon.collected()
    assert gone.kind == "cursor"
    assert gone.site == f"{HERE}:{line} in open_cursor_and_drop"
    assert gone.collected_at is not None
    assert mon.stats()["collected_total"] == 1


def test_cursor_never_closed_but_still_referenced_stays_live(mon: Monitor) -> None:
    probe = mon.probe(None, enabled=True)
    cur = Resource()
    token, line = probe.track("cursor", cur), sys._getframe().f_lineno
    [live] = mon.live(min_age=0, kind="cursor")
    assert live.site.endswith(f":{line} in test_cursor_never_closed_but_still_referenced_"
                              "stays_live")
    token.close()
    assert mon.live(min_age=0) == []
    del cur
    gc.collect()
    assert mon.collected() == []  # closed before it was collected: not a leak


def test_explicit_collected_path_moves_the_record(mon: Monitor) -> None:
    probe = mon.probe("p", enabled=True)
    token = probe.track("checkout")
    token.collected()
    assert mon.live(min_age=0) == []
    assert [r.kind for r in mon.collected()] == ["checkout"]
    token.close()  # harmless afterwards
    token.collected()
    assert mon.stats()["collected_total"] == 1


def test_views_copy_the_collected_list_again_when_a_finalizer_appended_mid_copy(
        mon: Monitor) -> None:
    """A collection triggered by the copy itself can run a finalizer that appends to the list
    on the same thread (the lock is reentrant); deque then raises RuntimeError. Injected here,
    since a real collection cannot be timed."""
    probe = mon.probe("p", enabled=True)
    probe.track("cursor").collected()

    class AppendedMidCopy(deque[Any]):
        failures = 2

        def __iter__(self) -> Iterator[Any]:
            if AppendedMidCopy.failures:
                AppendedMidCopy.failures -= 1
                raise RuntimeError("deque mutated during iteration")
            return super().__iter__()

    mon._collected = AppendedMidCopy(mon._collected)
    assert [r.kind for r in mon.collected()] == ["cursor"]
    assert AppendedMidCopy.failures == 0
    assert [r.kind for r in mon.snapshot().collected] == ["cursor"]


# --------------------------------------------------------------------------- off costs nothing
def test_off_probe_returns_the_null_token_and_records_nothing(mon: Monitor) -> None:
    probe = mon.probe("p")
    assert not probe.enabled
    token = probe.track("checkout", Resource(), size=10, sql="SELECT 'x'")
    assert token is NULL_TOKEN
    token.set_sql("SELECT 2")
    token.set_size(5)
    token.close()
    token.collected()
    assert mon.stats()["records"] == 0
    assert mon.stats()["tracked_total"] == 0


def test_off_probe_track_is_a_plain_function_not_a_flag_test(mon: Monitor) -> None:
    probe = mon.probe("p")
    nulls = (monitor_module._null_track, monitor_module._null_borrow_site)
    assert (probe.track, probe.borrow_site) == nulls
    probe.enable()
    assert probe.track is not nulls[0]
    assert probe.borrow_site is not nulls[1]
    probe.disable()
    assert (probe.track, probe.borrow_site) == nulls
    frame = sys._getframe()
    assert probe.borrow_site(frame, frame.f_code, frame.f_lasti) is None


# --------------------------------------------------------------------------- switches
def test_global_switch_turns_following_probes_on_and_off(mon: Monitor) -> None:
    a, b = mon.probe("a"), mon.probe("b", enabled=False)
    mon.enable()
    assert a.enabled and not b.enabled
    a.track("checkout")
    b.track("checkout")
    assert [r.pool for r in mon.live(min_age=0)] == ["a"]
    mon.disable()
    assert not a.enabled
    assert a.track("checkout") is NULL_TOKEN


def test_per_pool_switch_by_name_or_object(mon: Monitor) -> None:
    a, b = mon.probe("a"), mon.probe("b")
    mon.enable("a")
    assert a.enabled and not b.enabled
    assert a.setting is True

    class Named:
        name = "b"

    mon.enable(Named())
    assert b.enabled
    mon.disable("a")
    assert not a.enabled
    a.follow_global()
    assert a.setting is None and not a.enabled
    with pytest.raises(ValueError, match="no pool named 'zzz'"):
        mon.enable("zzz")


def test_disable_keeps_what_was_recorded_readable(mon: Monitor) -> None:
    probe = mon.probe("p")
    mon.enable()
    kept = probe.track("checkout", sql="SELECT 1")
    closed_later = probe.track("cursor")
    mon.disable()
    assert probe.track("checkout") is NULL_TOKEN
    assert {r.kind for r in mon.live(min_age=0)} == {"checkout", "cursor"}
    snap = mon.last_snapshot
    assert snap is not None and len(snap.resources) == 2
    closed_later.close()  # a closed resource leaves the live view, not the snapshot
    assert [r.kind for r in mon.live(min_age=0)] == ["checkout"]
    assert len(snap.resources) == 2
    kept.close()


def test_module_level_track_follows_the_global_switch(global_monitor: Monitor) -> None:
    assert monitor_module.track("thread") is NULL_TOKEN
    monitor_module.enable()
    token = monitor_module.track("thread", size=3)
    assert token is not NULL_TOKEN
    assert [r.kind for r in global_monitor.live(min_age=0)] == ["thread"]
    monitor_module.disable()
    assert monitor_module.track("thread") is NULL_TOKEN
    token.close()


# --------------------------------------------------------------------------- views
def test_min_age_hides_young_resources(mon: Monitor) -> None:
    probe = mon.probe(None, enabled=True)
    token = probe.track("spill_file")
    assert mon.live(min_age=3600) == []
    assert len(mon.live(min_age=0)) == 1
    token.close()


def test_grouped_by_call_site_with_count_bytes_and_oldest(mon: Monitor) -> None:
    probe = mon.probe("p", enabled=True)

    def take(size: int) -> Token:
        return probe.track("loader_buffer", size=size)

    tokens = [take(100) for _ in range(3)]
    other = probe.track("loader_buffer", size=7)
    groups = mon.by_site(min_age=0)
    assert [(g.count, g.bytes) for g in groups] == [(3, 300), (1, 7)]
    assert groups[0].site.endswith("in test_grouped_by_call_site_with_count_bytes_and_oldest."
                                   "<locals>.take")
    assert groups[0].pools == ("p",)
    assert groups[0].oldest_s >= 0
    regrouped = by_site(mon.live(min_age=0))
    assert [(g.kind, g.site, g.count, g.bytes) for g in regrouped] == [
        (g.kind, g.site, g.count, g.bytes) for g in groups]
    for t in [*tokens, other]:
        t.close()


def test_depth_keeps_that_many_frames_innermost_first(mon: Monitor) -> None:
    probe = mon.probe(None, enabled=True)

    def inner(depth: int | None) -> Token:
        return probe.track("checkout", depth=depth)

    def outer(depth: int | None = None) -> Token:
        return inner(depth)

    token = outer(2)
    [r] = mon.live(min_age=0)
    assert [f[2] for f in r.stack] == [
        "test_depth_keeps_that_many_frames_innermost_first.<locals>.inner",
        "test_depth_keeps_that_many_frames_innermost_first.<locals>.outer",
    ]
    token.close()
    mon.configure(depth=1)
    token = outer()
    [r] = mon.live(min_age=0)
    assert len(r.stack) == 1
    token.close()


def test_depth_beyond_the_stack_keeps_the_whole_stack_and_bad_depth_is_refused(
        mon: Monitor) -> None:
    probe = mon.probe(None, enabled=True)
    stack_len = len(inspect.stack()) + 5
    token = probe.track("checkout", depth=min(stack_len + 50, 256))
    [r] = mon.live(min_age=0)
    # Every frame outside poolkeeper, ending at the outermost one: nothing invented.
    assert 1 <= len(r.stack) < stack_len
    assert r.stack[0][2] == (
        "test_depth_beyond_the_stack_keeps_the_whole_stack_and_bad_depth_is_refused")
    token.close()
    for bad in (-1, 257):
        with pytest.raises(ValueError, match="depth"):
            probe.track("checkout", depth=bad)
    assert mon.live(min_age=0) == []


def test_sql_is_folded_capped_and_shown_on_the_parent_checkout(mon: Monitor) -> None:
    probe = mon.probe("p", enabled=True)
    checkout = probe.track("checkout")
    cursor = probe.track("cursor", parent=checkout)
    cursor.set_sql("SELECT * FROM users WHERE password = 'hunter2' AND id = 42")
    views = {r.kind: r for r in mon.live(min_age=0)}
    for r in views.values():
        assert r.sql == "SELECT * FROM users WHERE password = ? AND id = ?"
    assert views["cursor"].parent_id == views["checkout"].id
    cursor.set_sql("SELECT " + ", ".join(f"'secret{i}'" for i in range(2000)))
    [r] = mon.live(min_age=0, kind="cursor")
    assert r.sql is not None and len(r.sql) <= 1024 and "secret" not in r.sql
    cursor.set_sql(b"UPDATE t SET v = 'x'")
    assert mon.live(min_age=0, kind="cursor")[0].sql == "UPDATE t SET v = ?"
    cursor.set_sql(object())  # a composed statement object: only its type is shown
    assert mon.live(min_age=0, kind="cursor")[0].sql == "<object>"
    cursor.close()
    checkout.close()


def test_fold_without_the_fingerprint_module_still_hides_literals(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitor_module, "_fold_impl", monitor_module._fallback_fold)
    folded = fold_sql("SELECT a1 FROM t WHERE s = 'it''s' AND n = -3.5 AND h = 0x1F AND x = $$y$$")
    assert folded == "SELECT a1 FROM t WHERE s = ? AND n = ? AND h = ? AND x = ?"
    assert fold_sql("SELECT 'unterminated secret") == "SELECT ?"
    assert fold_sql("SELECT 'a\\'b' FROM t") == "SELECT ? FROM t"
    assert fold_sql('SELECT "x" FROM t', dialect="mysql") == "SELECT ? FROM t"
    assert fold_sql('SELECT "x" FROM t', dialect="postgresql") == 'SELECT "x" FROM t'


def test_a_pools_dialect_decides_how_its_sql_is_folded(mon: Monitor) -> None:
    mysql = mon.probe("my", enabled=True, dialect="mysql")
    pg = mon.probe("pg", enabled=True, dialect="postgresql")
    tokens = [p.track("cursor", sql='SELECT * FROM t WHERE name = "secret"') for p in (mysql, pg)]
    shown = {r.pool: r.sql for r in mon.live(min_age=0)}
    assert shown == {"my": "SELECT * FROM t WHERE name = ?",
                     "pg": 'SELECT * FROM t WHERE name = "secret"'}  # an identifier there
    for t in tokens:
        t.close()


def test_size_is_updatable(mon: Monitor) -> None:
    probe = mon.probe(None, enabled=True)
    token = probe.track("loader_buffer", size=10)
    token.set_size(4096)
    assert mon.live(min_age=0)[0].size == 4096
    token.close()


def test_thread_that_created_the_resource_is_recorded(mon: Monitor) -> None:
    probe = mon.probe(None, enabled=True)
    tokens: list[Token] = []
    worker = threading.Thread(target=lambda: tokens.append(probe.track("checkout")),
                              name="report-writer")
    worker.start()
    worker.join()
    assert mon.live(min_age=0)[0].thread == "report-writer"  # still named after it ended
    tokens[0].close()


# --------------------------------------------------------------------------- bounds
def test_registry_is_bounded_and_counts_what_it_drops() -> None:
    mon = Monitor(max_records=5)
    probe = mon.probe(None, enabled=True)
    tokens = [probe.track("checkout") for _ in range(8)]
    assert sum(t is NULL_TOKEN for t in tokens) == 3
    stats = mon.stats()
    assert (stats["records"], stats["dropped_full"]) == (5, 3)
    for t in tokens:
        t.close()
    assert mon.stats()["records"] == 0


def test_collected_list_is_bounded_and_counts_what_it_drops() -> None:
    mon = Monitor(max_collected=2)
    probe = mon.probe(None, enabled=True)
    for _ in range(5):
        probe.track("cursor").collected()
    stats = mon.stats()
    assert (stats["collected"], stats["collected_total"], stats["collected_dropped"]) == (2, 5, 3)


def test_sampling_records_one_in_n() -> None:
    mon = Monitor(sample_every=4)
    probe = mon.probe(None, enabled=True)
    tokens = [probe.track("checkout") for _ in range(100)]
    assert mon.stats()["records"] == 25
    line = sys._getframe().f_lineno - 2
    # Python 3.12 inlines comprehensions (PEP 709): no frame of their own from then on.
    where = "" if sys.version_info >= (3, 12) else ".<locals>.<listcomp>"
    assert mon.live(min_age=0)[0].site.endswith(
        f":{line} in test_sampling_records_one_in_n{where}")
    for t in tokens:
        t.close()


def test_memory_usage_reports_bytes_within_budget(mon: Monitor) -> None:
    probe = mon.probe(None, enabled=True)
    tokens = [probe.track("checkout", sql="SELECT 1") for _ in range(10)]
    used, budget = mon.memory_usage()
    assert 0 < used < budget
    for t in tokens:
        t.close()


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="max_records=0"):
        Monitor(max_records=0)
    mon = Monitor()
    with pytest.raises(ValueError, match="sample_every=0"):
        mon.configure(sample_every=0)
    with pytest.raises(ValueError, match="kind='socket'"):
        mon.record("socket")
    with pytest.raises(ValueError, match=r"cursor_leak_s=0 is out of range: allowed 0.001\.\."):
        mon.configure(cursor_leak_s=0)


def test_a_probe_takes_its_owners_leak_threshold_else_the_monitors() -> None:
    mon = Monitor(cursor_leak_s=30)
    own, default = mon.probe("a", leak_threshold=5.0), mon.probe("b")
    assert (own.cursor_leak_s, default.cursor_leak_s) == (5.0, 30.0)
    mon.configure(cursor_leak_s=90)
    assert (own.cursor_leak_s, default.cursor_leak_s) == (5.0, 90.0)
    own.leak_threshold = None
    assert own.cursor_leak_s == 90.0


def test_clear_forgets_everything_and_old_tokens_stay_harmless(mon: Monitor) -> None:
    probe = mon.probe(None, enabled=True)
    token = probe.track("checkout")
    probe.track("cursor").collected()
    mon.clear()
    assert mon.live(min_age=0) == [] and mon.collected() == []
    token.close()
    token.set_sql("SELECT 1")


# --------------------------------------------------------------------------- through the pool
def leak_a_connection(pool: Pool) -> int:
    conn, line = pool.getconn(), sys._getframe().f_lineno
    _leaked.append(conn)
    return line


_leaked: list[object] = []


def test_planted_leak_through_the_real_pool_is_shown_at_its_line(
        sqlite_dsn: str, global_monitor: Monitor) -> None:
    with Pool(sqlite_dsn, max_size=2, name="leaky", monitor=True) as pool:
        try:
            line = leak_a_connection(pool)
            [leak] = global_monitor.live(min_age=0, kind="checkout", pool="leaky")
            assert leak.site == f"{HERE}:{line} in leak_a_connection"
        finally:
            for conn in _leaked:
                pool.putconn(conn)  # type: ignore[arg-type]
            _leaked.clear()
        assert global_monitor.live(min_age=0, kind="checkout", pool="leaky") == []


def test_object_without_weakref_support_is_recorded_without_a_gc_watch(mon: Monitor) -> None:
    class Slotted:
        __slots__ = ()

    probe = mon.probe(None, enabled=True)
    token = probe.track("cursor", Slotted())
    assert [r.kind for r in mon.live(min_age=0)] == ["cursor"]
    token.close()
    assert mon.collected() == []


def test_threads_tracking_and_closing_at_once_leave_no_record(mon: Monitor) -> None:
    probe = mon.probe("p", enabled=True)
    errors: list[BaseException] = []
    stop_at = time.monotonic() + 20  # bounded in time as well as in count

    def work() -> None:
        try:
            for _ in range(2000):
                if time.monotonic() > stop_at:
                    return
                obj = Resource()
                checkout = probe.track("checkout", obj)
                cursor = probe.track("cursor", parent=checkout)
                cursor.set_sql("SELECT 1")
                mon.live(min_age=0)[:1]
                cursor.close()
                checkout.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, name=f"tracker-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert mon.stats()["records"] == 0
    assert mon.collected() == []


def test_tracked_total_counts_every_recorded_resource(mon: Monitor) -> None:
    probe = mon.probe(None, enabled=True)
    for _ in range(3):
        probe.track("checkout").close()
    assert mon.stats()["tracked_total"] == 3
    assert mon.stats()["tracked_total"] == 3  # reading it does not change it
    probe.track("cursor").close()
    assert mon.stats()["tracked_total"] == 4


def test_owner_can_hand_over_the_callers_frame(mon: Monitor) -> None:
    probe = mon.probe("p", enabled=True)

    def borrow() -> Token:  # stands for Pool.connection(), which has its caller's frame
        return probe.track("checkout", frame=sys._getframe(1))

    token, line = borrow(), sys._getframe().f_lineno
    [r] = mon.live(min_age=0)
    assert r.site == f"{HERE}:{line} in test_owner_can_hand_over_the_callers_frame"
    token.close()


# --------------------------------------------------------------------------- the pool's hot paths
Kept = Sequence[Any]


def borrow_site_here(probe: Probe, frame: Any, code: Any = None) -> Kept | None:
    """What Pool.connection() hands over: its caller's frame, code and offset."""
    return probe.borrow_site(frame, frame.f_code if code is None else code, frame.f_lasti)


def borrow_with_handed_over_site(probe: Probe) -> tuple[Kept | None, int]:
    frame = sys._getframe()
    return borrow_site_here(probe, frame), frame.f_lineno


def decoded(kept: Kept | None) -> list[tuple[str, int, str]]:
    """The kept frames as the views show them: (file, line, function), innermost first."""
    assert kept is not None
    return [monitor_module._frame(kept[i], kept[i + 1]) for i in range(0, len(kept), 2)]


def test_borrow_site_keeps_the_handed_over_site_and_its_callers(mon: Monitor) -> None:
    probe = mon.probe("orders", enabled=True)
    kept, line = borrow_with_handed_over_site(probe)
    caller_line = sys._getframe().f_lineno - 1
    stack = decoded(kept)
    assert stack[0] == (HERE, line, "borrow_with_handed_over_site")
    assert len(stack) == mon.depth
    assert stack[1] == (HERE, caller_line,
                        "test_borrow_site_keeps_the_handed_over_site_and_its_callers")
    mon.configure(depth=1)
    kept, line = borrow_with_handed_over_site(probe)
    assert [f[1] for f in decoded(kept)] == [line]
    mon.configure(depth=256)  # deeper than the stack: every frame, nothing invented
    kept, _ = borrow_with_handed_over_site(probe)
    assert 2 < len(decoded(kept)) < len(inspect.stack()) + 5
    assert mon.stats()["records"] == 0  # a pool's checkout takes no room in the registry


def test_borrow_site_from_poolkeeper_code_starts_at_the_first_frame_outside(
        mon: Monitor) -> None:
    probe = mon.probe(None, enabled=True)
    # A borrow from outside first: the next one, from another code, is tested afresh.
    assert decoded(borrow_site_here(probe, sys._getframe()))[0][0] == HERE
    # A frame of poolkeeper's own stands for a borrow made inside poolkeeper (the loader).
    internal = monitor_module._first_outside  # any function in a poolkeeper file
    kept = borrow_site_here(probe, sys._getframe(), internal.__code__)
    assert decoded(kept)[0][2] == (
        "test_borrow_site_from_poolkeeper_code_starts_at_the_first_frame_outside")


def test_borrow_site_is_sampled() -> None:
    mon = Monitor(sample_every=2)
    probe = mon.probe(None, enabled=True)
    kept = [borrow_site_here(probe, sys._getframe()) for _ in range(10)]
    assert sum(k is not None for k in kept) == 5


@pytest.mark.parametrize("gil", [True, False], ids=["lock-free", "locked twin"])
def test_the_freed_cursor_counter_counts_every_add_from_threads_and_not_its_reads(
        gil: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from poolkeeper.core.runtime import ASSUME_NO_GIL_ENV
    from poolkeeper.observe.monitor import _Count

    if not gil:
        monkeypatch.setenv(ASSUME_NO_GIL_ENV, "1")
    count = _Count()

    def bump() -> None:
        for _ in range(10_000):
            count.add()

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count.value() == 40_000
    assert count.value() == 40_000  # reading does not count
    count.add()
    assert count.value() == 40_001
