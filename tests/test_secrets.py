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


# --------------------------------------------------------------------------- passwords
# What a user can read of a pool: every text below must be free of the secret.
def _everything_shown(pool: Pool) -> str:
    from poolkeeper import admin
    from poolkeeper.console.views import Sources, connections_view, overview_view

    shown = [repr(pool), repr(pool.config), repr(pool.config.masked()), pool.driver.describe(),
             str(admin.query("select * from pools", [pool]).rows),
             str(overview_view(Sources([pool]))), str(connections_view(Sources([pool]))),
             str(pool.connections_info())]
    return "\n".join(shown)


def _chain(exc: BaseException | None) -> str:
    texts: list[str] = []
    while exc is not None and len(texts) < 10:
        texts.append(f"{type(exc).__name__}: {exc} {exc.args!r}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(texts)


PG_SPELLINGS = ["postgresql://postgres:{pw}@127.0.0.1:5432/test",
                "postgres://postgres:{pw}@127.0.0.1:5432/test",
                "postgresql+psycopg://postgres:{pw}@127.0.0.1:5432/test",
                "POSTGRESQL://postgres:{pw}@127.0.0.1:5432/test",
                "postgresql://postgres@127.0.0.1:5432/test?password={pw}"]


@pytest.mark.parametrize("spelling", PG_SPELLINGS)
def test_postgresql_passwords_with_url_characters_connect_and_never_show(
        pg_dsn: str, spelling: str, caplog: pytest.LogCaptureFixture) -> None:
    # '#' and '?' end a password under urlsplit's rules, not libpq's; the server's trust
    # authentication ignores the password, so connecting proves libpq read the same user/db
    password = "s3cret#x?y:z" if "?password" not in spelling else "s3cret%23x"
    dsn = spelling.format(pw=password)
    caplog.set_level("DEBUG", logger="poolkeeper")
    with Pool(dsn, max_size=2, name="pw") as pool:
        with pool.connection() as conn:
            row = conn.execute("select current_user, current_database()").fetchone()
        assert tuple(row) == ("postgres", "test")
        shown = _everything_shown(pool)
    shown += "\n" + caplog.text
    assert "s3cret" not in shown
    assert "***" in shown


@pytest.fixture
def mysql_secret_user(mysql_dsn: str) -> Iterator[tuple[str, str]]:
    user, password = "pk_secret_user", "p#ss?w:rd-9"
    with Pool(mysql_dsn, max_size=1) as admin_pool, admin_pool.connection() as conn:
        conn.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        conn.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        conn.execute(f"GRANT SELECT ON test.* TO '{user}'@'%'")
    try:
        yield user, password
    finally:
        with Pool(mysql_dsn, max_size=1) as admin_pool, admin_pool.connection() as conn:
            conn.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_a_mysql_password_with_url_characters_connects_and_never_shows(
        mysql_secret_user: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    user, password = mysql_secret_user
    caplog.set_level("DEBUG", logger="poolkeeper")
    # written as is: '#' and '?' are ordinary characters in the user info, as libpq reads it
    with Pool(f"mysql://{user}:{password}@127.0.0.1:3306/test", max_size=1) as pool:
        with pool.connection() as conn:
            assert conn.execute("select current_user()").fetchone()[0].startswith(user)
        shown = _everything_shown(pool)
    assert "p#ss" not in shown + caplog.text and "***" in shown


def test_a_server_message_quoting_the_password_is_scrubbed_everywhere(
        mysql_secret_user: tuple[str, str], caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    from poolkeeper.cli import main
    from poolkeeper.errors import ConnectError, PoolTimeout

    user, password = mysql_secret_user
    # a database named like the password: MariaDB's "Access denied ... to database '<name>'"
    # quotes it back (a real server message, percent-decoded as the driver received it)
    dsn = f"mysql://{user}:{password}@127.0.0.1:3306/p%23ss%3Fw%3Ard-9"
    caplog.set_level("DEBUG", logger="poolkeeper")
    with pytest.raises(ConnectError) as first:
        Pool(dsn, max_size=1)
    pymysql = pytest.importorskip("pymysql")
    assert isinstance(first.value.__cause__, pymysql.err.OperationalError)  # its class kept
    assert first.value.__cause__.args[0] == 1044  # and its error code
    assert "to database '***'" in str(first.value)
    with Pool(dsn, max_size=1, fail_fast=False, max_wait=0.5) as pool:
        with pytest.raises(PoolTimeout) as timeout:
            pool.getconn()
        shown = _everything_shown(pool)
    assert main(["console", "--dsn", dsn, "--seconds", "0"]) == 2
    err = capsys.readouterr().err
    texts = "\n".join([_chain(first.value), _chain(timeout.value), shown, caplog.text, err])
    assert "p#ss" not in texts and "rd-9" not in texts, texts


def test_libpq_messages_quoting_the_password_are_scrubbed(
        pg_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    from poolkeeper.errors import ConnectError

    psycopg = pytest.importorskip("psycopg")
    # libpq quotes an invalid option value back: make that value the password
    dsn = "postgresql://postgres:s3cret-mode@127.0.0.1:5432/test?sslmode=s3cret-mode"
    caplog.set_level("DEBUG", logger="poolkeeper")
    with pytest.raises(ConnectError) as info:
        Pool(dsn, max_size=1)
    assert isinstance(info.value.__cause__, psycopg.Error)
    assert info.value.__cause__.pgconn is None  # its repr would list the password
    assert "sslmode" in str(info.value)  # the message still says what is wrong
    with Pool(dsn, max_size=1, fail_fast=False, max_wait=0.3) as pool, \
            pytest.raises(Exception) as timeout:
        pool.getconn()
    texts = "\n".join([_chain(info.value), _chain(timeout.value), caplog.text])
    assert "s3cret" not in texts, texts


@pytest.mark.parametrize("dsn", [
    "postgresql://postgres:s3cret%zz@127.0.0.1:5432/test",
    "postgresql://postgres:s3cret@[::1:5432/test",
    "postgresql://postgres:s3cret@127.0.0.1:5432/test?password=s3cret=x",
    "postgresql://postgres:s3 cret@127.0.0.1:5432/test",
    "mysql://root:s3cret%zz@127.0.0.1:3306/test",
])
def test_dsns_libpq_would_quote_back_are_refused_first(
        dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    from poolkeeper import ConfigError
    from poolkeeper.cli import main

    with pytest.raises(ConfigError) as info:
        Pool(dsn, max_size=1)
    assert "s3cret" not in str(info.value) and "dsn '" in str(info.value)
    assert main(["console", "--dsn", dsn, "--seconds", "0"]) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err and err, err


def test_a_refused_postgresql_connect_keeps_no_password_in_its_error(pg_dsn: str) -> None:
    from poolkeeper.errors import ConnectError

    pytest.importorskip("psycopg")
    # nothing listens on port 1; psycopg's error would keep the PGconn whose repr lists
    # password=b's3cret'
    with pytest.raises(ConnectError) as info:
        Pool("postgresql://postgres:s3cret-x@127.0.0.1:1/test", max_size=1, connect_timeout=2)
    cause = info.value.__cause__
    assert cause is not None and getattr(cause, "pgconn", None) is None
    assert "s3cret" not in _chain(info.value) + repr(cause)
