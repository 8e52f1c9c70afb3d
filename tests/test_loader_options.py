"""LoaderOptions: every loader option validated once, at construction, with a clear error."""

from __future__ import annotations

import dataclasses
import inspect
import math
from pathlib import Path
from typing import Any

import pytest

from poolkeeper import ConfigError, Pool
from poolkeeper.loader import Loader, LoaderOptions


def test_defaults_are_valid_and_numbers_of_seconds_become_floats() -> None:
    options = LoaderOptions(write_timeout_s=1, max_age_s=2)
    assert isinstance(options.write_timeout_s, float) and options.write_timeout_s == 1.0
    assert isinstance(options.max_age_s, float)
    assert options.columns == {} and options.workers is None and options.batch_bytes is None


@pytest.mark.parametrize(("changes", "needle"), [
    ({"budget_bytes": 10}, "budget_bytes=10 is invalid: use an integer between 4,096 and"),
    ({"budget_bytes": 1.5e6}, "budget_bytes=1500000.0 is invalid: use an integer"),
    ({"budget_bytes": True}, "budget_bytes=True is invalid"),
    ({"batch_rows": 0}, "batch_rows=0"),
    ({"batch_bytes": 1 << 30}, r"batch_bytes=1073741824 .* between 1 and budget_bytes"),
    ({"max_age_s": -1}, r"max_age_s=-1 .*\(or None\)"),
    ({"max_age_s": math.nan}, "max_age_s=nan"),
    ({"workers": 0}, "workers=0 is invalid: use an integer between 1 and 256"),
    ({"write_timeout_s": "60"}, "write_timeout_s='60' is invalid: use a number"),
    ({"close_timeout_s": None}, "close_timeout_s=None"),
    ({"retry_deadline_s": -0.5}, "retry_deadline_s=-0.5"),
    ({"retry_backoff_s": 0}, "retry_backoff_s=0"),
    ({"retry_backoff_max_s": 0.01}, r"retry_backoff_max_s=0.01 .* between retry_backoff_s"),
    ({"reject_limit": -1}, "reject_limit=-1"),
    ({"spill_segment_bytes": 100}, "spill_segment_bytes=100"),
    ({"spill_fsync": 1}, "spill_fsync=1 is invalid: use True or False"),
    ({"ledger": "yes"}, "ledger='yes' is invalid: use True or False"),
    ({"mysql_local_infile": None}, "mysql_local_infile=None"),
    ({"ledger_retention_s": 1}, "ledger_retention_s=1"),
    ({"connection_timeout_s": 0}, "connection_timeout_s=0"),
    ({"label": "a:b"}, "label='a:b' is invalid: use 1 to 40 characters without ':'"),
    ({"label": ""}, "label=''"),
    ({"ledger_table": "x; DROP TABLE y"}, "ledger_table='x; DROP TABLE y' is invalid: use a "
                                          "plain identifier"),
    ({"rejects_path": 3}, "rejects_path=3 is invalid: use a string"),
    ({"on_flushed": "print"}, "on_flushed='print' is invalid: use a function or None"),
    ({"on_reject": 1}, "on_reject=1"),
    ({"columns": ["a"]}, "columns=\\['a'\\] is invalid: use a mapping"),
    ({"columns": {"t": "abc"}}, "columns for table 't' must be a sequence of column names"),
    ({"columns": {"t": ("a", "a")}}, "columns for table 't' must be non-empty and distinct"),
])
def test_a_bad_value_names_the_option_the_value_and_what_to_use(changes: dict[str, Any],
                                                                  needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        LoaderOptions(**changes)


def test_replace_validates_again_and_leaves_the_original_alone() -> None:
    options = LoaderOptions(budget_bytes=1 << 20, columns={"t": ["a", "b"]})
    bigger = options.replace(budget_bytes=1 << 24, workers=4)
    assert (bigger.budget_bytes, bigger.workers) == (1 << 24, 4)
    assert options.budget_bytes == 1 << 20 and options.workers is None
    assert bigger.columns == {"t": ("a", "b")}
    with pytest.raises(ConfigError, match="budget_bytes=10"):
        options.replace(budget_bytes=10)
    with pytest.raises(ConfigError, match="batch_bytes="):
        LoaderOptions(budget_bytes=1 << 24, batch_bytes=1 << 22).replace(budget_bytes=1 << 20)


def test_options_are_frozen_and_their_columns_read_only() -> None:
    options = LoaderOptions(columns={"t": ("a",)})
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.budget_bytes = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        options.columns["u"] = ("b",)  # type: ignore[index]


def test_defaults_that_depend_on_the_budget_and_the_pool() -> None:
    assert LoaderOptions(budget_bytes=1 << 20).effective_batch_bytes == (1 << 20) // 8
    assert LoaderOptions(budget_bytes=1 << 30).effective_batch_bytes == 4 << 20
    assert LoaderOptions(batch_bytes=1000).effective_batch_bytes == 1000
    assert LoaderOptions().workers_for("sqlite", 10) == 1
    assert LoaderOptions().workers_for("postgresql", 10) == 2
    assert LoaderOptions().workers_for("mysql", 1) == 1
    assert LoaderOptions(workers=5).workers_for("sqlite", 1) == 5


def test_loader_keyword_arguments_are_exactly_the_options_with_the_same_defaults() -> None:
    # Loader's signature is its documented public API; this keeps it and LoaderOptions one.
    params = list(inspect.signature(Loader.__init__).parameters.values())[2:]  # self, pool
    fields = dataclasses.fields(LoaderOptions)
    assert [p.name for p in params] == [f.name for f in fields]
    for param, f in zip(params, fields, strict=True):
        assert param.default == f.default, f.name


def test_a_loader_built_from_options_uses_them(tmp_path: Path) -> None:
    options = LoaderOptions(budget_bytes=1 << 20, columns={"t": ("a", "b")}, name="opts")
    with Pool(f"sqlite:///{tmp_path / 'x.db'}") as pool:
        with pool.connection() as conn:
            conn.execute("CREATE TABLE t (a INTEGER, b TEXT)")
        with Loader.from_options(pool, options.replace(max_age_s=None)) as loader:
            assert loader.name == "opts" and loader.options.max_age_s is None
            loader.write("t", (1, "x"))
            loader.write("t", {"a": 2, "b": "y"})
        with pool.connection() as conn:
            assert conn.execute("SELECT a, b FROM t ORDER BY a").fetchall() == [(1, "x"),
                                                                                 (2, "y")]


def test_loader_keyword_arguments_are_validated_like_options(tmp_path: Path) -> None:
    with Pool(f"sqlite:///{tmp_path / 'x.db'}") as pool:
        with pytest.raises(ConfigError, match="spill_fsync='no'"):
            Loader(pool, spill_fsync="no")  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="rejects_path="):
            Loader(pool, rejects_path=b"x")  # type: ignore[arg-type]
