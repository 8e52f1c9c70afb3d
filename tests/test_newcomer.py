"""A newcomer's first hour: the README's example, --help, --version, doctor, demo, console.

What a person meets first has to run as written and speak in their terms: the public
incidents by name (not the project's internal numbering), the command line's flags (not
Python keywords), and figures that mean what they show. About 10 s in all.
"""

from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from poolkeeper import Pool, PoolConfig, __version__
from poolkeeper.cli import build_parser, main
from poolkeeper.cli.diagnosis import INCIDENTS, diagnose
from poolkeeper.cli.doctor import format_report
from poolkeeper.console import serve

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TOKEN = "newcomer-token-0123456789"
GB = 1024**3
#: how the project once numbered the incidents, and what it called its notes about them
_INTERNAL = re.compile(r"\bseeds?\b|\bseed-\d|field notes?\b|field reports?\b", re.IGNORECASE)


def _first_example() -> str:
    text = README.read_text(encoding="utf-8")
    use = text.index("\n## Use\n")
    start = text.index("```python\n", use) + len("```python\n")
    return text[start:text.index("```", start)]


def test_the_readmes_first_example_runs_against_the_server_it_names(pg_dsn: str) -> None:
    code = _first_example()
    named = re.search(r'Pool\("([^"]+)"', code)
    assert named is not None
    # As written; only a different server given to the tests (POOLKEEPER_TEST_PG) replaces it.
    code = code.replace(named.group(1), pg_dsn)
    scope: dict[str, object] = {}
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(code, str(README), "exec"), scope)
    assert scope["rows"] == [(1,)]
    assert "requests_num" in out.getvalue()
    pool = scope["pool"]
    assert isinstance(pool, Pool) and pool.closed


def test_the_readme_names_no_internal_numbering_and_no_layout_twice() -> None:
    text = README.read_text(encoding="utf-8")
    assert not _INTERNAL.search(text), _INTERNAL.search(text)
    layout = text[text.index("## Layout"):]
    layout = layout[:layout.index("```", layout.index("```") + 3)]
    lines = [line.split()[0] for line in layout.splitlines() if line.startswith("  ")]
    assert len(lines) == len(set(lines)), lines


def test_the_options_table_writes_numbers_as_toml_takes_them() -> None:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## Options"):text.index("## Statistics")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert rows
    for row in rows:
        default = row.split("|")[2]
        assert not re.search(r"\d\s*(s|ms|MiB|KiB|MB)\b", default.split("(")[0]), row
    assert "default (s, bytes)" in table


def test_version_and_help_are_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"poolkeeper {__version__}"
    helps = [build_parser().format_help()]
    for command in ("demo", "doctor", "console", "top", "load"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps.append(capsys.readouterr().out)
    for text in helps:
        assert "``" not in text and ":class:" not in text and ":func:" not in text, text
        assert not _INTERNAL.search(text)
    assert "--version" in helps[0] and "poolkeeper demo --console" in helps[0]


def _churn(dsn: str) -> PoolConfig:
    return PoolConfig(dsn=dsn, max_size=40, min_idle=1, max_lifetime=10, idle_timeout=2,
                      keepalive_interval=5,
                      fail_fast=False)


def test_doctor_names_incidents_and_talks_about_mysql_only_for_mysql(tmp_path: Path) -> None:
    sqlite_report = diagnose(_churn(f"sqlite:///{tmp_path / 'x.db'}"), memory_limit=4 * GB)
    text = format_report(sqlite_report)
    assert "MySQL" not in text
    assert "BoneCP's idle churn" in text and "cold page cache" in text
    assert not _INTERNAL.search(text), text
    mysql_text = format_report(diagnose(_churn("mysql://root@127.0.0.1/db"),
                                        memory_limit=4 * GB))
    assert "the MySQL driver BoneCP used" in mysql_text
    assert {f.incident for f in sqlite_report.findings} <= {"", *INCIDENTS}


def test_doctor_json_and_rich_output_name_no_internal_numbering(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pool.toml"
    path.write_text('[pool]\ndsn = "sqlite:///x.db"\nmax_lifetime = 10\nidle_timeout = 2\n'
                    "max_size = 40\nstats_max_bytes = 2147483648\nmonitor = true\n"
                    "query_timeout = 7200\n", encoding="utf-8")
    assert main(["doctor", str(path), "--memory-limit", "4GB"]) == 1
    out = capsys.readouterr().out
    assert not _INTERNAL.search(out), out
    assert "Druid's SQL statistics" in out and "Connector/J's cancelled timer tasks" in out
    assert main(["doctor", str(path), "--json", "--memory-limit", "4GB"]) == 1
    raw = capsys.readouterr().out
    assert not _INTERNAL.search(raw)
    findings = json.loads(raw)["findings"]
    assert {"bonecp", "druid", "connector-j", "dble"} <= {f["incident"] for f in findings}


def test_cli_connect_errors_advise_the_flag_and_hide_the_password(
        capsys: pytest.CaptureFixture[str]) -> None:
    dsn = "postgresql://postgres:hunter2@127.0.0.1:1/test"  # nothing listens on port 1
    for argv in (["console", "--dsn", dsn, "--seconds", "0"],
                 ["demo", "--dsn", dsn, "--operations", "1"],
                 ["load", "--dsn", dsn, "t", str(README)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "--dsn" in err and "server is up" in err, err
        assert "fail_fast" not in err and "hunter2" not in err, err


def test_a_reset_with_the_token_in_the_address_is_refused(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, name="shop") as pool, serve([pool], token=TOKEN) as handle:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        before = pool.stats()["requests_num"]
        request = urllib.request.Request(f"{handle.url}api/reset?token={TOKEN}", data=b"",
                                         method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 400
        error = json.loads(info.value.read().decode())["error"]
        assert "form field 'token'" in error and "Authorization: Bearer" in error
        assert pool.stats()["requests_num"] == before  # nothing was reset
        body = urllib.parse.urlencode({"token": TOKEN}).encode()
        with urllib.request.urlopen(urllib.request.Request(
                f"{handle.url}api/reset", data=body, method="POST"), timeout=10) as response:
            assert response.status == 200
        assert pool.stats()["requests_num"] == 0


def test_the_demo_says_what_is_not_counted_and_what_to_try_next(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--operations", "120", "--threads", "2", "--no-faults"]) == 0
    out = capsys.readouterr().out
    caches = out[out.index("caches"):out.index("memory ledger")]
    # sqlite3 keeps no counters for its statement cache; the pool's mirror of it does
    # (issue #14 item 2), so the demo shows them
    assert "stmt_cache_hits" in caches and "not counted" not in caches
    assert "stmt_cache_budget_bytes" in caches
    steps = out[out.index("next steps:"):]
    for command in ("poolkeeper demo --console", "poolkeeper demo --dsn postgresql://",
                    "poolkeeper doctor"):
        assert command in steps
