"""Driver adapters: the only modules that import a database driver or know its quirks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .base import Driver, ErrorKind

if TYPE_CHECKING:
    from .aiobase import AsyncDriver

__all__ = ["AsyncDriver", "Driver", "ErrorKind", "create_async_driver", "create_driver",
           "detect_async_driver", "detect_driver"]

#: the asyncio drivers' extras, by adapter name
_ASYNC_EXTRAS = {"postgresql": "asyncio-postgres", "mysql": "asyncio-mysql",
                 "sqlite": "asyncio-sqlite", "asyncpg": "asyncpg"}

# The imports below stay explicit (not importlib by a table): tests/test_architecture.py reads
# the import graph from the source, and a computed import would hide these edges from it.


def create_driver(name: str, params: dict[str, Any], **kwargs: Any) -> Driver:
    """The adapter for ``name`` ("sqlite", "postgresql", "mysql"), importing its driver."""
    try:
        if name == "sqlite":
            from .sqlite import SqliteDriver

            return SqliteDriver(params, **kwargs)
        if name == "postgresql":
            from .postgres import PostgresDriver

            return PostgresDriver(params, **kwargs)
        if name == "mysql":
            from .mysql import MysqlDriver

            return MysqlDriver(params, **kwargs)
    except ImportError as exc:
        extra = {"postgresql": "postgres", "mysql": "mysql"}.get(name, name)
        raise ConfigError(
            f"the {name} driver is not installed ({exc}); install it with "
            f"pip install 'poolkeeper[{extra}]'"
        ) from exc
    if name == "asyncpg":
        raise ConfigError(
            "asyncpg (postgresql+asyncpg://) is an asyncio driver: the thread pool cannot "
            "use it. Use poolkeeper.AsyncPool with this DSN, or postgresql:// (psycopg) for "
            "Pool")
    raise ConfigError(f"driver={name!r} is unknown: use sqlite, postgresql or mysql")


def create_async_driver(name: str, params: dict[str, Any], **kwargs: Any) -> AsyncDriver:
    """The asyncio adapter for ``name``, importing its driver: "postgresql" (psycopg's
    AsyncConnection), "mysql" (aiomysql), "sqlite" (aiosqlite), "asyncpg"."""
    try:
        if name == "sqlite":
            from .aio_sqlite import AiosqliteDriver

            return AiosqliteDriver(params, **kwargs)
        if name == "postgresql":
            from .aio_psycopg import AsyncPsycopgDriver

            return AsyncPsycopgDriver(params, **kwargs)
        if name == "mysql":
            from .aio_mysql import AiomysqlDriver

            return AiomysqlDriver(params, **kwargs)
        if name == "asyncpg":
            from .aio_asyncpg import AsyncpgDriver

            return AsyncpgDriver(params, **kwargs)
    except ImportError as exc:
        raise ConfigError(
            f"the asyncio {name} driver is not installed ({exc}); install it with "
            f"pip install 'poolkeeper[{_ASYNC_EXTRAS[name]}]'"
        ) from exc
    raise ConfigError(f"driver={name!r} is unknown for AsyncPool: use sqlite, "
                      "postgresql, mysql or asyncpg")


def detect_driver(raw: Any) -> str:
    """Which adapter fits a connection returned by a user's connect() callable."""
    module = type(raw).__module__
    if module.startswith("sqlite3"):
        return "sqlite"
    if module.startswith("psycopg"):
        return "postgresql"
    if module.startswith("pymysql"):
        return "mysql"
    raise ConfigError(
        f"cannot tell which driver made a {module}.{type(raw).__name__}; pass driver= "
        "('sqlite', 'postgresql' or 'mysql') together with connect="
    )


def detect_async_driver(raw: Any) -> str:
    """Which asyncio adapter fits a connection returned by a user's async connect()."""
    module = type(raw).__module__
    for prefix, name in (("aiosqlite", "sqlite"), ("psycopg", "postgresql"),
                         ("aiomysql", "mysql"), ("asyncpg", "asyncpg")):
        if module.startswith(prefix):
            return name
    raise ConfigError(
        f"cannot tell which asyncio driver made a {module}.{type(raw).__name__}; pass "
        "driver= ('sqlite', 'postgresql', 'mysql' or 'asyncpg') together with connect="
    )
