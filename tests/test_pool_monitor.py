"""The resource monitor fed by a real pool: planted leaks found at their line, at no cost off."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from poolkeeper import Pool
from poolkeeper.observe import MONITOR, admin
from poolkeeper.proxy import ConnectionProxy, CursorProxy, MonitoredConnection

HERE = __file__


@pytest.fixture
def clean_monitor() -> Iterator[None]:
    MONITOR.clear()
    yield
    MONITOR.disable()
    MONITOR.clear()


def borrow_and_keep(pool: Pool, kept: list[ConnectionProxy]) -> int:
    kept.append(pool.getconn())
    return sys._getframe().f_lineno - 1


def open_cursor_and_keep(conn: ConnectionProxy, kept: list[CursorProxy]) -> int:
    kept.append(conn.cursor())
    return sys._getframe().f_lineno - 1


def test_planted_leaks_are_shown_at_their_lines_and_queryable(
        any_dsn: str, clean_monitor: None) -> None:
    with Pool(any_dsn, max_size=2, name="leaky", monitor=True) as pool:
        conns: list[ConnectionProxy] = []
        cursors: list[CursorProxy] = []
        conn_line = borrow_and_keep(pool, conns)
        cur_line = open_cursor_and_keep(conns[0], cursors)
        cursors[0].execute("SELECT 42")
        live = {r.kind: r for r in MONITOR.live(min_age=0, pool="leaky")}
        assert live["checkout"].site == f"{HERE}:{conn_line} in borrow_and_keep"
        assert live["cursor"].site == f"{HERE}:{cur_line} in open_cursor_and_keep"
        result = admin.query(
            "select kind, site, count(*) from resources where pool = 'leaky' "
            "and kind in ('checkout', 'cursor') group by kind, site order by kind")
        assert [row[0] for row in result.rows] == ["checkout", "cursor"]
        assert f"{conn_line} in borrow_and_keep" in result.rows[0][1]
        pool.putconn(conns[0])
        assert MONITOR.live(min_age=0, kind="checkout", pool="leaky") == []
        assert MONITOR.live(min_age=0, kind="cursor", pool="leaky") == []  # closed on return


def test_a_dropped_checkout_is_listed_as_collected_with_its_site(
        sqlite_dsn: str, clean_monitor: None) -> None:
    with Pool(sqlite_dsn, max_size=1, name="dropper", monitor=True) as pool:
        line = borrow_and_keep(pool, [])  # the list is dropped at once: so is the proxy
        gc.collect()
        [gone] = [r for r in MONITOR.collected() if r.kind == "checkout"]
        assert gone.site.endswith(f":{line} in borrow_and_keep")
        with pool.connection(timeout=5):  # and the pool took the connection back
            pass


def test_monitor_switches_at_runtime_and_costs_nothing_when_off(
        sqlite_dsn: str, clean_monitor: None) -> None:
    with Pool(sqlite_dsn, max_size=1, name="switch") as pool:
        with pool.connection() as conn:
            assert conn.__class__ is ConnectionProxy  # off: no monitor code on this path
        MONITOR.enable()
        with pool.connection() as conn:
            assert conn.__class__ is MonitoredConnection
            assert len(MONITOR.live(min_age=0, kind="checkout", pool="switch")) == 1
            MONITOR.disable()  # turned off while held: the record still ends on return
        assert MONITOR.live(min_age=0, kind="checkout", pool="switch") == []
        with pool.connection() as conn:
            assert conn.__class__ is ConnectionProxy
