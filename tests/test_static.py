"""Static checks run as part of the suite: mypy --strict and ruff, on the package and tests.

The dependency rules (layers, driver packages, `import poolkeeper` on the standard library alone,
import cycles) are checked on the parsed import graph in tests/test_architecture.py.
"""

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
