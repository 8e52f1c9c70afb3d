"""Pool options: one frozen object, validated once, readable from kwargs, a dict, TOML or env.

Hard errors raise :class:`~poolkeeper.errors.ConfigError` (a ``ValueError``) naming the
option, the value and the allowed range. Soft conflicts (settings that contradict each other
but have an obvious safe reading) emit :class:`ConfigWarning` and fall back to that reading.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dsn import DRIVER_NAMES, Dsn, is_secret_key, mask_dsn, parse_dsn
from .errors import ConfigError

__all__ = ["ConfigWarning", "Dsn", "PoolConfig", "mask_dsn", "parse_dsn"]


class ConfigWarning(UserWarning):
    """Two options contradict each other; poolkeeper took the safe reading and says which."""


# name -> (kind, minimum, maximum, nullable). Kinds: "int", "float", "bool", "str".
# Kept beside the dataclass so one table drives validation, env parsing and `doctor`.
_RANGES: dict[str, tuple[str, float, float, bool]] = {
    "min_idle": ("int", 0, 10_000, False),
    "max_size": ("int", 1, 10_000, False),
    "max_wait": ("float", 0, 86_400, False),
    "max_waiting": ("int", 0, 10_000_000, False),
    "max_lifetime": ("float", 1, 365 * 86_400, True),
    "lifetime_jitter": ("float", 0, 0.5, False),
    "idle_timeout": ("float", 0.01, 365 * 86_400, True),
    "keepalive_interval": ("float", 0.01, 365 * 86_400, True),
    "validate_on_borrow": ("bool", 0, 1, False),
    "validation_bypass": ("float", 0, 3_600, False),
    "validation_timeout": ("float", 0.01, 600, False),
    "reset_on_return": ("bool", 0, 1, False),
    "reset_timeout": ("float", 0.01, 600, False),
    "leak_threshold": ("float", 0.001, 365 * 86_400, True),
    "leak_stack_depth": ("int", 1, 256, False),
    "abandoned_timeout": ("float", 0.001, 365 * 86_400, True),
    "lease_ms": ("float", 0, 1_000, True),
    "connect_timeout": ("float", 0.01, 3_600, False),
    "reconnect_backoff_max": ("float", 0.01, 3_600, False),
    "housekeeping_interval": ("float", 0.01, 3_600, False),
    "fail_fast": ("bool", 0, 1, False),
    "autocommit": ("bool", 0, 1, True),
    "query_timeout": ("float", 0.001, 365 * 86_400, True),
    "transaction_timeout": ("float", 0.001, 365 * 86_400, True),
    "stats": ("bool", 0, 1, False),
    "stats_max_bytes": ("int", 1024, 1 << 40, False),
    "stats_max_entries": ("int", 1, 10_000_000, False),
    "slow_query_ms": ("float", 0, 86_400_000, True),
    "stats_log_interval": ("float", 1, 86_400, True),
    "log_params": ("bool", 0, 1, False),
    "statement_cache_size": ("int", 0, 100_000, False),
    "statement_cache_bytes": ("int", 0, 1 << 40, False),
    "fetch_size": ("int", 1, 10_000_000, False),
    "max_idle_result_bytes": ("int", 0, 1 << 40, False),
    "monitor": ("bool", 0, 1, False),
}


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Every option of a pool. Times are in seconds unless the name says ``_ms``.

    Example::

        cfg = PoolConfig(dsn="postgresql://app@127.0.0.1/test", max_size=8, leak_threshold=30)
    """

    dsn: str | None = None
    driver: str | None = None
    name: str = ""
    min_idle: int = 1
    max_size: int = 10
    max_wait: float = 30.0
    max_waiting: int = 1024
    max_lifetime: float | None = 1800.0
    lifetime_jitter: float = 0.025
    idle_timeout: float | None = 600.0
    keepalive_interval: float | None = 120.0
    validate_on_borrow: bool = True
    validation_bypass: float = 0.5
    validation_timeout: float = 5.0
    reset_on_return: bool = True
    #: AsyncPool: the time limit of the server side of a return (recover from a cancelled
    #: statement, close the cursors left open, commit or roll back), past which the
    #: connection is discarded
    reset_timeout: float = 5.0
    leak_threshold: float | None = None
    leak_stack_depth: int = 12
    abandoned_timeout: float | None = None
    lease_ms: float | None = None
    connect_timeout: float = 10.0
    reconnect_backoff_max: float = 10.0
    housekeeping_interval: float = 1.0
    fail_fast: bool = True
    autocommit: bool | None = None
    query_timeout: float | None = None
    transaction_timeout: float | None = None
    stats: bool = True
    stats_max_bytes: int = 4 << 20
    stats_max_entries: int = 5_000
    slow_query_ms: float | None = None
    stats_log_interval: float | None = None
    log_params: bool = False
    statement_cache_size: int = 100
    statement_cache_bytes: int = 1 << 20
    fetch_size: int = 1_000
    #: retire a connection at return once it received a result above this many bytes: libpq
    #: keeps its input buffer at the largest message until the connection closes (0: off)
    max_idle_result_bytes: int = 16 << 20
    monitor: bool = False
    connect_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, (kind, lo, hi, nullable) in _RANGES.items():
            value = getattr(self, name)
            checked = _check(name, value, kind, lo, hi, nullable)
            if checked is not value:
                object.__setattr__(self, name, checked)
        if self.min_idle > self.max_size:
            raise ConfigError(
                f"min_idle={self.min_idle} is larger than max_size={self.max_size}: "
                "min_idle must be between 0 and max_size"
            )
        if self.driver is not None and self.driver not in DRIVER_NAMES:
            raise ConfigError(
                f"driver={self.driver!r} is unknown: use one of {sorted(DRIVER_NAMES)}"
            )
        if self.dsn is not None:
            parse_dsn(self.dsn)  # raises ConfigError on a malformed DSN
        if not isinstance(self.connect_kwargs, Mapping):
            raise ConfigError(
                f"connect_kwargs must be a mapping of driver arguments, "
                f"not {type(self.connect_kwargs).__name__}"
            )
        self._soft_conflicts()

    def _soft_conflicts(self) -> None:
        lifetime = self.max_lifetime
        if lifetime is not None and self.idle_timeout is not None and self.idle_timeout >= lifetime:
            _warn(f"idle_timeout={self.idle_timeout:g} s is not below max_lifetime={lifetime:g} s, "
                  "so it could never fire; idle expiry is disabled")
            object.__setattr__(self, "idle_timeout", None)
        if (lifetime is not None and self.keepalive_interval is not None
                and self.keepalive_interval >= lifetime):
            _warn(f"keepalive_interval={self.keepalive_interval:g} s is not below "
                  f"max_lifetime={lifetime:g} s; keepalive is disabled")
            object.__setattr__(self, "keepalive_interval", None)
        if (self.leak_threshold is not None and self.abandoned_timeout is not None
                and self.leak_threshold >= self.abandoned_timeout):
            _warn(f"leak_threshold={self.leak_threshold:g} s is not below abandoned_timeout="
                  f"{self.abandoned_timeout:g} s, so leaks would be reclaimed before being "
                  "reported; leak_threshold is set to half of abandoned_timeout")
            object.__setattr__(self, "leak_threshold", self.abandoned_timeout / 2)

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> PoolConfig:
        """Build from a dict (e.g. a TOML table); unknown keys are an error, not ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}"
            )
        return cls(**dict(options))

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], table: str = "pool") -> PoolConfig:
        """Read the ``[pool]`` table (or ``table``) of a TOML file."""
        with Path(path).open("rb") as fh:
            data = tomllib.load(fh)
        section = data.get(table, data)
        if not isinstance(section, dict):
            raise ConfigError(f"[{table}] in {path} must be a table of options")
        return cls.from_mapping(section)

    @classmethod
    def from_env(cls, prefix: str = "POOLKEEPER_",
                 environ: Mapping[str, str] | None = None) -> PoolConfig:
        """Read ``POOLKEEPER_DSN``, ``POOLKEEPER_MAX_SIZE``, ... ("none" clears an option)."""
        env = os.environ if environ is None else environ
        options: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(prefix + f.name.upper())
            if raw is None or f.name == "connect_kwargs":
                continue
            options[f.name] = _from_text(f.name, raw)
        return cls.from_mapping(options)

    def replace(self, **changes: Any) -> PoolConfig:
        """A copy with some options changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        # the dataclass's own repr would show the DSN's password and secret connect_kwargs
        shown = ", ".join(f"{k}={v!r}" for k, v in self.masked().items())
        return f"PoolConfig({shown})"

    def masked(self) -> dict[str, Any]:
        """All options as a dict with secrets masked: safe to log or show."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.dsn is not None:
            out["dsn"] = mask_dsn(self.dsn)
        out["connect_kwargs"] = {
            k: ("***" if is_secret_key(k) else v) for k, v in self.connect_kwargs.items()
        }
        return out


def _warn(message: str) -> None:
    warnings.warn(message, ConfigWarning, stacklevel=4)


def _check(name: str, value: Any, kind: str, lo: float, hi: float, nullable: bool) -> Any:
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{name} must not be None")
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} must be True or False")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}={value!r} must be a number between {_num(lo)} and {_num(hi)}")
    if kind == "int" and not isinstance(value, int):
        if not float(value).is_integer():
            raise ConfigError(
                f"{name}={value!r} must be a whole number between {_num(lo)} and {_num(hi)}")
        value = int(value)
    if not (lo <= value <= hi) or math.isnan(value):
        unit = "" if kind == "int" else " s" if not name.endswith("_ms") else " ms"
        none_hint = " (or None to disable)" if nullable else ""
        raise ConfigError(
            f"{name}={value!r} is out of range: allowed {_num(lo)}..{_num(hi)}{unit}{none_hint}"
        )
    return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _from_text(name: str, raw: str) -> Any:
    kind = _RANGES.get(name, ("str", 0, 0, True))[0]
    text = raw.strip()
    if text.lower() in ("none", "null", "") and name in _RANGES and _RANGES[name][3]:
        return None
    try:
        if kind == "bool":
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} (from the environment) is not a valid {kind}") from None
    return text
