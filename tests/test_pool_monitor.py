"""The resource monitor fed by a real pool: planted leaks found at their line, at no cost off."""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from poolkeeper import ConnectionReturned, Pool
from poolkeeper.observe import MONITOR, admin
from poolkeeper.observe.monitor import (
    LEAK_CURSOR_AFTER,
    LEAK_CURSOR_OPEN,
    LEAK_DROPPED,
)
from poolkeeper.pool.proxies import (
    ConnectionProxy,
    CursorProxy,
    MonitoredConnection,
    MonitoredCursor,
)

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
            # off: no monitor code on this path (the class is ConnectionProxy's per-driver
            # subclass, poolkeeper.pool.delegate)
            assert not isinstance(conn, MonitoredConnection)
        MONITOR.enable()
        with pool.connection() as conn:
            assert isinstance(conn, MonitoredConnection)
            assert len(MONITOR.live(min_age=0, kind="checkout", pool="switch")) == 1
            MONITOR.disable()  # turned off while held: the record still ends on return
        assert MONITOR.live(min_age=0, kind="checkout", pool="switch") == []
        with pool.connection() as conn:
            assert isinstance(conn, ConnectionProxy) and not isinstance(conn, MonitoredConnection)


def open_cursor_and_drop(conn: ConnectionProxy) -> int:
    conn.cursor()  # never closed, dropped at once
    return sys._getframe().f_lineno - 1


def execute_and_drop(conn: ConnectionProxy) -> int:
    conn.execute("SELECT 1")  # the cursor conn.execute() opens is never closed
    return sys._getframe().f_lineno - 1


def test_a_cursor_freed_under_its_live_checkout_is_neither_live_nor_collected(
        any_dsn: str, clean_monitor: None) -> None:
    with Pool(any_dsn, max_size=1, name="dropcur", monitor=True) as pool:
        with pool.connection() as conn:
            cursor_line = open_cursor_and_drop(conn)
            execute_line = execute_and_drop(conn)
            gc.collect()
            assert MONITOR.live(min_age=0, kind="cursor", pool="dropcur") == []
            # freed while their checkout is held: no leak, not listed (issue #14 item 1)
            assert MONITOR.collected(kind="cursor", pool="dropcur") == []
            assert cursor_line and execute_line
        assert MONITOR.live(min_age=0, pool="dropcur", kind="checkout") == []


def borrow_for_stack(pool: Pool) -> tuple[ConnectionProxy, int]:
    return pool.getconn(), sys._getframe().f_lineno


def test_checkout_keeps_the_borrowers_frame_and_its_callers(
        sqlite_dsn: str, clean_monitor: None) -> None:
    with Pool(sqlite_dsn, max_size=1, name="stack", monitor=True) as pool:
        conn, line = borrow_for_stack(pool)
        caller_line = sys._getframe().f_lineno - 1
        try:
            [rec] = MONITOR.live(min_age=0, kind="checkout", pool="stack")
            assert len(rec.stack) == MONITOR.depth
            assert rec.stack[0] == (HERE, line, "borrow_for_stack")
            assert rec.stack[1] == (HERE, caller_line,
                                    "test_checkout_keeps_the_borrowers_frame_and_its_callers")
        finally:
            pool.putconn(conn)


def test_sampled_out_checkouts_and_their_cursors_run_no_monitor_code(
        sqlite_dsn: str, clean_monitor: None) -> None:
    MONITOR.configure(sample_every=2)
    try:
        with Pool(sqlite_dsn, max_size=1, name="sampled", monitor=True) as pool:
            classes = []
            for _ in range(4):
                with pool.connection() as conn:
                    classes.append(conn.__class__)
                    cur = conn.cursor()
                    assert isinstance(cur, MonitoredCursor) == isinstance(
                        conn, MonitoredConnection)
                    cur.close()
            assert sorted(c.__name__ for c in classes) == [
                "ConnectionProxy", "ConnectionProxy", "MonitoredConnection",
                "MonitoredConnection"]
            assert MONITOR.live(min_age=0, pool="sampled", kind="cursor") == []
    finally:
        MONITOR.configure(sample_every=1)


def test_a_monitor_only_pool_returns_without_the_slow_path(
        sqlite_dsn: str, clean_monitor: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with Pool(sqlite_dsn, max_size=1, name="fastret", monitor=True) as pool:
        def slow_return(*args: object) -> bool:
            raise AssertionError("_slow_return has nothing to do for the monitor")

        monkeypatch.setattr(pool, "_slow_return", slow_return)
        with pool.connection() as conn:
            conn.execute("SELECT 1").close()
        assert not [r for r in MONITOR.live(min_age=0, pool="fastret")
                    if r.kind in ("checkout", "cursor")]


# --------------------------------------------------------------------------- a pool's cursors
# A cursor of a monitored checkout gets a record only when a view reads it open or it is
# collected unclosed; these pin what the views show either way.

def open_cursor_here(conn: ConnectionProxy) -> tuple[CursorProxy, int]:
    return conn.cursor(), sys._getframe().f_lineno


def execute_here(conn: ConnectionProxy) -> tuple[CursorProxy, int]:
    return conn.execute("SELECT 7"), sys._getframe().f_lineno


def test_an_open_cursor_is_shown_with_its_site_caller_checkout_and_sql(
        any_dsn: str, clean_monitor: None) -> None:
    with Pool(any_dsn, max_size=1, name="opencur", monitor=True) as pool:
        with pool.connection() as conn:
            cur, line = open_cursor_here(conn)
            caller_line = sys._getframe().f_lineno - 1
            cur.execute("SELECT 'secret', 42")
            views = {r.kind: r for r in MONITOR.live(min_age=0, pool="opencur")
                     if r.kind in ("checkout", "cursor")}
            shown = views["cursor"]
            assert shown.site == f"{HERE}:{line} in open_cursor_here"
            assert [f[1] for f in shown.stack] == [line, caller_line]
            assert (shown.pool, shown.parent_id) == ("opencur", views["checkout"].id)
            # the statement run last on the checkout, literals folded, on both
            assert views["checkout"].sql == shown.sql == "SELECT ?, ?"
            assert shown.thread == views["checkout"].thread
            # the same cursor keeps its id across reads
            assert [r.id for r in MONITOR.live(min_age=0, kind="cursor")] == [shown.id]
        # still referenced and open when its checkout went back: the return closed it, and
        # it outlived its checkout, a leak listed with its site, checkout and SQL
        assert [r for r in MONITOR.live(min_age=0, pool="opencur")
                if r.kind in ("checkout", "cursor")] == []
        [leak] = MONITOR.collected(pool="opencur")
        assert (leak.id, leak.kind, leak.leak) == (
            shown.id, "cursor", "cursor open when its checkout ended")
        assert (leak.site, leak.parent_id, leak.sql) == (shown.site, shown.parent_id, "SELECT ?, ?")
        assert cur.closed
        del cur
        gc.collect()
        assert len(MONITOR.collected(pool="opencur")) == 1  # listed once


def test_an_open_cursor_of_conn_execute_is_shown_at_the_callers_line(
        sqlite_dsn: str, clean_monitor: None) -> None:
    with Pool(sqlite_dsn, max_size=1, name="execcur", monitor=True) as pool, \
            pool.connection() as conn:
        _cur, line = execute_here(conn)
        [shown] = MONITOR.live(min_age=0, kind="cursor", pool="execcur")
        assert shown.site == f"{HERE}:{line} in execute_here"
        assert shown.sql == "SELECT ?"


def test_open_cursors_are_grouped_by_site_and_filtered_by_age(
        sqlite_dsn: str, clean_monitor: None) -> None:
    with Pool(sqlite_dsn, max_size=1, name="bysite", monitor=True) as pool, \
            pool.connection() as conn:
        kept = [open_cursor_here(conn) for _ in range(3)]
        [group] = MONITOR.by_site(min_age=0, kind="cursor", pool="bysite")
        assert (group.count, group.site) == (3, f"{HERE}:{kept[0][1]} in open_cursor_here")
        assert MONITOR.live(min_age=3600, kind="cursor") == []  # just opened: not old enough


def test_a_closed_cursor_leaves_no_record(sqlite_dsn: str, clean_monitor: None) -> None:
    with Pool(sqlite_dsn, max_size=1, name="closedcur", monitor=True) as pool, \
            pool.connection() as conn:
        MONITOR.live(min_age=0, pool="closedcur")  # the checkout's record is made when read
        tracked = MONITOR.stats()["tracked_total"]
        cur = conn.cursor()
        cur.execute("SELECT 1")
        cur.close()
        with conn.cursor() as cur2:
            cur2.execute("SELECT 2")
        assert [r.kind for r in MONITOR.live(min_age=0, pool="closedcur")
                if r.kind in ("checkout", "cursor")] == ["checkout"]
        del cur, cur2
        gc.collect()
        assert MONITOR.collected(pool="closedcur") == []
        assert MONITOR.stats()["tracked_total"] == tracked  # no record was ever made


def test_a_cursor_seen_then_freed_under_its_checkout_is_not_collected(
        pg_dsn: str, clean_monitor: None) -> None:
    with Pool(pg_dsn, max_size=1, name="dropseen", monitor=True) as pool, \
            pool.connection() as conn:
        cur, line = open_cursor_here(conn)
        cur.execute("SELECT 'x' || %s", ("y",))
        [seen] = MONITOR.live(min_age=0, kind="cursor", pool="dropseen")  # its record is made
        [checkout] = MONITOR.live(min_age=0, kind="checkout", pool="dropseen")
        del cur
        gc.collect()
        # freed while its checkout is held: not a leak (issue #14 item 1)
        assert MONITOR.collected(kind="cursor", pool="dropseen") == []
        assert seen.site == f"{HERE}:{line} in open_cursor_here"
        assert seen.parent_id == checkout.id
        assert MONITOR.live(min_age=0, kind="cursor", pool="dropseen") == []


def test_a_dropped_checkout_keeps_its_last_statement_in_collected(
        sqlite_dsn: str, clean_monitor: None) -> None:
    with Pool(sqlite_dsn, max_size=1, name="dropsql", monitor=True) as pool:
        conn = pool.getconn()
        conn.execute("SELECT 'secret'").close()
        del conn
        gc.collect()
        [gone] = MONITOR.collected(kind="checkout", pool="dropsql")
        assert gone.sql == "SELECT ?"


def test_cursors_stay_readable_after_the_monitor_is_turned_off(
        sqlite_dsn: str, clean_monitor: None) -> None:
    MONITOR.enable()
    with Pool(sqlite_dsn, max_size=1, name="offcur") as pool, pool.connection() as conn:
        cur, line = open_cursor_here(conn)
        MONITOR.disable()  # what was recorded stays readable, and ends with its resource
        [shown] = MONITOR.live(min_age=0, kind="cursor", pool="offcur")
        assert shown.site == f"{HERE}:{line} in open_cursor_here"
        del cur
        gc.collect()
        # freed under its held checkout: ends without a leak record (issue #14 item 1)
        assert MONITOR.live(min_age=0, kind="cursor", pool="offcur") == []
        assert MONITOR.collected(kind="cursor", pool="offcur") == []


@pytest.mark.parametrize("monitor", [False, True])
def test_a_closed_cursor_of_a_held_checkout_says_closed_not_returned(
        sqlite_dsn: str, clean_monitor: None, monitor: bool) -> None:
    with Pool(sqlite_dsn, max_size=1, name="closedmsg", monitor=monitor) as pool, \
            pool.connection() as conn:
        cur = conn.cursor()
        cur.close()
        with pytest.raises(ConnectionReturned, match="this cursor is closed"):
            cur.execute("SELECT 1")


@pytest.mark.parametrize("monitor", [False, True], ids=["plain", "monitored"])
def test_a_long_checkout_keeps_a_short_cursor_list_and_closes_what_stays_open(
        monitor: bool, clean_monitor: None) -> None:
    # Both cursor() paths (ConnectionProxy's and MonitoredConnection's, written out twice to
    # spare a call) prune closed and dropped cursors and close the open ones on return.
    with Pool("sqlite://:memory:", max_size=1, min_idle=0, monitor=monitor) as pool:
        conn = pool.getconn()
        assert isinstance(conn, MonitoredConnection) is monitor
        kept: list[CursorProxy] = []
        for i in range(1_000):
            cur = conn.cursor()
            assert isinstance(cur, MonitoredCursor) is monitor
            cur.execute("SELECT 1")
            if i % 100 == 0:
                kept.append(cur)  # left open: must be closed on return
            else:
                cur.close()
        assert conn.checkout.cursors is not None and len(conn.checkout.cursors) < 128
        tracked = [c for r in conn.checkout.cursors if (c := r()) is not None and not c.closed]
        assert len(tracked) == len(kept) and all(any(c is k for c in tracked) for k in kept)
        if monitor:
            live = [r for r in MONITOR.live(0, pool=pool.name) if r.kind == "cursor"]
            assert len(live) == len(kept)
            assert all(r.site.startswith(__file__) for r in live)
        pool.putconn(conn)
        for cur in kept:
            assert cur.closed
            with pytest.raises(ConnectionReturned):
                cur.execute("SELECT 1")


# --------------------------------------------------------------------------- a pool's checkouts
# A checkout's record is made from its slot when a view reads it (or its proxy is collected
# unreturned); these pin that it looks and behaves as a record kept from the borrow on.

def test_a_checkout_keeps_its_id_across_reads_and_a_new_borrow_gets_a_new_one(
        pg_dsn: str, clean_monitor: None) -> None:
    with Pool(pg_dsn, max_size=1, name="stableid", monitor=True) as pool:
        with pool.connection() as conn:
            conn.execute("SELECT 'secret'").close()
            [first] = MONITOR.live(min_age=0, kind="checkout", pool="stableid")
            [again] = MONITOR.live(min_age=0, kind="checkout", pool="stableid")
            assert again.id == first.id and again.created == first.created
            assert first.thread == threading.current_thread().name
            assert first.sql == "SELECT ?"
            assert [r.id for r in MONITOR.snapshot().resources
                    if (r.kind, r.pool) == ("checkout", "stableid")] == [first.id]
        with pool.connection():  # the same connection, borrowed again: another checkout
            [second] = MONITOR.live(min_age=0, kind="checkout", pool="stableid")
            assert second.id != first.id and second.created >= first.created


def test_a_checkout_seen_before_it_was_dropped_keeps_its_id_in_collected(
        sqlite_dsn: str, clean_monitor: None) -> None:
    with Pool(sqlite_dsn, max_size=1, name="seendrop", monitor=True) as pool:
        kept: list[ConnectionProxy] = []
        line = borrow_and_keep(pool, kept)
        [seen] = MONITOR.live(min_age=0, kind="checkout", pool="seendrop")
        kept.clear()
        gc.collect()
        [gone] = MONITOR.collected(kind="checkout", pool="seendrop")
        assert (gone.id, gone.site) == (seen.id, f"{HERE}:{line} in borrow_and_keep")
        assert MONITOR.live(min_age=0, kind="checkout", pool="seendrop") == []


def test_a_checkout_collected_with_its_cursor_is_the_cursors_parent(
        pg_dsn: str, clean_monitor: None) -> None:
    with Pool(pg_dsn, max_size=1, name="cycle", monitor=True) as pool:
        conn = pool.getconn()
        cur, line = open_cursor_here(conn)
        cur.execute("SELECT %s::int + 7", (5,))
        # Only a reference cycle holds them: the collector finalises both in either order.
        box: list[object] = [conn, cur]
        box.append(box)
        del conn, cur, box
        gc.collect()
        gone = {r.kind: r for r in MONITOR.collected(pool="cycle")}
        assert gone["cursor"].site == f"{HERE}:{line} in open_cursor_here"
        assert gone["cursor"].parent_id == gone["checkout"].id
        assert (gone["checkout"].leak, gone["cursor"].leak) == (LEAK_DROPPED, LEAK_CURSOR_AFTER)
        assert gone["checkout"].sql == gone["cursor"].sql == "SELECT %s::int + ?"
        with pool.connection(timeout=5):  # and the pool took the connection back
            pass


def test_checkouts_take_no_room_in_the_registry(sqlite_dsn: str, clean_monitor: None) -> None:
    MONITOR.configure(max_records=1)
    try:
        dropped = MONITOR.stats()["dropped_full"]
        with Pool(sqlite_dsn, max_size=2, min_idle=2, name="fullreg", monitor=True) as pool:
            pool.wait_ready(10)
            # the registry is bounded (its connections and threads did not all fit) ...
            assert MONITOR.stats()["records"] == 1
            assert MONITOR.stats()["dropped_full"] > dropped
            # ... yet every checkout is recorded: a pool's max_size bounds them
            with pool.connection(), pool.connection():
                assert len(MONITOR.live(min_age=0, kind="checkout", pool="fullreg")) == 2
    finally:
        MONITOR.configure(max_records=10_000)


def test_clear_forgets_live_checkouts_and_their_cursors(
        sqlite_dsn: str, clean_monitor: None) -> None:
    with Pool(sqlite_dsn, max_size=1, name="cleared", monitor=True) as pool:
        conn = pool.getconn()
        cur = conn.cursor()
        assert len(MONITOR.live(min_age=0, pool="cleared", kind="checkout")) == 1
        MONITOR.clear()
        assert [r for r in MONITOR.live(min_age=0, pool="cleared")
                if r.kind in ("checkout", "cursor")] == []
        cur2 = conn.cursor()  # opened after the clear: not shown either
        cur2.execute("SELECT 1")
        assert [r for r in MONITOR.live(min_age=0, pool="cleared")
                if r.kind in ("checkout", "cursor")] == []
        del cur, cur2, conn  # dropped unclosed and unreturned after the clear: not collected either
        gc.collect()
        assert MONITOR.collected(pool="cleared") == []
        with pool.connection(timeout=5):
            assert len(MONITOR.live(min_age=0, pool="cleared", kind="checkout")) == 1


def test_a_reclaimed_checkout_is_no_longer_shown(pg_dsn: str, clean_monitor: None) -> None:
    with Pool(pg_dsn, max_size=1, name="reclaimed", monitor=True,
              abandoned_timeout=0.2) as pool:
        conn = pool.getconn()
        assert len(MONITOR.live(min_age=0, pool="reclaimed", kind="checkout")) == 1
        deadline = time.monotonic() + 10
        while not conn.closed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert conn.closed  # revoked by the housekeeper
        assert MONITOR.live(min_age=0, pool="reclaimed", kind="checkout") == []
        del conn
        gc.collect()
        assert MONITOR.collected(pool="reclaimed") == []


def borrow_and_open_cursor(pool: Pool) -> tuple[ConnectionProxy, CursorProxy, int, int]:
    conn = pool.getconn()
    borrow_line = sys._getframe().f_lineno - 1
    return conn, conn.cursor(), borrow_line, sys._getframe().f_lineno


def test_a_cursor_opened_where_its_checkout_was_borrowed_has_its_own_line_and_caller(
        sqlite_dsn: str, clean_monitor: None) -> None:
    with Pool(sqlite_dsn, max_size=1, name="samesite", monitor=True) as pool:
        for _ in range(2):  # the second borrow from the same code takes the cached path
            conn, cur, borrow_line, cursor_line = borrow_and_open_cursor(pool)
            caller_line = sys._getframe().f_lineno - 1
            views = {r.kind: r for r in MONITOR.live(min_age=0, pool="samesite")
                     if r.kind in ("checkout", "cursor")}
            assert [f[1] for f in views["checkout"].stack[:2]] == [borrow_line, caller_line]
            assert [f[1] for f in views["cursor"].stack] == [cursor_line, caller_line]
            assert views["cursor"].function == "borrow_and_open_cursor"
            cur.close()
            pool.putconn(conn)


def test_conn_execute_idiom_leaves_collected_empty_and_keeps_no_connection(
        any_dsn: str, clean_monitor: None) -> None:
    """Issue #14 item 1: cursors freed by reference counting under a live checkout are no
    leak, and nothing the monitor keeps holds a closed connection alive (~0.5 s)."""
    import weakref
    with Pool(any_dsn, max_size=1, name="idiom", monitor=True) as pool:
        raws: list[weakref.ref[object]] = []
        for _ in range(20):
            pool.expire_all()
            with pool.connection() as conn:
                if not any_dsn.startswith("sqlite"):  # sqlite3.Connection takes no weakref
                    raws.append(weakref.ref(conn.raw))
                conn.execute("SELECT 1").fetchall()
                conn.cursor().execute("SELECT 2")
        assert MONITOR.collected(pool="idiom") == []
        pool.expire_all()
        with pool.connection() as conn:
            conn.execute("SELECT 3").fetchall()
        # expired connections may be closed by the pool's background closer: wait for it,
        # bounded (at most 5 s)
        deadline = time.monotonic() + 5
        while True:
            gc.collect()
            alive = [r for r in raws if r() is not None]
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert alive == []


def test_pools_opened_and_closed_leave_no_dialect_entries(
        sqlite_dsn: str, clean_monitor: None) -> None:
    """Issue #14 item 8: MONITOR._dialects grew by one entry per pool ever created (~0.3 s)."""
    for i in range(100):
        with Pool(sqlite_dsn, max_size=1, name=f"dialect-{i}"):
            pass
    gc.collect()
    with Pool(sqlite_dsn, max_size=1, name="dialect-last"):
        assert len(MONITOR._dialects) <= 5


# --------------------------------------------------------------------------- leaks, not idioms
# Issue #16: a cursor is a leak when it outlives its checkout or stays open past a threshold;
# one CPython frees while its checkout is held is the README's idiom, counted, never listed.

def test_a_thousand_idiom_cursors_leave_a_real_leak_in_collected_and_are_counted(
        any_dsn: str, clean_monitor: None) -> None:
    MONITOR.configure(max_collected=5)
    try:
        with Pool(any_dsn, max_size=2, name="idioms", monitor=True) as pool:
            line = borrow_and_keep(pool, [])  # a real leak: dropped unreturned at once
            gc.collect()
            freed = MONITOR.stats()["cursors_freed_total"]
            with pool.connection() as conn:
                for _ in range(500):
                    conn.execute("SELECT 1").fetchall()      # the README's idiom
                    conn.cursor().execute("SELECT 2")        # and the other one
            [leak] = MONITOR.collected(pool="idioms")
            assert (leak.kind, leak.leak) == ("checkout", LEAK_DROPPED)
            assert leak.site.endswith(f":{line} in borrow_and_keep")
            assert MONITOR.stats()["cursors_freed_total"] - freed == 1_000
            assert MONITOR.stats()["collected_dropped"] == 0
    finally:
        MONITOR.configure(max_collected=1_000)


def keep_cursor_open(conn: ConnectionProxy) -> tuple[CursorProxy, int]:
    cur = conn.cursor()
    cur.execute("SELECT 'secret'")
    return cur, sys._getframe().f_lineno - 2


def test_a_cursor_still_open_when_its_checkout_goes_back_is_listed_once(
        any_dsn: str, clean_monitor: None) -> None:
    with Pool(any_dsn, max_size=1, name="outlived", monitor=True) as pool:
        with pool.connection() as conn:
            cur, line = keep_cursor_open(conn)
            closed, _ = keep_cursor_open(conn)
            closed.close()  # closed in time: no leak
            assert MONITOR.collected(pool="outlived") == []
        [leak] = MONITOR.collected(pool="outlived")
        assert (leak.kind, leak.leak, leak.sql) == ("cursor", LEAK_CURSOR_OPEN, "SELECT ?")
        assert leak.site == f"{HERE}:{line} in keep_cursor_open"
        assert leak.parent_id is not None and leak.collected_at is not None
        assert cur.closed  # the pool closed it on return
        del cur
        gc.collect()
        assert len(MONITOR.collected(pool="outlived")) == 1


def test_a_cursor_open_past_the_pools_leak_threshold_is_listed_while_still_live(
        any_dsn: str, clean_monitor: None) -> None:
    with Pool(any_dsn, max_size=1, name="overdue", monitor=True, leak_threshold=0.2) as pool:
        assert pool.monitor.cursor_leak_s == 0.2
        with pool.connection() as conn:
            cur, line = keep_cursor_open(conn)
            assert MONITOR.collected(pool="overdue") == []  # young: no leak yet
            time.sleep(0.3)
            [leak] = MONITOR.collected(pool="overdue")  # found when the view is read
            assert (leak.kind, leak.leak) == ("cursor", "cursor open past 0.2 s")
            assert leak.site == f"{HERE}:{line} in keep_cursor_open"
            [live] = MONITOR.live(min_age=0, kind="cursor", pool="overdue")
            assert (live.id, live.leak, live.collected_at) == (leak.id, None, None)
            cur.close()
        assert [r.id for r in MONITOR.collected(pool="overdue")] == [leak.id]  # listed once


def test_a_cursor_freed_past_its_threshold_under_its_checkout_is_listed(
        sqlite_dsn: str, clean_monitor: None) -> None:
    MONITOR.configure(cursor_leak_s=0.1)
    try:
        with Pool(sqlite_dsn, max_size=1, name="lateidiom", monitor=True) as pool:
            assert pool.monitor.cursor_leak_s == 0.1  # no leak_threshold: the monitor's
            with pool.connection() as conn:
                cur, line = keep_cursor_open(conn)
                time.sleep(0.2)
                del cur  # freed by reference counting, but it lived open too long
                [leak] = MONITOR.collected(pool="lateidiom")
                assert (leak.leak, leak.site) == ("cursor open past 0.1 s",
                                                  f"{HERE}:{line} in keep_cursor_open")
                assert leak.age_s >= 0.1
    finally:
        MONITOR.configure(cursor_leak_s=60)


def test_a_reclaimed_checkouts_open_cursor_is_listed_as_outliving_it(
        pg_dsn: str, clean_monitor: None) -> None:
    with Pool(pg_dsn, max_size=1, name="reclaimcur", monitor=True,
              abandoned_timeout=0.2) as pool:
        conn = pool.getconn()
        cur, line = keep_cursor_open(conn)
        deadline = time.monotonic() + 10
        while not conn.closed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert conn.closed  # revoked by the housekeeper
        [leak] = MONITOR.collected(pool="reclaimcur")
        assert (leak.leak, leak.site) == (LEAK_CURSOR_OPEN, f"{HERE}:{line} in keep_cursor_open")
        del cur, conn
