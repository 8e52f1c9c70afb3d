"""LOAD DATA LOCAL INFILE on PyMySQL, sending only the file the caller names.

PyMySQL sends any file the server asks for once its ``local_infile`` is on, so a statement's
own SQL could read any file the process can. Here ``local_infile`` stays off and one statement
at a time answers the server's request, and only for the caller's path. This reads and replaces
PyMySQL internals (``_read_query_result``, ``MySQLResult._read_load_local_packet``,
``_read_packet``): it lives in ``drivers/``, the one place allowed to know a driver's
private fields. Tested against PyMySQL 1.1 (tests/test_loader.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import LoaderError

__all__ = ["LOCAL_FILES", "connect_for_local_files", "guarded_execute"]

#: pymysql.constants.CLIENT.LOCAL_FILES: the capability that lets the server accept LOAD DATA
#: LOCAL on a connection
LOCAL_FILES = 128


def connect_for_local_files(params: Mapping[str, Any], connect_timeout: float) -> Any:
    """A PyMySQL connection with the LOCAL INFILE capability but PyMySQL's own sender off."""
    import pymysql

    kwargs = dict(params)
    kwargs["client_flag"] = int(kwargs.get("client_flag", 0)) | LOCAL_FILES
    kwargs["local_infile"] = False
    kwargs.setdefault("connect_timeout", connect_timeout)
    kwargs.setdefault("charset", "utf8mb4")
    return pymysql.connect(**kwargs)


def guarded_execute(raw: Any, sql: str, path: str, *,
                    on_refused: Callable[[], None] | None = None,
                    packet_bytes: int = 16 * 1024) -> int:
    """Run ``sql`` on a PyMySQL connection, sending the file ``path`` and no other.

    For the duration of this one statement the connection answers the server's LOCAL INFILE
    request, but only when the server asks for exactly ``path``; any other name gets an empty
    file and a :class:`~poolkeeper.errors.LoaderError` (``on_refused`` is called first). The
    file goes in data packets of ``packet_bytes`` (the server refuses packets above its
    max_allowed_packet). The
    connection never sends a file otherwise (PyMySQL's ``local_infile`` stays off).
    """
    from pymysql.connections import MySQLResult

    expected = os.fsencode(path)

    class GuardedResult(MySQLResult):
        def _read_load_local_packet(self, first_packet: Any) -> None:
            conn: Any = self.connection
            me: Any = self
            requested = bytes(first_packet.get_all_data()[1:])
            if requested != expected:
                if on_refused is not None:
                    on_refused()
                # Keep the protocol in step: an empty file, then the server's answer.
                conn.write_packet(b"")
                with contextlib.suppress(Exception):
                    answer = conn._read_packet()
                    if answer.is_ok_packet():
                        me._read_ok_packet(answer)
                raise LoaderError(
                    f"the server asked for the local file {requested!r} but this statement "
                    f"sends only the loader's own {path!r}; refused")
            _send_file(conn, me, path, packet_bytes)

    def read_query_result(unbuffered: bool = False) -> Any:
        raw._result = None
        result = GuardedResult(raw)
        result.read()
        raw._result = result
        if result.server_status is not None:
            raw.server_status = result.server_status
        return result.affected_rows

    raw._read_query_result = read_query_result
    try:
        with raw.cursor() as cur:
            return int(cur.execute(sql))
    finally:
        with contextlib.suppress(AttributeError):
            del raw._read_query_result


def _send_file(conn: Any, result: Any, path: str, packet_bytes: int) -> None:
    """Answer a LOCAL INFILE request: the file in data packets, the empty packet that ends
    it, then the server's OK (as PyMySQL's own sender does, with packets of our size)."""
    from pymysql import err
    from pymysql.constants import CR, ER

    try:
        try:
            with open(path, "rb", buffering=0) as fh:
                # read(n) allocates n bytes before it reads: never more than the file holds
                # (a 4 KiB batch must not cost an 8 MiB buffer)
                step = max(1, min(packet_bytes, os.fstat(fh.fileno()).st_size))
                while chunk := fh.read(step):
                    conn.write_packet(chunk)
        except OSError as exc:
            raise err.OperationalError(ER.FILE_NOT_FOUND,
                                       f"Can't open file '{path}': {exc}") from exc
    finally:
        conn.write_packet(b"")
        answer = conn._read_packet()  # raises the server's error, if it sent one
    if not answer.is_ok_packet():
        raise err.OperationalError(CR.CR_COMMANDS_OUT_OF_SYNC, "Commands Out of Sync")
    result._read_ok_packet(answer)
