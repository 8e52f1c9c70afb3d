"""Driver adapters: the only modules that import a database driver or know its quirks."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Driver, ErrorKind

__all__ = ["Driver", "ErrorKind", "create_driver", "detect_driver"]


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
    raise ConfigError(f"driver={name!r} is unknown: use sqlite, postgresql or mysql")


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
