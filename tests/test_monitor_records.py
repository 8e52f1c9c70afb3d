"""No monitor record keeps a resource alive: records copy what they show (site, SQL, ids, times,
thread name), so a closed connection is freed even while its leak is on record.

The field report behind it: with the monitor on, 100 x (expire_all; borrow;
``execute(...).fetchall()``) kept 99 closed PyMySQL connections (+82 MB) referenced from the
collected list, through the cursor record's parent, the checkout record and its slot.
"""

from __future__ import annotations

import gc
import threading

from poolkeeper import Pool
from poolkeeper.observe.monitor import MONITOR


def _live(cls: type) -> int:
    """Driver connections of ``cls`` alive anywhere (sqlite3's cannot be weakly referenced)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is cls)


def test_records_of_every_kind_keep_no_connection_alive(any_dsn: str) -> None:
    MONITOR.clear()
    with Pool(any_dsn, monitor=True, min_idle=0, max_size=2, name="records") as pool:
        with pool.connection() as conn:
            cls = type(conn.raw)
        before = _live(cls)
        for _ in range(5):
            pool.expire_all()  # every connection below is a new one, closed at its return
            # the README's idiom: a cursor freed by reference counting, checkout held
            with pool.connection() as conn:
                conn.execute("SELECT 1").fetchall()

            # a cursor left open and a checkout dropped unreturned, in another thread: a
            # leak on record, with the thread's name
            def leak() -> None:
                held = pool.getconn()
                held.cursor().execute("SELECT 2")

            worker = threading.Thread(target=leak, name="leaker")
            worker.start()
            worker.join()
        shown = MONITOR.collected()
        kept = _live(cls) - before
        assert kept <= 2, f"{kept} driver connections alive beyond the pool's own (max_size 2)"
    assert any(r.kind == "checkout" and r.thread == "leaker" for r in shown), shown
    # the pool closed: the records are still on the collected list, the connections gone
    assert MONITOR.collected() and _live(cls) <= before - 1


def test_a_pool_dropped_without_close_leaves_no_live_record(sqlite_dsn: str) -> None:
    # sqlite3's connections take no weak reference: only the pool's finalizer can close their
    # monitor records (and its threads'), or they stay among the live resources for good
    MONITOR.clear()
    before = len(MONITOR.live(0.0))
    for _ in range(5):
        pool = Pool(sqlite_dsn, monitor=True, min_idle=1, max_size=1, name="dropped")
        with pool.connection() as conn:
            conn.execute("SELECT 1").fetchall()
        del pool, conn
        gc.collect()
    left = [r for r in MONITOR.live(0.0) if r.pool == "dropped"]
    assert len(MONITOR.live(0.0)) <= before and not left, left
