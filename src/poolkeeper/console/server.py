"""The console's HTTP server: routes, the token rule, and the thread it runs in.

Why the standard library's :class:`http.server.ThreadingHTTPServer` and not a framework: the
console serves a handful of small pages to one or two people and a Prometheus scraper, from
inside the application's own process. A framework (aiohttp, Starlette + uvicorn, Flask +
werkzeug) would add an event loop or a WSGI stack, a dependency tree to keep patched, and
threads or tasks of its own to stop, for no gain at this load. What the standard server lacks
is added here in a few lines: named daemon threads, a bound on concurrent requests, socket
timeouts, a stop that joins everything, security headers and the token rule.

Security: loopback by default. Any other address needs a token, or :func:`serve` refuses to
start. Who must show the token:

- **reads** (pages, ``/api/...``, ``/metrics``): off loopback, always; on loopback, only with
  ``protect_reads=True`` (set it on a machine shared with other users, who can reach loopback
  too). A read shows it as ``Authorization: Bearer``, the ``X-Poolkeeper-Token`` header, the
  cookie, or ``?token=`` once, which sets an HttpOnly cookie and redirects to the same page
  without it;
- **resets** (``POST /reset``, ``POST /api/reset``): always, and only in a header or the form
  field ``token``: never from the cookie (a cross-site form could send it) nor from the query
  string (addresses end up in proxy logs and browser history). A reset with no token
  configured is refused.

On loopback the ``Host`` header must name a loopback host, which defeats DNS rebinding. Query
strings (which may hold the token or an admin query) are never logged.
"""

from __future__ import annotations

import contextlib
import hmac
import importlib.resources
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from ..errors import ConfigError
from ..observe.memory import counted_bytes, read_rss
from . import render, views
from .history import History

__all__ = ["ConsoleHandle", "is_loopback", "serve", "token_problem"]

logger = logging.getLogger("poolkeeper.console")

THREAD_NAME = "poolkeeper-console"
REQUEST_THREAD_NAME = "poolkeeper-console-request"
MIN_TOKEN_CHARS = 16
_COOKIE = "poolkeeper_token"
# Characters a token may hold: safe in a cookie, a header and a query string alike.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]+")
_MAX_BODY = 64 * 1024
_MAX_SQL_CHARS = 10_000
#: statements a reset logs (most total time first) before it drops them
_RESET_LOG_STATEMENTS = 20
_STATIC = ("console.css", "console.js")
_SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
_PAGES = ("/", "/sql", "/caches", "/connections", "/resources", "/memory", "/query")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Response:
    __slots__ = ("body", "headers", "status", "type")

    def __init__(self, status: int, body: bytes | str, ctype: str = "text/html; charset=utf-8",
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.type = ctype
        self.headers = headers


def _json(data: Any, status: int = 200) -> _Response:
    text = json.dumps(views.jsonable(data), indent=1, sort_keys=False)
    return _Response(status, text, "application/json; charset=utf-8")


class _App:
    """Routing and rendering; one per console, shared by the request threads."""

    def __init__(self, sources: views.Sources, *, token: str | None, loopback: bool,
                 host: str, protect_reads: bool) -> None:
        self.sources = sources
        self.token = token
        self.loopback = loopback
        self.read_needs_token = protect_reads
        self.allowed_hosts = {"127.0.0.1", "localhost", "::1", "[::1]", host.lower(),
                              f"[{host.lower()}]"}
        self.static = {name: (importlib.resources.files(__package__) / "static" / name)
                       .read_bytes() for name in _STATIC}
        self.requests_total = 0
        self.unauthorized_total = 0

    # ------------------------------------------------------------------ sampling
    def tick(self) -> None:
        history = self.sources.history
        if not history.due():
            return
        ledger_bytes = counted_bytes(self.sources.get_ledger().entries())
        history.sample(views.named_pools(self.sources.pool_list()), rss=read_rss(),
                       ledger_bytes=ledger_bytes)

    # ------------------------------------------------------------------ auth
    def _given_tokens(self, h: BaseHTTPRequestHandler, query: Mapping[str, list[str]],
                      form: Mapping[str, list[str]] | None, cookie: bool) -> list[str]:
        given = []
        auth = h.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            given.append(auth[7:].strip())
        if h.headers.get("X-Poolkeeper-Token"):
            given.append(h.headers["X-Poolkeeper-Token"].strip())
        given += query.get("token", [])[:1]
        if form is not None:
            given += form.get("token", [])[:1]
        if cookie and h.headers.get("Cookie"):
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(h.headers["Cookie"])
            except Exception:  # noqa: BLE001 - a malformed cookie is simply not a token
                jar = SimpleCookie()
            if _COOKIE in jar:
                given.append(jar[_COOKIE].value)
        return given

    def _token_ok(self, given: list[str]) -> bool:
        token = self.token
        if token is None:
            return False
        expected = token.encode()
        return any(hmac.compare_digest(g.encode(), expected) for g in given)

    def _host_ok(self, h: BaseHTTPRequestHandler) -> bool:
        if not self.loopback:
            return True  # reachable from elsewhere by design; the token protects it
        host = h.headers.get("Host")
        if not host:
            return True
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name.lower() in self.allowed_hosts or host.lower() in self.allowed_hosts

    # ------------------------------------------------------------------ dispatch
    def handle(self, h: BaseHTTPRequestHandler, method: str) -> _Response:
        self.requests_total += 1
        try:
            return self._handle(h, method)
        except ValueError as exc:  # a malformed query string, form or Content-Length
            return _Response(HTTPStatus.BAD_REQUEST, f"bad request: {exc}",
                             "text/plain; charset=utf-8")

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> _Response:
        parts = urlsplit(h.path)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query, max_num_fields=20)
        if not self._host_ok(h):
            return _Response(HTTPStatus.FORBIDDEN, "this console answers only to loopback "
                             "host names (Host header refused)", "text/plain; charset=utf-8")
        form: dict[str, list[str]] | None = None
        if method == "POST":
            length = int(h.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                return _Response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                 f"request body over {_MAX_BODY} bytes", "text/plain")
            raw = h.rfile.read(length) if length > 0 else b""
            form = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=20)
        if path.startswith("/static/"):
            name = path[len("/static/"):]
            body = self.static.get(name)
            if body is None:
                return _Response(HTTPStatus.NOT_FOUND, "no such file", "text/plain")
            ctype = "text/css; charset=utf-8" if name.endswith(".css") else \
                "text/javascript; charset=utf-8"
            return _Response(HTTPStatus.OK, body, ctype)
        if self.read_needs_token and method == "GET":
            given = self._given_tokens(h, query, None, cookie=True)
            if not self._token_ok(given):
                self.unauthorized_total += 1
                return self._unauthorized(path)
            if query.get("token"):
                return self._login_redirect(path, query)
        if method == "POST":
            return self._post(h, path, query, form or {})
        return self._get(path, query)

    def _unauthorized(self, path: str) -> _Response:
        text = ("this console needs its token: open /?token=<token> once in the browser, or "
                "send 'Authorization: Bearer <token>'")
        if path.startswith("/api") or path == "/metrics":
            return _json({"error": text}, HTTPStatus.UNAUTHORIZED)
        body = render.page(path if path in _PAGES else "/", "token required",
                           f'<p class="error">{render.esc(text)}</p>', refresh=False,
                           token_hint=True)
        return _Response(HTTPStatus.UNAUTHORIZED, body)

    def _login_redirect(self, path: str, query: Mapping[str, list[str]]) -> _Response:
        # Only to one of our own pages: a crafted path must not make this an open redirect.
        ours = path in _PAGES or (path.startswith("/api/") and path[4:] in (*_PAGES, "/overview"))
        target = path if ours else "/"
        rest = urlencode([(k, v) for k, vs in query.items() if k != "token" for v in vs])
        cookie = f"{_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
        return _Response(HTTPStatus.SEE_OTHER, "", "text/plain",
                         (("Location", target + (f"?{rest}" if rest else "")),
                          ("Set-Cookie", cookie)))

    def _post(self, h: BaseHTTPRequestHandler, path: str, query: Mapping[str, list[str]],
              form: Mapping[str, list[str]]) -> _Response:
        if path not in ("/reset", "/api/reset"):
            return _Response(HTTPStatus.METHOD_NOT_ALLOWED, "POST only to /reset or /api/reset",
                             "text/plain")
        if self.token is None:
            return _json({"error": "reset actions need a token: start the console with "
                                   "serve(..., token=...) in Python, or poolkeeper console "
                                   "--token ... (or $POOLKEEPER_CONSOLE_TOKEN)"},
                         HTTPStatus.FORBIDDEN)
        if query.get("token"):
            self.unauthorized_total += 1
            return _json({"error": "reset refused: the token was sent in the address "
                                   "(?token=...), which proxies and browser history keep; "
                                   "send it in the form field 'token' or an "
                                   "'Authorization: Bearer <token>' header"},
                         HTTPStatus.BAD_REQUEST)
        if not self._token_ok(self._given_tokens(h, {}, form, cookie=False)):
            self.unauthorized_total += 1
            return _json({"error": "reset refused: wrong or missing token (send it in the form "
                                   "field 'token' or an Authorization: Bearer header)"},
                         HTTPStatus.FORBIDDEN)
        names = form.get("pool") or query.get("pool")
        wanted = names[0] if names else None
        done = self.reset(wanted)
        if wanted is not None and not done:
            return _json({"error": f"no pool named {wanted!r}"}, HTTPStatus.NOT_FOUND)
        if path == "/reset":
            return _Response(HTTPStatus.SEE_OTHER, "", "text/plain", (("Location", "/"),))
        return _json({"reset": list(done), "before": done})

    def reset(self, wanted: str | None) -> dict[str, Any]:
        """Log each pool's counters, then reset them (Druid's log-and-reset)."""
        done: dict[str, Any] = {}
        for name, pool in views.named_pools(self.sources.pool_list()):
            if wanted is not None and name != wanted:
                continue
            before = pool.pop_stats()
            counters = {k: v for k, v in before.items() if not isinstance(v, list)}
            logger.info("console: counters of pool %r reset; values before the reset: %s",
                        name, json.dumps(counters, default=str, sort_keys=True))
            done[name] = views.jsonable(counters)
            # Per-fingerprint statistics are not reset by pop_stats(): reset them too, logging
            # their totals and top statements first.
            pop_sql_stats = getattr(pool, "pop_sql_stats", None)
            if callable(pop_sql_stats):
                sql = dict(pop_sql_stats(_RESET_LOG_STATEMENTS))
                top = [{k: s.get(k) for k in ("fingerprint", "executions", "errors", "total_ms")}
                       for s in sql.pop("statements", ())]
                logger.info("console: SQL statistics of pool %r reset; totals before the reset: "
                            "%s; top statements by total time: %s", name,
                            json.dumps(views.jsonable(sql), sort_keys=True),
                            json.dumps(views.jsonable(top)))
        return done

    def _get(self, path: str, query: Mapping[str, list[str]]) -> _Response:
        if path == "/metrics":
            return self._metrics()
        if path in ("/api", "/api/index"):
            return _json({"pages": {p: f"/api{p if p != '/' else '/overview'}"
                                    for p in _PAGES},
                          "metrics": "/metrics", "reset": "POST /api/reset?pool=<name>"})
        api = path.startswith("/api/")
        page = "/" if path in ("/api/overview", "/") else (path[4:] if api else path)
        if page not in _PAGES:
            return _Response(HTTPStatus.NOT_FOUND, "no such page", "text/plain")
        data = self.data(page, query)
        if api:
            return _json(data)
        ctx = {"token_set": self.token is not None,
               "history_seconds": self.sources.history.seconds}
        title, body = render.render(page, data, ctx)
        if query.get("partial"):
            return _Response(HTTPStatus.OK, body)
        return _Response(HTTPStatus.OK, render.page(
            page, title, body, refresh=page != "/query", generated=data.get("generated_at")))

    def data(self, page: str, query: Mapping[str, list[str]]) -> dict[str, Any]:
        src = self.sources
        first = {k: v[0] for k, v in query.items() if v}
        if page == "/":
            return views.overview_view(src)
        if page == "/sql":
            return views.sql_view(src, sort=first.get("sort"))
        if page == "/caches":
            return views.caches_view(src)
        if page == "/connections":
            return views.connections_view(src)
        if page == "/resources":
            try:
                min_age = max(0.0, min(float(first.get("min_age", 1.0)), 86_400.0))
            except ValueError:
                min_age = 1.0
            return views.resources_view(src, min_age=min_age)
        if page == "/memory":
            return views.memory_view(src)
        sql = first.get("sql")
        if sql is not None and len(sql) > _MAX_SQL_CHARS:
            return {"enabled": True, "sql": sql[:200], "tables": {},
                    "error": f"admin query over {_MAX_SQL_CHARS} characters refused"}
        return views.query_view(src, sql)

    def _metrics(self) -> _Response:
        try:
            from ..metrics import CONTENT_TYPE, exposition
            body = exposition(self.sources.pool_list, ledger=self.sources.get_ledger())
        except ImportError as exc:
            return _Response(HTTPStatus.NOT_IMPLEMENTED, str(exc), "text/plain; charset=utf-8")
        return _Response(HTTPStatus.OK, body, CONTENT_TYPE)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "poolkeeper-console"
    sys_version = ""
    timeout = 15  # a stalled client frees its thread after this many seconds

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        start = time.monotonic()
        try:
            response = self.server.app.handle(self, method)
        except Exception as exc:  # one failing page must not kill the console
            logger.exception("console: %s %s failed", method, urlsplit(self.path).path)
            response = _Response(HTTPStatus.INTERNAL_SERVER_ERROR,
                                 f"console error: {type(exc).__name__}: {exc}",
                                 "text/plain; charset=utf-8")
        self.send_response(response.status)
        self.send_header("Content-Type", response.type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in _SECURITY_HEADERS + response.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)
        logger.debug("console: %s %s -> %d in %.1f ms", method, urlsplit(self.path).path,
                     response.status, (time.monotonic() - start) * 1000.0)

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib logs the full request line to stderr; it may carry the token or an
        # admin query, so only the debug line above (path only) is kept.
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: _App, max_requests: int,
                 family: socket.AddressFamily) -> None:
        self.address_family = family
        super().__init__(address, _Handler)
        self.app = app
        self._slots = threading.BoundedSemaphore(max_requests)
        self._active: set[threading.Thread] = set()
        self._active_lock = threading.Lock()
        self.rejected_total = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            # More requests in flight than max_requests: answer at once instead of queueing.
            self.rejected_total += 1
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\n"
                                b"Content-Length: 0\r\n\r\n")
            self.shutdown_request(request)
            return
        thread = threading.Thread(target=self._run, args=(request, client_address),
                                  name=REQUEST_THREAD_NAME, daemon=True)
        with self._active_lock:
            self._active.add(thread)
        thread.start()

    def _run(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self._active.discard(threading.current_thread())
            self._slots.release()

    def service_actions(self) -> None:
        try:
            self.app.tick()
        except Exception:  # a failed sample must not stop the server
            logger.exception("console: sampling the pools failed")

    def request_threads(self) -> list[threading.Thread]:
        with self._active_lock:
            return list(self._active)


class ConsoleHandle:
    """A running console: its ``url``, and :meth:`stop` (also a context manager)."""

    def __init__(self, server: _Server, thread: threading.Thread, url: str,
                 stop_hooks: list[Callable[[], None]]) -> None:
        self._server = server
        self.thread = thread
        self.url = url
        self.host, self.port = server.server_address[:2]
        self._stop_hooks = stop_hooks
        self._stopped = False
        self._lock = threading.Lock()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop serving and join every console thread; True when all ended in ``timeout``."""
        with self._lock:
            if self._stopped:
                return True
            self._stopped = True
        deadline = time.monotonic() + timeout
        if self.thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self.thread.join(max(0.0, deadline - time.monotonic()))
        for thread in self._server.request_threads():
            thread.join(max(0.0, deadline - time.monotonic()))
        for hook in self._stop_hooks:
            hook()
        alive = [t.name for t in [self.thread, *self._server.request_threads()] if t.is_alive()]
        if alive:
            logger.warning("console %s: threads still running %g s after stop(): %s",
                           self.url, timeout, ", ".join(alive))
        return not alive

    close = stop

    def __enter__(self) -> ConsoleHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<poolkeeper console {self.url} {'stopped' if self._stopped else 'running'}>"


def token_problem(host: str, token: object) -> str | None:
    """Why :func:`serve` would refuse ``host`` and ``token``, or None when it would not.

    ``"invalid"``: the token is not at least ``MIN_TOKEN_CHARS`` characters of letters, digits
    and ``-._~+/=``; ``"missing"``: ``host`` is not a loopback address and there is no token.
    (The command line checks this first, to word its error with its own flags.)
    """
    if token is not None and (not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS
                              or not _TOKEN_CHARS.fullmatch(token)):
        return "invalid"
    if token is None and not is_loopback(host):
        return "missing"
    return None


def serve(pools: Any = None, host: str = "127.0.0.1", port: int = 0, *,
          token: str | None = None, history_seconds: float = 600.0,
          sample_interval: float = 1.0, watchdog: Any = None, monitor: Any = None,
          ledger: Any = None, max_requests: int = 16,
          protect_reads: bool | None = None) -> ConsoleHandle:
    """Serve the console for ``pools`` in a background thread named ``poolkeeper-console``.

    ``pools``: a pool, a list of pools, a zero-argument callable returning them, or None for
    the pools registered with :func:`poolkeeper.observe.register_pool`. ``port=0`` picks a
    free port (read it from ``handle.url``). Binding anything but a loopback address needs
    ``token`` (at least 16 characters, e.g. ``secrets.token_urlsafe(24)``); reset actions need
    it everywhere. ``watchdog``: a running :class:`~poolkeeper.observe.memory.MemoryWatchdog`
    whose history feeds the memory page (else the console samples memory itself).
    ``protect_reads``: require the token for reading pages too (default: only off loopback;
    set it on machines shared with other users, who can reach loopback as well).

    Example::

        handle = poolkeeper.console.serve([pool])
        print("console at", handle.url)
        ...
        handle.stop()
    """
    loopback = is_loopback(host)
    problem = token_problem(host, token)
    if problem == "invalid":
        raise ConfigError(f"console token must be at least {MIN_TOKEN_CHARS} characters of "
                          "letters, digits and -._~+/= (e.g. secrets.token_urlsafe(24))")
    if problem == "missing":
        raise ConfigError(
            f"console host={host!r} is not a loopback address: it would show pool state to "
            "other machines, so it needs token=... (e.g. secrets.token_urlsafe(24)); or bind "
            "127.0.0.1 and reach it through an SSH tunnel")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"console port={port!r} is out of range: 0..65535 (0 picks a free one)")
    if not 1 <= max_requests <= 1024:
        raise ConfigError(f"console max_requests={max_requests!r} is out of range: 1..1024")
    history = History(seconds=history_seconds, interval=sample_interval)
    sources = views.Sources(pools=pools, history=history, monitor=monitor, ledger=ledger,
                            watchdog=watchdog)
    bind = "127.0.0.1" if host.lower() == "localhost" else host.strip("[]")
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    if protect_reads and token is None:
        raise ConfigError("console protect_reads=True needs a token")
    app = _App(sources, token=token, loopback=loopback, host=bind,
               protect_reads=not loopback if protect_reads is None else protect_reads)
    try:
        server = _Server((bind, port), app, max_requests, family)
    except OSError as exc:
        raise ConfigError(f"console could not listen on {host}:{port}: {exc}") from exc
    stop_hooks: list[Callable[[], None]] = []
    ledger_obj = sources.get_ledger()
    if ledger_obj is not None:
        registration = ledger_obj.register("console history", history.memory_usage,
                                           category="console")
        stop_hooks.append(registration.unregister)
    try:
        app.tick()
    except Exception:  # the first sample is a nicety; serving matters
        logger.exception("console: sampling the pools failed")
    poll = min(0.5, sample_interval)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": poll},
                              name=THREAD_NAME, daemon=True)
    thread.start()
    shown = f"[{bind}]" if family == socket.AF_INET6 else bind
    url = f"http://{shown}:{server.server_address[1]}/"
    logger.info("poolkeeper console serving %s%s", url,
                "" if loopback else " (token required)")
    return ConsoleHandle(server, thread, url, stop_hooks)
