"""Row codecs: one record of bytes per row, in the format the target database reads fastest.

A row is encoded once, in ``write()``, and never again: the buffer, the spill log, the
temporary file of ``LOAD DATA`` and the ``COPY`` stream all carry the same bytes, so the memory a
region uses is exactly the bytes it holds, and a spilled batch is replayed without re-encoding.

Records are framed by their end offsets (and, in the spill log, by a length prefix); the
PostgreSQL and MariaDB ones are also lines, as ``COPY`` and ``LOAD DATA`` read them.

- ``postgresql``: ``COPY ... FROM STDIN`` text format, produced by psycopg's own (C) formatter,
  which the pool's adapter lends (``driver.copy_text_format()``, drivers/postgres_copy.py).
- ``mysql``: ``LOAD DATA`` default format (tab-separated, backslash escapes, ``\\N`` for NULL);
  timezone-aware datetimes are converted to UTC (MariaDB/MySQL DATETIME has no zone).
- ``sqlite``: the values themselves, ``marshal``-ed, for ``executemany``; decimals and dates
  are stored as ISO text (what SQLite itself can hold).

Example::

    codec = codec_for(pool.driver)   # pool on sqlite: a SqliteCodec
    buf = bytearray()
    codec.append(buf, (1, "a\\tb", None))
    assert codec.decode(bytes(buf)) == (1, "a\\tb", None)
"""

from __future__ import annotations

import datetime as _dt
import marshal
import math
import re
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from .rowplan import MYSQL_RECIPES, POSTGRES_RECIPES, plan_formatter

__all__ = ["Codec", "MysqlCodec", "PostgresCodec", "SqliteCodec", "codec_by_name", "codec_for"]

_UTC = _dt.UTC


class Codec:
    """Encodes rows into records (one line each) and decodes them back (for rejects)."""

    #: stored in spill log headers: a spilled batch is replayed only by the same codec
    name = "base"

    def append(self, out: bytearray, row: Sequence[Any]) -> None:
        """Append one record for ``row`` to ``out``; raise TypeError/ValueError on bad input.

        On error ``out`` may hold a partial record: the caller truncates it.
        """
        raise NotImplementedError

    def decode(self, record: bytes) -> tuple[Any, ...]:
        """The field values of one record (with or without its trailing newline)."""
        raise NotImplementedError

    def formatter(self) -> tuple[Callable[[Sequence[Any], Any, bytearray], None], Any]:
        """``(fn, ctx)`` with ``fn(row, ctx, out)`` appending a record: the loader's hot path
        calls it directly. Errors may be of any type (the caller reports them as bad input).
        """
        def fmt(row: Sequence[Any], ctx: Any, out: bytearray) -> None:
            self.append(out, row)

        return fmt, None

    def row_formatter(self, row: Sequence[Any]) -> Callable[[Sequence[Any], Any, bytearray], None]:
        """A formatter for a table whose rows are typed like ``row`` (same signature and
        context as :meth:`formatter`'s, and the same bytes; maybe faster for such rows)."""
        return self.formatter()[0]


def _fields(record: bytes) -> list[bytes]:
    if record.endswith(b"\n"):
        record = record[:-1]
    return record.split(b"\t")


# ---------------------------------------------------------------------------- PostgreSQL
_PG_UNESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_PG_UNMAP = {b"b": b"\b", b"t": b"\t", b"n": b"\n", b"v": b"\v", b"f": b"\f", b"r": b"\r"}


def _pg_unescape(m: re.Match[bytes]) -> bytes:
    ch = m.group(1)
    return _PG_UNMAP.get(ch, ch)


class PostgresCodec(Codec):
    """``COPY`` text format through psycopg's formatter (its C version when installed).

    ``driver`` is the pool's PostgreSQL adapter (``pool.driver``): the formatter and its
    dumpers are psycopg's, lent by its ``copy_text_format()``, so that only drivers/
    imports psycopg.
    """

    name = "pg-copy-text"

    def __init__(self, driver: Any) -> None:
        fmt = driver.copy_text_format()
        self._format: Callable[[Sequence[Any], Any, bytearray], None] = fmt.format_row
        self._tx = fmt.context
        # The plans reproduce psycopg's own dumpers' text; a dumper registered by the
        # application (psycopg.adapters is global) would write something else, so then
        # nothing is planned.
        self._plannable: bool = fmt.builtin_dumpers

    def formatter(self) -> tuple[Callable[[Sequence[Any], Any, bytearray], None], Any]:
        return self._format, self._tx

    def row_formatter(self, row: Sequence[Any]) -> Callable[[Sequence[Any], Any, bytearray], None]:
        if not self._plannable:
            return self._format
        return plan_formatter(POSTGRES_RECIPES, row, self._format)

    def append(self, out: bytearray, row: Sequence[Any]) -> None:
        try:
            self._format(row, self._tx, out)
        except Exception as exc:
            # psycopg says "cannot adapt type 'X'" / "NUL bytes": report it as bad input.
            raise TypeError(str(exc).splitlines()[0] if str(exc) else repr(exc)) from exc

    def decode(self, record: bytes) -> tuple[Any, ...]:
        return tuple(None if f == rb"\N" else _PG_UNESCAPE.sub(_pg_unescape, f).decode(
            "utf-8", "replace") for f in _fields(record))


# ---------------------------------------------------------------------------- MariaDB/MySQL
_MY_NEEDS = re.compile(rb"[\\\t\n\r\x00]")
_MY_MAP = {b"\\": b"\\\\", b"\t": b"\\t", b"\n": b"\\n", b"\r": b"\\r", b"\x00": b"\\0"}
_MY_UNESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_MY_UNMAP = {b"0": b"\x00", b"b": b"\b", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"Z": b"\x1a"}


def _my_sub(m: re.Match[bytes]) -> bytes:
    return _MY_MAP[m.group(0)]


def _my_unescape(m: re.Match[bytes]) -> bytes:
    ch = m.group(1)
    return _MY_UNMAP.get(ch, ch)


def _my_bytes(v: bytes) -> bytes:
    return _MY_NEEDS.sub(_my_sub, v) if _MY_NEEDS.search(v) else v


def _my_str(v: str) -> bytes:
    if v.isprintable() and "\\" not in v:  # the common case: nothing to escape
        return v.encode("utf-8")
    b = v.encode("utf-8")
    return _MY_NEEDS.sub(_my_sub, b) if _MY_NEEDS.search(b) else b


def _my_float(v: float) -> bytes:
    if not math.isfinite(v):
        raise ValueError(f"float {v!r} cannot be stored by MariaDB/MySQL")
    return repr(v).encode()


def _my_decimal(v: Decimal) -> bytes:
    text = str(v)
    if "E" in text or not v.is_finite():  # exponent notation, NaN, Infinity
        if not v.is_finite():
            raise ValueError(f"Decimal {v!r} cannot be stored by MariaDB/MySQL")
        text = format(v, "f")
    return text.encode()


def _my_datetime(v: _dt.datetime) -> bytes:
    # Formatted by hand: isoformat() of an aware datetime, and replace(tzinfo=None), are
    # several times slower, and this is per value on the hot path.
    if v.tzinfo is not None:
        v = v.astimezone(_UTC)
    us = v.microsecond
    if us:
        return b"%04d-%02d-%02d %02d:%02d:%02d.%06d" % (v.year, v.month, v.day, v.hour,
                                                        v.minute, v.second, us)
    return b"%04d-%02d-%02d %02d:%02d:%02d" % (v.year, v.month, v.day, v.hour, v.minute,
                                               v.second)


def _iso(v: _dt.date | _dt.time) -> bytes:
    return v.isoformat().encode()


def _my_bool(v: bool) -> bytes:
    return b"1" if v else b"0"


def _my_int(v: int) -> bytes:
    return b"%d" % v


def _my_uuid(v: uuid.UUID) -> bytes:
    return str(v).encode()


_MY_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    str: _my_str, int: _my_int, float: _my_float, bool: _my_bool, bytes: _my_bytes,
    bytearray: lambda v: _my_bytes(bytes(v)), memoryview: lambda v: _my_bytes(bytes(v)),
    Decimal: _my_decimal, _dt.datetime: _my_datetime, _dt.date: _iso, _dt.time: _iso,
    uuid.UUID: _my_uuid,
}


def _lookup(encoders: dict[type, Callable[[Any], bytes]], value: Any) -> Callable[[Any], bytes]:
    for cls in type(value).__mro__:
        enc = encoders.get(cls)
        if enc is not None:
            return enc
    raise TypeError(f"cannot load a value of type {type(value).__name__}; supported: "
                    f"{', '.join(sorted(t.__name__ for t in encoders))} and None")


def _my_format_row(row: Sequence[Any], _ctx: Any, out: bytearray) -> None:
    """The generic ``LOAD DATA`` record of one row (any supported types)."""
    encoders = _MY_ENCODERS
    first = True
    for v in row:
        if not first:
            out += b"\t"
        first = False
        if v is None:
            out += b"\\N"
            continue
        enc = encoders.get(v.__class__)
        if enc is None:
            enc = _lookup(encoders, v)
        out += enc(v)
    out += b"\n"


class MysqlCodec(Codec):
    """``LOAD DATA`` format: tab-separated, backslash-escaped, ``\\N`` for NULL."""

    name = "mysql-tsv"

    def append(self, out: bytearray, row: Sequence[Any]) -> None:
        _my_format_row(row, None, out)

    def formatter(self) -> tuple[Callable[[Sequence[Any], Any, bytearray], None], Any]:
        return _my_format_row, None

    def row_formatter(self, row: Sequence[Any]) -> Callable[[Sequence[Any], Any, bytearray], None]:
        return plan_formatter(MYSQL_RECIPES, row, _my_format_row)

    def decode(self, record: bytes) -> tuple[Any, ...]:
        """Fields as str (valid UTF-8) or bytes, None for NULL."""
        out: list[Any] = []
        for f in _fields(record):
            if f == b"\\N":
                out.append(None)
                continue
            raw = _MY_UNESCAPE.sub(_my_unescape, f) if b"\\" in f else f
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(raw)
        return tuple(out)


# ---------------------------------------------------------------------------- SQLite
#: values sqlite3 binds as they are (bool binds as an integer)
_SQ_NATIVE = frozenset({type(None), int, float, str, bytes, bool})


def _sq_value(v: Any) -> Any:
    if v is None or v.__class__ in _SQ_NATIVE:
        return v
    if isinstance(v, bytearray | memoryview):
        return bytes(v)
    if isinstance(v, Decimal | uuid.UUID):
        return str(v)
    if isinstance(v, _dt.datetime):
        return v.isoformat(" ")
    if isinstance(v, _dt.date | _dt.time):
        return v.isoformat()
    if isinstance(v, bool | int | float | str | bytes):  # subclasses
        return v
    raise TypeError(f"cannot load a value of type {type(v).__name__}; supported: bool, bytes, "
                    "bytearray, date, datetime, Decimal, float, int, memoryview, str, time, "
                    "UUID and None")


class SqliteCodec(Codec):
    """The row's values themselves (``marshal``: C speed, exact types) for ``executemany``.

    SQLite has no decimal or date types: decimals, dates, times and UUIDs are stored as
    their ISO / str text, as sqlite3's own adapters used to. Records are binary (the spill
    log frames them by length).
    """

    name = "sqlite-marshal"

    def append(self, out: bytearray, row: Sequence[Any]) -> None:
        self._fmt(row, None, out)

    def formatter(self) -> tuple[Callable[[Sequence[Any], Any, bytearray], None], Any]:
        return self._fmt, None

    def _fmt(self, row: Sequence[Any], _ctx: Any, out: bytearray) -> None:
        if _SQ_NATIVE.issuperset(map(type, row)):
            out += marshal.dumps(row if row.__class__ is tuple else tuple(row), 4)
        else:
            out += marshal.dumps(tuple([_sq_value(v) for v in row]), 4)

    def decode(self, record: bytes) -> tuple[Any, ...]:
        value = marshal.loads(record)
        if not isinstance(value, tuple):
            raise ValueError("a sqlite record must hold a tuple")
        return value


def codec_for(driver: Any) -> Codec:
    """The codec of a pool's driver adapter (``pool.driver``; its ``name`` is "postgresql",
    "mysql" or "sqlite")."""
    name = driver.name
    if name == "postgresql":
        return PostgresCodec(driver)
    if name == "mysql":
        return MysqlCodec()
    if name == "sqlite":
        return SqliteCodec()
    raise ValueError(f"the loader supports the postgresql, mysql and sqlite drivers, "
                     f"not {name!r}")


def codec_by_name(name: str, driver: Any) -> Codec:
    """The codec that wrote a spilled batch (its header names it), for a pool's driver
    adapter (``pool.driver``: the PostgreSQL codec formats with it)."""
    if name == PostgresCodec.name:
        return PostgresCodec(driver)
    for cls in (MysqlCodec, SqliteCodec):
        if cls.name == name:
            return cls()
    raise ValueError(f"unknown row codec {name!r} (spill log written by a newer poolkeeper?)")
