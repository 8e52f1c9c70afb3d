"""Statistics never quote a value from a driver's error message (``last_error``, the
slow-statement log): real errors from PostgreSQL and MariaDB, and the message shapes where a
value holds its own quote character. (Real servers; about 1 s.)"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from poolkeeper import Pool
from poolkeeper.sql import error_text
from poolkeeper.sql.errortext import ERROR_TEXT_CHARS, redact_message

from ._db import drop_table, unique_table

SECRET = "s3cret-x7"  # the value no statistic may show


def _failing(pool: Pool, sql: str, params: Any = None) -> None:
    with pool.connection() as conn:
        with pytest.raises(pool.driver.error_types):
            conn.execute(sql, params)
        conn.rollback()


def _last_errors(pool: Pool) -> list[str]:
    return [s["last_error"] for s in pool.sql_stats()["statements"] if s["last_error"]]


def _assert_secret_free(pool: Pool) -> None:
    everything = json.dumps(pool.sql_stats(), default=str)
    assert SECRET not in everything, everything


@pytest.mark.parametrize("with_params", [False, True], ids=["literal", "parameter"])
def test_postgres_errors_quote_no_value(pg_dsn: str, with_params: bool) -> None:
    table = unique_table()
    with Pool(pg_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, email text UNIQUE)")
            conn.execute(f"INSERT INTO {table} VALUES (1, %s)", (SECRET,))
        try:
            if with_params:
                _failing(pool, "SELECT %s::int", (SECRET,))
                _failing(pool, f"INSERT INTO {table} VALUES (2, %s)", (SECRET,))
                _failing(pool, "SELECT %s::date", (f'x"{SECRET}',))
            else:
                _failing(pool, f"SELECT '{SECRET}'::int")
                _failing(pool, f"INSERT INTO {table} VALUES (2, '{SECRET}')")
                _failing(pool, f"SELECT 'x\"{SECRET}'::date")
            errors = _last_errors(pool)
            assert len(errors) == 3, errors
            assert 'InvalidTextRepresentation (22P02): invalid input syntax for type integer: ' \
                   '"?"' in errors
            assert any(e.startswith("UniqueViolation (23505): duplicate key value violates")
                       for e in errors), errors
            _assert_secret_free(pool)
        finally:
            drop_table(pool, table)


def test_mysql_errors_quote_no_value(mysql_dsn: str) -> None:
    table = unique_table()
    with Pool(mysql_dsn, min_idle=0, max_size=1) as pool:
        with pool.connection() as conn:
            conn.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, n INT, "
                         "email VARCHAR(64) UNIQUE)")
            conn.execute(f"INSERT INTO {table} VALUES (1, 1, %s)", (f"x\"{SECRET}'quote",))
            conn.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES'")
        try:
            # the value holds a quote: MariaDB's message does not escape it
            _failing(pool, f"INSERT INTO {table} VALUES (2, 2, %s)", (f"x\"{SECRET}'quote",))
            _failing(pool, f"INSERT INTO {table} (id, n) VALUES (3, %s)", (SECRET,))
            _failing(pool, f"SELEC '{SECRET}' FROM dual")  # 1064: "near '<the rest>'"
            errors = _last_errors(pool)
            assert len(errors) == 3, errors
            assert "IntegrityError (1062/23000): Duplicate entry '?' for key '?'" in errors
            assert any(e.startswith("ProgrammingError (1064/42000): You have an error in your SQL")
                       and "near '?' at line 1" in e for e in errors), errors
            _assert_secret_free(pool)
        finally:
            drop_table(pool, table)


def test_slow_statement_log_quotes_no_value(pg_dsn: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with Pool(pg_dsn, min_idle=0, max_size=1, slow_query_ms=0) as pool, \
            caplog.at_level(logging.WARNING, logger="poolkeeper"):
        _failing(pool, f"SELECT '{SECRET}'::int")
    slow = [r.getMessage() for r in caplog.records if "slow statement" in r.getMessage()]
    assert slow and 'failed: InvalidTextRepresentation (22P02)' in slow[0], slow
    assert all(SECRET not in m for m in slow)


@pytest.mark.parametrize(("message", "expected"), [
    # a value holding the quote character, in each known shape
    ("Duplicate entry 'a'b' for key 'email'", "Duplicate entry '?' for key '?'"),
    ("Incorrect integer value: 'x' y' for column `t`.`n` at row 1",
     "Incorrect integer value: '?' for column `?`.`?` at row 1"),
    ("... right syntax to use near ''x', 'y')' at line 1", "... right syntax to use near '?' "
     "at line 1"),
    ('invalid input syntax for type date: "a"b"', 'invalid input syntax for type date: "?"'),
    ("Key (email)=(a) b) already exists.", "Key (email)=(?) already exists."),
    # a value cut by the end of the line (a newline inside it): the rest is hidden
    ('invalid input syntax for type integer: "abc', 'invalid input syntax for type integer: '
     '"?...'),
    ('invalid byte sequence for encoding "UTF8": 0xff 0xfe',
     'invalid byte sequence for encoding "?": 0x? 0x?'),
    ("relation \"t\" does not exist", 'relation "?" does not exist'),
])
def test_redact_message_shapes(message: str, expected: str) -> None:
    assert redact_message(message) == expected


def test_error_text_keeps_the_code_and_bounds_the_length() -> None:
    class FakeMysqlError(Exception):
        pass

    assert error_text(FakeMysqlError(1062, "Duplicate entry 'x' for key 'k'")) == \
        "FakeMysqlError (1062): Duplicate entry '?' for key '?'"
    long = error_text(RuntimeError("x: '" + "y" * 5000 + "'"))
    assert len(long) <= ERROR_TEXT_CHARS and "yyy" not in long
