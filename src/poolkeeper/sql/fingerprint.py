"""SQL fingerprints: one text per statement *shape*, with every literal folded to ``?``.

Druid's statistics keyed their map by the raw SQL text; batch jobs sending
``... WHERE id IN (<30,000 values>)`` and multi-row INSERTs of varying length made every key
a distinct multi-megabyte string, and 1,000 of them meant gigabytes. A fingerprint keeps the
statement's structure and drops its data, so all those statements share one short key::

    >>> fingerprint("select * from t where id in (1, 2, 3) and name = 'bob'")
    'SELECT * FROM t WHERE id IN (?) AND name = ?'
    >>> fingerprint("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (-3, NULL)")
    'INSERT INTO t(a, b) VALUES (?, ?)'

What is folded: strings in every quoting style of PostgreSQL, MySQL and SQLite (``'..'``,
``E'..'``, ``U&'..'``, ``N'..'``, ``_utf8mb4'..'``, ``$$..$$``, ``$tag$..$tag$``, MySQL's
``".."`` and backslash escapes), numbers (``1``, ``-2.5``, ``.5``, ``1e5``, ``1_000``), hex,
bit and binary literals (``0x1F``, ``X'1F'``, ``B'101'``, ``b'101'``, ``0b101``), ``TRUE`` /
``FALSE`` / ``NULL`` where they are values (``IS NULL`` and ``NOT NULL`` stay), and
placeholders of every paramstyle (``%s``, ``%(name)s``, ``?``, ``?1``, ``:name``, ``$1``), so a
statement reads the same whether values were inlined or bound. ``IN (...)`` lists, ``ARRAY[...]``
and the rows of ``VALUES (...), (...)`` keep one copy of each distinct element shape, so their
length never changes the fingerprint. Comments (``--``, ``/* */`` (nested in PostgreSQL), MySQL
``#``) go; white space is normalized; keywords are upper-cased; identifiers are kept, quoted
ones (``"x"``, `` `x` ``, SQLite ``[x]``) verbatim.

The dialect matters where the dialects disagree, and a wrong guess could let a literal through:
``"x"`` is a string in MySQL but an identifier elsewhere; ``'a\\'`` is a complete string in
PostgreSQL but an unfinished one in MySQL; ``#`` starts a comment in MySQL but is an operator in
PostgreSQL. Pass ``dialect="postgresql" | "mysql" | "sqlite"`` (the pool passes its driver's
name). Without one, the generic reading applies backslash escapes inside strings, treats ``"x"``
as an identifier and ``#`` as a comment unless it is PostgreSQL's ``#>`` / ``#-``. Whatever the
dialect, text the scanner cannot close (an unterminated string or comment) is folded, never
copied.

Cost: one left-to-right pass. The scanner is hand-written: it dispatches on the current
character and uses only ``str.find`` and anchored single-class runs (``[\\w$]*``, ``\\s+``,
digit runs) to jump over tokens, so no input can make it backtrack. Long literal lists take a
fast path: a possessive (non-backtracking) matcher skips a run of plain ``, literal`` elements in
one call. A position searched for once (the end of an operator run, the first ``--`` or ``/*``
in it, the first ``*/`` of nested comments, the ``)`` after ``%(``) is reused while it still
lies ahead, so no run of any character is rescanned from each of its positions. Everything
after scanning (list collapsing, joining) works on the folded tokens, with at most 32 folded
groups open at once, so a 10 MB statement costs time proportional to 10 MB (0.05-1 us per
character for every adversarial run in ``benchmarks/bench_fingerprint.py``), and memory
proportional to its fingerprint.
A repeated text is not parsed again: :class:`FingerprintCache` keeps recent texts, bounded in
entries and bytes.
"""

from __future__ import annotations

import re
import sys
import threading

from .lru import LRU

__all__ = ["DIALECTS", "MESSAGE_READ_CHARS", "FingerprintCache", "fingerprint", "redact"]

#: dialect names accepted by :func:`fingerprint` (None or "" means generic)
DIALECTS = frozenset({"generic", "postgresql", "mysql", "sqlite"})
_DIALECT_ALIASES = {
    None: "generic", "": "generic", "generic": "generic",
    "postgresql": "postgresql", "postgres": "postgresql", "pg": "postgresql",
    "psycopg": "postgresql",
    "mysql": "mysql", "mariadb": "mysql", "pymysql": "mysql",
    "sqlite": "sqlite", "sqlite3": "sqlite",
}


class _Dialect:
    """The lexical rules on which the three dialects disagree."""

    __slots__ = ("backslash", "dollar_quotes", "dq_string", "hash_comment", "keeper", "name",
                 "nested_comments", "op_chars", "op_run", "sq_brackets", "value_keyword")

    def __init__(self, name: str) -> None:
        self.name = name
        #: backslash escapes in plain '..' strings (MySQL; generic reads them too)
        self.backslash = name in ("mysql", "generic")
        #: "..." is a string literal, not an identifier (MySQL without ANSI_QUOTES)
        self.dq_string = name == "mysql"
        #: '#' comments: always (mysql), unless '#>' / '#-' (generic), never (pg, sqlite)
        self.hash_comment = {"mysql": 2, "generic": 1}.get(name, 0)
        self.nested_comments = name == "postgresql"
        self.dollar_quotes = name in ("postgresql", "generic")
        self.sq_brackets = name == "sqlite"
        #: MySQL accepts INSERT ... VALUE (..), (..)
        self.value_keyword = name in ("mysql", "generic")
        # '%' and '?' are never part of an operator run: they start placeholders. MySQL has
        # no '@' or '#' operators ('@var' is a user variable, '#' a comment).
        self.op_chars = frozenset("+-*/<>=~!^&|" + ("" if name == "mysql" else "@#"))
        #: a run of operator characters, and a sign keeper among them
        self.op_run = re.compile("[" + re.escape("".join(sorted(self.op_chars))) + "]+")
        self.keeper = re.compile(
            "[" + re.escape("".join(sorted(self.op_chars & _SIGN_KEEPERS))) + "]")




def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_KEYWORDS = _words("""
ABORT ACTION ADD AFTER ALL ALTER ALWAYS ANALYZE AND ANY ARRAY AS ASC ASYMMETRIC AT ATTACH
AUTOINCREMENT AUTO_INCREMENT BEFORE BEGIN BETWEEN BIGINT BINARY BLOB BOOLEAN BOTH BY CALL
CASCADE CASE CAST CHAR CHARACTER CHECK COLLATE COLUMN COMMIT COMMITTED CONCURRENTLY CONFLICT
CONSTRAINT COPY CREATE CROSS CUBE CURRENT CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP
CURRENT_USER CURSOR DATABASE DATE DEALLOCATE DECIMAL DECLARE DEFAULT DEFERRABLE DEFERRED
DELAYED DELETE DESC DESCRIBE DETACH DISTINCT DIV DO DOUBLE DROP DUPLICATE EACH ELSE END ESCAPE
EXCEPT EXCLUSIVE EXECUTE EXISTS EXPLAIN FALSE FETCH FILTER FIRST FLOAT FOLLOWING FOR FOREIGN
FROM FULL FUNCTION GLOB GRANT GROUP GROUPING HAVING HIGH_PRIORITY IF IGNORE ILIKE IMMEDIATE IN
INDEX INNER INSERT INT INTEGER INTERSECT INTERVAL INTO IS ISNULL ISOLATION JOIN KEY LANGUAGE
LAST LATERAL LEADING LEFT LEVEL LIKE LIMIT LISTEN LOAD LOCAL LOCALTIME LOCALTIMESTAMP LOCK
LOCKED LOW_PRIORITY MATCH MATERIALIZED MERGE MINUS MOD NATURAL NEXT NO NOT NOTHING NOTIFY
NOTNULL NOWAIT NULL NULLS NUMERIC OF OFFSET ON ONLY OR ORDER OUTER OVER OVERLAPS PARTITION
PLACING PRAGMA PRECEDING PREPARE PRIMARY PROCEDURE QUICK RANGE READ REAL RECURSIVE REFERENCES
REGEXP REINDEX RELEASE RENAME REPEATABLE REPLACE RESTRICT RETURNING RETURNS REVOKE RIGHT RLIKE
ROLLBACK ROLLUP ROW ROWS SAVEPOINT SCHEMA SELECT SERIALIZABLE SESSION_USER SET SETS SHARE SHOW
SIMILAR SKIP SMALLINT SOME SQL_CALC_FOUND_ROWS START STRAIGHT_JOIN SYMMETRIC TABLE TEMP
TEMPORARY TEXT THEN TIES TIME TIMESTAMP TO TRAILING TRANSACTION TRIGGER TRUE TRUNCATE UNBOUNDED
UNCOMMITTED UNION UNIQUE UNKNOWN UNLOGGED UNNEST UPDATE UPSERT USING VACUUM VALUE VALUES
VARCHAR VARIADIC VARYING VIEW WHEN WHERE WINDOW WITH WITHIN WITHOUT WORK WRITE XOR ZONE ABS
ARRAY_AGG AVG COALESCE CONCAT COUNT DENSE_RANK EXTRACT GREATEST GROUP_CONCAT IFNULL LAG LEAD
LEAST LENGTH LOWER MAX MIN NOW NULLIF POSITION RANK ROUND ROW_NUMBER STRING_AGG SUBSTR
SUBSTRING SUM TRIM UPPER
""")

# Keywords that are usually function names: written without a space before "(".
_FUNCTION_KEYWORDS = _words("""
ABS ARRAY_AGG AVG CAST CHAR COALESCE CONCAT COUNT DENSE_RANK EXTRACT GREATEST GROUP_CONCAT IF
IFNULL LAG LEAD LEAST LEFT LENGTH LOWER MAX MIN NOW NULLIF POSITION RANK REPLACE RIGHT ROUND
ROW_NUMBER STRING_AGG SUBSTR SUBSTRING SUM TRIM UNNEST UPPER
""")

# After these a "-" is binary ("END - 1", "CURRENT_DATE - 1"); after other keywords it is unary.
_OPERAND_KEYWORDS = frozenset({
    "END", "CURRENT_DATE", "CURRENT_TIME", "CURRENT_TIMESTAMP", "CURRENT_USER",
    "LOCALTIME", "LOCALTIMESTAMP", "SESSION_USER", "NOW",
})
_UNARY_AFTER = frozenset({"(", ",", "[", ";", "::"})
#: a keyword right after these is a type or column name, an operand
_NAME_AFTER = frozenset({"::", "."})
_ALL_OP_CHARS = frozenset("+-*/<>=~!@#%^&|")
# Operator characters that let a multi-character operator end in + or - (PostgreSQL's rule,
# which is also what makes "x=-5" read as "x = -5" in every dialect).
_SIGN_KEEPERS = frozenset("~!@#%^&|`?")
_DIALECT_RULES = {name: _Dialect(name) for name in DIALECTS}
_NO_SPACE_BEFORE = frozenset({",", ")", "]", ";", ".", "::"})
_NO_SPACE_AFTER = frozenset({"(", "[", ".", "::"})

_WORD = re.compile(r"[^\W\d][\w$]*")
_WS = re.compile(r"\s+")
_NUMBER = re.compile(r"(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?")
_RADIX_NUMBER = re.compile(r"0(?:[xX][0-9a-fA-F_]+|[bB][01_]+|[oO][0-7_]+)(?![\w$])")
_DIGITS = re.compile(r"\d+")
_DOLLAR_TAG = re.compile(r"\$(?:[^\W\d]\w*)?\$")
_BACKSLASH_OR_SQ = re.compile(r"[\\']")
_BACKSLASH_OR_DQ = re.compile(r'[\\"]')

# The fast paths for long literal lists and VALUES rows: ", <plain literal>" repeated, each
# followed by "," or ")". Possessive (*+, ?+, ++) and atomic ((?>...)) everywhere: once a
# piece matched it is never given back, so a run costs one pass over the characters it
# consumes and nothing on failure. A plain literal is a number (optionally signed), a
# string, a placeholder, NULL/TRUE/FALSE; anything else ends the run and the general scanner
# takes over at exactly that element. Strings follow the dialect: with backslash escapes
# (MySQL, generic) "\\." is one unit; without them (PostgreSQL, SQLite) a backslash is text.
def _fast_literal(backslash: bool) -> str:
    string = r"'(?:[^'\\]++|\\.|'')*+'" if backslash else r"'(?:[^']++|'')*+'"
    return (r"(?:[-+]?+\s*+(?:\d++(?:\.\d*+)?+(?:[eE][-+]?+\d++)?+|\.\d++)"
            r"|" + string + r"|%s|\?|\$\d++|(?i:null|true|false))")


_FAST_LITERAL = {esc: _fast_literal(esc) for esc in (False, True)}
_FAST_LIST = {esc: re.compile(r"(?:\s*+,\s*+" + lit + r"(?=\s*+[,)]))*+")
              for esc, lit in _FAST_LITERAL.items()}
# Rows of a VALUES list with the same k plain literals as the row just read: one atomic
# group per row, so a row that does not match (an expression, another width) is left whole
# to the general scanner. One compiled pattern per (width, dialect) costs milliseconds to
# build, so widths are capped and the patterns kept in a small LRU (re's own cache is
# bounded too): a workload cycling through many widths pays compilation, not memory.
_FAST_ROWS_MAX_WIDTH = 64
_FAST_ROWS_CACHED = 32
_fast_rows_cache: LRU[tuple[int, bool], re.Pattern[str]] = LRU(_FAST_ROWS_CACHED)


def _fast_rows(width: int, backslash: bool) -> re.Pattern[str]:
    key = (width, backslash)
    pattern = _fast_rows_cache.get(key)
    if pattern is not None:
        return pattern
    lit = _FAST_LITERAL[backslash]
    more = r"(?:\s*+,\s*+" + lit + ")" + f"{{{width - 1}}}"
    pattern = re.compile(r"(?>\s*+,\s*+\(\s*+" + lit + more + r"\s*+\))*+")
    _fast_rows_cache.put(key, pattern)
    return pattern


_LIST, _PLAIN = 1, 0
# Nesting deeper than this is not folded further: it bounds the scanner's stack (a 10 MB
# run of "(" would otherwise hold ten million frames). Real statements stay far below it.
_MAX_DEPTH = 500
# Closing a folded group (an IN list, a VALUES row) compares the tokens inside it, nested
# groups included, so k nested folded groups cost k passes over their text: past this many
# open at once, inner groups are kept as written (500 nested "IN (" made a 100 kB text cost
# 3.7 us/char instead of 1.9; no real statement nests lists this deep).
_MAX_FOLD_DEPTH = 32


class _Frame:
    """An open "(" or "[": its own list state and the VALUES state of the tokens inside it."""

    __slots__ = ("elem_start", "kind", "open_idx", "row", "shapes", "v_mode", "v_shapes")

    def __init__(self, kind: int, open_idx: int, row: bool) -> None:
        self.kind = kind
        self.open_idx = open_idx  #: index of the "(" in the output
        self.elem_start = open_idx + 1  #: first token of the list element being read
        self.shapes: set[tuple[str, ...]] | None = set() if kind == _LIST else None
        self.row = row  #: this group is one row of a VALUES list in the parent frame
        #: VALUES state at this depth: 0 none, 1 a row "(" may come, 2 a "," may come
        self.v_mode = 0
        self.v_shapes: set[tuple[str, ...]] | None = None


class _Folder:
    """Receives tokens from the scanner; folds literal lists and VALUES rows as they close."""

    __slots__ = ("folding", "frames", "out", "overflow")

    def __init__(self) -> None:
        self.out: list[str] = []
        self.frames = [_Frame(_PLAIN, -1, False)]
        #: groups opened beyond _MAX_DEPTH: kept as plain tokens, never folded
        self.overflow = 0
        #: open groups that fold (IN lists, ARRAY[...], VALUES rows), at most _MAX_FOLD_DEPTH
        self.folding = 0

    def token(self, tok: str) -> None:
        frame = self.frames[-1]
        if frame.v_mode:
            frame.v_mode = 0  # anything but "(" or "," ends a VALUES list
        self.out.append(tok)

    def literal(self) -> None:
        out = self.out
        # Signs are part of the value: "x = -5" and "x = - -5" read as "x = ?". After a
        # keyword a sign is unary ("SELECT -1"), unless the keyword is a name there: a type
        # after "::" ("%s::int + 1") or a column after "." ("t.value - 1").
        while out and (out[-1] == "-" or out[-1] == "+"):
            before = out[-2] if len(out) > 1 else None
            if (before is None or before in _UNARY_AFTER or _is_operator(before)
                    or (before in _KEYWORDS and before not in _OPERAND_KEYWORDS
                        and not (len(out) > 2 and out[-3] in _NAME_AFTER))):
                out.pop()
            else:
                break
        self.token("?")

    def open(self, tok: str) -> None:
        out = self.out
        if self.overflow or len(self.frames) > _MAX_DEPTH:
            self.overflow += 1
            self.token(tok)
            return
        frame = self.frames[-1]
        row = False
        if frame.v_mode == 1 and tok == "(":
            row = True
        frame.v_mode = 0
        prev = out[-1] if out else None
        kind = _LIST if (prev == "IN" and tok == "(") or (prev == "ARRAY" and tok == "[") \
            else _PLAIN
        if kind == _LIST or row:
            if self.folding >= _MAX_FOLD_DEPTH:
                kind, row = _PLAIN, False
            else:
                self.folding += 1
        out.append(tok)
        self.frames.append(_Frame(kind, len(out) - 1, row))

    def comma(self) -> None:
        frame = self.frames[-1]
        if frame.kind == _LIST:
            self._finish_element(frame)
            self.out.append(",")
            frame.elem_start = len(self.out)
            return
        frame.v_mode = 1 if frame.v_mode == 2 else 0
        self.out.append(",")

    def close(self, tok: str) -> int:
        """Close a group; for a VALUES row of k plain literals return k (else 0)."""
        out = self.out
        frames = self.frames
        if self.overflow:
            self.overflow -= 1
            self.token(tok)
            return 0
        if len(frames) == 1:  # unbalanced: keep the token, nothing to fold
            self.token(tok)
            return 0
        frame = frames.pop()
        if frame.kind == _LIST or frame.row:
            self.folding -= 1
        if frame.kind == _LIST:
            self._finish_element(frame)
        out.append(tok)
        if frame.row:
            parent = frames[-1]
            start = frame.open_idx
            shape = tuple(out[start:])
            seen = parent.v_shapes
            if seen is None:
                seen = parent.v_shapes = set()
            if shape in seen and start > 0 and out[start - 1] == ",":
                del out[start - 1:]  # a row like one already kept, and its comma
            else:
                seen.add(shape)
            parent.v_mode = 2
            width = (len(shape) - 1) // 2
            if shape == _plain_row(width):
                return width
        return 0

    def in_plain_list_element(self) -> bool:
        """True when the current list element so far is exactly one literal (fast-path gate)."""
        frame = self.frames[-1]
        return frame.kind == _LIST and frame.elem_start == len(self.out) - 1 \
            and self.out[-1] == "?"

    def _finish_element(self, frame: _Frame) -> None:
        out = self.out
        start = frame.elem_start
        shape = tuple(out[start:])
        shapes = frame.shapes
        assert shapes is not None
        if shape in shapes:
            # Never the first element (the set is empty then), so out[start - 1] is its comma.
            del out[start - 1:]
        else:
            shapes.add(shape)

    def text(self) -> str:
        parts: list[str] = []
        append = parts.append
        prev: str | None = None
        for tok in self.out:
            if prev is not None and _space_between(prev, tok):
                append(" ")
            append(tok)
            prev = tok
        return "".join(parts)


_plain_rows: dict[int, tuple[str, ...]] = {}


def _plain_row(width: int) -> tuple[str, ...] | None:
    """The shape ``("(", "?", ",", "?", ..., ")")`` of a row of ``width`` plain literals."""
    if width < 1 or width > _FAST_ROWS_MAX_WIDTH:
        return None
    row = _plain_rows.get(width)
    if row is None:
        row = _plain_rows[width] = ("(", *["?", ","] * (width - 1), "?", ")")
    return row


def _is_operator(tok: str) -> bool:
    return tok[0] in _ALL_OP_CHARS and all(ch in _ALL_OP_CHARS for ch in tok)


def _is_name(tok: str) -> bool:
    """An identifier or a function-like keyword: no space between it and "(" / "["."""
    first = tok[0]
    if first in {'"', "`", "["}:
        return True
    if not (first.isalpha() or first == "_"):
        return False
    return tok not in _KEYWORDS or tok in _FUNCTION_KEYWORDS


def _space_between(prev: str, tok: str) -> bool:
    if tok in _NO_SPACE_BEFORE or prev in _NO_SPACE_AFTER:
        return False
    if tok == "(":
        return not _is_name(prev)
    if tok == "[":
        return not (_is_name(prev) or prev in (")", "]", "?", "ARRAY"))
    return True


def _scan_quoted(sql: str, start: int, quote: str, backslash: bool) -> int:
    """End index (after the closing quote) of the quoted token opening at ``start``.

    A doubled quote is an escaped quote; with ``backslash``, so is ``\\<quote>``. Returns -1
    when the token never closes (the caller folds the rest of the text).
    """
    i = start + 1
    if backslash:
        stop = _BACKSLASH_OR_SQ if quote == "'" else _BACKSLASH_OR_DQ
        search = stop.search
        while True:
            m = search(sql, i)
            if m is None:
                return -1
            j = m.start()
            if sql[j] == "\\":
                i = j + 2
                continue
            if sql.startswith(quote, j + 1):
                i = j + 2
                continue
            return j + 1
    find = sql.find
    while True:
        j = find(quote, i)
        if j < 0:
            return -1
        if sql.startswith(quote, j + 1):
            i = j + 2
            continue
        return j + 1


def _skip_block_comment(sql: str, start: int, nested: bool) -> int:
    """End index after the ``*/`` closing the comment opening at ``start`` (n if never)."""
    n = len(sql)
    if not nested:
        j = sql.find("*/", start + 2)
        return n if j < 0 else j + 2
    depth = 1
    i = start + 2
    find = sql.find
    close = -1
    while depth:
        # The first "*/" ahead stays the first until the scan passes it: finding it again
        # after every "/*" made "/*" * k + "*/" * k quadratic.
        if close < i:
            close = find("*/", i)
            if close < 0:
                return n
        opening = find("/*", i, close)
        if opening >= 0:
            depth += 1
            i = opening + 2
        else:
            depth -= 1
            i = close + 2
    return i


def _dialect(dialect: str | None) -> _Dialect:
    try:
        return _DIALECT_RULES[_DIALECT_ALIASES[dialect]]
    except (KeyError, TypeError):
        raise ValueError(
            f"dialect={dialect!r} is not known: use 'postgresql', 'mysql', 'sqlite' "
            "or None (generic)"
        ) from None


def fingerprint(sql: str, dialect: str | None = None) -> str:
    """The statement with literals folded, lists collapsed, comments and spacing normalized.

    ``dialect`` is ``"postgresql"``, ``"mysql"``, ``"sqlite"`` or None (generic; see the module
    docstring for what differs). Raises ``TypeError`` when ``sql`` is not a ``str``.

    Example::

        >>> fingerprint("SELECT a FROM t WHERE b = %s AND c IN (%s, %s) -- note")
        'SELECT a FROM t WHERE b = ? AND c IN (?)'
    """
    if not isinstance(sql, str):
        raise TypeError(f"fingerprint() needs the SQL text as str, not {type(sql).__name__}")
    rules = _dialect(dialect)
    folder = _Folder()
    _scan(sql, rules, folder)
    return folder.text()


def _scan(sql: str, d: _Dialect, f: _Folder) -> None:
    n = len(sql)
    pos = 0
    out = f.out
    op_chars = d.op_chars
    ws_match = _WS.match
    word_match = _WORD.match
    number_match = _NUMBER.match
    fast_list = _FAST_LIST[d.backslash].match
    find = sql.find
    op_run = d.op_run.match
    keeper_search = d.keeper.search
    # Positions found once and reused while they still lie ahead (see the operator branch):
    # the end of the current operator run, the first "--" / "/*" / sign keeper inside it, and
    # the first ")" after a "%(".
    run_end = dash = slash = keep = paren = -1
    while pos < n:
        c = sql[pos]
        nxt = sql[pos + 1] if pos + 1 < n else ""
        # ---------------------------------------------------------------- white space
        if c.isspace():
            pos = ws_match(sql, pos).end()  # type: ignore[union-attr]
            continue
        # ---------------------------------------------------------------- words
        if c.isalpha() or c == "_":
            m = word_match(sql, pos)
            if m is None:  # a letter \w does not cover (rare marks): keep it as it is
                f.token(c)
                pos += 1
                continue
            word = m.group()
            end = m.end()
            upper = word.upper()
            after = sql[end] if end < n else ""
            if after == "'" and ((len(word) == 1 and upper in "XBEN") or word[0] == "_"):
                # X'1F' B'101' E'..' N'..' and MySQL charset introducers (_utf8mb4'..')
                esc = d.backslash or upper == "E"
                close = _scan_quoted(sql, end, "'", esc)
                f.literal()
                pos = n if close < 0 else close
                continue
            if upper == "U" and sql.startswith("&'", end) and d.name != "mysql":
                close = _scan_quoted(sql, end + 1, "'", False)
                f.literal()
                pos = n if close < 0 else close
                continue
            pos = end
            if upper in _KEYWORDS:
                if upper in ("NULL", "TRUE", "FALSE"):
                    prev = out[-1] if out else None
                    if prev not in {"IS", "NOT"}:
                        f.literal()
                        continue
                if upper == "VALUES" or (upper == "VALUE" and d.value_keyword):
                    f.token(upper)
                    frame = f.frames[-1]
                    frame.v_mode = 1
                    frame.v_shapes = set()
                    continue
                f.token(upper)
            else:
                f.token(word)
            continue
        # ---------------------------------------------------------------- numbers
        if "0" <= c <= "9" or (c == "." and "0" <= nxt <= "9" and nxt
                               and not (out and _is_name(out[-1]))):
            m = _RADIX_NUMBER.match(sql, pos) if c == "0" else None
            if m is None:
                m = number_match(sql, pos)
            pos = m.end()  # type: ignore[union-attr]
            f.literal()
            if f.in_plain_list_element():
                pos = fast_list(sql, pos).end()  # type: ignore[union-attr]
            continue
        # ---------------------------------------------------------------- strings, quotes
        if c == "'":
            close = _scan_quoted(sql, pos, "'", d.backslash)
            f.literal()
            pos = n if close < 0 else close
            if close >= 0 and f.in_plain_list_element():
                pos = fast_list(sql, pos).end()  # type: ignore[union-attr]
            continue
        if c == '"':
            close = _scan_quoted(sql, pos, '"', d.dq_string)
            if close < 0:
                f.literal()  # never closed: fold the rest rather than copy it
                pos = n
            elif d.dq_string:
                f.literal()
                pos = close
            else:
                f.token(sql[pos:close])
                pos = close
            continue
        if c == "`":
            close = _scan_quoted(sql, pos, "`", False)
            if close < 0:
                f.literal()
                pos = n
            else:
                f.token(sql[pos:close])
                pos = close
            continue
        if c == "[" and d.sq_brackets:
            close = sql.find("]", pos + 1)
            if close < 0:
                f.literal()
                pos = n
            else:
                f.token(sql[pos:close + 1])
                pos = close + 1
            continue
        # ---------------------------------------------------------------- comments
        if c == "-" and nxt == "-":
            if d.name != "mysql" or pos + 2 >= n or sql[pos + 2] <= " ":
                j = sql.find("\n", pos + 2)
                pos = n if j < 0 else j + 1
                continue
        elif c == "/" and nxt == "*":
            pos = _skip_block_comment(sql, pos, d.nested_comments)
            continue
        elif c == "#" and (d.hash_comment == 2 or (d.hash_comment == 1 and nxt not in ">-")):
            j = sql.find("\n", pos + 1)
            pos = n if j < 0 else j + 1
            continue
        # ---------------------------------------------------------------- punctuation
        if c in {"(", "["}:
            f.open(c)
            pos += 1
            continue
        if c in {")", "]"}:
            width = f.close(c)
            pos += 1
            if width:
                pos = _fast_rows(width, d.backslash).match(sql, pos).end()  # type: ignore[union-attr]
            continue
        if c == ",":
            f.comma()
            pos += 1
            continue
        # ---------------------------------------------------------------- placeholders
        if c == "?":
            m = _DIGITS.match(sql, pos + 1)
            pos = m.end() if m is not None else pos + 1
            f.literal()
            if f.in_plain_list_element():
                pos = fast_list(sql, pos).end()  # type: ignore[union-attr]
            continue
        if c == "%":
            if nxt in "sbt" and nxt and not (pos + 2 < n and _is_word_char(sql[pos + 2])):
                pos += 2
                f.literal()
                if f.in_plain_list_element():
                    pos = fast_list(sql, pos).end()  # type: ignore[union-attr]
                continue
            if nxt == "(":
                # %(name)s: the first ")" after "%(" must be followed by s, b or t. That ")"
                # is found once for a run of "%(" (matching "%\([^)]*\)" from each one
                # rescanned the rest of the text every time).
                if paren < pos + 2:
                    paren = find(")", pos + 2)
                    if paren < 0:
                        paren = n
                if paren + 1 < n and sql[paren + 1] in "sbt":
                    pos = paren + 2
                    f.literal()
                    continue
            # "%%" is a literal percent sign in the format paramstyles; "%" alone is modulo
            pos += 2 if nxt == "%" else 1
            f.token("%")
            continue
        if c == ":":
            if nxt == ":":
                f.token("::")
                pos += 2
                continue
            if nxt == "=":
                f.token(":=")
                pos += 2
                continue
            if nxt and (_is_word_char(nxt)) and not (out and out[-1] == "::"):
                m = word_match(sql, pos + 1) or _DIGITS.match(sql, pos + 1)
                if m is not None:
                    pos = m.end()
                    f.literal()
                    continue
            f.token(":")
            pos += 1
            continue
        if c == "$":
            if "0" <= nxt <= "9" and nxt:
                pos = _DIGITS.match(sql, pos + 1).end()  # type: ignore[union-attr]
                f.literal()
                if f.in_plain_list_element():
                    pos = fast_list(sql, pos).end()  # type: ignore[union-attr]
                continue
            if d.dollar_quotes and not (pos > 0 and _is_word_char(sql[pos - 1])):
                m = _DOLLAR_TAG.match(sql, pos)
                if m is not None:
                    tag = m.group()
                    close = sql.find(tag, m.end())
                    f.literal()
                    pos = n if close < 0 else close + len(tag)
                    continue
            m = word_match(sql, pos + 1)
            if m is not None:
                if d.name == "mysql":
                    f.token(sql[pos:m.end()])  # MySQL allows '$' to start an identifier
                else:
                    f.literal()  # SQLite's $name parameter
                pos = m.end()
                continue
            f.token("$")
            pos += 1
            continue
        if c == "@" and d.name != "postgresql" and (nxt == "@" or _is_word_char(nxt)):
            start = pos + 2 if nxt == "@" else pos + 1
            m = word_match(sql, start)
            if m is not None:
                if d.name == "sqlite":
                    f.literal()  # SQLite's @name parameter
                else:
                    f.token(sql[pos:m.end()])  # a MySQL user/system variable: a name
                pos = m.end()
                continue
        # ---------------------------------------------------------------- operators
        if c in op_chars:
            if pos + 1 >= n or sql[pos + 1] not in op_chars:  # the common case: "=", "<"
                f.token(c)
                pos += 1
                continue
            # A run of operator characters. Its end, and where in it a comment starts or a
            # sign keeper sits, are found once and reused while the scan is still inside the
            # run (a comment can end inside it: "*/*/*/"), so a run costs one pass however it
            # splits into tokens. Re-finding them from every position made a run of "+"
            # cubic and a run of "*/" quadratic.
            if pos >= run_end:
                run_end = op_run(sql, pos).end()  # type: ignore[union-attr]
                dash = slash = keep = -1
            if dash <= pos:
                dash = find("--", pos + 1, run_end)
                if dash < 0:
                    dash = run_end
            if slash <= pos:
                slash = find("/*", pos + 1, run_end)
                if slash < 0:
                    slash = run_end
            if keep < pos:
                m = keeper_search(sql, pos, run_end)
                keep = run_end if m is None else m.start()
            # An operator never swallows the start of a comment.
            cut = dash if dash < slash else slash
            if keep < cut:
                f.token(sql[pos:cut])
            else:
                # No sign keeper: trailing + and - are signs of what follows ("x=-5" reads
                # as "x = -5"); each is a token of its own, the rest is one operator.
                seg = sql[pos:cut]
                head = seg.rstrip("+-") or seg[0]
                f.token(head)
                for ch in seg[len(head):]:
                    f.token(ch)
            pos = cut
            continue
        if c == ";":
            frame = f.frames[-1]
            frame.v_mode = 0
            f.token(";")
            pos += 1
            continue
        # anything else ("." "{" "}" "\" stray quotes of other alphabets): one char, as is
        f.token(c)
        pos += 1


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch in {"_", "$"}


def redact(sql: str | bytes, limit: int = 200, *, dialect: str | None = None,
           read_chars: int | None = None) -> str:
    """A short, literal-free rendering of a statement for error messages and logs.

    The fingerprint, cut to ``limit`` characters with the number of characters left out.
    Statements over ``read_chars`` (default 1 MB) are read only up to that point (an
    unfinished literal at the cut is folded like any other), so an error path never spends
    seconds on a giant batch.

    Example::

        >>> redact("UPDATE users SET password = 'hunter2' WHERE id = 7")
        'UPDATE users SET password = ? WHERE id = ?'
    """
    if limit < 1:
        raise ValueError(f"limit={limit!r} must be at least 1 character")
    read = _REDACT_READ_CHARS if read_chars is None else read_chars
    if read < 1:
        raise ValueError(f"read_chars={read_chars!r} must be at least 1 character")
    text = sql.decode("utf-8", "replace") if isinstance(sql, bytes) else str(sql)
    clipped = len(text) > read
    if clipped:
        text = text[:read]
    folded = fingerprint(text, dialect)
    if len(folded) <= limit and not clipped:
        return folded
    shown = folded[:limit]
    if clipped:
        return f"{shown}... (statement over {read:,} chars, cut)"
    return f"{shown}... (+{len(folded) - limit} chars)"


_REDACT_READ_CHARS = 1 << 20
#: how much of a statement an error message or a live view reads (``redact(read_chars=)``):
#: they show 200 characters, and fingerprinting 64 KiB costs at most ~40 ms (1 MB: ~0.7 s),
#: so a timed-out or stuck 10 MB batch is never fingerprinted whole again to be described
MESSAGE_READ_CHARS = 64 << 10


class FingerprintCache:
    """Recent SQL texts -> fingerprints, so the hot path never parses a repeated text twice.

    Bounded by ``max_entries`` and by ``max_bytes`` (the estimated memory of the texts and
    fingerprints it holds, ``sys.getsizeof`` of both plus a per-entry overhead); least recently
    used entries go first. Texts longer than ``max_text_chars`` are fingerprinted every time and
    never cached: they are the batch statements that would fill the cache (and they are rarely
    repeated byte for byte). Thread-safe.

    Example::

        >>> cache = FingerprintCache(max_entries=100, max_bytes=1 << 20)
        >>> cache.fingerprint("SELECT 1")
        'SELECT ?'
        >>> cache.fingerprint("SELECT 1"), cache.hits, cache.misses
        ('SELECT ?', 1, 1)
    """

    #: estimated bytes of one entry besides its two strings (the LRU's node and tuple)
    ENTRY_OVERHEAD_BYTES = 160

    def __init__(self, max_entries: int = 1024, max_bytes: int = 1 << 20,
                 max_text_chars: int = 16_384, dialect: str | None = None) -> None:
        if not isinstance(max_entries, int) or max_entries < 0:
            raise ValueError(f"max_entries={max_entries!r} must be a whole number >= 0")
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes={max_bytes!r} must be a whole number >= 0")
        if not isinstance(max_text_chars, int) or max_text_chars < 0:
            raise ValueError(f"max_text_chars={max_text_chars!r} must be a whole number >= 0")
        self.dialect = _dialect(dialect).name
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_text_chars = max_text_chars
        self._map: LRU[str, str] = LRU(max_entries, max_bytes)
        self._lock = threading.Lock()
        #: texts fingerprinted without caching because they were over max_text_chars
        self.uncacheable = 0

    @property
    def hits(self) -> int:
        """Lookups answered from the cache."""
        return self._map.hits

    @property
    def misses(self) -> int:
        return self._map.misses

    @property
    def evictions(self) -> int:
        return self._map.evictions

    def fingerprint(self, sql: str) -> str:
        """The fingerprint of ``sql``, from the cache when the same text was seen recently."""
        hit = self._map.get(sql)
        if hit is not None:
            return hit
        fp = fingerprint(sql, self.dialect)
        size = sys.getsizeof(sql) + sys.getsizeof(fp) + self.ENTRY_OVERHEAD_BYTES
        if len(sql) > self.max_text_chars or size > self.max_bytes or self.max_entries == 0:
            with self._lock:
                self.uncacheable += 1
            return fp
        self._map.put(sql, fp, size)
        return fp

    __call__ = fingerprint

    @property
    def nbytes(self) -> int:
        """Estimated bytes held now (texts, fingerprints, per-entry overhead)."""
        return self._map.nbytes

    @property
    def budget_bytes(self) -> int:
        """The byte bound (``max_bytes``)."""
        return self.max_bytes

    def __len__(self) -> int:
        return len(self._map)

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._map.clear()

    def stats(self) -> dict[str, int]:
        """Counters and gauges: entries, bytes, budget, hits, misses, evictions, uncacheable."""
        lru = self._map.stats()
        with self._lock:
            uncacheable = self.uncacheable
        return {
            "entries": lru["size"],
            "bytes": lru["bytes"],
            "budget_bytes": self.max_bytes,
            "hits": lru["hits"],
            "misses": lru["misses"],
            "evictions": lru["evictions"],
            "uncacheable": uncacheable,
        }
