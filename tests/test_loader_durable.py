"""Durable mode: a loader killed with SIGKILL loses nothing it acknowledged, loads nothing
twice, and the next loader on its spill directory finishes the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from poolkeeper import LoaderError, Pool
from poolkeeper.loader import Loader

from .test_loader_support import count, create, drop, ids, unique

_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from poolkeeper import Pool
    from poolkeeper.loader import Loader

    dsn, table, spill, mode = sys.argv[1:5]

    def say(line):
        # one write per line: threads printing at once must not interleave words
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()

    def die_after_commit(t, batch_id, rows):
        # on_flushed runs after COMMIT and before the batch's spilled rows are forgotten
        say("committed " + batch_id)
        os.kill(os.getpid(), signal.SIGKILL)

    with Pool(dsn, max_size=3) as pool:
        loader = Loader(pool, spill_dir=spill, batch_rows=300, max_age_s=0.05,
                        columns={table: ("id", "v")},
                        on_flushed=die_after_commit if mode == "commit" else None)
        say("ready")
        deadline = time.monotonic() + 60
        i = 0
        while time.monotonic() < deadline:
            loader.write(table, (i, "row %d" % i))
            if i % 25 == 0:
                say("ack %d" % i)   # write() returned for rows 0..i
                time.sleep(0.002)
            i += 1
""")


def _spawn(dsn: str, table: str, spill: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _CHILD, dsn, table, str(spill), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read_until(proc: subprocess.Popen[str], predicate: object, timeout: float) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if callable(predicate) and predicate(lines):
            break
    return lines


def test_sigkill_then_resume_loads_every_acknowledged_row_once(any_dsn: str,
                                                              tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    with Pool(any_dsn, max_size=3) as pool:
        table = unique("durable")
        create(pool, table, "id INTEGER NOT NULL, v TEXT")
        try:
            proc = _spawn(any_dsn, table, spill, "run")
            acked = -1
            committed_before_kill = 0
            try:
                # Kill once rows are acknowledged AND some batches are committed, so the
                # kill lands in the middle of real work.
                def enough(lines: list[str]) -> bool:
                    return sum(1 for x in lines if x.startswith("ack")) >= 120

                lines = _read_until(proc, enough, 60)
                committed_before_kill = count(pool, table)
                os.kill(proc.pid, signal.SIGKILL)
                rest, err = proc.communicate(timeout=30)
                lines += rest.splitlines()
                acks = [int(x.split()[1]) for x in lines if x.startswith("ack")]
                assert acks, err
                acked = max(acks)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            assert proc.returncode == -signal.SIGKILL
            leftovers = list(spill.glob("*.spill"))
            assert leftovers, "nothing left to replay: the kill came too late to test anything"

            with Loader(pool, spill_dir=spill, columns={table: ("id", "v")}) as loader:
                stats = loader.stats()
            assert stats["replayed_batches"] + stats["replay_skipped_batches"] >= 1
            got = ids(pool, table)
            assert len(got) == len(set(got)), "a row was loaded twice"
            assert got == list(range(len(got))), "a gap: an acknowledged row was lost"
            assert len(got) >= acked + 1 and len(got) >= committed_before_kill
            assert not list(spill.glob("*.spill"))
        finally:
            drop(pool, table)


def test_a_batch_committed_just_before_the_kill_is_skipped_on_replay(
        any_dsn: str, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    with Pool(any_dsn, max_size=3) as pool:
        table = unique("durable")
        create(pool, table, "id INTEGER NOT NULL, v TEXT")
        try:
            proc = _spawn(any_dsn, table, spill, "commit")
            try:
                lines = _read_until(proc, lambda ls: any(x.startswith("committed") for x in ls),
                                    60)
                rest, _err = proc.communicate(timeout=30)  # it killed itself after a commit
                lines += rest.splitlines()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            assert proc.returncode == -signal.SIGKILL
            committed = [x.split()[1] for x in lines if x.startswith("committed")]
            assert committed, lines
            in_db = count(pool, table)
            assert in_db > 0
            # its spill file is still there: the process died before deleting it
            assert len(list(spill.glob("*.spill"))) >= 1

            replayed: list[str] = []
            with Loader(pool, spill_dir=spill, columns={table: ("id", "v")},
                        on_flushed=lambda t, b, n: replayed.append(b)) as loader:
                stats = loader.stats()
            assert stats["replay_skipped_batches"] == 1  # the ledger knew it was committed
            # on_flushed hears of it again (the producer may not have heard the first time)
            assert replayed.count(committed[0]) == 1
            got = ids(pool, table)
            assert len(got) == len(set(got)) and got == list(range(len(got)))
        finally:
            drop(pool, table)


def test_rows_of_a_failed_batch_stay_in_the_spill_file_for_the_next_run(
        sqlite_dsn: str, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    with Pool(sqlite_dsn, max_size=2) as pool:
        table = unique("later")
        loader = Loader(pool, spill_dir=spill, columns={table: ("id",)})
        for i in range(100):
            loader.write(table, (i,))
        with pytest.raises(LoaderError, match="stay in the spill log"):
            loader.close()  # the table does not exist yet
        assert list(spill.glob("*.spill"))
        create(pool, table, "id INTEGER PRIMARY KEY")
        with Loader(pool, spill_dir=spill) as again:
            assert again.stats()["replayed_rows"] == 100
        assert count(pool, table) == 100
        drop(pool, table)


def test_abort_in_durable_mode_keeps_rows_for_the_next_run(sqlite_dsn: str,
                                                          tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    with Pool(sqlite_dsn, max_size=2) as pool:
        table = unique()
        create(pool, table, "id INTEGER PRIMARY KEY")
        loader = Loader(pool, spill_dir=spill, max_age_s=None, columns={table: ("id",)})
        for i in range(50):
            loader.write(table, (i,))
        assert loader.abort() == 50
        assert count(pool, table) == 0
        with Loader(pool, spill_dir=spill):
            pass
        assert count(pool, table) == 50
        drop(pool, table)


def test_durable_write_is_on_disk_before_it_returns(sqlite_dsn: str, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    with Pool(sqlite_dsn, max_size=2) as pool:
        table = unique()
        create(pool, table, "id INTEGER PRIMARY KEY, v TEXT")
        with Loader(pool, spill_dir=spill, max_age_s=None,
                    columns={table: ("id", "v")}) as loader:
            loader.write(table, (1, "first"))
            (path,) = spill.glob("*.spill")
            assert b"first" in path.read_bytes()
            loader.write(table, (2, "second"))
            assert b"second" in path.read_bytes()
        assert not list(spill.glob("*.spill"))
        assert count(pool, table) == 2
        drop(pool, table)


_HEAVY_CHILD = textwrap.dedent("""
    import sys, time
    from poolkeeper import Pool
    from poolkeeper.loader import Loader

    dsn, table, spill, budget = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    pad = "x" * 200
    with Pool(dsn, max_size=3) as pool:
        loader = Loader(pool, spill_dir=spill, budget_bytes=budget, max_age_s=0.05,
                        columns={table: ("id", "v")})
        sys.stdout.write("workers %d\\n" % loader.stats()["workers"])
        sys.stdout.flush()
        deadline = time.monotonic() + 60
        i = 0
        while time.monotonic() < deadline:
            loader.write(table, (i, pad + str(i)))
            if i % 1000 == 0:
                sys.stdout.write("ack %d\\n" % i)   # write() returned for rows 0..i
                sys.stdout.flush()
            i += 1
""")


def _spill_bytes(spill: Path) -> int:
    return sum(p.stat().st_size for p in spill.glob("*.spill"))


def test_replay_after_sigkill_skips_committed_batches_and_stays_under_the_budget(
        any_dsn: str, tmp_path: Path) -> None:
    """The killed run's committed batches are not attempted again (at most the ones in
    flight at the kill), and replay holds no more than the budget. About 4 s per backend."""
    import tracemalloc

    budget = 2 << 20
    spill = tmp_path / "spill"
    with Pool(any_dsn, max_size=3) as pool:
        table = unique("replay")
        create(pool, table, "id INTEGER NOT NULL, v TEXT")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _HEAVY_CHILD, any_dsn, table, str(spill), str(budget)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                # Kill once the log holds several budgets' worth of rows, committed or not.
                lines = _read_until(proc, lambda ls: len(ls) % 20 == 0 and spill.exists()
                                    and _spill_bytes(spill) >= 3 * budget
                                    and count(pool, table) > 0, 60)
                os.kill(proc.pid, signal.SIGKILL)
                rest, err = proc.communicate(timeout=30)
                lines += rest.splitlines()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            workers = int(lines[0].split()[1])
            acked = max(int(x.split()[1]) for x in lines if x.startswith("ack"))
            log_bytes = _spill_bytes(spill)
            assert log_bytes >= 3 * budget, (log_bytes, err)

            tracemalloc.start()
            try:
                with Loader(pool, spill_dir=spill, budget_bytes=budget,
                            columns={table: ("id", "v")}) as loader:
                    _size, peak = tracemalloc.get_traced_memory()
                    stats = loader.stats()
            finally:
                tracemalloc.stop()
            print(f"\nreplay ({pool.driver.name}): spill log {log_bytes} bytes, "
                  f"{stats['replay_skipped_batches']} committed batches re-attempted, "
                  f"{stats['replayed_batches']} replayed, tracemalloc peak {peak} bytes "
                  f"(budget {budget})")
            # a committed batch is re-attempted only if the kill came between its COMMIT
            # and its mark in the log: at most one per worker of the killed run
            assert stats["replay_skipped_batches"] <= workers
            assert peak <= budget + (1 << 20), f"replay peaked at {peak} bytes"
            got = ids(pool, table)
            assert len(got) == len(set(got)), "a row was loaded twice"
            assert got == list(range(len(got))) and len(got) >= acked + 1
            assert not list(spill.glob("*.spill"))
        finally:
            drop(pool, table)


# --------------------------------------------------------------------------- spill segments
def _write_batch(log: object, seq: int, batch_id: str, rows: int, size: int = 100) -> None:
    from poolkeeper.loader.spill import SpillLog

    assert isinstance(log, SpillLog)
    header = SpillLog.header(seq, "t", batch_id, "csv", ("id", "v"))
    for i in range(rows):
        log.append(batch_id, seq, b"%d,%s" % (i, b"x" * size), header if i == 0 else None)


def test_replay_takes_a_spill_whose_done_batch_lost_its_header_segment(tmp_path: Path) -> None:
    """Batch 1 starts in segment 1 and continues in segment 2; once it is done, segment 1 (with
    nothing else live) is deleted and segment 2 keeps its rows followed by its D line. A
    replay after a kill must skip those rows, not refuse the spill (found by the
    starrocks_segments soak)."""
    from poolkeeper.loader.spill import SpillLog

    spill = str(tmp_path / "spill")
    log = SpillLog(spill, run_id="run-a", segment_bytes=4096)
    _write_batch(log, 1, "b1", 60)  # ~6 KB: spans segments 1 and 2
    _write_batch(log, 2, "b2", 10)  # in segment 2, never committed
    log.done("b1")
    assert log.segments_removed == 1  # segment 1: only batch 1 lived there
    log.close()  # what a kill leaves: the files as they are

    again = SpillLog(spill, run_id="run-b", segment_bytes=4096)
    try:
        replayed = list(again.replay(1 << 20))
    finally:
        again.close()
    assert [(b.batch_id, len(b.ends)) for b in replayed] == [("b2", 10)]


def test_a_kill_while_marking_a_batch_done_leaves_a_spill_replay_takes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """done() writes the D lines before it deletes a segment: killed in between, the spill
    still has the header of every batch whose rows are left (it is then replayed, and the
    ledger skips it), never rows without a header and without a D line."""
    from poolkeeper.loader.spill import SpillLog

    class Killed(BaseException):
        pass

    spill = str(tmp_path / "spill")
    log = SpillLog(spill, run_id="run-a", segment_bytes=4096)
    _write_batch(log, 1, "b1", 60)
    _write_batch(log, 2, "b2", 10)

    def killed(*_args: object) -> None:
        raise Killed

    monkeypatch.setattr(log, "_write_mark", killed)
    with pytest.raises(Killed):
        log.done("b1")
    monkeypatch.undo()
    log.close()

    again = SpillLog(spill, run_id="run-b", segment_bytes=4096)
    try:
        replayed = list(again.replay(1 << 20))
    finally:
        again.close()
    assert [(b.batch_id, len(b.ends)) for b in replayed] == [("b1", 60), ("b2", 10)]


def test_rows_with_no_header_and_no_done_mark_are_refused(tmp_path: Path) -> None:
    from poolkeeper.loader.spill import SpillLog

    spill = tmp_path / "spill"
    log = SpillLog(str(spill), run_id="run-a", segment_bytes=4096)
    _write_batch(log, 1, "b1", 60)
    log.close()
    first = sorted(spill.glob("*.spill"))[0]
    first.unlink()  # deleted by hand
    again = SpillLog(str(spill), run_id="run-b", segment_bytes=4096)
    try:
        with pytest.raises(LoaderError, match=r"header is missing and that is not marked done"):
            list(again.replay(1 << 20))
    finally:
        again.close()
