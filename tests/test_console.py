"""The web console over HTTP: pages and their JSON twins, the token rule, resets, bounds."""

from __future__ import annotations

import http.client
import importlib
import json
import logging
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from poolkeeper import ConfigError, Pool
from poolkeeper.console import ConsoleHandle, History, is_loopback, serve
from poolkeeper.console.views import Sources, sql_view

from ._db import create_table, drop_table, placeholder, unique_table

PAGES = ("/", "/sql", "/caches", "/connections", "/resources", "/memory", "/query")
TOKEN = "test-token-0123456789abcdef"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def post(url: str, data: dict[str, str] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, str]:
    body = urllib.parse.urlencode(data or {}).encode()
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def pool(sqlite_dsn: str) -> Iterator[Pool]:
    with Pool(sqlite_dsn, max_size=3, name="shop") as p:
        for i in range(20):
            with p.connection() as conn:
                conn.execute("SELECT ?", (i,)).fetchall()
        yield p


@pytest.fixture
def console(pool: Pool) -> Iterator[ConsoleHandle]:
    handle = serve([pool], sample_interval=0.05)
    try:
        yield handle
    finally:
        handle.stop()


def test_serves_on_loopback_in_a_named_thread_and_stop_ends_every_thread(pool: Pool) -> None:
    handle = serve([pool])
    assert handle.url.startswith("http://127.0.0.1:")
    assert handle.thread.name == "poolkeeper-console" and handle.thread.daemon
    for page in PAGES:
        assert get(handle.url.rstrip("/") + page)[0] == 200
    assert handle.stop() is True
    assert not [t for t in threading.enumerate() if t.name.startswith("poolkeeper-console")]
    with pytest.raises(OSError):
        urllib.request.urlopen(handle.url, timeout=2)


def test_every_page_has_a_json_twin(console: ConsoleHandle, pool: Pool) -> None:
    base = console.url.rstrip("/")
    for page in PAGES:
        status, html, headers = get(base + page)
        assert status == 200 and headers["Content-Type"].startswith("text/html"), page
        assert "<main" in html
        api = "/api/overview" if page == "/" else "/api" + page
        status, text, headers = get(base + api)
        assert status == 200 and headers["Content-Type"].startswith("application/json"), api
        json.loads(text)
    overview = json.loads(get(base + "/api/overview")[1])
    assert [p["name"] for p in overview["pools"]] == ["shop"]
    stats = overview["pools"][0]["stats"]
    assert stats["pool_max"] == 3 and stats["requests_num"] >= 20


def test_pages_carry_security_headers(console: ConsoleHandle) -> None:
    _status, _body, headers = get(console.url)
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"


class _BarePool:
    """A pool seen through the minimal interface (no SQL statistics, no statement caches):
    what the console shows for a pool of a build or kind that lacks those parts."""

    def __init__(self, pool: Pool) -> None:
        self.name = "bare"
        self.config = pool.config
        self._pool = pool

    def stats(self) -> dict[str, Any]:
        return {k: v for k, v in self._pool.stats().items()
                if not k.startswith(("sql_", "stmt_"))}

    def connections_info(self) -> list[dict[str, Any]]:
        return self._pool.connections_info()


def test_missing_parts_show_not_enabled_instead_of_failing(pool: Pool) -> None:
    with serve([_BarePool(pool)]) as handle:
        sql = json.loads(get(handle.url + "api/sql")[1])["pools"][0]
        caches = json.loads(get(handle.url + "api/caches")[1])["pools"][0]
        pages = {page: get(handle.url.rstrip("/") + page) for page in PAGES}
    assert sql["enabled"] is False and "not enabled" in sql["reason"]
    assert caches["enabled"] is False and "not enabled" in caches["reason"]
    assert all(status == 200 for status, _body, _headers in pages.values())
    assert "not enabled" in pages["/sql"][1] and "not enabled" in pages["/caches"][1]


def test_caches_page_shows_the_drivers_cache_policy_beside_the_counters(
        console: ConsoleHandle, pool: Pool) -> None:
    entry = json.loads(get(console.url + "api/caches")[1])["pools"][0]
    assert entry["enabled"] is True
    assert entry["policy"] == pool.statement_cache_policy()
    assert entry["policy"]["mechanism"] == "sqlite3 cached_statements"
    assert entry["counters"]["stmt_cache_max_statements"] == entry["policy"]["max_statements"]


def test_statistics_switched_off_are_shown_as_such(sqlite_dsn: str) -> None:
    with Pool(sqlite_dsn, stats=False, name="quiet") as pool:
        with pool.connection() as conn:
            conn.execute("SELECT 1").fetchall()
        if not hasattr(pool, "sql_stats"):
            pytest.skip("this build's pool has no SQL statistics")
        entry = sql_view(Sources(pools=[pool]))["pools"][0]
    assert entry["enabled"] is False and "stats=False" in entry["reason"]


def test_non_loopback_address_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="token"):
        serve([], host="0.0.0.0")
    with pytest.raises(ConfigError, match="token"):
        serve([], host="192.0.2.10")
    with pytest.raises(ConfigError, match="16 characters"):
        serve([], token="short")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")


def test_protected_reads_need_the_token_and_a_cookie_login_works(pool: Pool) -> None:
    with serve([pool], token=TOKEN, protect_reads=True) as handle:
        assert get(handle.url)[0] == 401
        assert get(handle.url + "api/overview")[0] == 401
        assert get(handle.url + "metrics")[0] == 401
        assert get(handle.url, {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert get(handle.url + "api/overview", {"X-Poolkeeper-Token": TOKEN})[0] == 200
        assert get(handle.url, {"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
        # ?token= once: a cookie is set and the token is dropped from the address.
        host, port = handle.host, handle.port
        conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
        conn.request("GET", f"/sql?sort=executions&token={TOKEN}")
        response = conn.getresponse()
        response.read()
        assert response.status == 303
        assert response.getheader("Location") == "/sql?sort=executions"
        cookie = response.getheader("Set-Cookie") or ""
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        conn.close()
        assert get(handle.url + "sql", {"Cookie": cookie.split(";")[0]})[0] == 200


def test_reset_needs_the_token_and_logs_the_values_it_drops(
        pool: Pool, caplog: pytest.LogCaptureFixture) -> None:
    with serve([pool]) as handle:
        status, body = post(handle.url + "api/reset")
        assert status == 403 and "token" in body
    with serve([pool], token=TOKEN) as handle:
        assert get(handle.url)[0] == 200  # reads stay open on loopback
        wrong = {"Authorization": "Bearer nope-nope-nope-nope"}
        assert post(handle.url + "api/reset", headers=wrong)[0] == 403
        # the cookie never authorises a reset (a cross-site form could send it)
        assert post(handle.url + "api/reset",
                    headers={"Cookie": f"poolkeeper_token={TOKEN}"})[0] == 403
        before = pool.stats()["requests_num"]
        assert before > 0
        with caplog.at_level(logging.INFO, logger="poolkeeper.console"):
            status, body = post(handle.url + "api/reset?pool=shop",
                                headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        assert json.loads(body)["before"]["shop"]["requests_num"] == before
        assert pool.stats()["requests_num"] == 0
        assert any("values before the reset" in r.getMessage() and f'"requests_num": {before}'
                   in r.getMessage() for r in caplog.records)
        # the per-fingerprint statistics go too, logged first with their top statements
        assert pool.sql_stats()["executions"] == 0
        assert any("SQL statistics of pool 'shop' reset" in r.getMessage()
                   and '"executions": 20' in r.getMessage() and "SELECT ?" in r.getMessage()
                   for r in caplog.records)
        status, _ = post(handle.url + "api/reset?pool=nosuch",
                         headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 404
        # the page's form posts the token as a field and is sent back to the overview
        conn = http.client.HTTPConnection(str(handle.host), int(handle.port), timeout=10)
        conn.request("POST", "/reset", urllib.parse.urlencode({"pool": "shop", "token": TOKEN}),
                     {"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == 303 and response.getheader("Location") == "/"


def test_a_foreign_host_header_is_refused_on_loopback(console: ConsoleHandle) -> None:
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host.
    assert get(console.url, {"Host": "evil.example"})[0] == 403
    assert get(console.url, {"Host": f"localhost:{console.port}"})[0] == 200


def test_dsn_password_and_sql_literals_never_appear(pg_dsn: str) -> None:
    secret_dsn = pg_dsn.replace("postgresql://postgres@", "postgresql://postgres:hunter2@")
    assert "hunter2" in secret_dsn
    with Pool(secret_dsn, max_size=2, name="secret") as pool:
        hooks: list[Any] = []
        try:
            from poolkeeper.hooks.stats import StatsHook
        except ImportError:
            pass
        else:
            if not hasattr(pool, "sql_stats"):
                hooks.append(StatsHook.from_config(pool.config, pool.driver.name))
                pool.add_hook(hooks[-1])
        table = unique_table("pkcon")
        create_table(pool, table)
        held = pool.getconn()
        try:
            held.execute(f"SELECT v FROM {table} WHERE v = 'SECRET-LITERAL-42' "
                         "AND id IN (987654321, 123456789)").fetchall()
            with pool.connection() as conn:
                conn.execute(f"INSERT INTO {table} (id, v) VALUES (5551212, 'SECRET-LITERAL-42')")
            with serve([pool]) as handle:
                bodies = []
                for page in PAGES:
                    bodies.append(get(handle.url.rstrip("/") + page)[1])
                    api = "/api/overview" if page == "/" else "/api" + page
                    bodies.append(get(handle.url.rstrip("/") + api)[1])
                bodies.append(get(handle.url + "metrics")[1])
                bodies.append(get(handle.url + "api/query?sql=" + urllib.parse.quote(
                    "select * from connections"))[1])
                bodies.append(get(handle.url + "api/query?sql=" + urllib.parse.quote(
                    "select * from pools"))[1])
        finally:
            pool.putconn(held)
            drop_table(pool, table)
            for hook in hooks:
                pool.remove_hook(hook)
    text = "\n".join(bodies)
    assert "postgres:***@" in text  # the DSN is shown, masked
    for leaked in ("hunter2", "SECRET-LITERAL", "987654321", "5551212"):
        assert leaked not in text, leaked


def test_sql_page_sorts_by_the_requested_column(sqlite_dsn: str) -> None:
    hook_module = importlib.import_module("poolkeeper.hooks.stats")
    with Pool(sqlite_dsn, max_size=2, name="sorted") as pool:
        hooks = [] if hasattr(pool, "sql_stats") else [
            hook_module.StatsHook.from_config(pool.config, pool.driver.name)]
        for hook in hooks:
            pool.add_hook(hook)
        try:
            table = unique_table("pksort")
            create_table(pool, table)
            ph = placeholder(pool)
            for i in range(30):
                with pool.connection() as conn:
                    conn.execute(f"SELECT v FROM {table} WHERE id = {ph}", (i,)).fetchall()
            src = Sources(pools=[pool])
            by_count = sql_view(src, sort="executions")["pools"][0]
            by_max = sql_view(src, sort="max_ms")["pools"][0]
            bogus = sql_view(src, sort="no_such_column; drop table")["pools"][0]
            with serve([pool]) as handle:
                html = get(handle.url + "sql?sort=executions")[1]
            drop_table(pool, table)
        finally:
            for hook in hooks:
                pool.remove_hook(hook)
    assert by_count["enabled"] and by_count["sort"] == "executions"
    counts = [r["executions"] for r in by_count["rows"]]
    assert counts == sorted(counts, reverse=True) and counts[0] >= 30
    maxes = [r["max_ms"] for r in by_max["rows"]]
    assert maxes == sorted(maxes, reverse=True)
    assert bogus["sort"] in bogus["sortable"]  # an unknown column falls back to a default
    assert "executions ▼" in html


def test_admin_query_box_runs_a_select_and_refuses_writes(console: ConsoleHandle) -> None:
    importlib.import_module("poolkeeper.observe.admin")
    q = urllib.parse.quote
    data = json.loads(get(console.url + "api/query?sql=" + q(
        "select name, max_size from pools"))[1])
    assert data["error"] is None and data["columns"] == ["name", "max_size"]
    assert data["rows"] == [["shop", 3]]
    refused = json.loads(get(console.url + "api/query?sql=" + q("delete from pools"))[1])
    assert refused["error"] and "refused" in refused["error"]
    html = get(console.url + "query?sql=" + q("select name from pools"))[1]
    assert "<td data-key=\"name\">shop</td>" in html
    too_long = json.loads(get(console.url + "api/query?sql=" + q("select 1" + " " * 20_000))[1])
    assert "refused" in too_long["error"]


def test_metrics_endpoint_serves_prometheus_text(console: ConsoleHandle) -> None:
    importlib.import_module("prometheus_client")
    status, text, headers = get(console.url + "metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'poolkeeper_connections_max{pool="shop"} 3.0' in text


def test_requests_beyond_the_bound_are_answered_503_not_queued(pool: Pool) -> None:
    with serve([pool], max_requests=1) as handle:
        # A client that connects and sends nothing holds the only request slot.
        idle = socket.create_connection((str(handle.host), int(handle.port)), timeout=10)
        try:
            deadline = 50
            status = 0
            while deadline and status != 503:  # the idle connection is accepted first
                status = get(handle.url)[0]
                deadline -= 1
            assert status == 503
        finally:
            idle.close()
        assert handle._server.rejected_total >= 1


def test_history_is_bounded_per_pool_and_in_pools(pool: Pool) -> None:
    history = History(seconds=10, interval=1, max_pools=2)
    for i in range(100):
        history.sample([("a", pool), ("b", pool), ("c", pool)], now=1000.0 + i)
    assert len(history.series("a")) == history.maxlen == 11
    assert history.series("c") == []
    assert history.pools_dropped == 100
    assert len(history.memory()) == 11
    used, budget = history.memory_usage()
    assert 0 < used <= budget
    with pytest.raises(ValueError, match="interval"):
        History(interval=0)


def test_console_history_registers_in_the_ledger_until_stopped(pool: Pool) -> None:
    memory = importlib.import_module("poolkeeper.observe.memory")
    handle = serve([pool])
    try:
        assert "console history" in [e.name for e in memory.LEDGER.entries()]
    finally:
        handle.stop()
    assert "console history" not in [e.name for e in memory.LEDGER.entries()]


def test_connections_page_lists_each_physical_connection(any_dsn: str) -> None:
    with Pool(any_dsn, max_size=3, name="conns") as pool:
        held = [pool.getconn() for _ in range(2)]
        try:
            with serve([pool]) as handle:
                data = json.loads(get(handle.url + "api/connections")[1])
            info = pool.connections_info()
        finally:
            for conn in held:
                pool.putconn(conn)
    rows = data["pools"][0]["rows"]
    assert {r["id"] for r in rows} == {r["id"] for r in info}
    in_use = [r for r in rows if r["state"] == "in_use"]
    assert len(in_use) == 2
    assert all("test_console.py" in r["borrow_site"] for r in in_use)


def test_malformed_requests_get_400_and_logins_never_redirect_off_site(pool: Pool) -> None:
    with serve([pool], token=TOKEN, protect_reads=True) as handle:
        conn = http.client.HTTPConnection(str(handle.host), int(handle.port), timeout=10)
        conn.request("GET", f"/\\evil.example/?token={TOKEN}")
        response = conn.getresponse()
        response.read()
        assert response.status == 303 and response.getheader("Location") == "/"
        conn.request("POST", "/api/reset", "x", {"Content-Length": "nope",
                                                 "Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        response.read()
        assert response.status == 400
        conn.close()
        many = "&".join(f"k{i}=1" for i in range(50))
        assert get(handle.url + "?" + many, {"X-Poolkeeper-Token": TOKEN})[0] == 400
    with pytest.raises(ConfigError, match="letters, digits"):
        serve([pool], token="0123456789abcdef; Path=/evil")


def test_admin_query_box_refuses_native_and_unbounded_functions(console: ConsoleHandle) -> None:
    q = urllib.parse.quote
    for sql, name in (("select hex(fts3_tokenizer('simple'))", "fts3_tokenizer"),
                      ("select length(randomblob(200000000))", "randomblob")):
        data = json.loads(get(console.url + "api/query?sql=" + q(sql))[1])
        assert f"function {name}() is not allowed" in data["error"]
        assert "rows" not in data
        html = get(console.url + "query?sql=" + q(sql))[1]
        assert f"function {name}() is not allowed" in html
