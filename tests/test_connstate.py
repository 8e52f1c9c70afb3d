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


# ---------------------------------------------------------------- every path that pulls rows
# Each proxy method that calls into the driver watches for a foreign exception, not only
# execute() and fetch*(): `for row in cur`, next(cur), fetchmany(), executemany(), and the
# driver's own methods reached through the proxy (scroll, nextset, callproc, copy, stream,
# conn.query()). One test per path and backend where a real server can raise one there.


def _bad_row(cursor: object, row: tuple[object, ...]) -> object:
    raise ZeroDivisionError("row factory failed")


def _bad_pg_factory(cursor: object) -> object:
    def make_row(values: object) -> object:
        raise ZeroDivisionError("row factory failed")
    return make_row


class _FactoryFailingLater:
    """A row factory whose second call fails (psycopg calls it once per result)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, cursor: object) -> object:
        self.calls += 1
        if self.calls > 1:
            raise ZeroDivisionError("row factory failed")
        return tuple


def _assert_replaced(pool: Pool, first: object, *reasons: str) -> None:
    with pool.connection() as conn:
        assert conn.slot.session_id != first or conn.slot.id != first
        assert list(conn.execute("SELECT 1").fetchall()) == [(1,)]
    stats = pool.stats()
    assert sum(stats[f"connections_closed_{r}"] for r in reasons or ("broken",)) == 1, stats


@pytest.mark.parametrize("pull", ["iterate", "next", "fetchmany"])
def test_sqlite_row_factory_error_in_any_pull_discards(sqlite_dsn: str, pull: str) -> None:
    with Pool(sqlite_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.id
            cur = conn.cursor()
            cur.execute("SELECT 1 UNION ALL SELECT 2")
            cur.row_factory = _bad_row
            with pytest.raises(ZeroDivisionError):
                if pull == "iterate":
                    for _row in cur:
                        pass
                elif pull == "next":
                    next(cur)
                else:
                    cur.fetchmany(2)
        _assert_replaced(pool, first)


def test_sqlite_iteration_still_yields_rows_and_keeps_the_connection(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.id
            cur = conn.execute("SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3")
            assert [r[0] for r in cur] == [1, 2, 3]
            cur = conn.execute("SELECT 1 UNION ALL SELECT 2")
            for _row in cur:
                break  # stopping early is not a failure
            cur = conn.execute("SELECT 7")
            assert next(cur) == (7,)
            with pytest.raises(StopIteration):
                next(cur)
        with pool.connection() as conn:
            assert conn.slot.id == first
        assert pool.stats()["connections_closed_broken"] == 0


def test_sqlite_adapter_error_in_executemany_discards(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.id
            conn.execute("CREATE TABLE t (a)")
            with pytest.raises(ZeroDivisionError):
                conn.cursor().executemany("INSERT INTO t VALUES (?)", [(1,), (_Bad(),)])
        _assert_replaced(pool, first)


@pytest.mark.parametrize("named", [False, True], ids=["client", "server-side"])
def test_postgres_row_factory_error_while_iterating_discards(pg_dsn: str, named: bool) -> None:
    with Pool(pg_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.session_id
            cur = conn.cursor(name="pk_iter") if named else conn.cursor()
            cur.execute("SELECT generate_series(1, 3)")
            cur.row_factory = _bad_pg_factory
            with pytest.raises(ZeroDivisionError):
                for _row in cur:
                    pass
        _assert_replaced(pool, first)


def test_postgres_row_factory_error_in_stream_discards(pg_dsn: str) -> None:
    # stream() reads row by row in libpq's single-row mode: mid-result for real.
    with Pool(pg_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.session_id
            cur = conn.cursor()
            cur.row_factory = _bad_pg_factory
            with pytest.raises(ZeroDivisionError):
                for _row in cur.stream("SELECT generate_series(1, 100000)"):
                    pass
        _assert_replaced(pool, first, "broken", "unknown_state")


def test_postgres_row_factory_error_in_nextset_discards(pg_dsn: str) -> None:
    with Pool(pg_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.session_id
            cur = conn.cursor()
            cur.row_factory = _FactoryFailingLater()
            cur.execute("SELECT 1; SELECT 2")
            with pytest.raises(ZeroDivisionError):
                cur.nextset()
        _assert_replaced(pool, first)


def test_postgres_scroll_error_discards(pg_dsn: str) -> None:
    with Pool(pg_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.session_id
            cur = conn.cursor(name="pk_scroll", scrollable=True)
            cur.execute("SELECT generate_series(1, 3)")
            with pytest.raises(ValueError, match="mode"):
                cur.scroll(1, mode="sideways")  # raised by psycopg's scroll(), not a DB-API error
        _assert_replaced(pool, first)


def test_postgres_dumper_error_in_copy_discards(pg_dsn: str) -> None:
    from psycopg.adapt import Dumper

    class BadDumper(Dumper):
        def dump(self, obj: object) -> bytes:
            raise ZeroDivisionError("dumper failed")

    with Pool(pg_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.session_id
            conn.execute("CREATE TEMP TABLE pk_copy (a text)")
            conn.adapters.register_dumper(_Bad, BadDumper)
            cur = conn.cursor()
            with pytest.raises(ZeroDivisionError), cur.copy("COPY pk_copy (a) FROM STDIN") as copy:
                copy.write_row(("fine",))
                copy.write_row((_Bad(),))
        _assert_replaced(pool, first)


def test_postgres_copy_still_works_through_the_proxy(pg_dsn: str) -> None:
    with Pool(pg_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.session_id
            conn.execute("CREATE TEMP TABLE pk_copy (a int)")
            cur = conn.cursor()
            with cur.copy("COPY pk_copy (a) FROM STDIN") as copy:
                for i in range(3):
                    copy.write_row((i,))
            with cur.copy("COPY pk_copy TO STDOUT") as copy:
                assert list(copy.rows()) == [("0",), ("1",), ("2",)]
            assert [r[0] for r in cur.stream("SELECT a FROM pk_copy ORDER BY a")] == [0, 1, 2]
        with pool.connection() as conn:
            assert conn.slot.session_id == first
        assert pool.stats()["connections_closed_broken"] == 0


def test_postgres_dumper_error_in_executemany_discards(pg_dsn: str) -> None:
    from psycopg.adapt import Dumper

    class BadDumper(Dumper):
        def dump(self, obj: object) -> bytes:
            raise ZeroDivisionError("dumper failed")

    with Pool(pg_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.session_id
            conn.adapters.register_dumper(_Bad, BadDumper)
            with pytest.raises(ZeroDivisionError):
                conn.cursor().executemany("SELECT %s", [(1,), (_Bad(),)])
        _assert_replaced(pool, first)


@pytest.mark.parametrize("pull", ["iterate", "fetchmany", "scroll"])
def test_mysql_decode_error_in_unbuffered_pull_discards(mysql_dsn: str, pull: str) -> None:
    # An unbuffered cursor decodes rows as they are read: the decode error comes mid-result.
    import pymysql.cursors

    with Pool(mysql_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.session_id
            cur = conn.cursor(pymysql.cursors.SSCursor)
            # MariaDB's sequence engine: row 2 of 3 does not decode as UTF-8
            cur.execute(b"SELECT seq, IF(seq = 2, '\xff\xfe', 'ok') FROM seq_1_to_3")
            with pytest.raises(UnicodeDecodeError):
                if pull == "iterate":
                    for _row in cur:
                        pass
                elif pull == "fetchmany":
                    cur.fetchmany(3)
                else:
                    cur.scroll(2)
        _assert_replaced(pool, first, "broken", "unknown_state")


class _BadText:
    def __str__(self) -> str:  # PyMySQL quotes an unknown type's str()
        raise ZeroDivisionError("str() failed")


def test_mysql_callproc_error_discards(mysql_dsn: str) -> None:
    with Pool(mysql_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.session_id
            with pytest.raises(ZeroDivisionError):
                conn.cursor().callproc("pk_no_such_proc", (_BadText(),))
        _assert_replaced(pool, first)


def test_mysql_decode_error_in_connection_query_discards(mysql_dsn: str) -> None:
    # A driver method of the connection reached through the proxy (PyMySQL's query()).
    with Pool(mysql_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.session_id
            with pytest.raises(UnicodeDecodeError):
                conn.query(b"SELECT '\xff\xfe'")
        _assert_replaced(pool, first)


def test_mysql_iteration_still_yields_rows_and_keeps_the_connection(mysql_dsn: str) -> None:
    with Pool(mysql_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.slot.session_id
            cur = conn.execute("SELECT 1 UNION ALL SELECT 2")
            assert [r[0] for r in cur] == [1, 2]
            conn.query("SELECT 3")
        with pool.connection() as conn:
            assert conn.slot.session_id == first
        assert pool.stats()["connections_closed_broken"] == 0
