"""``poolkeeper top URL``: a live terminal view of a running console's JSON.

Reads ``/api/overview`` (and ``/api/sql`` when the pools have statistics) every ``interval``
seconds and draws one table of pools and one of the top SQL fingerprints with rich. Rates
(requests per second) come from the difference between two reads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .console_token import TOKEN_ENV, given_token

__all__ = ["add_arguments", "fetch", "percentile_bound", "render", "run", "run_top"]

#: what ``poolkeeper --help`` says of this command
HELP = "live terminal view of a running console"

_PAGE_TIMEOUT_S = 5.0
_MAX_BODY = 8 << 20


def fetch(base: str, path: str, token: str | None = None) -> dict[str, Any]:
    """GET ``base + path`` as JSON; raises OSError with a readable message on failure."""
    url = base.rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        raise OSError(f"{base!r} is not an http:// URL of a poolkeeper console")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=_PAGE_TIMEOUT_S) as response:
            body = response.read(_MAX_BODY)
    except urllib.error.HTTPError as exc:
        hint = " (pass --token or set POOLKEEPER_CONSOLE_TOKEN)" if exc.code == 401 else ""
        raise OSError(f"{url}: HTTP {exc.code} {exc.reason}{hint}") from exc
    except urllib.error.URLError as exc:
        raise OSError(f"{url}: {exc.reason}") from exc
    data = json.loads(body)
    if not isinstance(data, dict):
        raise OSError(f"{url}: not a poolkeeper console answer")
    return data


def percentile_bound(bounds_ms: Sequence[float], counts: Sequence[int], q: float) -> str:
    """The bucket bound under which a share ``q`` of the observations fall (``<=5 ms``)."""
    total = sum(counts)
    if not total:
        return "–"
    wanted = q * total
    running = 0
    for i, n in enumerate(counts):
        running += n
        if running >= wanted:
            if i < len(bounds_ms):
                return f"≤{bounds_ms[i]:g}ms"
            return f">{bounds_ms[-1]:g}ms" if bounds_ms else "–"
    return "–"


def _rate(now: Mapping[str, Any], before: Mapping[str, Any] | None, key: str,
          dt: float) -> str:
    if before is None or dt <= 0:
        return "–"
    delta = float(now.get(key, 0) or 0) - float(before.get(key, 0) or 0)
    if delta < 0:  # counters were reset in between
        return "–"
    return f"{delta / dt:,.0f}"


def render(overview: Mapping[str, Any], sql: Mapping[str, Any] | None,
           before: Mapping[str, Any] | None, dt: float, url: str) -> Any:
    """One frame: a rich Group of the pools table and the top SQL table."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    pools = Table(title=f"poolkeeper top · {url} · {time.strftime('%H:%M:%S')}",
                  title_justify="left", box=None, padding=(0, 0, 0, 1),
                  header_style="bold underline")
    # Short headers: eleven columns must fit an 80-column terminal.
    for col in ("pool", "open", "active", "idle", "wait", "req/s", "t/outs", "wait99",
                "hold99", "leaks", "opens/h"):
        pools.add_column(col, justify="left" if col == "pool" else "right",
                         overflow="fold" if col == "pool" else "ellipsis",
                         min_width=10 if col == "pool" else len(col), no_wrap=col != "pool")
    previous = {p["name"]: p.get("stats", {}) for p in (before or {}).get("pools", [])}
    for pool in overview.get("pools", []):
        s = pool.get("stats", {})
        bounds = s.get("histogram_bounds_ms") or []
        name = str(pool["name"]) + (" (closed)" if pool.get("closed") else "")
        pools.add_row(
            name, f"{s.get('pool_size', '–')}/{s.get('pool_max', '–')}",
            str(s.get("pool_active", "–")), str(s.get("pool_available", "–")),
            str(s.get("requests_waiting", "–")),
            _rate(s, previous.get(pool["name"]), "requests_num", dt),
            str(s.get("requests_timeouts", "–")),
            percentile_bound(bounds, s.get("wait_ms_histogram") or [], 0.99),
            percentile_bound(bounds, s.get("usage_ms_histogram") or [], 0.99),
            str(s.get("leaks_detected", "–")), str(s.get("connections_opened_last_hour", "–")))
    parts: list[Any] = [pools]
    for pool in (sql or {}).get("pools", []):
        if not pool.get("enabled"):
            continue
        top = Table(title=f"top SQL · {pool['name']} · by total time", title_justify="left",
                    expand=True, box=box.SIMPLE_HEAD, pad_edge=False)
        top.add_column("fingerprint", ratio=1, overflow="ellipsis", no_wrap=True)
        for col in ("executions", "errors", "total ms", "mean ms", "max ms"):
            top.add_column(col, justify="right")
        for row in (pool.get("rows") or [])[:8]:
            top.add_row(str(row.get("fingerprint") or row.get("sql") or ""),
                        _fmt(row.get("executions", row.get("count"))), _fmt(row.get("errors")),
                        _fmt(row.get("total_ms")), _fmt(row.get("mean_ms")),
                        _fmt(row.get("max_ms")))
        parts.append(top)
    if not overview.get("pools"):
        parts.append(Text("the console shows no pools", style="yellow"))
    return Group(*parts)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "–" if value is None else str(value)


def run_top(url: str, *, interval: float = 2.0, count: int | None = None,
            token: str | None = None, once: bool = False,
            sleep: Callable[[float], None] = time.sleep) -> int:
    """Draw frames until Ctrl-C (or ``count`` frames; ``once`` prints one without Live)."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    before: dict[str, Any] | None = None
    before_t = 0.0

    def frame() -> Any:
        nonlocal before, before_t
        overview = fetch(url, "/api/overview", token)
        now = time.monotonic()
        sql = fetch(url, "/api/sql", token) if overview.get("pools") else None
        drawn = render(overview, sql, before, now - before_t, url)
        before, before_t = overview, now
        return drawn

    if once:
        console.print(frame())
        return 0
    drawn = 0
    try:
        with Live(frame(), console=console, refresh_per_second=4, screen=False) as live:
            drawn = 1
            while count is None or drawn < count:
                sleep(interval)
                live.update(frame())
                drawn += 1
    except KeyboardInterrupt:
        pass
    return 0


def run(args: argparse.Namespace) -> int:
    """Draw frames of the console at ``args.url``; 2 when it cannot be read."""
    try:
        return run_top(args.url, interval=args.interval, count=args.count,
                       token=given_token(args.token), once=args.once)
    except ImportError:
        print("poolkeeper top needs rich: pip install 'poolkeeper[cli]'", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"poolkeeper top: {exc}", file=sys.stderr)
        return 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="the console's URL, e.g. http://127.0.0.1:8187/")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    p.add_argument("--count", type=int, default=None, help="stop after this many refreshes")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--token", help=f"console token (default: ${TOKEN_ENV})")
