"""A driver's error message fit for statistics and logs: the values it quotes redacted.

Drivers put data in their messages. PostgreSQL: ``invalid input syntax for type integer:
"s3cret"``, ``Key (email)=(x@y) already exists`` (its DETAIL line); MariaDB: ``Duplicate entry
'alice' for key 'email'``, ``Incorrect integer value: 'abc' for column ...``, and ``... near
'<the rest of the statement>' at line 1`` for a syntax error. Statistics keep the last error
of every fingerprint and show it in the admin tables, the console and the slow-statement log,
so :func:`error_text` keeps what tells errors apart (the class, the SQLSTATE or MariaDB error
number, the message's words) and replaces every quoted value with ``?``.

A quoted value may itself hold the quote character (MariaDB does not escape it in its
messages), or a newline that cuts it at the end of the first line: the known message shapes
are matched greedily first, and an unclosed quote hides the rest of the line.
"""

from __future__ import annotations

import re

__all__ = ["ERROR_TEXT_CHARS", "error_text"]

#: the longest text error_text() returns
ERROR_TEXT_CHARS = 200
# What is read of the first line before redacting (a message can quote a 10 MB value).
_READ_CHARS = ERROR_TEXT_CHARS * 4

# The shapes whose value runs to a known tail, matched greedily (a value holding the quote
# character is redacted whole): (pattern, replacement).
_GREEDY = (
    # MariaDB 1062 / 1586: Duplicate entry '<value>' for key '<key>'
    (re.compile(r"(Duplicate entry )'.*'( for key )"), r"\1'?'\2"),
    # MariaDB 1064: ... near '<rest of the statement>' at line 1
    (re.compile(r"( near )'.*'( at line \d+)"), r"\1'?'\2"),
    # MariaDB 1292 / 1366 / 1265: Incorrect <type> value: '<value>' for column ...
    (re.compile(r"( value: )'.*'( for )"), r"\1'?'\2"),
    # PostgreSQL: Key (<columns>)=(<values>) ... (a DETAIL line, should one come first)
    (re.compile(r"\)=\(.*\)"), ")=(?)"),
    # PostgreSQL: <what>: "<value>" at the end of the message
    (re.compile(r'(: )".*"$'), r'\1"?"'),
)
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"|`[^`\n]*`")
_UNCLOSED = re.compile(r"['\"`].*")
# PostgreSQL's "invalid byte sequence for encoding "UTF8": 0xff 0xfe": the bytes are data
_HEX_BYTES = re.compile(r"0x[0-9a-fA-F]+")


def _code(exc: BaseException) -> str | None:
    """The MariaDB error number (PyMySQL) and the SQLSTATE (psycopg, PyMySQL) of an error:
    ``1062/23000``, ``23505``."""
    codes = []
    args = exc.args
    if len(args) == 2 and isinstance(args[0], int) and not isinstance(args[0], bool) \
            and isinstance(args[1], str):
        codes.append(str(args[0]))
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        codes.append(sqlstate[:5])
    return "/".join(codes) or None


def _message(exc: BaseException) -> str:
    args = exc.args
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        return args[1]  # PyMySQL's (code, message): str() would show the tuple's repr
    return str(exc)


def redact_message(line: str) -> str:
    """``line`` with every quoted value replaced by ``?`` (the quotes kept)."""
    for pattern, replacement in _GREEDY:
        line = pattern.sub(replacement, line)
    line = _QUOTED.sub(lambda m: m.group()[0] + "?" + m.group()[0], line)
    # Whatever quote is left open hides the rest of the line. The redacted ones read '?' and
    # never open a quote again: only their characters outside of '?' are scanned.
    parts = re.split(r"('\?'|\"\?\"|`\?`)", line)
    for i in range(0, len(parts), 2):
        m = _UNCLOSED.search(parts[i])
        if m is not None:
            parts[i] = parts[i][:m.start()] + m.group()[0] + "?..."
            del parts[i + 1:]
            break
    return _HEX_BYTES.sub("0x?", "".join(parts))


def error_text(exc: BaseException) -> str:
    """``Class (code): first line`` of an error, quoted values redacted, at most
    ERROR_TEXT_CHARS characters.

    Example::

        >>> error_text(RuntimeError('invalid input syntax for type integer: "s3cret"'))
        'RuntimeError: invalid input syntax for type integer: "?"'
    """
    text = _message(exc).strip()
    line = redact_message(text.split("\n", 1)[0][:_READ_CHARS])
    code = _code(exc)
    head = type(exc).__name__ if code is None else f"{type(exc).__name__} ({code})"
    out = f"{head}: {line}" if line else head
    return out if len(out) <= ERROR_TEXT_CHARS else out[:ERROR_TEXT_CHARS - 3] + "..."
