"""Options are validated once, with errors that name the option and the allowed range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from poolkeeper import ConfigError, ConfigWarning, Pool, PoolConfig, mask_dsn, parse_dsn


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("max_size", 0, "max_size=0 is out of range: allowed 1..10000"),
        ("min_idle", -1, "min_idle=-1 is out of range"),
        ("max_wait", -0.5, "max_wait=-0.5 is out of range"),
        ("max_lifetime", 0.1, "max_lifetime=0.1 is out of range: allowed 1..31536000 s "
                              "(or None to disable)"),
        ("lease_ms", 5000, "lease_ms=5000 is out of range: allowed 0..1000 ms"),
        ("validate_on_borrow", "yes", "validate_on_borrow='yes' must be True or False"),
        ("max_size", "10", "max_size='10' must be a number"),
        ("max_size", 2.5, "max_size=2.5 must be a whole number"),
        ("max_wait", float("nan"), "max_wait=nan is out of range"),
        ("max_wait", None, "max_wait must not be None"),
    ],
)
def test_invalid_option_names_field_and_range(option: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        PoolConfig(**{option: value})
    assert expected in str(info.value)
    assert isinstance(info.value, ValueError)


def test_min_idle_above_max_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="min_idle=5 is larger than max_size=2"):
        Pool("sqlite://:memory:", min_idle=5, max_size=2)


def test_unknown_option_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigError, match="unknown option\\(s\\) max_sise"):
        Pool("sqlite://:memory:", max_sise=3)


def test_unsupported_scheme_is_refused() -> None:
    with pytest.raises(ConfigError, match="dsn scheme 'oracle' is not supported"):
        PoolConfig(dsn="oracle://scott:tiger@db/orcl")


def test_idle_timeout_above_lifetime_warns_and_falls_back() -> None:
    with pytest.warns(ConfigWarning, match="idle_timeout=900 s is not below max_lifetime=600"):
        cfg = PoolConfig(max_lifetime=600, idle_timeout=900)
    assert cfg.idle_timeout is None


def test_leak_threshold_above_abandoned_timeout_warns_and_falls_back() -> None:
    with pytest.warns(ConfigWarning, match="leak_threshold"):
        cfg = PoolConfig(leak_threshold=60, abandoned_timeout=30)
    assert cfg.leak_threshold == 15


def test_config_is_frozen() -> None:
    cfg = PoolConfig()
    with pytest.raises(AttributeError):
        cfg.max_size = 3  # type: ignore[misc]


def test_from_toml_and_env(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text('[pool]\ndsn = "sqlite://:memory:"\nmax_size = 7\nleak_threshold = 30.0\n')
    cfg = PoolConfig.from_toml(path)
    assert (cfg.max_size, cfg.leak_threshold) == (7, 30.0)
    env = {"POOLKEEPER_MAX_SIZE": "4", "POOLKEEPER_MAX_LIFETIME": "none",
           "POOLKEEPER_VALIDATE_ON_BORROW": "off"}
    cfg = PoolConfig.from_env(environ=env)
    assert (cfg.max_size, cfg.max_lifetime, cfg.validate_on_borrow) == (4, None, False)
    bad = r"max_size='many' \(from the environment\) is not a valid int"
    with pytest.raises(ConfigError, match=bad):
        PoolConfig.from_env(environ={"POOLKEEPER_MAX_SIZE": "many"})


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://app:hunter2@127.0.0.1:5432/db", "postgresql://app:***@127.0.0.1:5432/db"),
        ("mysql://root:p%40ss@127.0.0.1/test", "mysql://root:***@127.0.0.1/test"),
        ("postgresql://app@h/db?password=hunter2&sslmode=off",
         "postgresql://app@h/db?password=***&sslmode=off"),
        ("host=h user=u password='x y' dbname=d", "host=h user=u password=*** dbname=d"),
        ("sqlite:///app.db", "sqlite:///app.db"),
    ],
)
def test_passwords_are_masked(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


def test_masked_config_hides_secrets() -> None:
    cfg = PoolConfig(dsn="mysql://root:hunter2@127.0.0.1/test",
                     connect_kwargs={"password": "hunter2", "charset": "utf8mb4"})
    shown = repr(cfg.masked())
    assert "hunter2" not in shown and "utf8mb4" in shown


def test_parse_dsn_gives_driver_arguments() -> None:
    info = parse_dsn("mysql://root:pw@127.0.0.1:3307/test?charset=utf8mb4&local_infile=true")
    assert info.driver == "mysql"
    assert info.params == {"host": "127.0.0.1", "port": 3307, "user": "root", "password": "pw",
                           "database": "test", "charset": "utf8mb4", "local_infile": True}
    assert parse_dsn("sqlite:////abs/x.db").params["database"] == "/abs/x.db"
    assert parse_dsn("sqlite:///rel.db").params["database"] == "rel.db"
    assert parse_dsn("sqlite://:memory:").params["database"] == ":memory:"
