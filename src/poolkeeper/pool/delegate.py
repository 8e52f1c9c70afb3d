"""Proxy classes that expose the driver object's attributes without ``__getattr__``.

A proxy must be transparent: ``cur.lastrowid``, ``conn.info``, ``cur.copy(...)`` reach the
driver's object. ``__getattr__`` does that in one line, but on CPython 3.11 a class that
defines it loses the specialised attribute access for *every* attribute, its own included:
each ``self._co`` in the proxy's methods goes through ``slot_tp_getattr_hook`` (two type
lookups and a generic lookup, ~280 instructions instead of ~20). On a pooled ``SELECT 1`` that
was 5.4k of the cursor layer's 14.4k instructions (callgrind, sqlite, cursor + execute +
fetchone + close).

So the pool builds, once per (proxy class, driver class), a subclass whose class dictionary
holds a property for every attribute of the driver's object that the proxy does not define
itself; the property reads or writes the driver object's attribute, as ``__getattr__`` did.
The names come from ``dir()`` of the first driver object seen, so instance attributes (PyMySQL
keeps its cursor's ``lastrowid`` and ``rownumber`` on the instance) are included.

The subclasses add no slots, so a proxy can still switch class (to its returned or closed
state) by assigning ``__class__``. Their number is bounded (:data:`MAX_CLASSES`); past the bound
a proxy gets the slower ``__getattr__`` subclass (:func:`generic_class`), and the refusals
are counted in :func:`stats`.
"""

from __future__ import annotations

import threading
import types
from typing import Any, TypeVar

__all__ = ["MAX_CLASSES", "delegating_class", "generic_class", "is_method", "stats", "table"]

T = TypeVar("T")

#: how many (proxy class, driver class) pairs get a subclass of their own
MAX_CLASSES = 256

_tables: dict[type, dict[type, type]] = {}  # proxy class -> driver class -> subclass
_count = 0
_generic: dict[type, type] = {}
_lock = threading.Lock()
_refused = 0


def table(base: type) -> dict[type, type]:
    """``base``'s subclasses by driver class, for a lookup without a Python call::

        cls = CURSORS.get(raw.__class__) or delegating_class(CursorProxy, raw)
    """
    found = _tables.get(base)
    if found is None:
        with _lock:
            found = _tables.setdefault(base, {})
    return found


def delegating_class(base: type[T], raw: Any) -> type[T]:
    """The subclass of ``base`` that exposes ``raw``'s attributes (built on first use).

    ``base`` keeps its own attributes; every other non-dunder name of ``raw`` becomes a
    property reading (and writing) ``self.raw.<name>`` (``raw``: the driver object, a property
    every proxy base defines).
    """
    classes = table(base)
    cls = classes.get(raw.__class__)  # lock-free hit: one C dict lookup
    if cls is not None:
        return cls
    global _count, _refused
    with _lock:
        cls = classes.get(raw.__class__)
        if cls is not None:
            return cls
        if _count >= MAX_CLASSES:
            _refused += 1
            return generic_class(base)
        cls = classes[raw.__class__] = _build(base, raw)
        _count += 1
        return cls


def generic_class(base: type[T]) -> type[T]:
    """``base`` with a ``__getattr__`` that forwards to ``self.raw`` (the bounded fallback)."""
    cls = _generic.get(base)
    if cls is None:
        watch = hasattr(base, "_driver_call")

        def __getattr__(self: Any, name: str) -> Any:
            raw = self.raw
            if watch and not name.startswith("_") and is_method(raw, name):
                return _watching_call(self, getattr(raw, name), name)
            return getattr(raw, name)

        cls = _generic[base] = type(base.__name__, (base,), {
            "__slots__": (), "__getattr__": __getattr__, "__module__": base.__module__,
            "__qualname__": base.__qualname__, "__doc__": base.__doc__})
    return cls


def stats() -> dict[str, int]:
    """How many delegating classes exist, their bound, and the pairs refused one."""
    return {"classes": _count, "classes_max": MAX_CLASSES, "refused": _refused}


def _build(base: type[T], raw: Any) -> type[T]:
    try:
        names = dir(raw)
    except Exception:  # noqa: BLE001 - an object that cannot list itself: its type's names
        names = dir(raw.__class__)
    namespace: dict[str, Any] = {
        "__slots__": (), "__module__": base.__module__, "__qualname__": base.__qualname__,
        "__doc__": base.__doc__}
    # A base with a ``_driver_call(method, args, kwargs)`` watches the driver's methods: each
    # public method of the driver's class becomes a property giving a callable that goes
    # through it (so a proxy sees an exception escape any driver call: cur.scroll(),
    # cur.copy(), cur.nextset(), conn.query(), ...). Everything else is forwarded plainly.
    watch = hasattr(base, "_driver_call")
    for name in names:
        if name.startswith("__") or hasattr(base, name):
            continue
        if watch and not name.startswith("_") and is_method(raw, name):
            namespace[name] = _watched(name)
        else:
            namespace[name] = _forwarding(name)
    return type(base.__name__, (base,), namespace)


_METHOD_TYPES = (types.FunctionType, types.MethodDescriptorType, types.BuiltinFunctionType,
                 types.WrapperDescriptorType, classmethod, staticmethod)


def is_method(raw: Any, name: str) -> bool:
    """Whether ``name`` is a method of ``raw``'s class (not a property, not instance data)."""
    for klass in type(raw).__mro__:
        if name in klass.__dict__:
            return isinstance(klass.__dict__[name], _METHOD_TYPES)
    return False


def _watching_call(proxy: Any, method: Any, name: str) -> Any:
    """``method`` (the driver's, bound) called through ``proxy._driver_call``."""
    driver_call = proxy._driver_call

    def call(*args: Any, **kwargs: Any) -> Any:
        return driver_call(method, args, kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = method.__doc__
    return call


def _watched(name: str) -> property:
    def get(self: Any) -> Any:
        return _watching_call(self, getattr(self.raw, name), name)

    def set_(self: Any, value: Any) -> None:
        setattr(self.raw, name, value)

    def delete(self: Any) -> None:
        delattr(self.raw, name)

    return property(get, set_, delete, f"The driver object's ``{name}()``, watched.")


def _forwarding(name: str) -> property:
    def get(self: Any) -> Any:
        return getattr(self.raw, name)

    def set_(self: Any, value: Any) -> None:
        setattr(self.raw, name, value)

    def delete(self: Any) -> None:
        delattr(self.raw, name)

    return property(get, set_, delete, f"The driver object's ``{name}``.")
