"""A command's words for a failed first connection: the cause, masked, and what to check."""

from __future__ import annotations

from ..config import mask_dsn

__all__ = ["connect_failed"]


def connect_failed(command: str, exc: BaseException, dsn: str | None) -> str:
    """A failed first connection, with advice in the command line's terms (the pool's own
    message suggests ``fail_fast=False``, a Python option the command line does not have)."""
    cause = exc.__cause__ or exc
    first = (str(cause).strip().splitlines() or [""])[0]
    password = _password(dsn)
    if password:
        first = first.replace(password, "***")
    where = mask_dsn(dsn) if dsn else "the database"
    return (f"poolkeeper {command}: could not connect to {where}: {type(cause).__name__}: "
            f"{first}. Check that the server is up and that --dsn names the right host, port, "
            "database, user and password")


def _password(dsn: str | None) -> str | None:
    if not dsn:
        return None
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(dsn).password
    except ValueError:
        return None
    return unquote(password) if password else None
