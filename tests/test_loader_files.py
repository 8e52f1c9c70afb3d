"""load_files(): CSV and JSON-lines files into a table (what `poolkeeper load` runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poolkeeper import Pool
from poolkeeper.loader import load_files

from .test_loader_support import create, drop, unique


def test_csv_files_load_with_progress_and_nulls(any_dsn: str, tmp_path: Path) -> None:
    first = tmp_path / "a.csv"
    first.write_text('id,name,note\n1,alice,"multi\nline, with comma"\n2,bob,\n', encoding="utf-8")
    second = tmp_path / "b.csv"
    second.write_text("id,name,note\n" + "".join(f"{i},n{i},x\n" for i in range(3, 1003)),
                      encoding="utf-8")
    seen: list[tuple[int, int, int]] = []
    with Pool(any_dsn, max_size=2) as pool:
        table = unique()
        create(pool, table, "id INTEGER PRIMARY KEY, name TEXT, note TEXT")
        try:
            summary = load_files(pool, table, [first, second],
                                 progress=lambda d, t, r: seen.append((d, t, r)))
            assert summary.rows_read == 1002 and summary.rows_loaded == 1002
            assert summary.rows_rejected == 0 and summary.files == 2
            total = first.stat().st_size + second.stat().st_size
            assert seen[-1] == (total, total, 1002)
            assert [d for d, _t, _r in seen] == sorted(d for d, _t, _r in seen)
            with pool.connection() as conn:
                rows = conn.execute(f"SELECT id, name, note FROM {table} WHERE id < 3 "
                                    "ORDER BY id").fetchall()
            assert [tuple(r) for r in rows] == [(1, "alice", "multi\nline, with comma"),
                                                (2, "bob", None)]
        finally:
            drop(pool, table)


def test_jsonl_loads_objects_and_reports_bad_rows(pg_dsn: str, tmp_path: Path) -> None:
    src = tmp_path / "events.jsonl"
    lines = [{"id": 1, "kind": "a", "meta": {"x": 1}}, {"id": 2, "kind": None, "meta": [1, 2]},
             {"id": "oops", "kind": "b", "meta": None}, {"id": 4, "kind": "c", "meta": None}]
    src.write_text("".join(json.dumps(x) + "\n" for x in lines) + "\n", encoding="utf-8")
    rejects = tmp_path / "rejects.jsonl"
    with Pool(pg_dsn, max_size=2) as pool:
        table = unique()
        create(pool, table, "id int PRIMARY KEY, kind text, meta jsonb")
        try:
            summary = load_files(pool, table, [src], fmt="jsonl", rejects_path=rejects)
            assert (summary.rows_read, summary.rows_loaded, summary.rows_rejected) == (4, 3, 1)
            bad = json.loads(rejects.read_text())
            assert bad["row"][0] == "oops" and "integer" in bad["error"]
            with pool.connection() as conn:
                got = conn.execute(f"SELECT id, kind, meta FROM {table} ORDER BY id").fetchall()
            assert [tuple(r) for r in got] == [(1, "a", {"x": 1}), (2, None, [1, 2]),
                                               (4, "c", None)]
        finally:
            drop(pool, table)


def test_malformed_input_names_the_file_and_line(sqlite_dsn: str, tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"id": 1}\n{"id": 2}\nnot json\n', encoding="utf-8")
    csv_src = tmp_path / "bad.csv"
    csv_src.write_text("id,v\n1,a\n2\n", encoding="utf-8")
    with Pool(sqlite_dsn, max_size=2) as pool:
        table = unique()
        create(pool, table, "id INTEGER PRIMARY KEY, v TEXT")
        with pytest.raises(ValueError, match=r"bad.jsonl, line 3: invalid JSON.*2 rows before"):
            load_files(pool, table, [src], fmt="jsonl")
        with pytest.raises(ValueError, match=r"bad.csv, line 3: 1 fields where the header has 2"):
            load_files(pool, unique(), [csv_src])
        with pytest.raises(ValueError, match="fmt='xml'"):
            load_files(pool, table, [src], fmt="xml")
        with pytest.raises(ValueError, match="cannot read"):
            load_files(pool, table, [tmp_path / "missing.csv"])
        drop(pool, table)
