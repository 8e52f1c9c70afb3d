"""Static checks run as part of the suite: mypy --strict and ruff, on the package and tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(f"{name} is not installed next to {sys.executable}: pip install -e '.[dev]'")
    return path


def test_mypy_strict_is_clean() -> None:
    result = subprocess.run([_tool("mypy"), "--strict"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_is_clean() -> None:
    result = subprocess.run([_tool("ruff"), "check", "src", "tests", "benchmarks"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_api_is_listed_in_all() -> None:
    import poolkeeper

    exported = set(poolkeeper.__all__)
    public = {n for n in vars(poolkeeper) if not n.startswith("_")
              and not isinstance(getattr(poolkeeper, n), type(poolkeeper))}
    assert public <= exported | {"annotations"}, sorted(public - exported)
    for name in exported:
        assert hasattr(poolkeeper, name), name


def test_core_imports_only_the_standard_library() -> None:
    code = ("import sys, poolkeeper; "
            "bad = [m for m in ('psycopg', 'pymysql', 'prometheus_client', 'rich') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_package_obeys_the_dependency_rules() -> None:
    forbidden = {
        "core": ("drivers", "pool", "proxy", "console", "loader", "cli"),
        "drivers": ("pool", "proxy", "console", "loader", "cli"),
    }
    for package, banned in forbidden.items():
        for path in (ROOT / "src" / "poolkeeper" / package).rglob("*.py"):
            text = path.read_text()
            for name in banned:
                assert f"from ..{name}" not in text and f"poolkeeper.{name}" not in text, (
                    f"{path.relative_to(ROOT)} imports {name}")
