"""Which twin a pool takes: the lock-free paths only where the GIL is on (core/runtime.py)."""

from __future__ import annotations

import sys

import pytest

from poolkeeper import Pool
from poolkeeper.core.bag import Bag, LockFreeBag
from poolkeeper.core.runtime import ASSUME_NO_GIL_ENV, gil_enabled


def test_gil_enabled_follows_the_interpreter_and_the_override(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ASSUME_NO_GIL_ENV, raising=False)
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    assert gil_enabled() is (True if is_enabled is None else bool(is_enabled()))
    monkeypatch.setenv(ASSUME_NO_GIL_ENV, "1")
    assert gil_enabled() is False
    monkeypatch.setenv(ASSUME_NO_GIL_ENV, "0")
    assert gil_enabled() is (True if is_enabled is None else bool(is_enabled()))


def test_without_the_gil_a_pool_takes_the_locked_twin_and_no_lease(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ASSUME_NO_GIL_ENV, "1")
    with Pool("sqlite://:memory:", min_idle=0) as pool:
        assert pool.lock_free is False
        assert type(pool._bag) is Bag and pool._bag.lease_s == 0.0
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchall() == [(1,)]
    with Pool("sqlite://:memory:", min_idle=0, lease_ms=3) as pool:  # asked for: kept
        assert type(pool._bag) is Bag and pool._bag.lease_s == pytest.approx(0.003)


def test_with_the_gil_a_pool_takes_the_lock_free_twin_and_a_2_ms_lease(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ASSUME_NO_GIL_ENV, raising=False)
    if not gil_enabled():
        pytest.fail("this interpreter runs without the GIL: the suite's figures assume it")
    with Pool("sqlite://:memory:", min_idle=0) as pool:
        assert pool.lock_free is True
        assert type(pool._bag) is LockFreeBag and pool._bag.lease_s == pytest.approx(0.002)
    with Pool("sqlite://:memory:", min_idle=0, lease_ms=0) as pool:
        assert pool._bag.lease_s == 0.0
