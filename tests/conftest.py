"""Shared fixtures: the real database servers, and the rule that CI never skips them.

A test that needs PostgreSQL or MariaDB asks for ``pg_dsn`` / ``mysql_dsn`` (or ``any_dsn``,
parametrised over all three backends). When the server is unreachable the test is skipped with
the reason, unless ``POOLKEEPER_REQUIRE_SERVERS=1`` (set by ``.ci/run``), where it fails.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from poolkeeper.core.runtime import ASSUME_NO_GIL_ENV

PG_DSN = os.environ.get("POOLKEEPER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_DSN = os.environ.get("POOLKEEPER_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")

_reachable: dict[tuple[str, int], bool] = {}


def _port_open(host: str, port: int) -> bool:
    key = (host, port)
    if key not in _reachable:
        try:
            with socket.create_connection(key, timeout=1.0):
                _reachable[key] = True
        except OSError:
            _reachable[key] = False
    return _reachable[key]


def require_server(name: str, host: str, port: int, module: str) -> None:
    """Skip (or, under CI, fail) when the server or its driver is missing."""
    strict = os.environ.get("POOLKEEPER_REQUIRE_SERVERS") == "1"
    problem = None
    try:
        __import__(module)
    except ImportError:
        problem = f"{name} tests need the {module} driver (pip install -e '.[dev]')"
    if problem is None and not _port_open(host, port):
        problem = f"{name} is not reachable on {host}:{port}; start it to run these tests"
    if problem is not None:
        if strict:
            pytest.fail(f"{problem} (POOLKEEPER_REQUIRE_SERVERS=1 turns this skip into a failure)")
        pytest.skip(problem)


@pytest.fixture
def pg_dsn() -> str:
    require_server("PostgreSQL", "127.0.0.1", 5432, "psycopg")
    return PG_DSN


@pytest.fixture
def mysql_dsn() -> str:
    require_server("MariaDB", "127.0.0.1", 3306, "pymysql")
    return MYSQL_DSN


@pytest.fixture
def sqlite_dsn(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def any_dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test once per backend: sqlite3, PostgreSQL, MariaDB."""
    backend: str = request.param
    if backend == "postgresql":
        require_server("PostgreSQL", "127.0.0.1", 5432, "psycopg")
        return PG_DSN
    if backend == "mysql":
        require_server("MariaDB", "127.0.0.1", 3306, "pymysql")
        return MYSQL_DSN
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    """Every test must stop the threads it started (pools, loaders, consoles)."""
    before = set(threading.enumerate())
    yield
    deadline = 5.0
    leftover: list[threading.Thread] = []
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith("poolkeeper"):
            thread.join(deadline)
            if thread.is_alive():
                leftover.append(thread)
    assert not leftover, f"threads still running after the test: {[t.name for t in leftover]}"


@pytest.fixture(params=["lock-free", "locked"])
def bag_twin(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once with the pool's lock-free paths (the GIL build's default) and once with
    the locked twins a build without the GIL takes (core/runtime.py), so the whole contract
    holds on both. Use as ``pytestmark = pytest.mark.usefixtures("bag_twin")``."""
    if request.param == "locked":
        monkeypatch.setenv(ASSUME_NO_GIL_ENV, "1")
    else:
        monkeypatch.delenv(ASSUME_NO_GIL_ENV, raising=False)
    return str(request.param)
