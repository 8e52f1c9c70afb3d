"""The fingerprinter's work grows linearly with the text, whatever the text (issue #15 item 7).

Work is counted, not timed: the Python line events the scanner executes (``sys.settrace``) for
a text of n and of 10n characters. Linear work gives a ratio of about 10 (less, with the fixed
cost of a statement); the quadratic and cubic paths this replaced gave 100 and 1,000. Time per
character for 1k / 10k / 100k characters is in ``benchmarks/bench_fingerprint.py``, which
reuses :data:`FAMILIES` from here.

The whole module runs in about 10 s.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from poolkeeper import Pool, QueryTimeout
from poolkeeper.sql.fingerprint import DIALECTS, fingerprint

from ._db import sleep_sql

#: adversarial family -> the unit repeated to build ``select 1 <run> 1``: runs of every
#: operator character, pairs that open or close comments, every quote and comment opener,
#: placeholders and group openers
FAMILIES: dict[str, str] = {
    **{f"op {ch}": ch for ch in "+-*/<>=~!^&|@#%"},
    "+-": "+-", "*/": "*/", "/*": "/*", "--": "--", "-- (spaced)": "-- ", "<+": "<+",
    "=-": "=-", "+--": "+--", "*/*": "*/*", "'": "'", "''": "''", '"': '"', "`": "`",
    "$$": "$$", "$a$": "$a$", "E'": "E'", "\\'": "\\'", "(": "(", "[": "[", ")": ")",
    "%(": "%(", "%(x)": "%(x)", ":": ":", "::": "::", "?": "?", "$": "$", "@": "@a",
    "IN (": "IN (", "VALUES (": "VALUES (", "ARRAY[": "ARRAY[", "(1),": "(1),", "1,": "1,",
    "x.": "x.", "- 1": "- 1",
}


#: nested groups, closed: opener -> closer (folding compares a group's tokens on close)
NESTED: dict[str, str] = {"IN (": ")", "VALUES (": ")", "ARRAY[": "]", "(": ")",
                          "/* ": "*/ ", "IN ((1), ": ")"}


def nested(opener: str, closer: str, size: int) -> str:
    """``select 1 <opener * k> 1 <closer * k>``, about ``size`` characters long."""
    k = max(1, size // (len(opener) + len(closer)))
    return "select 1 " + opener * k + "1" + closer * k


def adversarial(unit: str, size: int) -> str:
    """``select 1 <unit repeated> 1``, about ``size`` characters long."""
    return "select 1 " + unit * max(1, size // len(unit)) + " 1"


class _CountingStr(str):
    """A str whose ``find`` adds the characters it searched to ``scanned``."""

    scanned = 0

    def find(self, sub: str, start: Any = None, end: Any = None) -> int:
        lo = 0 if start is None else start
        hi = len(self) if end is None else min(end, len(self))
        found = super().find(sub, lo, hi)
        _CountingStr.scanned += max(0, (found + len(sub) if found >= 0 else hi) - lo)
        return found


def line_events(func: Callable[..., Any], text: str, *args: Any) -> int:
    """The work of ``func(text, *args)``: Python lines executed (callees included) plus the
    characters ``str.find`` searched in ``text`` (the scanner's jumps are finds on it)."""
    count = 0

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    counted = _CountingStr(text)
    _CountingStr.scanned = 0
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        func(counted, *args)
    finally:
        sys.settrace(previous)
    return count + _CountingStr.scanned


def _ratio(unit: str, dialect: str, n: int = 100) -> float:
    small = line_events(fingerprint, adversarial(unit, n), dialect)
    large = line_events(fingerprint, adversarial(unit, 10 * n), dialect)
    return large / small


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_work_per_character_is_flat_for_every_adversarial_run(family: str,
                                                             dialect: str) -> None:
    ratio = _ratio(FAMILIES[family], dialect)
    assert ratio <= 12, f"{family!r} ({dialect}): 10x the text took {ratio:.1f}x the work"


_PIECES = [*"+-*/<>=~!^&|@#%?:$()[],;.'\"`\\ \n1aE",
           "--", "/*", "*/", "%s", "%(", "$$", "IN (", "VALUES ("]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(unit="+", dialect="generic")
@example(unit="*/", dialect="postgresql")
@example(unit="+--", dialect="mysql")
@given(unit=st.lists(st.sampled_from(_PIECES), min_size=1, max_size=4).map("".join),
       dialect=st.sampled_from(sorted(DIALECTS)))
def test_work_is_linear_for_any_repeated_unit(unit: str, dialect: str) -> None:
    ratio = _ratio(unit, dialect)
    assert ratio <= 12, f"{unit!r} ({dialect}): 10x the text took {ratio:.1f}x the work"


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
@pytest.mark.parametrize("opener", list(NESTED))
def test_work_per_character_is_flat_for_nested_groups(opener: str, dialect: str) -> None:
    # 1,000 and 10,000 characters: 250 to 2,500 levels. This counts the Python work; the
    # copies a folded group's close makes of its content are C work, timed by the benchmark
    # (quadratic up to the 500 levels once allowed, flat with at most 32 folded groups open).
    small = line_events(fingerprint, nested(opener, NESTED[opener], 1_000), dialect)
    large = line_events(fingerprint, nested(opener, NESTED[opener], 10_000), dialect)
    assert large / small <= 12, f"{opener!r} ({dialect}): {large / small:.1f}x the work"


def test_nested_lists_fold_up_to_32_levels_and_are_kept_as_written_beyond() -> None:
    sql = "SELECT 1 WHERE a IN (" * 3 + "1, 2, 3" + ")" * 3
    assert fingerprint(sql) == \
        "SELECT ? WHERE a IN (SELECT ? WHERE a IN (SELECT ? WHERE a IN (?)))"
    folded = fingerprint("SELECT x WHERE a IN (" + "IN (" * 31 + "1, 2, 3" + ")" * 32)
    assert folded.endswith("IN (?" + ")" * 32)
    kept = fingerprint("SELECT x WHERE a IN (" + "IN (" * 40 + "1, 2, 3" + ")" * 41)
    assert kept.endswith("IN (?, ?, ?" + ")" * 41)  # literals folded, the list kept whole


def test_nested_block_comments_are_read_once() -> None:
    # PostgreSQL nests /* */: each opener used to search for the first "*/" again.
    def nested(k: int) -> str:
        return "SELECT 1 " + "/* " * k + "*/ " * k + " + 2"

    assert fingerprint(nested(1_000), "postgresql") == "SELECT ? + ?"
    small = line_events(fingerprint, nested(100), "postgresql")
    large = line_events(fingerprint, nested(1_000), "postgresql")
    assert large / small <= 12


def test_operator_runs_fold_as_before() -> None:
    # The runs still split as PostgreSQL's lexer splits them: a trailing + or - is a sign of
    # what follows unless the operator holds one of ~ ! @ # % ^ & | ` ?
    # (the signs before a value fold into it, however many: a fingerprint of a fingerprint
    # is the same text)
    assert fingerprint("select 1 " + "+" * 1_000 + " 1") == "SELECT ? + ?"
    assert fingerprint("select a " + "+" * 1_000 + " b") == "SELECT a " + "+ " * 1_000 + "b"
    assert fingerprint("select a <+-5") == "SELECT a < ?"
    assert fingerprint("select a |+ 5", "postgresql") == "SELECT a |+ ?"
    assert fingerprint("select a */* x */ b") == "SELECT a * b"
    assert fingerprint("select 5--1", "mysql") == "SELECT ? - ?"
    assert fingerprint("select a %(b)s", "postgresql") == "SELECT a ?"
    assert fingerprint("select a %(b" + "%(" * 1_000) == "SELECT a % (b % (" + "% (" * 999


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
@pytest.mark.parametrize("placeholder", ["%s", "?", "$1", "7"])
def test_the_operator_after_a_cast_is_kept(dialect: str, placeholder: str) -> None:
    assert fingerprint(f"select {placeholder}::int + 1", dialect) == "SELECT ?::INT + ?"
    assert fingerprint(f"select {placeholder}::int - 1", dialect) == "SELECT ?::INT - ?"
    assert fingerprint("select t.value - 1 from t", dialect) == "SELECT t.VALUE - ? FROM t"
    # a sign after a keyword is still a sign
    assert fingerprint("select -1 where a = 1 and -2 < b", dialect) == \
        "SELECT ? WHERE a = ? AND ? < b"


_TOKENS = ["select", "a", "t.c", "from", "t", "where", "=", "<>", "+", "-", "*", "/", "1",
           "-2.5", "'x'", "'it''s'", "%s", "?", "$1", "(", ")", ",", "in", "and", "or", "not",
           "null", "is", "values", "into", "::int", "||", "like", "order by", "limit", "[",
           "]", "array", "case", "when", "then", "end", "/* c */", "-- c\n"]


@settings(max_examples=300)
@example(tokens=["not", "+", "-", "1"], dialect="generic")  # two signs: both fold
@given(tokens=st.lists(st.sampled_from(_TOKENS), max_size=14),
       dialect=st.sampled_from(sorted(DIALECTS)))
def test_a_fingerprint_is_its_own_fingerprint(tokens: list[str], dialect: str) -> None:
    once = fingerprint(" ".join(tokens), dialect)
    assert fingerprint(once, dialect) == once


@settings(max_examples=150)
@given(tokens=st.lists(st.sampled_from(_TOKENS), max_size=14),
       dialect=st.sampled_from(sorted(DIALECTS)), seed=st.integers(0, 2**32))
def test_literal_values_never_change_the_fingerprint(tokens: list[str], dialect: str,
                                                     seed: int) -> None:
    rnd = random.Random(seed)
    values = ["1", "42", "0.5", "'x'", "'o''k'", "%s", "?"]
    other = [rnd.choice(values) if tok in values else tok for tok in tokens]
    assert fingerprint(" ".join(tokens), dialect) == fingerprint(" ".join(other), dialect)


# ----------------------------------------------------------------------------- QueryTimeout
def test_the_timeout_message_reads_a_bounded_prefix_of_the_statement() -> None:
    from poolkeeper.hooks.timeouts import _describe

    def text(k: int) -> str:
        return "SELECT a FROM t WHERE b = 'secret' AND c IN (" + "1, " * k + "2)"

    assert "secret" not in _describe(text(100_000), "postgresql")
    assert "cut" in _describe(text(100_000), "postgresql")
    # the same work for 300 kB and 3 MB: only the first 64 KiB are fingerprinted
    assert line_events(_describe, text(1_000_000), None) == \
        line_events(_describe, text(100_000), None)


def test_connection_views_read_a_bounded_prefix_of_the_statement(sqlite_dsn: str) -> None:
    # connections_info() (the console's connections page) folds each held connection's SQL
    big = "SELECT 'secret' AS a /* " + "x" * 300_000 + " */"
    with Pool(sqlite_dsn, max_size=1) as pool, pool.connection() as conn:
        conn.execute(big).fetchall()
        info = pool.connections_info()
        shown = info[0]["sql"]
        assert "secret" not in shown and "cut" in shown and len(shown) < 300


def test_a_statement_with_a_long_operator_run_times_out_on_time(any_dsn: str) -> None:
    # Each backend's parser reads "+-+-...1" as nested unary signs (SQLite's parser stack
    # takes about 40). The fingerprints (statistics, then the QueryTimeout message) follow
    # the statement's text, not its cost on the server.
    run = "1 +" + "-+" * 40 + "1"
    with Pool(any_dsn, max_size=1, query_timeout=0.3) as pool:
        sql = sleep_sql(pool, 10)
        if pool.driver.name == "sqlite":
            sql = sql.replace("SELECT max(x)", f"SELECT max(x), {run}")
        else:
            sql = f"{sql}, {run}"
        with pytest.raises(QueryTimeout) as info, pool.connection() as conn:
            conn.execute(sql).fetchall()
        message = str(info.value)
        assert "? + ?" in message and "-+-+" not in message
        assert len(info.value.sql) < 300
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
