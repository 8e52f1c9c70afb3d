"""DSN parsing follows libpq's URI rules exactly, and masking is done from that parse.

The reference is libpq itself (``PQconninfoParse`` through psycopg's ``conninfo_to_dict``): for
DSNs built from the characters that break regular expressions (``#?:@/%[]&=+``), poolkeeper's
reading of the user, password, hosts, database and query equals libpq's, and where libpq
refuses a DSN (quoting it back in its message) poolkeeper refuses it first, masked.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolkeeper import ConfigError, PoolConfig, mask_dsn, parse_dsn
from poolkeeper.dsn import Secrets, _decode, _Malformed, _split, secrets_of

conninfo = pytest.importorskip("psycopg.conninfo")

# characters that end a part under one rule or another, and percent escapes valid or not
_TRICKY = st.sampled_from([*"#?:@/[]&=+ ,", "%", "%2", "%zz", "%40", "%2F", "%00", "%C3%BC",
                           "ü"])
_PART = st.lists(st.one_of(_TRICKY, st.text("abcXYZ019-_.", min_size=1, max_size=3)),
                 max_size=6).map("".join)


def _ours(dsn: str) -> dict[str, str]:
    """poolkeeper's reading, in libpq's keywords (decoded; empty parts left out, as libpq does)."""
    uri = _split(dsn)
    out: dict[str, str] = {}
    if uri.user:
        out["user"] = _decode(uri.user, "")
    if uri.password:
        out["password"] = _decode(uri.password, "")
    hosts = [_decode(h, "") for h, _ in uri.hosts]
    ports = [_decode(p or "", "") for _, p in uri.hosts]
    if len(hosts) > 1 or any(hosts):  # libpq keeps a list of empty hosts as "," and ","
        out["host"] = ",".join(hosts)
    if len(ports) > 1 or any(ports):
        out["port"] = ",".join(ports)
    if uri.path:
        out["dbname"] = _decode(uri.path, "")
    for key, value, _ in uri.query:
        out[_decode(key, "")] = _decode(value, "")
    return out


@settings(max_examples=400, deadline=None)
@given(user=_PART, password=_PART, host=_PART, db=_PART,
       query=st.sampled_from(["", "?sslmode=disable", "?application_name=a%23b",
                              "?password=q%zz", "?password=a=b", "?sslmode"]))
def test_poolkeeper_reads_a_dsn_as_libpq_does(user: str, password: str, host: str, db: str,
                                              query: str) -> None:
    dsn = f"postgresql://{user}:{password}@{host}/{db}{query}"
    refusal = ""
    try:
        theirs: dict[str, str] | None = conninfo.conninfo_to_dict(dsn)
    except Exception as exc:  # noqa: BLE001 - libpq refused it
        theirs, refusal = None, str(exc)
    try:
        info = parse_dsn(dsn)
    except ConfigError as exc:
        # refused: libpq refuses it too, or it is the one spelling poolkeeper refuses on purpose
        # (an '@' after a '/', where libpq would read the password as a host and quote it)
        # or a raw space, which libpq 17+ refuses by quoting the part and older ones take)
        assert theirs is None or "'@' after a '/'" in str(exc) or "a space in" in str(exc), (
            dsn, theirs, exc)
        # and it shows the DSN masked: the password's place (exact, or all before the last '@')
        shown = mask_dsn(dsn)
        assert str(exc).startswith(f"dsn {shown!r}")
        try:
            found = _split(dsn).password
        except _Malformed as partial:
            found = partial.uri.password if partial.uri is not None else None
        if found:
            assert ":***@" in shown or "//***@" in shown, shown
        return
    if theirs is None:
        # what poolkeeper leaves to libpq: an unknown option's name, which it quotes alone
        assert refusal.startswith("invalid URI query parameter"), (dsn, refusal)
        return
    assert _ours(dsn) == theirs, dsn
    # the masked form has no password left, and reads the same otherwise
    masked = _split(info.masked)
    assert masked.password in (None, "", "***")
    original = _split(dsn)
    assert original.password_span is not None or original.password is None
    elsewhere = original.rest[original.password_span[1]:] if original.password_span else ""
    if not original.password or original.password not in (original.user or "") + elsewhere:
        # (the same secret written in another part is masked there too)
        assert masked.user == original.user and masked.hosts == original.hosts


@pytest.mark.parametrize(("dsn", "masked"), [
    ("postgresql://u:s3cret#x@127.0.0.1/db", "postgresql://u:***@127.0.0.1/db"),
    ("postgresql://u:pa?ss:w@h/db", "postgresql://u:***@h/db"),
    ("mysql://root:s3cret#x@127.0.0.1/test", "mysql://root:***@127.0.0.1/test"),
    ("postgresql+psycopg://u:s3cret@h/db", "postgresql+psycopg://u:***@h/db"),
    ("postgresql+asyncpg://u:s3cret#x@h:5433/db?sslmode=disable",
     "postgresql+asyncpg://u:***@h:5433/db?sslmode=disable"),
    ("POSTGRESQL://u:s3cret@h/db", "POSTGRESQL://u:***@h/db"),
    ("postgresql://u@h/db?sslpassword=s3cret&password=s3cret&sslmode=off",
     "postgresql://u@h/db?sslpassword=***&password=***&sslmode=off"),
    # not valid DSNs: everything that could be user info goes
    ("postgresql://u:s3cret@[::1/db", "postgresql://u:***@[::1/db"),
    ("postgresql://u:s3/cret@h/db", "postgresql://***@h/db"),
    ("host=h user=u password='x y' dbname=d", "host=h user=u password=*** dbname=d"),
])
def test_masking_follows_the_parse(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked
    assert "s3cret" not in mask_dsn(dsn)


@pytest.mark.parametrize(("dsn", "says"), [
    ("postgresql://u:s3cret%zz@h/db", "invalid percent escape in the password"),
    ("postgresql://u:s3cret%00@h/db", "%00 in the password"),
    ("mysql://root:s3cret%zz@h/db", "invalid percent escape in the password"),
    ("postgresql://u:s3cret@[::1/db", "never closed with ']'"),
    ("postgresql://u:s3cret@[]/db", "empty IPv6 address"),
    ("postgresql://u:s3cret@[::1]x/db", "after the IPv6 address"),
    ("postgresql://u:s3/cret@h/db", "'@' after a '/'"),
    ("postgresql://u:s3cret@h/db?password=s3cret=x", "second '='"),
    ("postgresql://u:s3cret@h/db?sslmode", "without '=value'"),
    ("mysql://root:s3cret@h:port/db", "a port is a number"),
    ("mysql://root:s3cret@h1,h2/db", "2 hosts"),
])
def test_a_malformed_dsn_is_refused_with_the_part_named_and_the_password_hidden(
        dsn: str, says: str) -> None:
    with pytest.raises(ConfigError, match=r"^dsn '") as info:
        PoolConfig(dsn=dsn)
    assert says in str(info.value)
    assert "s3cret" not in str(info.value)


def test_scheme_spellings_reach_libpq_as_postgresql() -> None:
    for scheme in ("postgresql", "postgres", "POSTGRESQL", "Postgres", "postgresql+psycopg"):
        info = parse_dsn(f"{scheme}://u:pw@h:5433/db?sslmode=disable")
        assert info.params["conninfo"] == "postgresql://u:pw@h:5433/db?sslmode=disable"
        conninfo.conninfo_to_dict(info.params["conninfo"])  # libpq takes it


def test_an_asyncpg_dsn_chooses_the_asyncpg_adapter_with_libpq_rules_and_masking() -> None:
    from poolkeeper.dsn import driver_of

    for scheme in ("postgresql+asyncpg", "POSTGRES+ASYNCPG"):
        dsn = f"{scheme}://u:p%23ss@h:5433,h2/db?sslmode=disable"
        info = parse_dsn(dsn)
        assert info.driver == "asyncpg" == driver_of(dsn)
        # asyncpg's connect(dsn=...) gets the libpq spelling of the same URL
        assert dict(info.params) == {"dsn": "postgresql://u:p%23ss@h:5433,h2/db?sslmode=disable"}
        assert info.masked == f"{scheme}://u:***@h:5433,h2/db?sslmode=disable"
        assert "p#ss" in info.secrets and "p#ss" not in repr(info)
        scrub = secrets_of(info.params)
        assert scrub.scrub("connect to postgresql://u:p%23ss@h:5433,h2/db?sslmode=disable "
                           "failed; password p#ss") == (
            "connect to postgresql://u:***@h:5433,h2/db?sslmode=disable failed; password ***")
    with pytest.raises(ConfigError, match="invalid percent escape") as bad:
        parse_dsn("postgresql+asyncpg://u:s3cret%zz@h/db")
    assert "s3cret" not in str(bad.value)
    assert PoolConfig(dsn="postgresql+asyncpg://u:s3cret@h/db").dsn is not None


def test_the_thread_pool_refuses_an_asyncpg_dsn_naming_asyncpool() -> None:
    from poolkeeper import Pool

    with pytest.raises(ConfigError, match=r"asyncio driver.*AsyncPool") as info:
        Pool("postgresql+asyncpg://u:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError, match="AsyncPool"):
        Pool(connect=lambda: None, driver="asyncpg")


def test_mysql_parts_are_decoded_by_the_same_rules() -> None:
    info = parse_dsn("mysql://app:p#ss?w:rd%40x@[::1]:3307/shop%2B1?charset=utf8mb4&x=a+b")
    assert dict(info.params) == {"host": "::1", "port": 3307, "user": "app",
                                 "password": "p#ss?w:rd@x", "database": "shop+1",
                                 "charset": "utf8mb4", "x": "a+b"}
    assert "p#ss" not in repr(info) and "p#ss" not in info.masked


def test_config_repr_shows_no_secret() -> None:
    cfg = PoolConfig(dsn="mysql://root:s3cret#x@127.0.0.1/test",
                     connect_kwargs={"password": "s3cret2", "charset": "utf8mb4"})
    assert "s3cret" not in repr(cfg) and "utf8mb4" in repr(cfg)
    assert "s3cret" not in repr(parse_dsn(cfg.dsn or ""))


def test_scrubbing_takes_the_dsn_and_every_spelling_of_the_password() -> None:
    dsn = "postgresql://u:s3cret%23x@h/db?sslpassword=k3y%21"
    secrets = secrets_of({"conninfo": dsn, "password": "other-pw"})
    text = (f'bad "{dsn}"; password "s3cret#x" or s3cret%23x; key k3y! k3y%21; other-pw')
    scrubbed = secrets.scrub(text)
    for leaked in ("s3cret", "k3y", "other-pw"):
        assert leaked not in scrubbed, scrubbed
    assert "postgresql://u:***@h/db?sslpassword=***" in scrubbed
    # a short secret is replaced only where it stands alone, so messages stay readable
    short = Secrets([("ab", "***")])
    assert short.scrub("abort 'ab' tab") == "abort '***' tab"


def test_scrubbing_keeps_the_exception_and_its_class() -> None:
    secrets = Secrets([("s3cret", "***")])
    try:
        try:
            raise OSError(13, "denied for s3cret", "/tmp/s3cret")
        except OSError as inner:
            raise RuntimeError("could not connect: s3cret", 42) from inner
    except RuntimeError as exc:
        secrets.scrub_exception(exc)
        assert exc.args == ("could not connect: ***", 42)
        assert isinstance(exc.__cause__, OSError)
        assert "s3cret" not in str(exc.__cause__) and exc.__cause__.errno == 13


def test_long_dsns_of_every_part_parse() -> None:
    # a quadratic parser would take minutes on these (the suite's timeout catches it); the
    # linear one takes milliseconds
    for filler in ("%41", "a,", "[x]:1,", "&k=v", "@", "/"):
        for place in ("postgresql://u:pw@h/db?", "postgresql://u:", "postgresql://"):
            dsn = place + filler * 50_000
            with contextlib.suppress(ConfigError):
                parse_dsn(dsn)
            assert "pw" not in mask_dsn(dsn)


def test_malformed_reason_never_quotes_the_value() -> None:
    with pytest.raises(_Malformed) as info:
        _decode("s3cret%zz", "the password")
    assert "s3cret" not in info.value.reason
