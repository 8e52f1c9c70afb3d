"""The loader's buffer with no database, no thread and no file: regions, budget, what next."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolkeeper import LoaderError
from poolkeeper.loader import FlushReason, LoaderOptions
from poolkeeper.loader.batch import Batch
from poolkeeper.loader.budget import REGION_OVERHEAD, record_cost
from poolkeeper.loader.buffer import Buffer
from poolkeeper.loader.codec import MysqlCodec, SqliteCodec


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _buffer(sealed: list[Batch] | None = None, *, workers: int = 1, clock: _Clock | None = None,
            **options: Any) -> Buffer:
    options.setdefault("max_age_s", None)
    out = sealed if sealed is not None else []
    return Buffer(LoaderOptions(**options), MysqlCodec(), name="t", run_id="run",
                  workers=workers, on_sealed=out.append, clock=clock or _Clock())


def _write(buffer: Buffer, table: str, row: Any) -> None:
    region, start, _new = buffer.append(table, row)
    buffer.accept(region, start)


def test_a_table_reaching_batch_rows_is_sealed_into_one_batch() -> None:
    sealed: list[Batch] = []
    buffer = _buffer(sealed, batch_rows=3)
    for i in range(3):
        _write(buffer, "t", (i, "x"))
    assert [b.rows for b in sealed] == [3]
    assert sealed[0].reason == FlushReason.ROWS and buffer.flushes["rows"] == 1
    assert sealed[0].batch_id == "pk:run:t:1"
    assert bytes(sealed[0].data) == b"0\tx\n1\tx\n2\tx\n"
    assert "t" not in buffer.budget.regions and buffer.rows_written == 3


def test_a_table_reaching_batch_bytes_is_sealed() -> None:
    sealed: list[Batch] = []
    buffer = _buffer(sealed, batch_bytes=REGION_OVERHEAD + 3 * record_cost(6))
    for i in range(3):
        _write(buffer, "t", ("abcde",))
        assert len(sealed) == (1 if i == 2 else 0)
    assert sealed[0].reason == FlushReason.SIZE


def test_each_tables_batches_are_handed_out_in_write_order() -> None:
    buffer = _buffer(workers=4)
    _write(buffer, "a", (1,))
    buffer.seal("a", FlushReason.EXPLICIT)
    _write(buffer, "a", (2,))
    buffer.seal("a", FlushReason.EXPLICIT)
    _write(buffer, "b", (3,))
    buffer.seal("b", FlushReason.EXPLICIT)
    first = buffer.next_batch()
    assert first is not None and first.seq == 1
    other = buffer.next_batch()  # a's second batch waits for its first: b's goes ahead
    assert other is not None and other.table == "b"
    assert buffer.next_batch() is None
    assert buffer.finish(first) is True  # a's next batch can start now
    second = buffer.next_batch()
    assert second is not None and second.seq == 2
    assert buffer.finish(second) is False and buffer.finish(other) is False
    assert buffer.budget.used == 0 and buffer.oldest_outstanding() == float("inf")


def test_above_the_soft_limit_the_largest_region_is_sealed() -> None:
    sealed: list[Batch] = []
    buffer = _buffer(sealed, budget_bytes=16384, batch_bytes=16384)  # soft limit 8192
    _write(buffer, "small", ("x" * 100,))
    while not sealed:
        _write(buffer, "big", ("y" * 500,))
    assert [b.table for b in sealed] == ["big"] and sealed[0].reason == FlushReason.SIZE
    assert buffer.soft_limit_seals == 1
    # its bytes stay counted until the batch is done
    assert buffer.budget.inflight == sealed[0].nbytes
    # with as many batches queued as workers, nothing more is sealed: it would only wait
    while buffer.budget.buffered < 6000:
        _write(buffer, "small", ("x" * 500,))
    assert len(sealed) == 1


def test_the_hard_limit_counts_a_new_tables_region() -> None:
    # no worker and one batch as large as the budget: nothing is sealed before the limit
    buffer = _buffer(budget_bytes=4096, batch_bytes=4096, workers=0)
    _write(buffer, "t", ("z" * 20,))
    while not buffer.needs_room("new"):
        _write(buffer, "t", ("z" * 20,))
    assert buffer.budget.used + REGION_OVERHEAD >= buffer.budget.hard
    assert not buffer.needs_room("t")  # a row of a buffering table still fits
    while not buffer.needs_room("t"):
        _write(buffer, "t", ("z" * 20,))
    # the row that reaches the limit is admitted: over by at most that row
    assert buffer.budget.hard <= buffer.budget.used < buffer.budget.hard + record_cost(21)


def test_a_row_that_cannot_be_encoded_leaves_nothing_behind() -> None:
    buffer = _buffer(columns={"d": ("a", "b")})
    for table, row, error in (("t", {"a": 1}, None), ("w", 5, TypeError),
                              ("d", {"a": 1}, ValueError), ("d", {"a": 1, "b": 2, "c": 3},
                                                            ValueError),
                              ("e", ({"nested": 1},), TypeError), ("", (1,), ValueError)):
        if error is None:
            _write(buffer, table, row)
            continue
        with pytest.raises(error):
            _write(buffer, table, row)
    assert list(buffer.budget.regions) == ["t"]
    assert buffer.outstanding == {buffer.budget.regions["t"].seq}
    _write(buffer, "u", (1,))
    with pytest.raises(ValueError, match="has 2 values, earlier rows had 1"):
        _write(buffer, "u", (1, 2))
    with pytest.raises(TypeError, match="received tuple rows first"):
        _write(buffer, "u", {"a": 1})


def test_take_back_undoes_an_append() -> None:
    buffer = _buffer()
    _write(buffer, "t", (1,))
    before = (bytes(buffer.budget.regions["t"].data), buffer.budget.used)
    region, start, new = buffer.append("t", (2,))
    buffer.take_back(region, start, new)
    assert (bytes(region.data), buffer.budget.used, region.rows) == (*before, 1)
    region, start, new = buffer.append("fresh", (3,))
    buffer.take_back(region, start, new)
    assert "fresh" not in buffer.budget.regions and region.seq not in buffer.outstanding


def test_regions_older_than_max_age_are_sealed_oldest_first() -> None:
    clock = _Clock()
    sealed: list[Batch] = []
    buffer = _buffer(sealed, clock=clock, max_age_s=5.0)
    _write(buffer, "a", (1,))
    clock.now += 2
    _write(buffer, "b", (2,))
    assert buffer.seal_aged() == pytest.approx(3.0)  # a is due 5 s after its first row
    clock.now += 3.5
    assert buffer.seal_aged() == pytest.approx(1.5)
    assert [b.table for b in sealed] == ["a"] and sealed[0].reason == FlushReason.AGE
    assert _buffer(max_age_s=None).seal_aged() is None


def test_dict_rows_name_the_columns_and_declare_comes_before_rows() -> None:
    buffer = _buffer()
    _write(buffer, "t", {"b": 2, "a": 1})
    assert buffer.budget.regions["t"].columns == ("b", "a")
    _write(buffer, "t", (3, 4))
    buffer.declare("u", ["x", "y"])
    _write(buffer, "u", {"y": 1, "x": 2})
    assert bytes(buffer.budget.regions["u"].data) == b"2\t1\n"
    with pytest.raises(LoaderError, match="already has buffered rows"):
        buffer.declare("t", ["a", "b"])


def test_flushing_one_table_waits_for_all_its_batches() -> None:
    buffer = _buffer(workers=2)
    _write(buffer, "t", (1,))
    buffer.seal("t", FlushReason.EXPLICIT)
    loading = buffer.next_batch()
    assert loading is not None
    _write(buffer, "t", (2,))
    buffer.seal("t", FlushReason.EXPLICIT)
    _write(buffer, "t", (3,))
    _write(buffer, "other", (4,))
    assert buffer.seal_table("t", FlushReason.EXPLICIT) == {1, 2, 3}
    assert "other" in buffer.budget.regions and buffer.flushes["explicit"] == 3


def test_abort_and_leftovers_free_every_byte() -> None:
    buffer = _buffer(workers=2)
    for table in "abc":
        _write(buffer, table, (1,))
        _write(buffer, table, (2,))
    buffer.seal("a", FlushReason.EXPLICIT)
    assert buffer.rows_held() == 6
    assert buffer.drop_all() == 6
    assert buffer.budget.used == 0 and not buffer.outstanding

    buffer = _buffer(workers=2)
    _write(buffer, "a", (1,))
    buffer.seal("a", FlushReason.EXPLICIT)
    _write(buffer, "b", (2,))
    left = buffer.take_leftovers()
    assert [(b.table, b.reason) for b in left] == [("a", "explicit"), ("b", "close")]
    for batch in left:
        buffer.discard(batch)
    assert buffer.budget.used == 0 and not buffer.outstanding and not buffer.pending


def test_no_credit_for_the_fast_path_when_durable_or_not_accepting() -> None:
    buffer = _buffer()
    _write(buffer, "t", (1,))
    assert buffer.credit > 0
    buffer.stop_accepting()
    assert buffer.credit == 0
    buffer.refill_credit()
    assert buffer.credit == 0
    durable = Buffer(LoaderOptions(), SqliteCodec(), name="d", run_id="r", workers=1,
                     on_sealed=lambda batch: None, durable=True)
    _write(durable, "t", (1,))
    assert durable.credit == 0
    assert durable.make_fast_append()("t", (2,)) is False


def test_long_table_names_keep_batch_ids_within_255_characters() -> None:
    buffer = _buffer()
    batch_id = buffer.batch_id("x" * 255, 12)
    assert len(batch_id) <= 255 and batch_id.endswith(":12")
    assert batch_id != buffer.batch_id("x" * 254 + "y", 12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 30), st.booleans()),
                max_size=400),
       st.integers(4096, 20_000), st.integers(1, 3))
def test_the_fast_path_buffers_exactly_what_the_general_path_does(
        ops: list[tuple[str, int, bool]], budget_bytes: int, workers: int) -> None:
    """Same rows, one buffer through the fast path where it applies, one never: the same
    bytes, batches, seals and counts (the fast path is an inlined copy of append+accept)."""
    fast_sealed: list[Batch] = []
    slow_sealed: list[Batch] = []
    fast = _buffer(fast_sealed, budget_bytes=budget_bytes, workers=workers, batch_rows=7)
    slow = _buffer(slow_sealed, budget_bytes=budget_bytes, workers=workers, batch_rows=7)
    fast_append = fast.make_fast_append()
    rnd = random.Random(len(ops))
    for table, width, finish in ops:
        row = ("v" * width, rnd.randrange(1000))
        if not fast_append(table, row):
            _write(fast, table, row)
        _write(slow, table, row)
        if finish:  # a worker takes a batch and finishes it, in both
            for buffer in (fast, slow):
                batch = buffer.next_batch()
                if batch is not None:
                    buffer.finish(batch)
                    buffer.seal_largest()
    assert [(b.table, b.rows, bytes(b.data), b.nbytes, b.reason) for b in fast_sealed] == \
        [(b.table, b.rows, bytes(b.data), b.nbytes, b.reason) for b in slow_sealed]
    assert {t: (bytes(r.data), r.nbytes) for t, r in fast.budget.regions.items()} == \
        {t: (bytes(r.data), r.nbytes) for t, r in slow.budget.regions.items()}
    assert (fast.budget.used, fast.rows_written, fast.soft_limit_seals) == \
        (slow.budget.used, slow.rows_written, slow.soft_limit_seals)
