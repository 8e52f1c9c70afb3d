"""Fingerprints fold every literal, keep every structural difference, and cost linear time."""

from __future__ import annotations

import random
import string
import threading
import time

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from poolkeeper.sql.fingerprint import _KEYWORDS, FingerprintCache, fingerprint, redact

DIALECTS = [None, "postgresql", "mysql", "sqlite"]


# ----------------------------------------------------------------------------- literals
@pytest.mark.parametrize(("sql", "dialect", "expected"), [
    ("select * from t where id in (1, 2, 3) and name = 'bob'", None,
     "SELECT * FROM t WHERE id IN (?) AND name = ?"),
    ("SELECT 1, -2, +3, 4.5, .5, 1e5, 1.5E-3, 1_000", None, "SELECT ?, ?, ?, ?, ?, ?, ?, ?"),
    ("SELECT 0x1F, 0b101, 0o17, X'1F', x'1f', B'101', b'0'", None, "SELECT ?, ?, ?, ?, ?, ?, ?"),
    ("SELECT E'a\\'b', e'\\\\', U&'d\\0061t', N'x'", "postgresql", "SELECT ?, ?, ?, ?"),
    ("SELECT $$a 'b' c$$, $fn$ $$ nested $$ $fn$", "postgresql", "SELECT ?, ?"),
    ("SELECT 'C:\\', secret FROM t", "postgresql", "SELECT ?, secret FROM t"),
    ("SELECT 'it\\'s', \"dq \\\" str\", _utf8mb4'x', N'y'", "mysql", "SELECT ?, ?, ?, ?"),
    ("SELECT 'it''s', x'00'", "sqlite", "SELECT ?, ?"),
    ("SELECT TRUE, false, Null", None, "SELECT ?, ?, ?"),
    ("UPDATE t SET a = NULL WHERE b IS NULL AND c IS NOT NULL AND d IS TRUE", None,
     "UPDATE t SET a = ? WHERE b IS NULL AND c IS NOT NULL AND d IS TRUE"),
    ("CREATE TABLE t (id INT NOT NULL DEFAULT 0)", None,
     "CREATE TABLE t(id INT NOT NULL DEFAULT ?)"),
    ("SELECT a FROM t WHERE b = %s AND c = %(name)s AND d = ? AND e = $1 AND f = :g", None,
     "SELECT a FROM t WHERE b = ? AND c = ? AND d = ? AND e = ? AND f = ?"),
    ("SELECT a FROM t WHERE b = ?1 AND c = $x AND d = @y", "sqlite",
     "SELECT a FROM t WHERE b = ? AND c = ? AND d = ?"),
    ("SELECT 100%% FROM t WHERE x % 3 = 0", None, "SELECT ? % FROM t WHERE x % ? = ?"),
    ("SELECT x - 5, x -5, -5, (-5), y=-5", None, "SELECT x - ?, x - ?, ?, (?), y = ?"),
    ("SELECT CASE WHEN a THEN -1 ELSE 2 END - 1", None,
     "SELECT CASE WHEN a THEN ? ELSE ? END - ?"),
    ("SELECT x FROM t WHERE s = 'never closed", None, "SELECT x FROM t WHERE s = ?"),
    ("SELECT x::int, '{a}'::jsonb #> '{a}' FROM t", "postgresql",
     "SELECT x::INT, ?::jsonb #> ? FROM t"),
])
def test_literals_fold_to_placeholders(sql: str, dialect: str | None, expected: str) -> None:
    assert fingerprint(sql, dialect) == expected


def test_lists_of_any_length_collapse_to_one_shape() -> None:
    for n in (1, 2, 7, 30_000):
        ids = ", ".join(str(i * 7919 % 100_003) for i in range(n))
        assert fingerprint(f"SELECT x FROM t WHERE id IN ({ids}) AND y = 1") == \
            "SELECT x FROM t WHERE id IN (?) AND y = ?"
        names = ", ".join(f"'n{i}'" for i in range(n))
        assert fingerprint(f"SELECT x FROM t WHERE n NOT IN ({names})") == \
            "SELECT x FROM t WHERE n NOT IN (?)"
        marks = ", ".join(["%s"] * n)
        assert fingerprint(f"DELETE FROM t WHERE id IN ({marks})") == \
            "DELETE FROM t WHERE id IN (?)"


def test_multi_row_values_collapse_to_one_row_shape() -> None:
    for n in (1, 2, 999, 1000):
        rows = ", ".join(f"({i}, 'name {i}', {i * 1.5}, NULL, -{i})" for i in range(n))
        assert fingerprint(f"INSERT INTO t (a, b, c, d, e) VALUES {rows} RETURNING id") == \
            "INSERT INTO t(a, b, c, d, e) VALUES (?, ?, ?, ?, ?) RETURNING id"
    rows = ", ".join(["(%s, %s, now())"] * 50)
    assert fingerprint(f"INSERT INTO t VALUES {rows}") == "INSERT INTO t VALUES (?, ?, NOW())"
    assert fingerprint("INSERT INTO t VALUE (1), (2)", "mysql") == "INSERT INTO t VALUE (?)"


def test_rows_of_different_shapes_are_all_kept() -> None:
    assert fingerprint("INSERT INTO t VALUES (1, 2), (3, DEFAULT), (4, 5)") == \
        "INSERT INTO t VALUES (?, ?), (?, DEFAULT)"
    assert fingerprint("SELECT * FROM t WHERE (a, b) IN ((1, 2), (3, 4))") == \
        "SELECT * FROM t WHERE (a, b) IN ((?, ?))"
    assert fingerprint("SELECT x FROM t WHERE a IN (1, b, 2, c)") == \
        "SELECT x FROM t WHERE a IN (?, b, c)"
    assert fingerprint("SELECT ARRAY[1, 2, 3], a[1] FROM t", "postgresql") == \
        "SELECT ARRAY[?], a[?] FROM t"


def test_subqueries_inside_in_are_kept() -> None:
    assert fingerprint("SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE z IN (1, 2))") == \
        "SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE z IN (?))"


# ----------------------------------------------------------------------------- the rest
def test_comments_are_stripped_in_every_style() -> None:
    sql = "SELECT a -- x 'y'\n, /* b 'c' */ b FROM t # z 'w'\nWHERE c = 1"
    assert fingerprint(sql, "mysql") == "SELECT a, b FROM t WHERE c = ?"
    assert fingerprint("SELECT /* a /* nested */ 'still' comment */ 1", "postgresql") == \
        "SELECT ?"


def test_mysql_double_dash_needs_a_space() -> None:
    assert fingerprint("SELECT 5--1", "mysql") == "SELECT ? - ?"
    assert fingerprint("SELECT 5 -- 1", "mysql") == "SELECT ?"


def test_hash_is_an_operator_in_postgresql_and_a_comment_in_mysql() -> None:
    assert fingerprint("SELECT a # b FROM t", "postgresql") == "SELECT a # b FROM t"
    assert fingerprint("SELECT a # b FROM t", "mysql") == "SELECT a"
    assert fingerprint("SELECT d #> '{a}', d #- '{b}' FROM t") == "SELECT d #> ?, d #- ? FROM t"


def test_identifiers_are_kept_and_quoted_ones_verbatim() -> None:
    sql = 'select "Mixed ""Case""", `back tick`, plain_Name from "T" join [brackets] on 1'
    assert fingerprint(sql, "sqlite") == \
        'SELECT "Mixed ""Case""", `back tick`, plain_Name FROM "T" JOIN [brackets] ON ?'
    assert fingerprint('SELECT "x" FROM t', "mysql") == "SELECT ? FROM t"  # a string there


def test_keyword_case_and_white_space_are_normalized() -> None:
    a = "select  a,b\n\tfrom t\r\n where  x=1 order by a"
    b = "SELECT a , b FROM t WHERE x = 2 ORDER BY a"
    assert fingerprint(a) == fingerprint(b) == "SELECT a, b FROM t WHERE x = ? ORDER BY a"
    assert fingerprint("select count (*) from t") == fingerprint("SELECT COUNT(*) FROM t")


def test_a_statement_with_nothing_but_comments_is_empty() -> None:
    assert fingerprint("  -- nothing\n /* here */ ") == ""
    assert fingerprint("") == ""


def test_deep_nesting_is_bounded_and_still_folds_literals() -> None:
    depth = 5_000
    out = fingerprint("SELECT " + "(" * depth + "'secret'" + ")" * depth)
    assert "secret" not in out
    assert out.count("(") == depth


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="dialect='oracle'"):
        fingerprint("SELECT 1", "oracle")
    with pytest.raises(TypeError, match="bytes"):
        fingerprint(b"SELECT 1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit=0"):
        redact("SELECT 1", 0)


# ----------------------------------------------------------------------------- redact
def test_redact_folds_and_truncates_with_the_count() -> None:
    sql = "SELECT " + ", ".join(f"col{i}" for i in range(100)) + " FROM t WHERE p = 'hunter2'"
    out = redact(sql, limit=50)
    assert out.startswith("SELECT col0, col1")
    assert "hunter2" not in out
    assert out.endswith("chars)")
    assert redact(b"SELECT 'x'") == "SELECT ?"
    assert redact("SELECT 'x'", limit=200) == "SELECT ?"


def test_redact_reads_only_the_first_megabyte_of_a_giant_statement() -> None:
    sql = "SELECT 'secret " + "x" * (2 << 20) + "' FROM t"
    out = redact(sql)
    assert "secret" not in out and "xxx" not in out
    assert "cut" in out


# ----------------------------------------------------------------------------- properties
_IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda w: w.upper() not in _KEYWORDS)
_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20)


def _render(value: object, dialect: str | None, rnd: random.Random) -> str:
    """One SQL literal for ``value``, quoted correctly for the dialect (one of several ways)."""
    if value is None:
        return rnd.choice(["NULL", "null"])
    if isinstance(value, bool):
        return rnd.choice(["TRUE", "false"] if value else ["FALSE", "true"])
    if isinstance(value, int):
        return rnd.choice([str(value), hex(value) if value >= 0 else str(value)])
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if dialect == "postgresql":
        style = rnd.randrange(3)
        if style == 1:
            return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
        if style == 2 and "$q$" not in text and not text.endswith("$"):
            return "$q$" + text + "$q$"
        return "'" + text.replace("'", "''") + "'"
    if dialect == "sqlite":
        return "'" + text.replace("'", "''") + "'"
    # MySQL and the generic reading: backslash escapes, or doubled quotes
    if rnd.random() < 0.5:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


_VALUES = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-10**12, max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@example(values=[None] * 7, other=[None, None, None, None, "\n", None, None], in_len=1,
         in_len2=1, rows=1, rows2=1, dialect=None, seed=0)  # found by CI: "\n" in the comment
@given(values=st.lists(_VALUES, min_size=7, max_size=7),
       other=st.lists(_VALUES, min_size=7, max_size=7),
       in_len=st.integers(1, 40), in_len2=st.integers(1, 40),
       rows=st.integers(1, 12), rows2=st.integers(1, 12),
       dialect=st.sampled_from(DIALECTS), seed=st.integers(0, 2**32))
def test_statements_differing_only_in_literals_and_list_lengths_share_a_fingerprint(
        values: list[object], other: list[object], in_len: int, in_len2: int, rows: int,
        rows2: int, dialect: str | None, seed: int) -> None:
    rnd = random.Random(seed)

    def build(vals: list[object], n_in: int, n_rows: int) -> tuple[str, str]:
        lit = [_render(v, dialect, rnd) for v in vals]
        in_list = ", ".join(str(rnd.randint(-999, 999)) for _ in range(n_in))
        row = "(" + ", ".join(_render(v, dialect, rnd) for v in vals[:3]) + ")"
        select = (f"SELECT a, b FROM t WHERE a = {lit[0]} AND b <> {lit[1]} "
                  f"AND c IN ({in_list}) OR d = {lit[2]} LIMIT {abs(hash(lit[3])) % 100}")
        # The comment quotes a literal; a line break in it would end the comment early and
        # turn the rest into real SQL, which is a different statement, not a different comment.
        note = str(lit[4])[:5].replace("\n", " ").replace("\r", " ")
        insert = ("INSERT INTO t (a, b, c) VALUES "
                  + ", ".join(row for _ in range(n_rows)) + f" -- {note}\n")
        return select, insert

    s1, i1 = build(values, in_len, rows)
    s2, i2 = build(other, in_len2, rows2)
    assert fingerprint(s1, dialect) == fingerprint(s2, dialect)
    assert fingerprint(i1, dialect) == fingerprint(i2, dialect)


@settings(max_examples=400)
@given(value=_TEXT, dialect=st.sampled_from(DIALECTS), seed=st.integers(0, 2**32))
@example(value="a\\", dialect="postgresql", seed=0)
@example(value="' OR 1=1 --", dialect="mysql", seed=1)
@example(value="*/ secret /*", dialect="postgresql", seed=2)
def test_no_string_literal_leaks_into_the_fingerprint(value: str, dialect: str | None,
                                                       seed: int) -> None:
    literal = _render(value, dialect, random.Random(seed))
    assert fingerprint(f"SELECT a FROM t WHERE b = {literal} AND c = 1", dialect) == \
        "SELECT a FROM t WHERE b = ? AND c = ?"


@settings(max_examples=300)
@given(v1=_VALUES, v2=_VALUES, dialect=st.sampled_from(DIALECTS), seed=st.integers(0, 2**32))
def test_no_literal_leaks_from_in_lists_or_values_rows(v1: object, v2: object,
                                                       dialect: str | None, seed: int) -> None:
    # Lists and rows take the scanner's fast paths; they must fold exactly as the slow one.
    rnd = random.Random(seed)
    l1, l2 = _render(v1, dialect, rnd), _render(v2, dialect, rnd)
    assert fingerprint(f"SELECT a FROM t WHERE b IN (1, {l1}, 2, {l2}) AND c = {l2}",
                       dialect) == "SELECT a FROM t WHERE b IN (?) AND c = ?"
    assert fingerprint(f"INSERT INTO t VALUES (1, {l1}), ({l2}, 2), (3, {l1})", dialect) == \
        "INSERT INTO t VALUES (?, ?)"


@settings(max_examples=200)
@given(text=st.text(alphabet=string.ascii_letters + string.digits + " '\"", max_size=30),
       dialect=st.sampled_from(DIALECTS))
def test_comments_never_leak(text: str, dialect: str | None) -> None:
    assume("*/" not in text and "/*" not in text)
    assert fingerprint(f"SELECT a /* {text} */ FROM t -- {text}\n", dialect) == \
        "SELECT a FROM t"


_OPERATORS = ["=", "<>", "<", ">", "<=", ">=", "!="]


@settings(max_examples=300)
@given(a=_IDENT, b=_IDENT, t=_IDENT, op1=st.sampled_from(_OPERATORS),
       op2=st.sampled_from(_OPERATORS), dialect=st.sampled_from(DIALECTS),
       change=st.sampled_from(["column", "table", "operator", "clause", "connective", "list"]))
def test_statements_differing_in_structure_do_not_share_a_fingerprint(
        a: str, b: str, t: str, op1: str, op2: str, dialect: str | None, change: str) -> None:
    base = f"SELECT {a} FROM {t} WHERE {a} {op1} 1 AND x IN (1, 2)"
    if change == "column":
        assume(a != b)
        other = f"SELECT {b} FROM {t} WHERE {b} {op1} 1 AND x IN (1, 2)"
    elif change == "table":
        assume(t != b)
        other = f"SELECT {a} FROM {b} WHERE {a} {op1} 1 AND x IN (1, 2)"
    elif change == "operator":
        assume(op1 != op2 and {op1, op2} != {"<>", "!="})
        other = f"SELECT {a} FROM {t} WHERE {a} {op2} 1 AND x IN (1, 2)"
    elif change == "clause":
        other = base + f" ORDER BY {a}"
    elif change == "connective":
        other = f"SELECT {a} FROM {t} WHERE {a} {op1} 1 OR x IN (1, 2)"
    else:
        other = f"SELECT {a} FROM {t} WHERE {a} {op1} 1 AND x IN (1, y)"
    assert fingerprint(base, dialect) != fingerprint(other, dialect)


# ----------------------------------------------------------------------------- cost
def _seconds(sql: str, dialect: str | None = None) -> float:
    best = float("inf")
    for _ in range(2):
        start = time.process_time()
        fingerprint(sql, dialect)
        best = min(best, time.process_time() - start)
    return best


@pytest.mark.parametrize("shape", ["tokens", "in_list", "values", "string", "comment"])
def test_fingerprint_time_grows_linearly_not_quadratically(shape: str) -> None:
    # Quadratic work would take 16x for 4x the text; linear takes ~4x. The bound (9x) is far
    # from both, so a noisy machine cannot flip the verdict; it is a ratio, not a time.
    def make(mb: int) -> str:
        size = mb << 20
        if shape == "tokens":
            unit = "SELECT a, 'lit', 12 + b FROM t WHERE c = 'x' AND d IN (1, 2) -- note\n"
            return unit * (size // len(unit))
        if shape == "in_list":
            body = ", ".join(str(i) for i in range(size // 8))
            return f"SELECT a FROM t WHERE id IN ({body})"
        if shape == "values":
            rows = ", ".join(f"({i}, 'n', {i}.5)" for i in range(size // 16))
            return f"INSERT INTO t VALUES {rows}"
        if shape == "string":
            return "SELECT '" + "ab''c" * (size // 5) + "'"
        return "SELECT 1 /* " + "x" * size + " */"

    small, large = make(1), make(4)
    ratio = _seconds(large) / max(_seconds(small), 1e-4)
    assert ratio < 9, f"{shape}: 4x the text took {ratio:.1f}x the time"


# ----------------------------------------------------------------------------- cache
def test_cache_returns_the_same_fingerprint_and_counts_hits_and_misses() -> None:
    cache = FingerprintCache(max_entries=10, max_bytes=1 << 20)
    assert cache.fingerprint("SELECT 1") == "SELECT ?"
    assert cache("SELECT 1") == "SELECT ?"
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)


def test_cache_is_bounded_by_entries_and_counts_evictions() -> None:
    cache = FingerprintCache(max_entries=3, max_bytes=1 << 20)
    for i in range(10):
        cache.fingerprint(f"SELECT {i} FROM t{i}")
    assert len(cache) == 3
    assert cache.evictions == 7
    cache.fingerprint("SELECT 9 FROM t9")
    assert cache.hits == 1  # the most recent entries survived


def test_cache_is_bounded_by_bytes() -> None:
    cache = FingerprintCache(max_entries=10_000, max_bytes=20_000, max_text_chars=1_000)
    for i in range(1_000):
        cache.fingerprint(f"SELECT c FROM t{i} WHERE x = '{'y' * 200}'")
        assert cache.nbytes <= cache.budget_bytes
    assert 0 < len(cache) < 100
    assert cache.evictions == 1_000 - len(cache)


def test_cache_does_not_keep_texts_over_the_size_cap() -> None:
    cache = FingerprintCache(max_text_chars=100)
    big = "SELECT x FROM t WHERE id IN (" + ", ".join(["1"] * 100) + ")"
    assert cache.fingerprint(big) == "SELECT x FROM t WHERE id IN (?)"
    assert len(cache) == 0 and cache.uncacheable == 1 and cache.nbytes == 0
    stats = cache.stats()
    assert stats["uncacheable"] == 1 and stats["misses"] == 1


def test_cache_is_consistent_under_threads() -> None:
    cache = FingerprintCache(max_entries=50, max_bytes=1 << 20)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(2_000):
                n = (i * k) % 80
                assert cache.fingerprint(f"SELECT {n} FROM t{n}") == f"SELECT ? FROM t{n}"
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in (1, 3, 7, 11)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    assert cache.hits + cache.misses == 8_000
    assert len(cache) <= 50
    total = sum(size for _, size in cache._map._map.values())  # the LRU's own map
    assert total == cache.nbytes


def test_cache_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="max_entries=-1"):
        FingerprintCache(max_entries=-1)
    with pytest.raises(ValueError, match="dialect='x'"):
        FingerprintCache(dialect="x")


def test_row_fast_path_patterns_stay_bounded_across_row_widths() -> None:
    import sys

    module = sys.modules["poolkeeper.sql.fingerprint"]
    for width in range(1, 90):
        row = "(" + ", ".join(["1"] * width) + ")"
        assert fingerprint(f"INSERT INTO t VALUES {row}, {row}, {row}") == \
            "INSERT INTO t VALUES (" + ", ".join(["?"] * width) + ")"
    assert len(module._fast_rows_cache) <= module._FAST_ROWS_CACHED
