"""Row plans (loader/rowplan.py) write exactly the bytes of the generic formatters.

No database needed: each planned formatter is compared with its codec's generic formatter on
values of every planned type, edge values included, and on rows the plan must hand back to
the generic formatter (NULLs, other types, text needing escapes, non-finite numbers, other
time zones, another width).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from poolkeeper.drivers.postgres import PostgresDriver
from poolkeeper.loader.codec import Codec, MysqlCodec, PostgresCodec, SqliteCodec

pytest.importorskip("psycopg")


def _pg_codec() -> PostgresCodec:
    """The codec as a PostgreSQL pool's loader makes it, from the pool's adapter (no
    connection is opened)."""
    return PostgresCodec(PostgresDriver({}))

UTC = dt.UTC

INTS = [0, 1, -1, 7, 2**31, -(2**63), 2**63 - 1, 10**30, -(10**40)]
TEXTS = ["", "a", "customer-00001 ünïcode", "日本語", "emoji 🎉", "quote ' \" `", "percent %d %s",
         "x" * 5000, "tab\tin", "new\nline", "cr\rhere", "back\\slash", "nul\x00", "bell\x07",
         "nbsp\xa0", "\u2028sep", "form\x0cfeed", "vt\x0b"]
FLOATS = [0.0, -0.0, 0.25, -1.5, 1e16, 1e-7, 123456789.123, 1.7976931348623157e308, 5e-324,
          float("inf"), float("-inf"), float("nan"), 1 / 3]
DECIMALS = [Decimal("0"), Decimal("0.00"), Decimal("-0"), Decimal("12.34"), Decimal("1E+2"),
            Decimal("1E-7"), Decimal("0.000001"), Decimal("-123456789012345678901234.5"),
            Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("5E+30")]
DATETIMES = [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, 3, 4, 5, 6),
             dt.datetime(1, 1, 1), dt.datetime(999, 12, 31, 23, 59, 59, 999999),
             dt.datetime(9999, 12, 31, 23, 59, 59), dt.datetime(2024, 2, 29, 12, 0, 0, 500000)]
AWARE = ([d.replace(tzinfo=UTC) for d in DATETIMES[1:-1]]
         + [dt.datetime(2024, 6, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
            dt.datetime(2024, 6, 1, 12, tzinfo=ZoneInfo("Europe/Paris")),
            dt.datetime(2024, 6, 1, 12, tzinfo=ZoneInfo("UTC"))])


class IntSub(int):
    pass


class StrSub(str):
    pass


OTHERS: list[Any] = [None, True, False, IntSub(5), StrSub("s"), b"bytes\x00\t", dt.date(2024, 1, 2),
                     dt.time(1, 2, 3)]


def _codecs() -> list[Codec]:
    return [_pg_codec(), MysqlCodec()]


def _bytes_of(formatter: Callable[..., None], ctx: Any,
              row: Sequence[Any]) -> bytes | type[BaseException]:
    """What a formatter writes for a row, or the type of what it raises."""
    out = bytearray()
    try:
        formatter(row, ctx, out)
    except Exception as exc:  # noqa: BLE001 - compared by type
        return type(exc)
    return bytes(out)


def _generic_bytes(codec: Codec, row: Sequence[Any]) -> bytes | type[BaseException]:
    fmt, ctx = codec.formatter()
    return _bytes_of(fmt, ctx, row)


def _check_same(codec: Codec, first: Sequence[Any], rows: list[Sequence[Any]]) -> None:
    planned = codec.row_formatter(first)
    ctx = codec.formatter()[1]
    for row in rows:
        assert _bytes_of(planned, ctx, row) == _generic_bytes(codec, row), (codec.name, row)


@pytest.mark.parametrize("codec", _codecs(), ids=lambda c: c.name)
def test_a_plan_is_made_for_the_common_types(codec: Codec) -> None:
    first = (1, "a", 0.5, Decimal("1.5"), dt.datetime(2024, 1, 1, tzinfo=UTC),
             dt.datetime(2024, 1, 1))
    assert codec.row_formatter(first) is not codec.formatter()[0]


@pytest.mark.parametrize("codec", _codecs(), ids=lambda c: c.name)
@pytest.mark.parametrize("values", [INTS, TEXTS, FLOATS, DECIMALS, DATETIMES, AWARE, OTHERS],
                         ids=["int", "text", "float", "decimal", "naive", "aware", "others"])
def test_every_value_gives_the_generic_bytes(codec: Codec, values: list[Any]) -> None:
    """Each value in each position of plans made for each planned type."""
    firsts = [(1, "a"), ("a", 1), (0.5, Decimal("1")), (dt.datetime(2024, 1, 1), 2),
              (dt.datetime(2024, 1, 1, tzinfo=UTC), "b")]
    for first in firsts:
        rows: list[Sequence[Any]] = []
        for v in values:
            rows += [(v, first[1]), (first[0], v), [v, first[1]], (v,), (first[0], first[1], v)]
        _check_same(codec, first, rows)


@pytest.mark.parametrize("codec", _codecs(), ids=lambda c: c.name)
def test_random_rows_give_the_generic_bytes(codec: Codec) -> None:
    rnd = random.Random(7)
    pools: list[list[Any]] = [INTS, TEXTS, FLOATS, DECIMALS, DATETIMES, AWARE, OTHERS]
    for _ in range(200):
        width = rnd.randint(1, 8)
        kinds = [rnd.choice(pools) for _ in range(width)]
        first: tuple[Any, ...] = tuple(rnd.choice(k) for k in kinds)
        rows: list[Sequence[Any]] = [
            tuple(rnd.choice(k) if rnd.random() < 0.9 else rnd.choice(rnd.choice(pools))
                  for k in kinds) for _ in range(20)]
        _check_same(codec, first, rows)


def test_random_text_and_numbers_give_the_generic_bytes() -> None:
    rnd = random.Random(11)
    alphabet = "ab \t\n\r\\\x00\x08\x0b\x0c%üé日\U0001f389\xa0'\""
    rows: list[Sequence[Any]] = []
    for _ in range(2000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12)))
        number = rnd.uniform(-1e20, 1e20) * 10 ** rnd.randint(-30, 30)
        dec = Decimal(rnd.randint(-10**12, 10**12)).scaleb(rnd.randint(-12, 12))
        when = dt.datetime(2000, 1, 1, tzinfo=UTC) + dt.timedelta(
            microseconds=rnd.randint(0, 10**16))
        rows.append((rnd.randint(-10**20, 10**20), text, number, dec, when))
    for codec in _codecs():
        _check_same(codec, rows[0], rows)


def test_no_plan_when_a_type_has_no_recipe() -> None:
    for codec in _codecs():
        generic = codec.formatter()[0]
        assert codec.row_formatter((None, 1)) is generic
        assert codec.row_formatter((True,)) is generic
        assert codec.row_formatter(()) is generic
        assert codec.row_formatter(tuple(range(100))) is generic
    # SQLite records are marshal-ed values: no plans there.
    sqlite = SqliteCodec()
    assert sqlite.row_formatter((1, "a")) == sqlite.formatter()[0]


def test_plans_are_shared_by_type_signature() -> None:
    codec = _pg_codec()
    assert codec.row_formatter((1, "a")) is codec.row_formatter((2, "b"))
    assert codec.row_formatter((1, "a")) is not codec.row_formatter(("a", 1))


def test_past_the_plan_bound_tables_get_the_generic_formatter_and_are_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from poolkeeper.loader import rowplan

    monkeypatch.setattr(rowplan, "_plans", {})
    monkeypatch.setattr(rowplan, "_MAX_PLANS", 2)
    monkeypatch.setattr(rowplan, "_refused", 0)
    codec = MysqlCodec()
    generic = codec.formatter()[0]
    signatures = [(1,), ("a",), (0.5,), (1, "a")]
    got = [codec.row_formatter(row) for row in signatures]
    assert [f is generic for f in got] == [False, False, True, True]
    assert codec.row_formatter((7,)) is got[0]  # a known signature still gets its plan
    assert rowplan.plan_stats() == {"row_plans": 2, "row_plans_max": 2, "row_plans_refused": 2}
    out = bytearray()
    got[3]((1, "a"), None, out)  # the generic formatter, same bytes as ever
    assert bytes(out) == _generic_bytes(codec, (1, "a"))
