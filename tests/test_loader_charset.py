"""Text the column cannot hold is a reject, never stored altered (issue #15 item 5).

MariaDB's ``LOAD DATA ... CHARACTER SET binary`` stored UTF-8 bytes into a latin1 column as
mojibake without a warning; a PostgreSQL pool whose client_encoding is not UTF8 did the same
with ``COPY``. About 3 s in all (one small database is created for the LATIN1 case).
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from poolkeeper import Pool
from poolkeeper.loader import Loader, Reject

from .test_loader_support import create, drop, unique

#: 'ü' and '€' exist in MariaDB's latin1 (cp1252); '😀' exists in no 8-bit charset
_UNSTORABLE = "ü€😀"
_ROWS = [(1, _UNSTORABLE), (2, "ü"), (3, "plain"), (4, "€")]


def _load(pool: Pool, table: str, **options: Any) -> tuple[list[Reject], dict[str, Any]]:
    got: list[Reject] = []
    with Loader(pool, columns={table: ("id", "v")}, on_reject=got.append, **options) as loader:
        for row in _ROWS:
            loader.write(table, row)
    return got, loader.stats()


def _stored(pool: Pool, table: str) -> dict[int, str]:
    with pool.connection() as conn:
        return {int(i): str(v) for i, v in
                conn.execute(f"SELECT id, v FROM {table} ORDER BY id").fetchall()}


@pytest.mark.parametrize("local_infile", [True, False], ids=["load_data", "insert"])
def test_mariadb_latin1_column_rejects_what_it_cannot_hold(mysql_dsn: str,
                                                           local_infile: bool) -> None:
    with Pool(mysql_dsn, max_size=3) as pool:
        table = unique("latin1")
        create(pool, table, "id INT PRIMARY KEY, v VARCHAR(20) CHARACTER SET latin1")
        try:
            got, stats = _load(pool, table, mysql_local_infile=local_infile)
            assert stats["target"] == ("load_data" if local_infile else "insert")
            # the row is a reject with the server's reason, and is not in the table at all
            assert [r.row[0] for r in got] == ["1"] or [r.row[0] for r in got] == [1]
            assert got[0].row[1] == _UNSTORABLE
            assert got[0].code in ("1366", "22007"), got[0].code  # MariaDB code or SQLSTATE
            assert "Incorrect string value" in got[0].error
            assert _stored(pool, table) == {2: "ü", 3: "plain", 4: "€"}
        finally:
            drop(pool, table)


def test_postgresql_pool_with_a_latin1_client_encoding_loads_text_exactly(pg_dsn: str) -> None:
    sep = "&" if "?" in pg_dsn else "?"
    with Pool(f"{pg_dsn}{sep}client_encoding=LATIN1", max_size=3) as pool:
        table = unique("latin1")
        create(pool, table, "id INTEGER PRIMARY KEY, v TEXT")
        try:
            got, _stats = _load(pool, table)
            assert got == []
            with Pool(pg_dsn, max_size=1) as utf8:  # a LATIN1 client cannot read '😀' back
                assert _stored(utf8, table) == dict(_ROWS)
            with pool.connection() as conn:  # the pool's own setting is left as it was
                assert conn.execute("SHOW client_encoding").fetchone()[0] == "LATIN1"
        finally:
            drop(pool, table)


def test_postgresql_latin1_database_rejects_what_it_cannot_hold(pg_dsn: str) -> None:
    name = f"pk_latin1_{uuid.uuid4().hex[:8]}"
    base = pg_dsn.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
                      "TEMPLATE template0")
    try:
        with Pool(f"{base}/{name}", max_size=3) as pool:
            table = unique("latin1")
            create(pool, table, "id INTEGER PRIMARY KEY, v TEXT")
            got, _stats = _load(pool, table)
            # PostgreSQL's LATIN1 is ISO 8859-1: no euro sign either
            assert sorted(int(r.row[0]) for r in got) == [1, 4]
            assert all(r.code == "22P05" for r in got), [(r.code, r.error) for r in got]
            assert _stored(pool, table) == {2: "ü", 3: "plain"}
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
