"""The console token on the command line: where it comes from, and when it is refused.

The token is read from ``--token`` or, better, from ``$POOLKEEPER_CONSOLE_TOKEN``, which keeps
it out of ``ps``; the rule it must meet is the console's own (``token_problem``), worded here in
the command line's terms (flags, not keyword arguments).
"""

from __future__ import annotations

import os

__all__ = ["TOKEN_ENV", "given_token", "token_refused"]

#: the environment variable the commands read the console token from
TOKEN_ENV = "POOLKEEPER_CONSOLE_TOKEN"


def given_token(flag: str | None) -> str | None:
    """The token of ``--token``, else of ``$POOLKEEPER_CONSOLE_TOKEN``, else None."""
    return flag or os.environ.get(TOKEN_ENV)


def token_refused(command: str, host: str, token: str | None) -> str | None:
    """The command line's wording of the console's token rule, or None when it is met."""
    from ..console.server import MIN_TOKEN_CHARS, token_problem

    problem = token_problem(host, token)
    make = "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
    if problem == "invalid":
        return (f"poolkeeper {command}: the console token (--token or ${TOKEN_ENV}) must be at "
                f"least {MIN_TOKEN_CHARS} characters of letters, digits and -._~+/=; make one "
                f"with: {make}")
    if problem == "missing":
        return (f"poolkeeper {command}: --host {host} is not a loopback address, so the console "
                f"would show pool state to other machines: set ${TOKEN_ENV} (or --token; the "
                f"environment keeps it out of ps), made with: {make}; or keep --host 127.0.0.1 "
                "and reach it through an SSH tunnel")
    return None
