"""Connections in doubt: an exception from inside a driver call that is not the driver's own
DB-API error may leave the connection mid-protocol, so it is discarded, never lent again.
(Real servers; about 1 s in all.)"""

from __future__ import annotations

import pytest

from poolkeeper import Pool


class _Bad:
    """A parameter whose adaptation fails inside the driver's execute()."""

    def __conform__(self, protocol: object) -> None:  # sqlite3's adapter hook
        raise ZeroDivisionError("adapter failed")


def test_mysql_decode_error_mid_result_discards(mysql_dsn: str) -> None:
    # PyMySQL raises UnicodeDecodeError with the rest of the reply unread and raw.open still
    # true: reused, the next borrower got "Packet sequence number wrong".
    with Pool(mysql_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.session_id
            cur = conn.cursor()
            with pytest.raises(UnicodeDecodeError):
                cur.execute(b"select '\xff\xfe'")
        with pool.connection() as conn:
            assert conn.slot.session_id != first
            cur = conn.cursor()
            cur.execute("SELECT 1")
            assert list(cur.fetchall()) == [(1,)]
        assert pool.stats()["connections_closed_broken"] == 1


def test_sqlite_adapter_error_discards(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.id
            with pytest.raises(ZeroDivisionError):
                conn.cursor().execute("SELECT ?", (_Bad(),))
        with pool.connection() as conn:
            assert conn.slot.id != first
            cur = conn.cursor()
            cur.execute("SELECT 1")
            assert cur.fetchall() == [(1,)]
        assert pool.stats()["connections_closed_broken"] == 1


def test_postgres_dumper_error_discards(pg_dsn: str) -> None:
    from psycopg.adapt import Dumper

    class BadDumper(Dumper):
        def dump(self, obj: object) -> bytes:
            raise ZeroDivisionError("dumper failed")

    with Pool(pg_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.session_id
            conn.adapters.register_dumper(_Bad, BadDumper)
            with pytest.raises(ZeroDivisionError):
                conn.cursor().execute("SELECT %s", (_Bad(),))
        with pool.connection() as conn:
            assert conn.slot.session_id != first
            cur = conn.cursor()
            cur.execute("SELECT 1")
            assert cur.fetchall() == [(1,)]
        assert pool.stats()["connections_closed_broken"] == 1


def test_driver_errors_keep_the_connection(any_dsn: str) -> None:
    # The driver's own errors (a syntax error here) do not discard: only foreign exceptions do.
    with Pool(any_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.id
            with pytest.raises(pool.driver.error_types):
                conn.cursor().execute("SELEC 1")
            conn.rollback()
        with pool.connection() as conn:
            assert conn.slot.id == first
        assert pool.stats()["connections_closed_broken"] == 0


def test_sqlite_row_factory_error_in_fetch_discards(sqlite_dsn: str) -> None:
    def bad_row(cursor: object, row: tuple[object, ...]) -> object:
        raise ZeroDivisionError("row factory failed")

    with Pool(sqlite_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.id
            cur = conn.cursor()
            cur.execute("SELECT 1")
            cur.row_factory = bad_row
            with pytest.raises(ZeroDivisionError):
                cur.fetchall()
        with pool.connection() as conn:
            assert conn.slot.id != first
        assert pool.stats()["connections_closed_broken"] == 1


def test_postgres_row_factory_error_in_fetch_discards(pg_dsn: str) -> None:
    def bad_factory(cursor: object) -> object:
        def make_row(values: object) -> object:
            raise ZeroDivisionError("row factory failed")
        return make_row

    with Pool(pg_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.session_id
            cur = conn.cursor()
            cur.row_factory = bad_factory
            cur.execute("SELECT 1")
            with pytest.raises(ZeroDivisionError):
                cur.fetchone()
        with pool.connection() as conn:
            assert conn.slot.session_id != first
        assert pool.stats()["connections_closed_broken"] == 1


def test_mysql_idle_connection_does_not_pin_last_result(mysql_dsn: str) -> None:
    # PyMySQL keeps the last result on the connection: in autocommit the return path did
    # nothing, and an idle connection held a 12 MiB result (13.8 MB) until its next statement.
    import gc
    import tracemalloc

    size = 12 * 1024 * 1024
    with Pool(mysql_dsn, min_idle=0, max_size=1, autocommit=True) as pool:
        with pool.connection() as conn:  # opened before tracing starts
            conn.cursor().execute("SELECT 1")
        tracemalloc.start()
        try:
            with pool.connection() as conn:
                cur = conn.cursor()
                cur.execute(f"SELECT REPEAT('z', {size})")
                cur.close()
                del cur
            gc.collect()
            held, _peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert held < size // 4, f"{held} bytes still held by the idle connection"
        with pool.connection() as conn:  # and it still works
            cur = conn.cursor()
            cur.execute("SELECT 2")
            assert list(cur.fetchall()) == [(2,)]
        assert pool.stats()["connections_closed_broken"] == 0


class _Interrupting:
    def __conform__(self, protocol: object) -> None:
        raise KeyboardInterrupt  # a BaseException arriving in the middle of a driver call


def test_base_exception_during_a_call_discards(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, min_idle=0, max_size=1) as pool:
        with pytest.raises(KeyboardInterrupt), pool.connection() as conn:
            first = conn.slot.id
            conn.cursor().execute("SELECT ?", (_Interrupting(),))
        with pool.connection() as conn:
            assert conn.slot.id != first
        assert pool.stats()["connections_closed_broken"] == 1
