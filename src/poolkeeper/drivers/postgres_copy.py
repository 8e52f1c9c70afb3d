"""``COPY ... FROM STDIN`` text format, written by psycopg's own formatter (PostgreSQL).

The loader encodes each row once, before any connection is borrowed, into the bytes COPY
reads. psycopg already has the formatter (its C version runs at the speed of a raw COPY) and
the dumpers that decide each value's text, so the adapter lends them instead of the loader
importing psycopg: :meth:`PostgresDriver.copy_text_format() <.postgres.PostgresDriver>`
returns one :class:`CopyTextFormat`. Example::

    fmt = pool.driver.copy_text_format()
    out = bytearray()
    fmt.format_row((1, "a\\tb", None), fmt.context, out)   # b"1\\ta\\\\tb\\t\\\\N\\n"
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

__all__ = ["CopyTextFormat"]

#: ``fn(row, ctx, out)``: append one COPY text line for ``row`` to ``out``
RowFormatter = Callable[[Sequence[Any], Any, bytearray], None]


class CopyTextFormat:
    """psycopg's COPY text formatter, with dumpers fit for rows encoded without a connection.

    ``format_row(row, context, out)`` appends one line (values tab-separated, ``\\N`` for
    NULL, a newline at the end) and raises psycopg's error for a value it cannot adapt;
    ``builtin_dumpers`` says whether the dumpers of the common types are psycopg's own (a
    formatter reproducing their text, like the loader's row plans, is then exact).
    """

    def __init__(self) -> None:
        import psycopg
        from psycopg.adapt import AdaptersMap, Dumper, PyFormat, Transformer

        class HexBytesDumper(Dumper):
            # psycopg's own bytes dumper needs a connection to choose the hex format; without
            # one it falls back to the escape format meant for SQL literals, which COPY would
            # escape a second time. Rows are encoded before any connection is borrowed.
            oid = psycopg.adapters.types["bytea"].oid

            def dump(self, obj: Any) -> bytes:
                return b"\\x" + bytes(obj).hex().encode()

        adapters = AdaptersMap(psycopg.adapters)
        for cls in (bytes, bytearray, memoryview):
            adapters.register_dumper(cls, HexBytesDumper)
        #: what ``format_row`` takes as its context: psycopg's Transformer over these dumpers
        self.context: Any = Transformer(adapters)
        self._text = PyFormat.TEXT
        try:
            # The formatter psycopg's own Copy.write_row() uses: the C version runs at the
            # speed of a raw COPY. A private name, hence the public fallback below.
            from psycopg._copy_base import format_row_text

            self.format_row: RowFormatter = format_row_text
        except ImportError:  # pragma: no cover - depends on the psycopg version
            self.format_row = self._format_public
        self.builtin_dumpers = self._builtin_dumpers(self.context, PyFormat.TEXT)

    @staticmethod
    def _builtin_dumpers(tx: Any, text: Any) -> bool:
        """Whether psycopg's own dumpers format the common types.

        A dumper registered by the application (psycopg.adapters is global) would write
        something else than psycopg's, which a formatter copying psycopg's text must know.
        """
        samples = (1, "a", 0.5, Decimal("1.5"), _dt.datetime(2000, 1, 1),
                   _dt.datetime(2000, 1, 1, tzinfo=_dt.UTC))
        try:
            modules = [type(tx.get_dumper(v, text)).__module__ for v in samples]
        except Exception:  # noqa: BLE001 - whatever psycopg says, the generic path is safe
            return False
        return all(m.startswith(("psycopg.types.", "psycopg_binary.", "psycopg_c."))
                   for m in modules)

    def _format_public(self, row: Sequence[Any], tx: Any, out: bytearray) -> None:
        dumped = tx.dump_sequence(row, [self._text] * len(row))
        out += b"\t".join(
            rb"\N" if b is None else bytes(b).replace(b"\\", b"\\\\").replace(b"\t", b"\\t")
            .replace(b"\n", b"\\n").replace(b"\r", b"\\r") for b in dumped)
        out += b"\n"
