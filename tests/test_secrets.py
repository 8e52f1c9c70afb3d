"""Secrets never show, and options that hand the database a way to read local files say so.

Each DSN spelling the field reports named (a password with ``#``, an invalid percent escape,
an unclosed IPv6 bracket, scheme spellings libpq does not know) is tried against the real
servers; the password and the DSN must appear nowhere poolkeeper prints.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from poolkeeper import ConfigWarning, Pool

from ._db import create_table, drop_table, unique_table


# --------------------------------------------------------------------------- local_infile
@pytest.fixture
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.mark.parametrize("how", ["dsn", "connect_kwargs"])
def test_local_infile_warns_at_construction_that_any_sql_can_read_files(
        mysql_dsn: str, tmp_path: Path, how: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("42\n")
    options = ({"dsn": mysql_dsn + "?local_infile=true"} if how == "dsn"
               else {"dsn": mysql_dsn, "connect_kwargs": {"local_infile": True}})
    with pytest.warns(ConfigWarning, match=r"local_infile=True .* read any file this process "
                                           r"can read") as record:
        pool = Pool(**options, max_size=1)
    assert record[0].filename == __file__  # points at the caller's line
    with pool:
        table = unique_table("pk_infile")
        create_table(pool, table, "v TEXT")
        try:
            # What the warning is about: user SQL reads a file the process can read.
            with pool.connection() as conn:
                conn.execute(f"LOAD DATA LOCAL INFILE '{secret}' INTO TABLE {table}")
                assert conn.execute(f"SELECT v FROM {table}").fetchall() == [("42",)]
        finally:
            drop_table(pool, table)


def test_without_local_infile_there_is_no_warning_and_no_file_is_sent(
        mysql_dsn: str, tmp_path: Path, no_warnings: None) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("42\n")
    with Pool(mysql_dsn, max_size=1, connect_kwargs={"client_flag": 128}) as pool:
        table = unique_table("pk_infile")
        create_table(pool, table, "v TEXT")
        try:
            # PyMySQL refuses to send it; the connection is then out of step, its rollback
            # on return fails and it is discarded (that failure is raised, the refusal chained).
            with pytest.raises(Exception) as info, pool.connection() as conn:
                conn.execute(f"LOAD DATA LOCAL INFILE '{secret}' INTO TABLE {table}")
            refusal = info.value if isinstance(info.value, RuntimeError) else info.value.__context__
            assert "local_infile option is false" in str(refusal)
            with pool.connection() as conn:
                assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchall() == [(0,)]
        finally:
            drop_table(pool, table)
