"""DSNs: read a URL the way libpq reads it, and keep its secrets out of every text poolkeeper shows.

Masking is done from the parsed DSN, never by a regular expression over text: a password may
hold any character libpq accepts there (``#``, ``?``, ``:``), so only a parser that follows
libpq's rules knows where it ends. The parser also refuses, with a masked :class:`ConfigError`,
every spelling libpq would refuse by quoting the DSN back (an invalid percent escape, an
unclosed IPv6 bracket, a query parameter with two ``=``), so no driver message ever repeats it.

libpq's URI rules (``conninfo_uri_parse_options`` in PostgreSQL's ``fe-connect.c``), which the
MySQL spelling follows too:

- the user info runs from ``://`` to the first ``@`` that comes before any ``/``; the user name
  ends at its first ``:``, the password is the rest;
- hosts are ``host[:port]`` separated by commas, an IPv6 address in brackets;
- the database name runs from the ``/`` after the hosts to ``?``; the query is
  ``key=value&...``;
- every part is percent-decoded (``%zz`` and ``%00`` are errors); ``#`` and ``+`` are ordinary
  characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .errors import ConfigError

__all__ = ["Dsn", "Secrets", "mask_dsn", "parse_dsn", "secrets_of"]

DRIVER_NAMES = frozenset({"sqlite", "postgresql", "mysql", "asyncpg"})
_SCHEMES = {
    "sqlite": "sqlite",
    "sqlite3": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}
#: ``scheme+driver`` spellings that choose another adapter than the scheme's own
_DRIVER_SUFFIXES = {("postgresql", "asyncpg"): "asyncpg"}
_SECRET_KEYS = re.compile(r"pass|secret|token|key", re.IGNORECASE)
_HEX = frozenset("0123456789abcdefABCDEF")
MASK = "***"
_EXAMPLES = ("sqlite:///app.db, postgresql://user@127.0.0.1:5432/db "
             "or mysql://root@127.0.0.1:3306/db")


def is_secret_key(key: str) -> bool:
    """Whether an option's name says its value is a secret (password, sslpassword, token, ...)."""
    return bool(_SECRET_KEYS.search(key))


@dataclass(frozen=True, slots=True)
class Dsn:
    """A parsed DSN: which driver, and the keyword arguments its connect() takes.

    ``params`` and ``secrets`` hold the password: they are left out of ``repr``.
    """

    driver: str
    params: Mapping[str, Any] = field(repr=False)
    masked: str
    secrets: tuple[str, ...] = field(default=(), repr=False)


class _Malformed(Exception):
    """The DSN breaks libpq's URI rules; ``reason`` names the part, never quotes a secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        #: how far the parse got: its user info, when it found one, is exact
        self.uri: _Uri | None = None


@dataclass(slots=True)
class _Uri:
    """A URL cut into its raw (still percent-encoded) parts, with the password's place."""

    scheme: str
    rest: str  # everything after "://"
    user: str | None = None
    password: str | None = None
    password_span: tuple[int, int] | None = None  # in ``rest``
    hosts: list[tuple[str, str | None]] = field(default_factory=list)  # (host, port), raw
    path: str | None = None
    query: list[tuple[str, str, tuple[int, int]]] = field(default_factory=list)  # key, value, span


def _split(dsn: str) -> _Uri:
    scheme, _, rest = dsn.partition("://")
    uri = _Uri(scheme, rest)
    try:
        _split_into(uri)
    except _Malformed as exc:
        exc.uri = uri
        raise
    return uri


def _split_into(uri: _Uri) -> None:
    scheme, rest = uri.scheme, uri.rest
    n = len(rest)
    p = 0
    while p < n and rest[p] not in "@/":
        p += 1
    if p < n and rest[p] == "@":
        userinfo = rest[:p]
        user, colon, password = userinfo.partition(":")
        uri.user = user
        if colon:
            uri.password = password
            uri.password_span = (len(user) + 1, p)
        p += 1
    else:
        p = 0
        if "@" in rest.partition("?")[0]:
            # libpq would read the user info as a host (and quote the password in its error)
            raise _Malformed("has '@' after a '/', so the user name and password end early: "
                             "percent-encode '/' as %2F, '@' as %40 in them")
    while True:
        if p < n and rest[p] == "[":
            close = rest.find("]", p + 1)
            if close < 0:
                raise _Malformed(f"has an IPv6 address opened with '[' at character "
                                 f"{len(scheme) + 3 + p + 1} and never closed with ']'")
            if close == p + 1:
                raise _Malformed("has an empty IPv6 address '[]'")
            host = rest[p + 1:close]
            p = close + 1
            if p < n and rest[p] not in ":/?,":
                raise _Malformed(f"has {rest[p]!r} after the IPv6 address ']' where ':', '/', "
                                 "'?' or ',' must follow")
        else:
            start = p
            while p < n and rest[p] not in ":/?,":
                p += 1
            host = rest[start:p]
        port = None
        if p < n and rest[p] == ":":
            start = p + 1
            p = start
            while p < n and rest[p] not in "/?,":
                p += 1
            port = rest[start:p]
        uri.hosts.append((host, port))
        if p < n and rest[p] == ",":
            p += 1
            continue
        break
    if p < n and rest[p] == "/":
        start = p + 1
        end = rest.find("?", start)
        end = n if end < 0 else end
        uri.path = rest[start:end]
        p = end
    if p < n and rest[p] == "?":
        p += 1
        for part in rest[p:].split("&"):
            start = p
            p += len(part) + 1
            if not part:
                continue
            key, eq, value = part.partition("=")
            if not eq:
                raise _Malformed(f"has query parameter {_shown_key(key)} without '=value'")
            if "=" in value:
                raise _Malformed(f"has query parameter {_shown_key(key)} with a second '=': "
                                 "percent-encode '=' in a value as %3D")
            uri.query.append((key, value, (start + len(key) + 1, start + len(part))))


def _shown_key(key: str) -> str:
    # a name is no secret, but a mistyped DSN may have cut a password into one: show short ones
    return repr(key) if len(key) <= 20 else "(a long name)"


def _decode(raw: str, what: str) -> str:
    """Percent-decode as libpq does: ``%`` needs two hex digits, ``%00`` is refused.

    A raw space is refused too: libpq 17 and later refuse it by quoting the part, which may
    be the password (earlier versions take it; ``%20`` works with every version).
    """
    if " " in raw:
        raise _Malformed(f"has a space in {what}: percent-encode it as %20")
    if "%" not in raw:
        return raw
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch != "%":
            out += ch.encode()
            i += 1
            continue
        digits = raw[i + 1:i + 3]
        if len(digits) != 2 or not set(digits) <= _HEX:
            raise _Malformed(f"has an invalid percent escape in {what} at its character {i + 1}:"
                             " '%' must be followed by two hex digits (write '%' itself as %25)")
        if digits == "00":
            raise _Malformed(f"has %00 in {what}: a NUL byte is not allowed")
        out.append(int(digits, 16))
        i += 3
    try:
        return out.decode()
    except UnicodeDecodeError:
        raise _Malformed(f"has percent escapes in {what} that are not UTF-8") from None


def _masked_uri(uri: _Uri) -> str:
    """``uri`` as text with the password and every secret query value replaced by ``***``."""
    cuts = []
    if uri.password:
        assert uri.password_span is not None
        cuts.append(uri.password_span)
    for key, value, span in uri.query:
        if value and is_secret_key(key):
            cuts.append(span)
    rest = uri.rest
    secrets = []
    for start, end in sorted(cuts, reverse=True):
        secrets.append(rest[start:end])
        rest = rest[:start] + MASK + rest[end:]
    # the same secret written elsewhere in the DSN (a database named like it) goes too; not a
    # short one, which would eat the DSN's own ':' or '@'
    elsewhere = Secrets(p for p in _spellings(secrets) if len(p[0]) >= _SHORT)
    return f"{uri.scheme}://{elsewhere.scrub(rest)}"


def _spellings(raw_secrets: Iterable[str]) -> list[tuple[str, str]]:
    """Each secret as written, decoded, and percent-encoded: the ways a message may quote it."""
    out = []
    for raw in raw_secrets:
        try:
            plain = _decode(raw, "")
        except _Malformed:
            plain = raw
        for spelling in (raw, plain, quote(plain, safe="")):
            out.append((spelling, MASK))
    return out


def _mask_unparsed(text: str, uri: _Uri | None) -> str:
    """A text that is not a valid DSN: hide its password, or all it could hold as user info.

    When the parse found the user info before it failed, the password's place is exact;
    otherwise everything before the last ``@`` goes. Then every value of a key that names a
    secret, in whatever follows a ``?``.
    """
    head, sep, rest = text.partition("://")
    if not sep:
        return _PASSWORD_IN_CONNINFO.sub(r"\g<head>***", text)
    if uri is not None and uri.user is not None:
        at = rest.index("@")  # the user info ends at the first '@', as the parse found it
        userinfo = uri.user + (":" + MASK if uri.password else ":" if uri.password == "" else "")
        after = rest[at + 1:]
    else:
        at = rest.rfind("@")
        userinfo = MASK if at >= 0 else ""
        after = rest[at + 1:] if at >= 0 else rest
    before_query, q, query = after.partition("?")
    parts = []
    for part in query.split("&") if q else []:
        key, eq, _ = part.partition("=")
        parts.append(f"{key}={MASK}" if eq and is_secret_key(key) else part)
    return f"{head}://{userinfo}{'@' if userinfo else ''}{before_query}{q}{'&'.join(parts)}"


# The key=value spelling ("host=h password='x y'") is not a DSN poolkeeper parses, but it can
# appear in a driver's message or a user's string handed to mask_dsn.
_PASSWORD_IN_CONNINFO = re.compile(r"(?P<head>\b\w*pass\w*\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)",
                                   re.IGNORECASE)


def mask_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***``: safe for logs, errors and the console.

    A text that is not a valid DSN is masked conservatively: everything before its last ``@``
    goes, and every value of a key that names a secret.
    """
    if "://" not in dsn:
        return _mask_unparsed(dsn, None)
    try:
        return _masked_uri(_split(dsn))
    except _Malformed as exc:
        return _mask_unparsed(dsn, exc.uri)


def driver_of(dsn: str) -> str | None:
    """The driver a DSN's scheme names (``postgresql+psycopg`` -> ``postgresql``,
    ``postgresql+asyncpg`` -> ``asyncpg``), or None."""
    return _driver_of_scheme(dsn.split("://", 1)[0]) if "://" in dsn else None


def _driver_of_scheme(scheme: str) -> str | None:
    base, _, suffix = scheme.lower().partition("+")
    driver = _SCHEMES.get(base)
    return _DRIVER_SUFFIXES.get((driver or "", suffix), driver)


def parse_dsn(dsn: str) -> Dsn:
    """Parse ``sqlite:///file.db``, ``postgresql://user@host/db``, ``mysql://root@host/db``.

    ``sqlite://:memory:`` gives one in-memory database shared by all of the pool's connections.
    Scheme spellings such as ``postgresql+psycopg://`` or ``POSTGRES://`` are accepted and
    handed to libpq as ``postgresql://``. ``postgresql+asyncpg://`` chooses the asyncpg
    adapter (``AsyncPool`` only): its ``params`` are ``{"dsn": "postgresql://..."}``, asyncpg's
    connect() argument, parsed and masked by the same libpq rules.
    """
    if not isinstance(dsn, str) or "://" not in dsn:
        raise ConfigError(f"dsn={mask_dsn(str(dsn))!r} is not a URL: expected e.g. {_EXAMPLES}")
    scheme = dsn.split("://", 1)[0].lower().split("+", 1)[0]
    driver = _driver_of_scheme(dsn.split("://", 1)[0])
    if driver is None:
        raise ConfigError(
            f"dsn scheme {scheme!r} is not supported: use sqlite://, postgresql:// or mysql://")
    if driver == "sqlite":
        return _sqlite(dsn)
    try:
        uri = _split(dsn)
        if driver == "mysql":
            return _mysql(dsn, uri)
        return _postgresql(dsn, uri, driver)
    except _Malformed as exc:
        raise ConfigError(f"dsn {mask_dsn(dsn)!r} {exc.reason}") from None


def _sqlite(dsn: str) -> Dsn:
    rest = dsn.split("://", 1)[1]
    path, _, query = rest.partition("?")
    if path in (":memory:", "/:memory:", ""):
        database = ":memory:"
    else:
        # sqlite:///rel.db -> "rel.db"; sqlite:////abs/x.db -> "/abs/x.db"
        database = path[1:] if path.startswith("/") else path
    try:
        params: dict[str, Any] = {"database": _decode(database, "the file name")}
        for key, value in _query_pairs(query):
            params[key] = _typed(value)
    except _Malformed as exc:
        raise ConfigError(f"dsn {dsn!r} {exc.reason}") from None
    return Dsn("sqlite", params, dsn)


def _query_pairs(query: str) -> Iterable[tuple[str, str]]:
    for part in query.split("&") if query else []:
        if part:
            key, _, value = part.partition("=")
            yield _decode(key, "a query parameter's name"), _decode(value, f"{key}=")


def _secrets(uri: _Uri, dsn: str) -> tuple[str, ...]:
    raw = [uri.password] if uri.password else []
    raw += [value for key, value, _ in uri.query if value and is_secret_key(key)]
    return tuple(dict.fromkeys([dsn] + [s for s, _ in _spellings(raw)]))


def _check_decoding(uri: _Uri) -> None:
    """Every part decodes, as libpq will require (it quotes the part when one does not)."""
    if uri.user:
        _decode(uri.user, "the user name")
    if uri.password:
        _decode(uri.password, "the password")
    for host, port in uri.hosts:
        _decode(host, "a host name")
        if port:
            _decode(port, "a port")
    if uri.path:
        _decode(uri.path, "the database name")
    for key, value, _ in uri.query:
        _decode(key, "a query parameter's name")
        _decode(value, "a secret query value" if is_secret_key(key) else f"{key}=")


def _postgresql(dsn: str, uri: _Uri, driver: str) -> Dsn:
    _check_decoding(uri)
    # libpq knows only "postgresql://" and "postgres://", spelled in lower case (and so does
    # asyncpg's own parser)
    conninfo = "postgresql://" + uri.rest
    key = "dsn" if driver == "asyncpg" else "conninfo"
    return Dsn(driver, {key: conninfo}, _masked_uri(uri), _secrets(uri, dsn))


def _mysql(dsn: str, uri: _Uri) -> Dsn:
    _check_decoding(uri)
    if len(uri.hosts) > 1:
        raise _Malformed(f"names {len(uri.hosts)} hosts; a MySQL DSN takes one")
    host, port_text = uri.hosts[0]
    port = 3306
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise _Malformed(f"has port {port_text!r}: a port is a number from 1 to 65535")
        port = int(port_text)
    params: dict[str, Any] = {
        "host": _decode(host, "the host") or "127.0.0.1",
        "port": port,
        "user": _decode(uri.user or "", "the user name") or "root",
        "password": _decode(uri.password or "", "the password"),
        "database": _decode(uri.path or "", "the database name") or None,
    }
    for key, value, _ in uri.query:
        params[_decode(key, "")] = _typed(_decode(value, ""))
    return Dsn("mysql", params, _masked_uri(uri), _secrets(uri, dsn))


def _typed(value: str) -> Any:
    if value.isdigit():
        return int(value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


# ----------------------------------------------------------------------------- scrubbing
# A secret this short is replaced only where it stands alone: replacing every "ab" in a message
# would make it unreadable, and such a password is guessed faster than read anyway.
_SHORT = 4


class Secrets:
    """The secrets one pool's connect() carries, and a scrubber that takes them out of text.

    Built from the driver's connect arguments; used on every driver message poolkeeper repeats
    (errors, logs, console, CLI): the whole DSN becomes its masked form, each secret ``***``.
    """

    __slots__ = ("_pairs", "_short")

    def __init__(self, texts: Iterable[tuple[str, str]] = ()) -> None:
        # (text, replacement), longest first so a DSN goes before the password inside it
        pairs = sorted({t: r for t, r in texts if t}.items(), key=lambda p: -len(p[0]))
        self._pairs = [p for p in pairs if len(p[0]) >= _SHORT]
        shorts = [re.escape(t) for t, _ in pairs if len(t) < _SHORT]
        self._short = (re.compile(r"(?<![\w])(?:" + "|".join(shorts) + r")(?![\w])")
                       if shorts else None)

    def __bool__(self) -> bool:
        return bool(self._pairs) or self._short is not None

    def scrub(self, text: str) -> str:
        """``text`` with every secret masked."""
        for secret, replacement in self._pairs:
            if secret in text:
                text = text.replace(secret, replacement)
        if self._short is not None:
            text = self._short.sub(MASK, text)
        return text

    def scrub_exception(self, exc: BaseException) -> None:
        """Mask the secrets in ``exc``'s message, and in its causes', in place.

        In place, so the class, the traceback and the driver's attributes (SQLSTATE, errno)
        stay what the caller's ``except`` clauses expect.
        """
        seen: set[int] = set()
        todo: list[BaseException | None] = [exc]
        while todo and len(seen) < 16:
            e = todo.pop()
            if e is None or id(e) in seen:
                continue
            seen.add(id(e))
            args = tuple(self.scrub(a) if isinstance(a, str) else a for a in e.args)
            if args != e.args:
                e.args = args
            if isinstance(e, OSError):
                for name in ("strerror", "filename", "filename2"):
                    value = getattr(e, name, None)
                    if isinstance(value, str) and self.scrub(value) != value:
                        setattr(e, name, self.scrub(value))
            todo += [e.__cause__, e.__context__]


def secrets_of(params: Mapping[str, Any]) -> Secrets:
    """The secrets in a driver's connect arguments: a DSN's password and DSN, secret keys."""
    texts: list[tuple[str, str]] = []
    for key, value in params.items():
        if not isinstance(value, str) or not value:
            continue
        if key in ("conninfo", "dsn") and "://" in value:
            try:
                info = parse_dsn(value)
            except ConfigError:
                texts.append((value, mask_dsn(value)))
                continue
            texts.append((value, info.masked))
            texts += [(s, info.masked if s == value else MASK) for s in info.secrets]
        elif is_secret_key(key):
            texts.append((value, MASK))
    return Secrets(texts)
