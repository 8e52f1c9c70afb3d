"""Where an adapter reads a driver's private field, it checks once that the field is there,
and a driver keeping it elsewhere gets the public API: proved on stand-ins without the field."""

from __future__ import annotations

from typing import Any

import pytest

from poolkeeper import Pool


def test_the_installed_pymysql_has_the_fields_the_adapter_reads() -> None:
    import pymysql

    from poolkeeper.drivers.mysql import MysqlDriver, private_fields_ok

    assert private_fields_ok(pymysql.connections.Connection)
    driver = MysqlDriver({})
    assert driver.private_fields and driver.release_results is not None


def _without_result() -> Any:
    import pymysql

    class Moved(pymysql.connections.Connection):  # a PyMySQL keeping its result elsewhere
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            del self._result  # type: ignore[attr-defined]

    return Moved


def test_a_pymysql_without_the_fields_is_refused() -> None:
    from poolkeeper.drivers.mysql import private_fields_ok

    class NoDefer:  # a driver whose connection cannot be made without connecting
        def __init__(self, **kwargs: Any) -> None:
            raise TypeError("defer_connect")

    assert not private_fields_ok(_without_result())
    assert not private_fields_ok(NoDefer)


def test_without_the_fields_the_pool_runs_on_the_public_api(
        mysql_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import pymysql

    # Only the adapter's check sees the stand-in: pymysql.connect still makes real connections.
    monkeypatch.setattr(pymysql.connections, "Connection", _without_result())
    with Pool(mysql_dsn, max_size=1, min_idle=0, validation_bypass=0) as pool:
        assert not pool.driver.private_fields  # type: ignore[attr-defined]
        assert pool.driver.release_results is None
        for _ in range(3):  # each borrow after the first validates with the public ping
            with pool.connection() as conn:
                assert conn.execute("SELECT 1").fetchall() == [(1,)]
        stats = pool.stats()
    assert stats["validations_num"] >= 2 and stats["connections_num"] == 1
