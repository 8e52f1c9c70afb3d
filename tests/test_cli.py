"""The ``poolkeeper`` command line: demo, doctor, console and top, run as a person would."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import threading
import urllib.request
import uuid
from pathlib import Path

import pytest

from poolkeeper import Pool
from poolkeeper.cli import main
from poolkeeper.console import serve
from poolkeeper.demo import LEAK_THRESHOLD_S, run_demo


def _prefix() -> str:
    return f"pkd{uuid.uuid4().hex[:8]}_"


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- demo
def test_demo_prints_the_workload_report_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--operations", "300", "--threads", "3"]) == 0
    out = capsys.readouterr().out
    for section in ("poolkeeper demo: 3 threads, 300 operations", "workload", "pool statistics",
                    "wait time", "planted leak", "leaky_app.py:5"):
        assert section in out, section
    if _has("poolkeeper.hooks.timeouts"):
        assert "slow query under a statement timeout" in out and "QueryTimeout" in out
    if _has("poolkeeper.hooks.stats"):
        assert "top SQL fingerprints" in out
    if _has("poolkeeper.observe.memory"):
        assert "memory ledger" in out
    assert not [t for t in threading.enumerate() if t.name.startswith("poolkeeper")]


def test_demo_finds_the_planted_leak_at_its_file_and_line(any_dsn: str) -> None:
    result = run_demo(any_dsn, threads=3, operations=150, prefix=_prefix())
    assert result.errors == 0 and result.operations == 150
    assert result.leak is not None and result.leak["detected"]
    assert result.leak["detector_site"].startswith(result.leak["expected_site"])
    assert result.leak["held_s"] >= LEAK_THRESHOLD_S
    assert result.stats["leaks_detected"] >= 1 and result.stats["leaks_returned"] >= 1
    if result.leak.get("monitor_checkouts"):
        assert result.leak["monitor_site"].startswith(result.leak["expected_site"])
    assert any("possible leak" in line and "leaky_app.py:5" in line for line in result.log)


def test_demo_slow_query_is_cancelled_on_the_server(any_dsn: str) -> None:
    if not _has("poolkeeper.hooks.timeouts"):
        pytest.skip("query timeouts are not in this build")
    result = run_demo(any_dsn, threads=2, operations=40, prefix=_prefix())
    assert result.timeout is not None, result.not_enabled
    assert result.timeout["error"] and "cancelled" in result.timeout["error"]
    assert "'" not in result.timeout["sql"]  # literals folded
    assert result.timeout["elapsed_s"] < 5.0  # the statement itself would run 5 s or more


def test_demo_reports_top_sql_and_ledger_when_built(sqlite_dsn: str) -> None:
    result = run_demo(sqlite_dsn, threads=2, operations=100, faults=False, prefix=_prefix())
    assert result.leak is None and result.timeout is None
    if _has("poolkeeper.hooks.stats"):
        assert result.top_sql
        totals = [r["total_ms"] for r in result.top_sql]
        assert totals == sorted(totals, reverse=True)
        assert all("customer " not in r["fingerprint"] for r in result.top_sql)
    if _has("poolkeeper.observe.memory"):
        assert result.ledger


def test_demo_with_console_serves_during_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--operations", "120", "--threads", "2", "--console",
                 "--console-seconds", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "console: http://127.0.0.1:" in out and "press Ctrl-C" in out
    assert not [t for t in threading.enumerate() if t.name.startswith("poolkeeper")]


# ----------------------------------------------------------------------------- doctor
def _toml(tmp_path: Path, body: str) -> str:
    path = tmp_path / "pool.toml"
    path.write_text("[pool]\n" + body, encoding="utf-8")
    return str(path)


def test_doctor_exits_nonzero_on_a_dangerous_config(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = _toml(tmp_path, 'dsn = "postgresql://app:hunter2@127.0.0.1/shop"\n'
                           "max_size = 200\nstatement_cache_bytes = 1073741824\n")
    assert main(["doctor", path, "--memory-limit", "8GB"]) == 1
    out = capsys.readouterr().out
    assert "statement caches" in out and "200.0 GB" in out
    assert "DANGER" in out and "Druid's SQL statistics" in out
    assert "hunter2" not in out and "app:***@" in out


def test_doctor_exits_zero_on_a_sane_config(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = _toml(tmp_path, 'dsn = "postgresql://app@127.0.0.1/shop"\nquery_timeout = 5\n'
                           "leak_threshold = 30\n")
    assert main(["doctor", path, "--memory-limit", "4GB"]) == 0
    assert "nothing dangerous" in capsys.readouterr().out


def test_doctor_json_lists_structures_and_findings_with_incidents(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _toml(tmp_path, "max_lifetime = 10\nidle_timeout = 2\nlifetime_jitter = 0\n"
                           "max_size = 40\n")
    assert main(["doctor", path, "--json", "--memory-limit", "4GB"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["dangerous"] is True
    incidents = {f["incident"] for f in report["findings"]}
    assert "bonecp" in incidents
    assert any(f["setting"] == "lifetime_jitter" for f in report["findings"])
    assert {s["name"] for s in report["structures"]} >= {"SQL statistics", "waiting callers"}


def test_doctor_exits_two_when_the_config_cannot_be_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", str(tmp_path / "missing.toml")]) == 2
    assert main(["doctor", _toml(tmp_path, "max_size = -1\n")]) == 2
    assert "max_size=-1 is out of range" in capsys.readouterr().err
    assert main(["doctor", _toml(tmp_path, "no_such_option = 1\n")]) == 2
    assert main(["doctor", _toml(tmp_path, "max_size = \n")]) == 2
    assert main(["doctor", _toml(tmp_path, ""), "--memory-limit", "lots"]) == 2


# ----------------------------------------------------------------------------- top
def test_top_once_shows_each_pool_of_a_console(capsys: pytest.CaptureFixture[str]) -> None:
    importlib.import_module("rich")
    with Pool("sqlite://:memory:", max_size=4, name="topshop") as pool:
        for _ in range(10):
            with pool.connection() as conn:
                conn.execute("SELECT 1").fetchall()
        with serve([pool]) as handle:
            assert main(["top", handle.url, "--once"]) == 0
    out = capsys.readouterr().out
    assert "topshop" in out and "1/4" in out


def test_top_counts_refreshes_and_stops(capsys: pytest.CaptureFixture[str]) -> None:
    importlib.import_module("rich")
    with Pool("sqlite://:memory:", max_size=2, name="counted") as pool, \
            serve([pool]) as handle:
        assert main(["top", handle.url, "--count", "2", "--interval", "0.05"]) == 0
    assert "counted" in capsys.readouterr().out


def test_top_says_why_when_the_console_is_unreachable(
        capsys: pytest.CaptureFixture[str]) -> None:
    with Pool("sqlite://:memory:", name="gone") as pool:
        handle = serve([pool])
        url = handle.url
        handle.stop()
    assert main(["top", url, "--once"]) == 2
    assert "poolkeeper top:" in capsys.readouterr().err
    assert main(["top", "ftp://example.invalid/", "--once"]) == 2


def test_top_needs_the_token_of_a_protected_console(capsys: pytest.CaptureFixture[str]) -> None:
    token = "top-token-0123456789abcdef"
    with Pool("sqlite://:memory:", name="locked") as pool, \
            serve([pool], token=token, protect_reads=True) as handle:
        assert main(["top", handle.url, "--once"]) == 2
        assert "401" in capsys.readouterr().err
        assert main(["top", handle.url, "--once", "--token", token]) == 0
        assert "locked" in capsys.readouterr().out


# ----------------------------------------------------------------------------- console
def test_console_command_refuses_a_public_address_without_token(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["console", "--dsn", "sqlite://:memory:", "--host", "0.0.0.0",
                 "--seconds", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "$POOLKEEPER_CONSOLE_TOKEN" in err and "--token" in err  # the flags, not token=...
    assert "token=" not in err
    assert main(["console"]) == 2


def test_console_command_serves_a_pool_until_stopped(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "poolkeeper.cli", "console", "--dsn",
           f"sqlite:///{tmp_path / 'c.db'}", "--port", "0", "--name", "served",
           "--seconds", "20"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = proc.stdout.readline()
            assert "poolkeeper console for pool 'served'" in line, line
            url = line.split(" at ", 1)[1].split(";", 1)[0]
            with urllib.request.urlopen(url + "api/overview", timeout=10) as response:
                data = json.loads(response.read())
            assert [p["name"] for p in data["pools"]] == ["served"]
        finally:
            proc.terminate()
            proc.wait(30)


# ----------------------------------------------------------------------------- load
def test_load_puts_csv_and_jsonl_files_into_a_table(
        any_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    importlib.import_module("poolkeeper.loader")
    from ._db import count_rows, create_table, drop_table, unique_table

    table = unique_table("pkload")
    (tmp_path / "a.csv").write_text("id,v\n1,one\n2,two\n3,\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"id": 4, "v": "four"}\n{"id": 5, "v": null}\n',
                                      encoding="utf-8")
    with Pool(any_dsn, max_size=2, name="loadcheck") as pool:
        create_table(pool, table, "id INTEGER PRIMARY KEY, v VARCHAR(20)")
        try:
            assert main(["load", "--dsn", any_dsn, table, str(tmp_path / "a.csv")]) == 0
            assert main(["load", "--dsn", any_dsn, table, str(tmp_path / "b.jsonl")]) == 0
            assert count_rows(pool, table) == 5
            # the same rows again: refused by the primary key, written to the rejects file
            rejects = tmp_path / "rejects.txt"
            assert main(["load", "--dsn", any_dsn, table, str(tmp_path / "a.csv"),
                         "--rejects", str(rejects)]) == 1
            assert rejects.exists() and count_rows(pool, table) == 5
        finally:
            drop_table(pool, table)
    captured = capsys.readouterr()
    assert table in captured.out and "rows loaded" in captured.out
    assert "3 rows were rejected" in captured.err


def test_load_says_what_is_wrong_with_bad_input(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    importlib.import_module("poolkeeper.loader")
    dsn = f"sqlite:///{tmp_path / 'l.db'}"
    assert main(["load", "--dsn", dsn, "t", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert main(["load", "--dsn", dsn, "t", str(tmp_path / "x.csv"), "--budget", "lots"]) == 2
