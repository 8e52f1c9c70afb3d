"""The loader's parts that need no database: budget policy, codecs, spill files, options."""

from __future__ import annotations

import datetime as dt
import importlib
import random
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolkeeper import ConfigError, LoaderError, Pool
from poolkeeper.drivers.postgres import PostgresDriver
from poolkeeper.loader import Loader
from poolkeeper.loader.batch import Ledger, make_run_id
from poolkeeper.loader.budget import REGION_OVERHEAD, Budget, Region, record_cost
from poolkeeper.loader.codec import MysqlCodec, PostgresCodec, SqliteCodec, codec_by_name
from poolkeeper.loader.spill import SpillLog


# ---------------------------------------------------------------------------- budget
def _region(budget: Budget, table: str, seq: int, size: int) -> Region:
    region = Region(table, seq, None, now=float(seq))
    budget.add(region)
    if size:
        budget.grew(region, size)
    return region


def test_largest_region_is_exact_among_many() -> None:
    rnd = random.Random(7)
    budget = Budget(1 << 30)
    regions = [_region(budget, f"t{i}", i + 1, rnd.randrange(0, 100_000)) for i in range(2_000)]
    for _ in range(5_000):  # grow in small steps, as writes do
        r = rnd.choice(regions)
        budget.grew(r, rnd.randrange(1, 500))
    best = max(regions, key=lambda r: r.nbytes)
    assert budget.largest(()) is best


def test_largest_skips_busy_tables_and_sealed_regions() -> None:
    budget = Budget(1 << 30)
    a = _region(budget, "a", 1, 10_000)
    b = _region(budget, "b", 2, 5_000)
    _region(budget, "c", 3, 1_000)
    assert budget.largest(()) is a
    assert budget.largest({"a"}) is b
    budget.seal("a")
    assert budget.largest(()) is b
    # a new region for the sealed table starts small and is not confused with the old one
    a2 = _region(budget, "a", 4, 10)
    assert budget.largest({"b", "c"}) is a2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 50_000)), min_size=1, max_size=300))
def test_largest_matches_a_full_scan(ops: list[tuple[int, int]]) -> None:
    budget = Budget(1 << 40)
    seq = 0
    for table_no, grow in ops:
        table = f"t{table_no}"
        region = budget.regions.get(table)
        if region is None:
            seq += 1
            region = _region(budget, table, seq, 0)
        if grow == 0 and len(budget.regions) > 1:
            budget.seal(table)  # sealing happens at any point
            continue
        budget.grew(region, grow)
        best = budget.largest(())
        assert best is not None
        assert best.nbytes == max(r.nbytes for r in budget.regions.values())


def test_budget_counts_sealed_bytes_until_released() -> None:
    budget = Budget(100_000)
    r = _region(budget, "a", 1, 30_000)
    assert budget.used == 30_000 + REGION_OVERHEAD
    assert not budget.over_soft()
    budget.grew(r, 30_000)
    assert budget.over_soft() and not budget.over_hard()
    budget.seal("a")
    assert budget.buffered == 0 and budget.inflight == 60_000 + REGION_OVERHEAD
    budget.release(60_000 + REGION_OVERHEAD)
    assert budget.used == 0 and budget.peak == 60_000 + REGION_OVERHEAD


def test_record_cost_covers_bytearray_slack() -> None:
    data = bytearray()
    counted = 0
    for _ in range(10_000):
        data += b"x" * 37
        counted += record_cost(37)
    assert data.__sizeof__() <= counted + REGION_OVERHEAD


def test_aged_regions_come_oldest_first_and_skip_busy_tables() -> None:
    budget = Budget(1 << 20)
    for i, t in enumerate("abcd"):
        budget.add(Region(t, i + 1, None, now=float(i)))
    assert [r.table for r in budget.aged(2.0, {"b"})] == ["a", "c"]


# ---------------------------------------------------------------------------- codecs
_text = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), _text,
                          st.binary(max_size=40),
                          st.floats(allow_nan=False, allow_infinity=False)),
                min_size=1, max_size=8))
def test_sqlite_codec_round_trips_values(row: list[object]) -> None:
    # binary records: the spill log frames them by length, nothing needs escaping
    codec = SqliteCodec()
    buf = bytearray()
    codec.append(buf, row)
    assert codec.decode(bytes(buf)) == tuple(row)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), _text, st.binary(max_size=40)), min_size=1, max_size=8))
def test_mysql_codec_keeps_records_on_one_line(row: list[object]) -> None:
    codec = MysqlCodec()
    buf = bytearray()
    codec.append(buf, row)
    assert buf.endswith(b"\n") and buf.count(b"\n") == 1
    decoded = codec.decode(bytes(buf))
    for original, back in zip(row, decoded, strict=True):
        if isinstance(original, bytes):
            assert (back if isinstance(back, bytes) else back.encode()) == original
        else:
            assert back == original


def test_mysql_codec_sends_aware_datetimes_in_utc() -> None:
    buf = bytearray()
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
    MysqlCodec().append(buf, (dt.datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=tz),
                              Decimal("1E+2"), True))
    assert bytes(buf) == b"2024-03-01 06:30:00.123456\t100\t1\n"


def test_codecs_reject_unsupported_values_clearly() -> None:
    for codec in (SqliteCodec(), MysqlCodec()):
        with pytest.raises(TypeError, match="cannot load a value of type dict"):
            codec.append(bytearray(), ({"a": 1},))
    with pytest.raises(ValueError, match="cannot be stored by MariaDB"):
        MysqlCodec().append(bytearray(), (float("nan"),))


def test_postgres_codec_writes_copy_text() -> None:
    importlib.import_module("psycopg")
    driver = PostgresDriver({})  # the pool's adapter lends psycopg's formatter; no connection
    codec = PostgresCodec(driver)
    buf = bytearray()
    codec.append(buf, (1, "a\tb\nc\\", None, b"\x00\xff"))
    assert bytes(buf) == b"1\ta\\tb\\nc\\\\\t\\N\t\\\\x00ff\n"
    assert codec.decode(bytes(buf)) == ("1", "a\tb\nc\\", None, "\\x00ff")
    with pytest.raises(TypeError, match="cannot adapt"):
        codec.append(bytearray(), (object(),))
    assert codec_by_name(codec.name, driver).name == codec.name


# ---------------------------------------------------------------------------- spill log
def _hdr(seq: int, table: str) -> bytes:
    return SpillLog.header(seq, table, f"id{seq}", "sqlite-tagged", ("x",))


def test_spill_log_uses_one_file_for_any_number_of_tables(tmp_path: Path) -> None:
    log = SpillLog(str(tmp_path / "spill"), run_id="r1", segment_bytes=4096)
    try:
        for i in range(2_000):
            log.append(f"id{i}", i, b"i%d\n" % i, _hdr(i, f"table {i}"))
            assert log.open_files == 1
        assert log.stats()["spill_segments_created"] > 1  # rotated at 4 KiB
        for i in range(2_000):
            log.done(f"id{i}")
        # every closed segment was deleted once its batches were done; the active one stays
        assert len(list((tmp_path / "spill").glob("*.spill"))) == 1
    finally:
        log.close()
    assert not list((tmp_path / "spill").glob("*.spill"))


def test_spill_log_replays_unfinished_batches_across_segments(tmp_path: Path) -> None:
    log = SpillLog(str(tmp_path), run_id="r1", segment_bytes=64)
    log.append("id1", 1, b"a\n", _hdr(1, "t1"))
    log.append("id2", 2, b"b\n", _hdr(2, "t2"))
    for _ in range(10):
        log.append("id1", 1, b"aa\n")  # spans several segments
    log.done("id2")  # committed: not replayed
    log.close()
    with open(sorted(tmp_path.glob("*.spill"))[-1], "ab") as fh:
        fh.write(b"1:20\thalf a rec")  # the process died in the middle of this write
    again = SpillLog(str(tmp_path), run_id="r2")
    try:
        (found,) = again.replay(1 << 20)
        assert (found.table, found.batch_id, found.columns) == ("t1", "id1", ("x",))
        assert bytes(found.data) == b"a\n" + b"aa\n" * 10 and len(found.ends) == 11
        assert again.torn_bytes == len(b"1:20\thalf a rec")
        again.done("id1")
        assert not list(tmp_path.glob("*.spill"))
    finally:
        again.close()


def test_spill_replay_cuts_a_torn_tail_before_marking_a_replayed_batch_done(
        tmp_path: Path) -> None:
    # A SIGKILL in the middle of a write() leaves a torn last record. The replay marks each
    # replayed batch done with a D line appended to the segment; appended after the torn
    # bytes, the lines ran into the record's declared length, and a later sweep (the budget
    # holds about one batch) refused the segment as damaged (or, had a line ended exactly
    # there, read torn bytes and D lines as a row).
    log = SpillLog(str(tmp_path), run_id="r1")
    for seq in range(1, 7):
        for row in range(20):
            log.append(f"id{seq}", seq, b"%d-%02d" % (seq, row) + b"." * 200,
                       _hdr(seq, f"t{seq}") if row == 0 else None)
    log.close()
    (segment,) = tmp_path.glob("*.spill")
    with open(segment, "ab") as fh:
        fh.write(b"6:20\thalf a rec")  # the process died in the middle of this write
    again = SpillLog(str(tmp_path), run_id="r2")
    try:
        replayed = []
        for batch in again.replay(5_000):  # about one batch per sweep
            replayed.append((batch.batch_id, len(batch.ends)))
            again.done(batch.batch_id)  # committed: its D line goes into the segment
        assert replayed == [(f"id{seq}", 20) for seq in range(1, 7)]
        assert again.stats()["replay_sweeps"] == 6
        assert again.torn_bytes == len(b"6:20\thalf a rec")
        assert again.stats()["spill_batches_live"] == 0
    finally:
        again.close()


def test_spill_log_marks_done_batches_so_replay_skips_them(tmp_path: Path) -> None:
    # One segment (never rotated) shared by a committed batch and a live one: the segment
    # must stay, and its D line tells a replay that id1 is done.
    log = SpillLog(str(tmp_path), run_id="r1")
    log.append("id1", 1, b"one", _hdr(1, "t1"))
    log.append("id2", 2, b"two", _hdr(2, "t2"))
    log.done("id1")
    log.close()  # id2 is live: the segment stays, as after a kill
    again = SpillLog(str(tmp_path), run_id="r2")
    try:
        assert [b.batch_id for b in again.replay(1 << 20)] == ["id2"]
        again.done("id2")  # a replayed batch, forgotten by its batch id
        assert not list(tmp_path.glob("*.spill"))
        assert again.stats()["spill_batches_live"] == 0
    finally:
        again.close()


def test_spill_log_deletes_the_active_segment_once_nothing_in_it_is_live(
        tmp_path: Path) -> None:
    from poolkeeper.loader.spill import _TRIM_BYTES

    log = SpillLog(str(tmp_path), run_id="r1")
    try:
        record = b"x" * 1000
        for i in range(_TRIM_BYTES // 1000 + 1):
            log.append("id1", 1, record, _hdr(1, "t1") if i == 0 else None)
        log.done("id1")
        assert not list(tmp_path.glob("*.spill"))  # trimmed, not kept for a replay to read
        log.append("id2", 2, b"two", _hdr(2, "t2"))
        assert len(list(tmp_path.glob("*.spill"))) == 1
    finally:
        log.close()


def test_spill_replay_holds_at_most_the_budget(tmp_path: Path) -> None:
    # 40 batches of 50 rows of 100 bytes, interleaved row by row (as many tables are),
    # across many segments; replayed with a budget of a few batches.
    log = SpillLog(str(tmp_path), run_id="r1", segment_bytes=32 << 10)
    for row in range(50):
        for seq in range(1, 41):
            log.append(f"id{seq}", seq, b"%03d-%03d" % (seq, row) + b"." * 93,
                       _hdr(seq, f"t{seq}") if row == 0 else None)
    for seq in range(1, 41, 4):
        log.done(f"id{seq}")  # a quarter are committed
    log.close()
    budget = 6 * (50 * (100 + 12 + 8) + 512)  # about six batches
    again = SpillLog(str(tmp_path), run_id="r2")
    try:
        got = []
        for batch in again.replay(budget):
            assert bytes(batch.data[:7]) == b"%03d-000" % batch.seq
            assert len(batch.ends) == 50 and batch.ends[-1] == 5000
            got.append(batch.seq)
            again.done(batch.batch_id)
        assert got == [s for s in range(1, 41) if s % 4 != 1]
        stats = again.stats()
        assert stats["replay_sweeps"] >= 5
        assert 0 < stats["replay_peak_bytes"] <= budget
        assert not list(tmp_path.glob("*.spill"))
    finally:
        again.close()


def test_spill_directory_is_used_by_one_loader_at_a_time(tmp_path: Path) -> None:
    first = SpillLog(str(tmp_path), run_id="a")
    try:
        with pytest.raises(LoaderError, match="in use by another loader"):
            SpillLog(str(tmp_path), run_id="b")
    finally:
        first.close()
    SpillLog(str(tmp_path), run_id="c").close()


# ---------------------------------------------------------------------------- options
def test_invalid_options_name_the_option_and_range(tmp_path: Path) -> None:
    with Pool(f"sqlite:///{tmp_path / 'x.db'}") as pool:
        for kwargs, needle in (({"budget_bytes": 10}, "budget_bytes=10"),
                               ({"workers": 0}, "workers=0"),
                               ({"max_age_s": -1}, "max_age_s=-1"),
                               ({"label": "a:b"}, "label='a:b'"),
                               ({"batch_bytes": 1 << 40}, "batch_bytes="),
                               ({"columns": {"t": "abc"}}, "columns for table 't'")):
            with pytest.raises(ConfigError, match=needle):
                Loader(pool, **kwargs)


def test_ledger_table_name_must_be_plain() -> None:
    with pytest.raises(ValueError, match="plain identifier"):
        Ledger("postgresql", "x; DROP TABLE y")


def test_run_ids_sort_by_time_and_do_not_repeat() -> None:
    ids = {make_run_id() for _ in range(1_000)}
    assert len(ids) == 1_000
