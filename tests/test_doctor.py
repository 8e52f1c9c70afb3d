"""``doctor``: worst-case memory per structure; each risky setting and the incident it repeats."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolkeeper import PoolConfig
from poolkeeper.cli.diagnosis import DEADLINE_BYTES, WAITER_BYTES, Report, diagnose, diagnose_file
from poolkeeper.cli.doctor import format_report
from poolkeeper.cli.sizes import format_bytes, parse_size

GB = 1024**3


def _finding(report: Report, setting: str) -> tuple[str, str, str]:
    for f in report.findings:
        if f.setting == setting:
            return f.severity, f.incident, f.reason
    raise AssertionError(f"no finding for {setting}: {[f.setting for f in report.findings]}")


def _structure(report: Report, name: str) -> int | None:
    for s in report.structures:
        if s.name == name:
            return s.worst_bytes
    raise AssertionError(f"no structure {name}")


def test_worst_case_statement_cache_is_its_byte_bound_times_max_size() -> None:
    config = PoolConfig(dsn="postgresql://app@127.0.0.1/db", max_size=30,
                        statement_cache_bytes=8 << 20)
    report = diagnose(config, memory_limit=64 * GB)
    assert _structure(report, "statement caches") == 30 * (8 << 20)
    assert _structure(report, "waiting callers") == config.max_waiting * WAITER_BYTES
    assert report.worst_total_bytes == sum(s.worst_bytes or 0 for s in report.structures)


def test_statement_cache_over_a_quarter_of_memory_is_dangerous_druid() -> None:
    config = PoolConfig(dsn="postgresql://app@127.0.0.1/db", max_size=100,
                        statement_cache_bytes=1 * GB)
    report = diagnose(config, memory_limit=16 * GB)
    severity, incident, reason = _finding(report, "statement caches")
    assert severity == "danger" and incident == "druid" and "100.0 GB" in reason
    assert report.dangerous and report.exit_code == 1


def test_mysql_has_no_statement_cache_to_size() -> None:
    config = PoolConfig(dsn="mysql://root@127.0.0.1/db", statement_cache_size=5000,
                        statement_cache_bytes=1 * GB, max_size=100)
    report = diagnose(config, memory_limit=16 * GB)
    assert _structure(report, "statement caches") == 0
    assert not report.dangerous


def test_statistics_without_a_real_byte_bound_are_dangerous_druid() -> None:
    report = diagnose(PoolConfig(stats_max_bytes=2 * GB), memory_limit=1 << 50)
    severity, incident, _ = _finding(report, "stats_max_bytes")
    assert severity == "danger" and incident == "druid"


def test_churn_from_short_lifetimes_and_idle_timeouts_is_flagged_bonecp() -> None:
    churn = PoolConfig(max_size=50, min_idle=0, max_lifetime=5, idle_timeout=2,
                       keepalive_interval=1)
    severity, incident, reason = _finding(diagnose(churn, memory_limit=64 * GB),
                                      "max_lifetime / idle_timeout")
    assert severity == "danger" and incident == "bonecp" and "opened per hour" in reason
    mild = PoolConfig(max_size=10, max_lifetime=600, idle_timeout=20)
    report = diagnose(mild, memory_limit=64 * GB)
    assert _finding(report, "idle_timeout")[:2] == ("warning", "bonecp")
    assert not report.dangerous


def test_defaults_are_not_dangerous() -> None:
    report = diagnose(PoolConfig(), memory_limit=4 * GB)
    assert not report.dangerous
    assert _finding(report, "query_timeout")[0] == "info"


def test_huge_query_timeout_estimates_what_a_timer_per_statement_would_hold_connector_j() -> None:
    config = PoolConfig(query_timeout=3600)
    report = diagnose(config, memory_limit=64 * GB, statements_per_second=80)
    severity, incident, reason = _finding(report, "query_timeout")
    assert severity == "warning" and incident == "connector-j"
    assert "288,000 entries" in reason  # 80/s x 3600 s
    assert _structure(report, "timeout scheduler") == config.max_size * DEADLINE_BYTES


def test_monitor_and_deep_leak_stacks_cite_the_cost_of_dble() -> None:
    report = diagnose(PoolConfig(monitor=True, leak_threshold=10, leak_stack_depth=64),
                      memory_limit=64 * GB)
    assert _finding(report, "monitor")[:2] == ("warning", "dble")
    assert _finding(report, "leak_stack_depth")[:2] == ("warning", "dble")


def test_lifetimes_without_jitter_and_no_validation_are_warned() -> None:
    report = diagnose(PoolConfig(lifetime_jitter=0, validate_on_borrow=False,
                                 keepalive_interval=None, reset_on_return=False),
                      memory_limit=64 * GB)
    for setting in ("lifetime_jitter", "validate_on_borrow / keepalive_interval",
                    "reset_on_return"):
        assert _finding(report, setting)[0] == "warning"


def test_a_file_with_conflicting_options_is_read_and_the_conflict_reported(
        tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text('[pool]\ndsn = "mysql://app:s3cret@127.0.0.1/shop"\n'
                    "max_lifetime = 600\nidle_timeout = 900\n", encoding="utf-8")
    report = diagnose_file(path, memory_limit=8 * GB)  # no ConfigWarning escapes
    severity, _incident, reason = _finding(report, "config")
    assert severity == "warning" and "idle expiry is disabled" in reason
    text = format_report(report)
    assert "s3cret" not in text and "app:***@" in text
    assert "worst-case memory per structure" in text and "verdict: ok" in text


def test_a_bad_file_raises_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text("[pool]\nmax_size = 0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="max_size=0 is out of range"):
        diagnose_file(path)


def test_sizes_parse_with_binary_units() -> None:
    assert parse_size("512MB") == 512 * 1024**2
    assert parse_size("2 GiB") == 2 * GB
    assert parse_size("1048576") == 1024**2
    assert parse_size("1.5k") == 1536
    with pytest.raises(ValueError, match="unknown unit"):
        parse_size("3 parsecs")
    with pytest.raises(ValueError, match="not a number"):
        parse_size("lots")
    assert format_bytes(1536) == "1.5 KB" and format_bytes(12) == "12 B"
