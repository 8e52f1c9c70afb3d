"""How a batch's rows reach each database, and the transaction around them.

======================  ==========================================================  =========
target                  statement                                                   driver
======================  ==========================================================  =========
``copy``                ``COPY t (cols) FROM STDIN`` (psycopg ``cursor.copy()``)     psycopg
``load_data``           ``LOAD DATA LOCAL INFILE`` from the loader's own temp file   PyMySQL
``insert``              chunked multi-row ``INSERT`` (fallback)                     PyMySQL
``executemany``         ``executemany`` of one ``INSERT``, in one transaction        sqlite3
======================  ==========================================================  =========

``LOAD DATA LOCAL`` lets the *server* name the file the client sends. The loader therefore
enables it only on its own connections and only for the duration of its own statement, and
refuses any file name but the temp file it just wrote (a hostile or confused server asking for
``/etc/passwd`` gets an error, not the file). Connections of the pool are used for it only
when the pool opened them with the ``CLIENT.LOCAL_FILES`` capability (PyMySQL
``client_flag``); otherwise the loader opens its own, one per worker, with that capability but
with PyMySQL's ``local_infile`` left off, so no other statement can ever send a file.

A target raises the driver's own error, or :class:`DataProblem` when the database accepted the
statement but changed or skipped rows (MariaDB turns data errors of ``LOAD DATA LOCAL`` into
warnings): no row is ever silently altered.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import logging
import os
import re
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from ..errors import LoaderError
from .batch import Batch
from .codec import Codec

__all__ = [
    "CopyTarget",
    "DataProblem",
    "ExecuteManyTarget",
    "InsertTarget",
    "LoadDataTarget",
    "Session",
    "StatementCanceller",
    "Target",
    "make_target",
    "mysql_local_infile_ready",
    "quote_column",
    "quote_ident",
]

logger = logging.getLogger("poolkeeper.loader")

_ROW_AT = re.compile(r"\bat row (\d+)")
_PG_LINE = re.compile(r", line (\d+)(?:[,:]|$)")
#: pymysql.constants.CLIENT.LOCAL_FILES
_LOCAL_FILES = 128
#: LOAD DATA LOCAL data packets: PyMySQL's size, the floor; 8 MiB, the ceiling (a payload of
#: 16 MiB - 1 would mean "continued" in the protocol); room left for the packet's header
_DEFAULT_FILE_PACKET = 16 * 1024
_MAX_FILE_PACKET = 8 << 20
_PACKET_SLACK = 1024
#: the longest one server-side cancel may take before it counts as failed
_CANCEL_TIMEOUT_S = 5.0


class StatementCanceller(Protocol):
    """What the loader calls of the canceller ``pool.driver.canceller()`` returns (the
    driver's server-side cancel): named here, so that the loader uses the adapter's public
    method and no module of drivers/."""

    def cancel(self, raw: Any, session_id: Any) -> bool | None:
        """Stop what runs on ``raw`` now; raises when the cancel cannot be delivered."""

    def close(self) -> None:
        """Release what the canceller holds (the MariaDB control connection)."""


class DataProblem(Exception):
    """Rows were refused or altered by the database (e.g. MariaDB warnings on LOAD DATA).

    ``row`` is the 0-based index of the first offending row within the statement, when the
    database said which.
    """

    def __init__(self, message: str, *, row: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.code = code


def quote_ident(dialect: str, name: str) -> str:
    """Quote a (possibly ``schema.table``) identifier for a dialect; dots separate parts."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"table and column names must be non-empty strings, not {name!r}")
    q = "`" if dialect == "mysql" else '"'
    return ".".join(q + part.replace(q, q + q) + q for part in name.split("."))


def quote_column(dialect: str, name: str) -> str:
    """Quote one column name (dots are part of the name here)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"column names must be non-empty strings, not {name!r}")
    q = "`" if dialect == "mysql" else '"'
    return q + name.replace(q, q + q) + q


def _column_list(dialect: str, columns: Sequence[str] | None) -> str:
    if not columns:
        return ""
    return " (" + ", ".join(quote_column(dialect, c) for c in columns) + ")"


class Session:
    """One connection for one attempt at one batch."""

    __slots__ = ("dialect", "proxy", "raw")

    def __init__(self, raw: Any, proxy: Any, dialect: str) -> None:
        self.raw = raw
        self.proxy = proxy
        self.dialect = dialect

    def run(self, sql: str, params: Sequence[Any] | None = None) -> int:
        """Execute one statement; the affected row count."""
        cur = self.proxy.cursor() if self.proxy is not None else self.raw.cursor()
        try:
            cur.execute(sql, params)
            return int(cur.rowcount)
        finally:
            cur.close()

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[Any]:
        cur = self.proxy.cursor() if self.proxy is not None else self.raw.cursor()
        try:
            cur.execute(sql, params)
            return list(cur.fetchall())
        finally:
            cur.close()


class Target:
    """Base: borrows pool connections and runs a batch in one transaction."""

    name = "base"
    #: whether the database reports which row failed (else isolation bisects)
    dialect = ""

    def __init__(self, pool: Any, codec: Codec) -> None:
        self.pool = pool
        self.codec = codec
        self.connections_opened = 0
        self._active: dict[int, Any] = {}
        self._active_lock = threading.Lock()
        #: the pool driver's server-side cancel (MariaDB: one control connection), made on
        #: the first cancel_all() and released by close()
        self._canceller: StatementCanceller | None = None
        self.cancels_sent = 0
        self.cancel_failures = 0

    @contextlib.contextmanager
    def session(self, timeout: float) -> Iterator[Session]:
        """A pool connection for one attempt: rolled back and returned on any exception."""
        with self.pool.connection(timeout) as conn:
            raw = conn.raw
            key = threading.get_ident()
            with self._active_lock:
                self._active[key] = raw
            try:
                yield Session(raw, conn, self.dialect)
            finally:
                with self._active_lock:
                    self._active.pop(key, None)

    # ---------------------------------------------------------------- transaction
    def begin(self, s: Session) -> None:
        s.raw.begin()

    def commit(self, s: Session) -> None:
        s.raw.commit()

    def savepoint(self, s: Session, name: str) -> None:
        s.run(f"SAVEPOINT {name}")

    def rollback_to(self, s: Session, name: str) -> None:
        s.run(f"ROLLBACK TO SAVEPOINT {name}")
        s.run(f"RELEASE SAVEPOINT {name}")

    def release(self, s: Session, name: str) -> None:
        s.run(f"RELEASE SAVEPOINT {name}")

    # ---------------------------------------------------------------- data
    def load(self, s: Session, batch: Batch, lo: int, hi: int) -> None:
        """Load rows ``lo`` .. ``hi - 1`` of ``batch`` in the open transaction."""
        raise NotImplementedError

    def row_hint(self, exc: BaseException) -> int | None:
        """The 0-based index (within the failed statement) of the row the error names."""
        if isinstance(exc, DataProblem):
            return exc.row
        m = _ROW_AT.search(str(exc))
        return int(m.group(1)) - 1 if m else None

    def error_code(self, exc: BaseException) -> str | None:
        if isinstance(exc, DataProblem):
            return exc.code
        code = getattr(exc, "sqlstate", None) or getattr(exc, "sqlite_errorname", None)
        if code:
            return str(code)
        args = getattr(exc, "args", ())
        if args and isinstance(args[0], int):
            return str(args[0])
        return None

    def cancel_all(self) -> int:
        """Interrupt the statements running on this target's connections, on the server
        (abort, close timeout): the pool driver's cancel (PostgreSQL cancel request,
        MariaDB ``KILL QUERY ID`` over a control connection, sqlite3 ``interrupt()``).

        Returns how many cancels were delivered; one that cannot be delivered is logged
        and counted (``cancel_failures``), and the worker's statement runs on.
        """
        with self._active_lock:
            raws = list(self._active.values())
            if raws and self._canceller is None:
                self._canceller = self.pool.driver.canceller(_CANCEL_TIMEOUT_S)
            canceller = self._canceller
        if canceller is None:
            return 0
        sent = 0
        for raw in raws:
            try:
                canceller.cancel(raw, self.pool.driver.session_id(raw))
            except Exception as exc:  # noqa: BLE001 - reported; the worker's error tells
                self.cancel_failures += 1
                logger.warning("loader: could not cancel a running statement on the server "
                               "(%s: %s); its worker waits until the statement ends",
                               type(exc).__name__, exc)
            else:
                sent += 1
        self.cancels_sent += sent
        return sent

    def close(self) -> None:
        """Release what the target holds itself (its own connections, the canceller)."""
        with self._active_lock:
            canceller, self._canceller = self._canceller, None
        if canceller is not None:
            canceller.close()

    def describe(self) -> str:
        return self.name


# ---------------------------------------------------------------------------- PostgreSQL
class CopyTarget(Target):
    """PostgreSQL ``COPY ... FROM STDIN`` through psycopg's ``cursor.copy()``."""

    name = "copy"
    dialect = "postgresql"

    def begin(self, s: Session) -> None:
        # Non-autocommit psycopg starts the transaction with the first statement; an
        # autocommit pool needs an explicit one, or the ledger row would commit alone.
        if s.raw.autocommit:
            s.run("BEGIN")
        # The codec writes UTF-8; COPY reads the client_encoding. A pool on LATIN1 (or a
        # LATIN1 database, whose connections default to it) would store every multi-byte
        # character as mojibake, silently. UTF8 for this transaction only: the server then
        # converts what the column can hold and refuses the rest (22P05, a reject).
        if codecs.lookup(s.raw.info.encoding).name != "utf-8":
            s.run("SET LOCAL client_encoding = 'UTF8'")

    def commit(self, s: Session) -> None:
        if s.raw.autocommit:
            s.run("COMMIT")
        else:
            s.raw.commit()

    def load(self, s: Session, batch: Batch, lo: int, hi: int) -> None:
        sql = (f"COPY {quote_ident('postgresql', batch.table)}"
               f"{_column_list('postgresql', batch.columns)} FROM STDIN")
        with s.raw.cursor() as cur:
            with cur.copy(sql) as cp:
                cp.write(batch.span(lo, hi))
            if cur.rowcount >= 0 and cur.rowcount != hi - lo:
                raise DataProblem(f"COPY loaded {cur.rowcount} rows of {hi - lo}")

    def row_hint(self, exc: BaseException) -> int | None:
        diag = getattr(exc, "diag", None)
        context = getattr(diag, "context", None) if diag is not None else None
        if context:
            for line in str(context).splitlines():
                if line.startswith("COPY "):
                    m = _PG_LINE.search(line)
                    if m:
                        return int(m.group(1)) - 1
        return super().row_hint(exc)


# ---------------------------------------------------------------------------- SQLite
class ExecuteManyTarget(Target):
    """SQLite: one ``executemany`` of an ``INSERT`` per span, in one transaction."""

    name = "executemany"
    dialect = "sqlite"

    def begin(self, s: Session) -> None:
        s.run("BEGIN")

    def load(self, s: Session, batch: Batch, lo: int, hi: int) -> None:
        decode = self.codec.decode
        rows = [decode(batch.record(i)) for i in range(lo, hi)]
        width = len(batch.columns) if batch.columns else len(rows[0])
        sql = (f"INSERT INTO {quote_ident('sqlite', batch.table)}"
               f"{_column_list('sqlite', batch.columns)} VALUES "
               f"({', '.join('?' * width)})")
        cur = s.proxy.cursor() if s.proxy is not None else s.raw.cursor()
        try:
            cur.executemany(sql, rows)
        finally:
            cur.close()


# ---------------------------------------------------------------------------- MariaDB/MySQL
class _MysqlBase(Target):
    dialect = "mysql"

    def __init__(self, pool: Any, codec: Codec) -> None:
        # The session time zone is UTC during a batch, so timezone-aware datetimes (sent in
        # UTC by the codec) mean the same instant in TIMESTAMP columns.
        super().__init__(pool, codec)

    @contextlib.contextmanager
    def session(self, timeout: float) -> Iterator[Session]:
        with super().session(timeout) as s:
            s.run("SET @poolkeeper_tz = @@session.time_zone, time_zone = '+00:00'")
            try:
                yield s
            finally:
                # Restored on every path: the connection goes back to other borrowers.
                try:
                    s.run("SET time_zone = @poolkeeper_tz")
                except Exception as exc:  # noqa: BLE001 - a dead connection is discarded anyway
                    logger.debug("loader: restoring time_zone failed: %s", exc)

    def begin(self, s: Session) -> None:
        s.raw.begin()

    def commit(self, s: Session) -> None:
        s.raw.commit()

    def _check_warnings(self, s: Session, affected: int, expected: int, what: str,
                        warnings: int | None = None) -> None:
        if warnings is None:
            # SELECT @@warning_count is a diagnostic statement: it keeps the warnings
            warnings = int(s.query("SELECT @@warning_count")[0][0])
        if not warnings and affected == expected:
            return
        rows = s.query("SHOW WARNINGS LIMIT 20") if warnings else []
        # Notes (e.g. "table already exists") change no data; warnings and errors do.
        problems = [r for r in rows if str(r[0]) in ("Warning", "Error")]
        if not problems and affected == expected:
            return
        if problems:
            level, code, message = problems[0][0], problems[0][1], str(problems[0][2])
            m = _ROW_AT.search(message)
            raise DataProblem(
                f"{what} {'refused' if affected != expected else 'altered'} rows: "
                f"{level} {code}: {message}"
                + (f" ({warnings} warnings, {affected} of {expected} rows stored)"),
                row=int(m.group(1)) - 1 if m else None, code=str(code))
        if affected != expected:
            raise DataProblem(f"{what} stored {affected} of {expected} rows")


class InsertTarget(_MysqlBase):
    """MariaDB/MySQL fallback: chunked multi-row ``INSERT`` with escaped literals."""

    name = "insert"

    def __init__(self, pool: Any, codec: Codec, max_statement_bytes: int = 4 << 20) -> None:
        super().__init__(pool, codec)
        self.max_statement_bytes = max_statement_bytes

    def load(self, s: Session, batch: Batch, lo: int, hi: int) -> None:
        raw = s.raw
        escape = raw.escape
        decode = self.codec.decode
        head = (f"INSERT INTO {quote_ident('mysql', batch.table)}"
                f"{_column_list('mysql', batch.columns)} VALUES ")
        parts: list[str] = []
        size = 0
        first = lo
        for i in range(lo, hi):
            lit = "(" + ",".join(escape(v) for v in decode(batch.record(i))) + ")"
            if parts and size + len(lit) > self.max_statement_bytes:
                self._insert(s, head, parts, first, lo)
                parts, size, first = [], 0, i
            parts.append(lit)
            size += len(lit) + 1
        if parts:
            self._insert(s, head, parts, first, lo)

    def _insert(self, s: Session, head: str, parts: list[str], first: int, lo: int) -> None:
        cur = s.raw.cursor()
        try:
            try:
                affected = cur.execute(head + ",".join(parts))
            except Exception as exc:
                hint = super().row_hint(exc)
                if hint is not None:
                    exc.poolkeeper_row = first - lo + hint  # type: ignore[attr-defined]
                raise
            warnings = int(cur.warning_count)
        finally:
            cur.close()
        try:
            self._check_warnings(s, int(affected), len(parts), "INSERT", warnings)
        except DataProblem as problem:
            if problem.row is not None:
                problem.row += first - lo
            raise

    def row_hint(self, exc: BaseException) -> int | None:
        row = getattr(exc, "poolkeeper_row", None)
        if row is not None:
            return int(row)
        return exc.row if isinstance(exc, DataProblem) else None


class LoadDataTarget(_MysqlBase):
    """MariaDB/MySQL ``LOAD DATA LOCAL INFILE`` from the loader's own temp file."""

    name = "load_data"

    def __init__(self, pool: Any, codec: Codec, temp_dir: str, *, use_pool: bool,
                 connect_timeout: float = 10.0) -> None:
        super().__init__(pool, codec)
        self.temp_dir = temp_dir
        self.use_pool = use_pool
        self.connect_timeout = connect_timeout
        self._spare: list[Any] = []
        self._own: set[int] = set()
        self._files = itertools.count(1)
        self.refused_paths = 0
        self._packet_sizes: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    # ---------------------------------------------------------------- own connections
    def _open(self) -> Any:
        # The driver opens it: the LOCAL INFILE capability on, PyMySQL's own local_infile
        # off, so only execute_sending_file() ever sends a file, and only the loader's own.
        raw = self.pool.driver.connect_for_local_files(self.connect_timeout)
        self.connections_opened += 1
        try:
            with raw.cursor() as cur:
                cur.execute("SET time_zone = '+00:00'")
            raw.commit()
        except Exception:
            raw.close()
            raise
        return raw

    @contextlib.contextmanager
    def session(self, timeout: float) -> Iterator[Session]:
        if self.use_pool:
            with _MysqlBase.session(self, timeout) as s:
                yield s
            return
        with self._active_lock:
            raw = self._spare.pop() if self._spare else None
        if raw is None:
            raw = self._open()
            self._own.add(id(raw))
        key = threading.get_ident()
        with self._active_lock:
            self._active[key] = raw
        keep = False
        try:
            yield Session(raw, None, self.dialect)
            keep = raw.open
        except BaseException:
            try:
                if raw.open:
                    raw.rollback()
                    keep = True
            except Exception:  # noqa: BLE001 - a connection that cannot roll back is closed
                keep = False
            raise
        finally:
            with self._active_lock:
                self._active.pop(key, None)
                if keep:
                    self._spare.append(raw)
            if not keep:
                self._own.discard(id(raw))
                with contextlib.suppress(Exception):
                    raw.close()

    def close(self) -> None:
        super().close()
        with self._active_lock:
            spare, self._spare = self._spare, []
        for raw in spare:
            with contextlib.suppress(Exception):
                raw.close()

    @property
    def open_connections(self) -> int:
        with self._active_lock:
            return len(self._spare) + sum(1 for r in self._active.values()
                                          if id(r) in self._own)

    # ---------------------------------------------------------------- data
    def load(self, s: Session, batch: Batch, lo: int, hi: int) -> None:
        path = os.path.join(self.temp_dir, f"batch-{next(self._files)}.tsv")
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(batch.span(lo, hi))
            raw = s.raw
            # The file is UTF-8 (the codec's); declared so, the server converts each value to
            # its column's charset, and what a column cannot hold is a warning (1366) that
            # _check_warnings turns into a reject. CHARACTER SET binary copied the bytes
            # unconverted: UTF-8 in a latin1 column, stored as mojibake with no warning.
            # (Binary columns take the bytes as they are either way.)
            sql = (f"LOAD DATA LOCAL INFILE {raw.escape(path)} INTO TABLE "
                   f"{quote_ident('mysql', batch.table)} CHARACTER SET utf8mb4 "
                   "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'"
                   f"{_column_list('mysql', batch.columns)}")
            affected = self.pool.driver.execute_sending_file(
                raw, sql, path, on_refused=self._refused, packet_bytes=self._packet_bytes(raw))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._check_warnings(s, affected, hi - lo, "LOAD DATA")

    def _refused(self) -> None:
        self.refused_paths += 1

    def _packet_bytes(self, raw: Any) -> int:
        """Payload of each data packet of the file: as large as the connection allows.

        Every packet is a socket send, and after each one the worker thread must take the GIL
        back from a writer thread that keeps it for up to sys.getswitchinterval() (5 ms):
        PyMySQL's 16 KiB packets made a 4 MiB batch wait ~250 of those. The session's
        max_allowed_packet is fixed when the connection opens, so it is asked once.
        """
        known = self._packet_sizes.get(raw)
        if known is None:
            with raw.cursor() as cur:
                cur.execute("SELECT @@session.max_allowed_packet")
                row = cur.fetchone()
            allowed = int(row[0]) if row else _DEFAULT_FILE_PACKET
            known = max(_DEFAULT_FILE_PACKET, min(allowed - _PACKET_SLACK, _MAX_FILE_PACKET))
            self._packet_sizes[raw] = known
        return known


def mysql_local_infile_ready(pool: Any) -> tuple[bool, bool, str]:
    """(server allows LOCAL INFILE, pool connections have the capability, why not)."""
    with pool.connection() as conn:
        value = conn.execute("SELECT @@GLOBAL.local_infile").fetchone()[0]
        capable = bool(int(getattr(conn.raw, "client_flag", 0)) & _LOCAL_FILES)
    on = str(value).upper() in ("1", "ON")
    why = "" if on else "the server has local_infile=OFF (SET GLOBAL local_infile=1 enables it)"
    return on, capable, why


def make_target(pool: Any, codec: Codec, *, temp_dir: str, mysql_local_infile: bool,
                connect_timeout: float) -> Target:
    """The fastest target the pool's driver and server allow (the reason is logged)."""
    driver = pool.driver.name
    if driver == "postgresql":
        return CopyTarget(pool, codec)
    if driver == "sqlite":
        return ExecuteManyTarget(pool, codec)
    if driver == "mysql":
        if not mysql_local_infile:
            logger.info("loader: LOAD DATA LOCAL disabled (mysql_local_infile=False); "
                        "using multi-row INSERT")
            return InsertTarget(pool, codec)
        on, capable, why = mysql_local_infile_ready(pool)
        if not on:
            logger.warning("loader: %s; falling back to multi-row INSERT (about 5x slower)", why)
            return InsertTarget(pool, codec)
        if not capable and not pool.driver.params:
            logger.warning("loader: the pool opens connections with its own connect(), so the "
                           "loader cannot open a LOCAL INFILE connection; using multi-row INSERT")
            return InsertTarget(pool, codec)
        return LoadDataTarget(pool, codec, temp_dir, use_pool=capable,
                              connect_timeout=connect_timeout)
    raise LoaderError(f"the loader supports postgresql, mysql and sqlite pools, not {driver!r}")
