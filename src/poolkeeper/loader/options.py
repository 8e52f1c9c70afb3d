"""The loader's options: one frozen object, validated once, at construction.

:class:`~poolkeeper.loader.Loader` builds a :class:`LoaderOptions` from its keyword arguments
and hands it to the engine, so every option is checked in one place, before any thread,
connection or file exists. A bad value raises :class:`~poolkeeper.errors.ConfigError` (a
``ValueError``) naming the option, the value and what to use instead.

Example::

    options = LoaderOptions(budget_bytes=32 << 20, columns={"events": ("id", "kind")})
    durable = options.replace(spill_dir="/var/lib/app/spill")   # validated again
    with Loader.from_options(pool, durable) as loader:
        ...
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .batch import is_plain_identifier

if TYPE_CHECKING:  # on_reject's argument; the sink (files) is none of the options' business
    from .rejects import Reject

__all__ = ["LoaderOptions", "check_columns"]

_YEAR_S = 86_400 * 365

# name -> (kind, minimum, maximum, nullable); kinds "int", "float", "bool". One table drives
# the checks of every numeric and boolean option; batch_bytes and retry_backoff_max_s have
# bounds that depend on another option and are checked after it (see __post_init__).
_RANGES: dict[str, tuple[str, float, float, bool]] = {
    "budget_bytes": ("int", 4096, 1 << 42, False),
    "batch_rows": ("int", 1, 1 << 40, False),
    "max_age_s": ("float", 0.001, _YEAR_S, True),
    "workers": ("int", 1, 256, True),
    "write_timeout_s": ("float", 0, _YEAR_S, False),
    "close_timeout_s": ("float", 0, _YEAR_S, False),
    "retry_deadline_s": ("float", 0, _YEAR_S, False),
    "retry_backoff_s": ("float", 0.001, 3_600, False),
    "reject_limit": ("int", 0, 1 << 40, False),
    "spill_segment_bytes": ("int", 4096, 1 << 40, False),
    "spill_fsync": ("bool", 0, 1, False),
    "ledger": ("bool", 0, 1, False),
    "ledger_retention_s": ("float", 60, _YEAR_S * 10, False),
    "mysql_local_infile": ("bool", 0, 1, False),
    "connection_timeout_s": ("float", 0.01, 86_400, False),
}


@dataclass(frozen=True, slots=True)
class LoaderOptions:
    """Every option of a :class:`~poolkeeper.loader.Loader` (seconds unless named otherwise).

    ``batch_bytes=None`` means budget/8, at most 4 MiB (:attr:`effective_batch_bytes`);
    ``workers=None`` means 2, at most the pool's ``max_size``, and 1 for SQLite
    (:meth:`workers_for`); ``name=None`` (or "") means ``loader-<n>``.
    """

    budget_bytes: int = 64 << 20
    #: table -> its column names, for tuple rows (after construction: a read-only mapping of
    #: tuples, never None)
    columns: Mapping[str, Sequence[str]] | None = None
    batch_rows: int = 100_000
    batch_bytes: int | None = None
    max_age_s: float | None = 5.0
    workers: int | None = None
    write_timeout_s: float = 60.0
    close_timeout_s: float = 120.0
    retry_deadline_s: float = 60.0
    retry_backoff_s: float = 0.05
    retry_backoff_max_s: float = 5.0
    reject_limit: int = 1_000
    rejects_path: str | None = None
    on_reject: Callable[[Reject], Any] | None = None
    on_flushed: Callable[[str, str, int], Any] | None = None
    spill_dir: str | None = None
    spill_segment_bytes: int = 64 << 20
    spill_fsync: bool = False
    ledger: bool = True
    ledger_table: str = "poolkeeper_loader_ledger"
    ledger_retention_s: float = 7 * 86_400
    label: str = "pk"
    mysql_local_infile: bool = True
    connection_timeout_s: float = 30.0
    name: str | None = None

    def __post_init__(self) -> None:
        for name, (kind, lo, hi, nullable) in _RANGES.items():
            self._set(name, _check(name, getattr(self, name), kind, lo, hi, nullable))
        if self.batch_bytes is not None:
            self._set("batch_bytes", _check("batch_bytes", self.batch_bytes, "int", 1,
                                            self.budget_bytes, False, hi_name="budget_bytes"))
        self._set("retry_backoff_max_s",
                  _check("retry_backoff_max_s", self.retry_backoff_max_s, "float",
                         self.retry_backoff_s, 3_600, False, lo_name="retry_backoff_s"))
        label = self.label
        if not isinstance(label, str) or not label or len(label) > 40 or ":" in label:
            raise ConfigError(f"Loader option label={label!r} is invalid: use 1 to 40 "
                              "characters without ':'")
        if not isinstance(self.ledger_table, str) or not is_plain_identifier(self.ledger_table):
            raise ConfigError(f"Loader option ledger_table={self.ledger_table!r} is invalid: "
                              "use a plain identifier (letters, digits, underscore)")
        for name in ("rejects_path", "spill_dir", "name"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"Loader option {name}={value!r} is invalid: use a string "
                                  "(a path for rejects_path and spill_dir) or None")
        for name in ("on_reject", "on_flushed"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigError(f"Loader option {name}={value!r} is invalid: use a function "
                                  "or None")
        columns = self.columns
        if columns is None:
            columns = {}
        if not isinstance(columns, Mapping):
            raise ConfigError(f"Loader option columns={columns!r} is invalid: use a mapping "
                              "of table name to column names, e.g. {'events': ('id', 'at')}")
        checked = {table: check_columns(table, cols) for table, cols in columns.items()}
        self._set("columns", MappingProxyType(checked))

    def _set(self, name: str, value: Any) -> None:
        if value is not getattr(self, name):
            object.__setattr__(self, name, value)

    @property
    def effective_batch_bytes(self) -> int:
        """``batch_bytes``, or its default for this budget."""
        if self.batch_bytes is not None:
            return self.batch_bytes
        # Small enough that loading overlaps writing (the last batch is the tail a close()
        # waits for), large enough that a commit per batch costs ~1%.
        return max(1, min(4 << 20, self.budget_bytes // 8))

    def workers_for(self, driver: str, max_size: int) -> int:
        """``workers``, or its default for a pool of this driver and size."""
        if self.workers is not None:
            return self.workers
        return 1 if driver == "sqlite" else max(1, min(2, int(max_size)))

    def replace(self, **changes: Any) -> LoaderOptions:
        """A copy with some options changed (validated again)."""
        return dataclasses.replace(self, **changes)


def check_columns(table: str, cols: Sequence[str]) -> tuple[str, ...]:
    """``cols`` as a tuple of distinct, non-empty column names, or a ConfigError."""
    if isinstance(cols, str) or not all(isinstance(c, str) and c for c in cols):
        raise ConfigError(f"columns for table {table!r} must be a sequence of column names, "
                          f"not {cols!r}")
    out = tuple(cols)
    if not out or len(set(out)) != len(out):
        raise ConfigError(f"columns for table {table!r} must be non-empty and distinct: "
                          f"{out!r}")
    return out


def _check(name: str, value: Any, kind: str, lo: float, hi: float, nullable: bool, *,
           lo_name: str | None = None, hi_name: str | None = None) -> Any:
    """``value`` checked (a float option comes back as a float), or a ConfigError."""
    if value is None and nullable:
        return None
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"Loader option {name}={value!r} is invalid: use True or False")
        return value
    number = isinstance(value, int if kind == "int" else int | float)
    if (not number or isinstance(value, bool) or math.isnan(value)
            or not lo <= value <= hi):
        what = "an integer" if kind == "int" else "a number"
        lowest = f"{lo_name} ({_num(lo)})" if lo_name else _num(lo)
        highest = f"{hi_name} ({_num(hi)})" if hi_name else _num(hi)
        unit = " bytes" if name.endswith("_bytes") else " s" if name.endswith("_s") else ""
        raise ConfigError(f"Loader option {name}={value!r} is invalid: use {what} between "
                          f"{lowest} and {highest}{unit}" + (" (or None)" if nullable else ""))
    return float(value) if kind == "float" else value


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"
