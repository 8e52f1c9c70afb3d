"""Delegating proxy classes: transparent like __getattr__, bounded, and class-switchable."""

from __future__ import annotations

from typing import Any

import pytest

from poolkeeper.pool import delegate


class _Base:
    __slots__ = ("_raw",)
    _raw: Any

    @property
    def raw(self) -> Any:  # what every proxy base defines: the driver object
        return self._raw

    def own(self) -> str:
        return "proxy's own"


class _Inert(_Base):
    __slots__ = ()


class _Driver:
    level = "class attribute"

    def __init__(self) -> None:
        self.lastrowid = 7  # an instance attribute, as PyMySQL's cursors keep theirs

    def own(self) -> str:
        return "driver's own"

    def callproc(self, name: str) -> str:
        return f"called {name}"


def _proxy(raw: Any) -> Any:
    proxy = object.__new__(delegate.delegating_class(_Base, raw))
    proxy._raw = raw
    return proxy


def test_attributes_methods_and_writes_reach_the_driver_object() -> None:
    raw = _Driver()
    proxy = _proxy(raw)
    assert proxy.lastrowid == 7 and proxy.level == "class attribute"
    assert proxy.callproc("p") == "called p"
    assert proxy.own() == "proxy's own"  # the proxy's own methods win
    proxy.lastrowid = 9
    assert raw.lastrowid == 9
    with pytest.raises(AttributeError):
        proxy.no_such_attribute  # noqa: B018 - the driver has none either
    assert isinstance(proxy, _Base) and type(proxy).__name__ == "_Base"


def test_one_class_per_proxy_and_driver_class_and_it_can_switch_class() -> None:
    a, b = _proxy(_Driver()), _proxy(_Driver())
    assert type(a) is type(b)
    a.__class__ = _Inert  # the returned / closed state: no slots added, so allowed
    assert a.own() == "proxy's own"


def test_past_the_bound_the_generic_class_is_used_and_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delegate, "MAX_CLASSES", delegate.stats()["classes"])
    refused = delegate.stats()["refused"]

    class _Other:
        value = 3

    proxy = _proxy(_Other())
    assert proxy.value == 3  # still transparent, through __getattr__
    assert type(proxy) is delegate.generic_class(_Base)
    assert delegate.stats()["refused"] == refused + 1
