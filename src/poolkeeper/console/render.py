"""HTML for the console's pages, rendered on the server from the views' data.

Pages work without JavaScript (sorting is a link, a stack opens with ``<details>``, the SQL box
is a form); the small script only refreshes the page body every few seconds. Every value is
escaped here, whatever its source. Numbers shown carry a ``data-key`` attribute naming the
``pool.stats()`` key they come from, so tests (and scrapers of the page) can find them.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from . import charts

__all__ = ["NAV", "page", "render"]

#: (path, label) of every page, in the navigation's order
NAV = (("/", "Overview"), ("/sql", "SQL"), ("/caches", "Statement caches"),
       ("/connections", "Connections"), ("/resources", "Resources"), ("/memory", "Memory"),
       ("/query", "Query"))
_API = {"/": "/api/overview", "/sql": "/api/sql", "/caches": "/api/caches",
        "/connections": "/api/connections", "/resources": "/api/resources",
        "/memory": "/api/memory", "/query": "/api/query"}

_MB = 1024 * 1024
_ACTIVE = ' class="active"'
_TIME_KEYS = frozenset({"last_execution", "created", "collected", "time", "last_used"})


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A number for people: thousands separators, at most 3 decimals; None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, default=str) if value else "–"
    return str(value)


def fmt_bytes(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "–"
    if value >= 1024 * _MB:
        return f"{value / (1024 * _MB):,.1f} GB"
    if value >= _MB:
        return f"{value / _MB:,.1f} MB"
    if value >= 1024:
        return f"{value / 1024:,.1f} KB"
    return f"{int(value):,} B"


def _cell(key: str, value: Any, attr: str = "data-key") -> str:
    """One table cell; numbers right-aligned, SQL in code, sites as code, epochs as times."""
    k = key.lower()
    if (k in _TIME_KEYS or k.endswith("_at")) and isinstance(value, int | float) \
            and not isinstance(value, bool) and value > 1e9:
        stamp = time.strftime("%H:%M:%S", time.localtime(value))
        return f'<td {attr}="{esc(key)}" title="{esc(value)}">{esc(stamp)}</td>'
    if isinstance(value, str) and any(w in k for w in ("sql", "fingerprint", "query")):
        return f'<td class="sql"><code>{esc(value)}</code></td>'
    if isinstance(value, str) and ("site" in k or k == "stack"):
        return f'<td class="site"><code>{esc(value)}</code></td>'
    if "bytes" in k and isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="num" {attr}="{esc(key)}" title="{esc(value)}">' \
               f'{esc(fmt_bytes(value))}</td>'
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="num" {attr}="{esc(key)}">{esc(fmt(value))}</td>'
    if k == "state":
        return f'<td><span class="state {esc(value)}">{esc(value)}</span></td>'
    return f'<td {attr}="{esc(key)}">{esc(fmt(value))}</td>'


def kv_table(values: Mapping[str, Any], *, cls: str = "kv", pool: str | None = None,
             attr: str = "data-key") -> str:
    """Name / value rows; values carry ``attr`` (``data-key``: a ``pool.stats()`` key)."""
    if not values:
        return '<p class="muted">none</p>'
    pool_attr = f' data-pool="{esc(pool)}"' if pool is not None else ""
    rows = "".join(f"<tr><th>{esc(k)}</th>{_cell(k, v, attr)}</tr>" for k, v in values.items())
    return f'<table class="{cls}"{pool_attr}>{rows}</table>'


def table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], *,
          header: Callable[[str], str] | None = None,
          special: Mapping[str, Callable[[Any, Mapping[str, Any]], str]] | None = None,
          cls: str = "grid") -> str:
    if not rows:
        return '<p class="muted">no rows</p>'
    head = "".join(f"<th>{header(c) if header else esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c)
            if special and c in special:
                cells.append(f"<td>{special[c](value, row)}</td>")
            else:
                cells.append(_cell(c, value))
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _notice(text: str, cls: str = "notice") -> str:
    return f'<p class="{cls}">{esc(text)}</p>'


def _pool_title(pool: Mapping[str, Any]) -> str:
    bits = [b for b in (pool.get("driver"), pool.get("dsn")) if b]
    closed = ' <span class="badge closed">closed</span>' if pool.get("closed") else ""
    return (f'<h2>{esc(pool["name"])} <small>{esc(" · ".join(bits))}</small>{closed}</h2>')


# ----------------------------------------------------------------------------- page
def page(path: str, title: str, body: str, *, refresh: bool = True, generated: float | None = None,
         token_hint: bool = False) -> str:
    """A whole page: header with navigation, the body in ``<main>``, a footer."""
    nav = "".join(
        f'<a href="{p}"{_ACTIVE if p == path else ""}>{esc(label)}</a>'
        for p, label in NAV)
    api = _API.get(path, "/api")
    stamp = time.strftime("%H:%M:%S", time.localtime(generated or time.time()))
    hint = ' <span class="muted">(token required)</span>' if token_hint else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>poolkeeper · {esc(title)}</title>"
        '<link rel="stylesheet" href="/static/console.css">'
        '<script src="/static/console.js" defer></script></head>'
        f'<body data-page="{esc(path)}" data-refresh="{2 if refresh else 0}">'
        f'<header><span class="brand">poolkeeper</span><nav>{nav}</nav>'
        f'<span class="tools"><a href="{api}">JSON</a><a href="/metrics">metrics</a>'
        + ('<label class="auto"><input type="checkbox" id="auto" checked> live</label>'
           if refresh else "")
        + f"</span></header><main id=\"main\">{body}</main>"
        f'<footer>rendered {esc(stamp)}{hint} · SQL shown with literals folded · '
        "passwords masked</footer></body></html>")


# ----------------------------------------------------------------------------- overview
def _gauge(label: str, key: str, gauges: Mapping[str, Any], sub: str = "",
           fraction: float | None = None, sub_key: str | None = None) -> str:
    """A gauge card; ``sub`` ends with the value of ``sub_key`` when one is given."""
    value = gauges.get(key)
    extra = (f' <span data-key="{esc(sub_key)}">{esc(fmt(gauges.get(sub_key)))}</span>'
             if sub_key else "")
    return (f'<div class="gauge"><div class="label">{esc(label)}</div>'
            f'<div class="value" data-key="{esc(key)}">{esc(fmt(value))}</div>'
            f'{charts.meter(fraction)}<div class="sub">{esc(sub)}{extra}</div></div>')


def render_overview(data: Mapping[str, Any], ctx: Mapping[str, Any]) -> str:
    pools = data.get("pools") or []
    if not pools:
        return _notice("No pools to show: pass pools to poolkeeper.console.serve(), or "
                       "register them with poolkeeper.observe.register_pool().")
    out = []
    for pool in pools:
        name = pool["name"]
        g = pool.get("gauges", {})
        size_max = g.get("pool_max") or 0
        out.append(f'<section class="pool" data-pool="{esc(name)}">{_pool_title(pool)}')
        if pool.get("error"):
            out.append(_notice(pool["error"], "error"))

        def frac(key: str, g: Mapping[str, Any] = g, size_max: float = size_max) -> float | None:
            v = g.get(key)
            return v / size_max if size_max and isinstance(v, int | float) else None

        out.append('<div class="gauges">')
        out.append(_gauge("open", "pool_size", g, "of max", frac("pool_size"), "pool_max"))
        out.append(_gauge("active", "pool_active", g, "borrowed now", frac("pool_active")))
        out.append(_gauge("idle", "pool_available", g, "min idle", frac("pool_available"),
                          "pool_min"))
        out.append(_gauge("waiting", "requests_waiting", g, "callers queued"))
        out.append(_gauge("opening", "connections_opening", g, "connects under way"))
        out.append(_gauge("opened, last hour", "connections_opened_last_hour", g, "churn"))
        out.append("</div>")

        history = pool.get("history") or []
        now = time.time()
        span = float(ctx.get("history_seconds", 600.0))
        # The window grows with the samples kept, from half a minute up to the history span.
        t0 = max(min([p["t"] for p in history] + [now - 30.0]), now - span)
        lines = [(label, [(p["t"], p[key]) for p in history if key in p])
                 for label, key in (("open", "size"), ("idle", "idle"),
                                    ("waiting", "waiting"), ("active", "active"))]
        rates = [(label, [(p["t"], p[key]) for p in history if key in p])
                 for label, key in (("requests/s", "requests_per_s"),
                                    ("mean wait ms", "wait_ms_avg"))]
        out.append('<div class="cards">')
        out.append('<div class="card"><h3>Connections, recent minutes</h3>'
                   f'{charts.line_chart(lines, t0=t0, t1=now, title="connections")}</div>')
        out.append('<div class="card"><h3>Requests, recent minutes</h3>'
                   f'{charts.line_chart(rates, t0=t0, t1=now, title="requests")}</div>')
        for kind, title in (("wait", "Wait for a connection (ms)"),
                            ("usage", "Hold time, borrow to return (ms)")):
            h = (pool.get("histograms") or {}).get(kind)
            if h:
                labels = charts.bucket_labels(h["bounds_ms"])
                out.append(f'<div class="card"><h3>{esc(title)}</h3>'
                           f'{charts.histogram_chart(labels, h["counts"], title=title)}</div>')
        out.append("</div>")
        out.append('<div class="card wide"><h3>Counters <small>pool.stats()</small></h3>'
                   f'{kv_table(pool.get("counters") or {}, cls="kv cols", pool=name)}'
                   f'{_reset_form(name, ctx)}</div>')
        if pool.get("config"):
            out.append(f'<details id="config-{esc(name)}"><summary>Configuration</summary>'
                       f'{kv_table(pool["config"], attr="data-option")}</details>')
        out.append("</section>")
    return "".join(out)


def _reset_form(pool: str, ctx: Mapping[str, Any]) -> str:
    if not ctx.get("token_set"):
        return ('<p class="muted small">Log-and-reset of counters is off: it needs the '
                "console started with a token.</p>")
    return ('<form class="reset" method="post" action="/reset">'
            f'<input type="hidden" name="pool" value="{esc(pool)}">'
            '<input type="password" name="token" placeholder="console token" '
            'autocomplete="off" required>'
            '<button type="submit">Log and reset counters</button></form>')


# ----------------------------------------------------------------------------- SQL
_SORT_LABELS = (("total_ms", "total time"), ("total_time_ms", "total time"),
                ("executions", "count"), ("count", "count"), ("calls", "count"),
                ("errors", "errors"),
                ("max_ms", "max"), ("max_time_ms", "max"))


def render_sql(data: Mapping[str, Any], ctx: Mapping[str, Any]) -> str:
    out = []
    for pool in data.get("pools") or []:
        out.append(f'<section class="pool" data-pool="{esc(pool["name"])}">{_pool_title(pool)}')
        if not pool.get("enabled"):
            out.append(_notice("not enabled: " + str(pool.get("reason", ""))))
            if pool.get("counters"):
                out.append(kv_table(pool["counters"], pool=pool["name"]))
            out.append("</section>")
            continue
        sortable = pool.get("sortable") or []
        current = pool.get("sort")
        links: list[tuple[str, str]] = []
        for key, label in _SORT_LABELS:
            if key in sortable and label not in [lab for _, lab in links]:
                links.append((key, label))
        bar = " ".join(
            f'<a href="?{urlencode({"sort": k})}"'
            f'{_ACTIVE if k == current else ""}>{esc(label)}</a>'
            for k, label in links)
        total = pool.get("total", 0)
        shown = len(pool.get("rows") or [])
        out.append(f'<p class="sortbar">sort by: {bar or "–"} <span class="muted">'
                   f"({fmt(shown)} of {fmt(total)} fingerprints)</span></p>")
        bounds = pool.get("histogram_bounds_ms") or []
        labels = charts.bucket_labels(bounds) if bounds else []
        hist_cols = set(pool.get("histogram_columns") or [])
        columns = [c for c in pool.get("columns") or [] if c != "histogram_bounds_ms"]

        def header(col: str, sortable: Sequence[str] = sortable, current: Any = current) -> str:
            if col in sortable:
                mark = " ▼" if col == current else ""
                return f'<a href="?{urlencode({"sort": col})}">{esc(col)}{mark}</a>'
            return esc(col)

        def spark(value: Any, row: Mapping[str, Any], labels: list[str] = labels) -> str:
            if isinstance(value, list):
                return charts.sparkbars([float(v or 0) for v in value], labels)
            return esc(fmt(value))

        out.append(table(columns, pool.get("rows") or [], header=header,
                         special=dict.fromkeys(hist_cols, spark), cls="grid sql"))
        if pool.get("counters"):
            out.append('<details id="sqlcounters-' + esc(pool["name"]) + '"><summary>'
                       "Statistics registry counters</summary>"
                       f'{kv_table(pool["counters"], attr="data-total")}</details>')
        out.append("</section>")
    return "".join(out) or _notice("No pools to show.")


# ----------------------------------------------------------------------------- caches
def render_caches(data: Mapping[str, Any], ctx: Mapping[str, Any]) -> str:
    out = []
    for pool in data.get("pools") or []:
        out.append(f'<section class="pool" data-pool="{esc(pool["name"])}">{_pool_title(pool)}')
        if pool.get("error"):
            out.append(_notice(pool["error"], "error"))
        if not pool.get("enabled"):
            out.append(_notice("not enabled: " + str(pool.get("reason", ""))))
        out.append('<div class="cards">')
        settings = kv_table(pool.get("config") or {}, attr="data-option")
        out.append(f'<div class="card"><h3>Settings</h3>{settings}</div>')
        if pool.get("counters"):
            out.append('<div class="card"><h3>Counters</h3>'
                       f'{kv_table(pool["counters"], pool=pool["name"])}</div>')
        if pool.get("policy"):
            out.append('<div class="card"><h3>Policy <small>per driver</small></h3>'
                       f'{kv_table(pool["policy"], attr="data-option")}</div>')
        out.append("</div>")
        if pool.get("rows"):
            out.append(f'<h3>Cached statements <small>{fmt(pool.get("total"))}</small></h3>')
            out.append(table(pool["columns"], pool["rows"]))
        out.append("</section>")
    ledger = data.get("ledger") or []
    if ledger:
        out.append('<section><h2>Memory of the caches <small>ledger</small></h2>'
                   f'{_ledger_table(ledger)}</section>')
    return "".join(out) or _notice("No pools to show.")


# ----------------------------------------------------------------------------- connections
def render_connections(data: Mapping[str, Any], ctx: Mapping[str, Any]) -> str:
    out = []
    for pool in data.get("pools") or []:
        out.append(f'<section class="pool" data-pool="{esc(pool["name"])}">{_pool_title(pool)}')
        if pool.get("error"):
            out.append(_notice(pool["error"], "error"))
        states = pool.get("states") or {}
        chips = " ".join(f'<span class="state {esc(s)}">{esc(s)} <b data-key="state:{esc(s)}">'
                         f"{fmt(n)}</b></span>" for s, n in sorted(states.items()))
        out.append(f'<p class="chips">{chips or "no connections open"}</p>')
        out.append(table(pool.get("columns") or [], pool.get("rows") or [], cls="grid conns"))
        out.append("</section>")
    return "".join(out) or _notice("No pools to show.")


# ----------------------------------------------------------------------------- resources
def render_resources(data: Mapping[str, Any], ctx: Mapping[str, Any]) -> str:
    if not data.get("enabled"):
        body = _notice("not enabled: " + str(data.get("reason", "")))
        if data.get("stats"):
            body += f'<details><summary>Monitor counters</summary>{kv_table(data["stats"])}' \
                    "</details>"
        return body
    min_age = data.get("min_age_s", 1.0)
    choices = " ".join(
        f'<a href="?{urlencode({"min_age": a})}"'
        f'{_ACTIVE if float(a) == float(min_age) else ""}>≥{a} s</a>'
        for a in ("0", "1", "10", "60"))
    out = [f'<p class="sortbar">live resources older than: {choices} '
           f'<span class="muted">({fmt(data.get("live"))} live, '
           f'{fmt(data.get("sites_total"))} call sites)</span></p>']
    rows = []
    for i, site in enumerate(data.get("sites") or []):
        examples = []
        for r in site.get("examples") or []:
            stack = "".join(f"<li><code>{esc(frame)}</code></li>" for frame in r["stack"])
            sql = (f'<div class="sql">SQL: <code>{esc(r["sql"])}</code></div>'
                   if r.get("sql") else "")
            examples.append(
                f'<div class="example">#{esc(r["id"])} · age {esc(fmt(r["age_s"]))} s · thread '
                f'{esc(r["thread"])} · pool {esc(r.get("pool") or "–")}{sql}'
                f"<ol>{stack}</ol></div>")
        rows.append(
            f'<tr><td><span class="kind">{esc(site["kind"])}</span></td>'
            f'<td class="num" data-key="count">{fmt(site["count"])}</td>'
            f'<td class="num">{esc(fmt_bytes(site["bytes"]))}</td>'
            f'<td class="num">{esc(fmt(site["oldest_s"]))} s</td>'
            f'<td>{esc(", ".join(site.get("pools") or []))}</td>'
            f'<td class="site"><details id="site-{i}"><summary><code>{esc(site["site"])}</code>'
            f'</summary>{"".join(examples)}</details></td></tr>')
    if rows:
        out.append('<div class="scroll"><table class="grid"><thead><tr><th>kind</th>'
                   "<th>count</th><th>bytes</th><th>oldest</th><th>pools</th>"
                   "<th>call site (click for stacks)</th></tr></thead>"
                   f'<tbody>{"".join(rows)}</tbody></table></div>')
    else:
        out.append(_notice("No live resource is that old.", "muted"))
    collected = data.get("collected") or []
    out.append(f"<h3>Collected without being closed <small>{fmt(data.get('collected_total'))}"
               "</small></h3>")
    out.append(table(("kind", "site", "age_s", "thread", "pool", "sql"), collected))
    out.append(f'<details><summary>Monitor counters</summary>{kv_table(data.get("stats") or {})}'
               "</details>")
    return "".join(out)


# ----------------------------------------------------------------------------- memory
def _ledger_table(entries: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for e in entries:
        frac = e.get("fraction")
        rows.append(
            f'<tr><td>{esc(e.get("name"))}</td><td>{esc(e.get("category"))}</td>'
            f'<td class="num" data-key="bytes">{esc(fmt_bytes(e.get("bytes")))}</td>'
            f'<td class="num">{esc(fmt_bytes(e.get("budget_bytes")))}</td>'
            f'<td class="num">{esc(f"{frac * 100:.1f}%" if frac is not None else "–")}'
            f"{charts.meter(frac)}</td><td>{esc(e.get('error') or '')}</td></tr>")
    return ('<div class="scroll"><table class="grid"><thead><tr><th>structure</th>'
            "<th>category</th><th>bytes</th><th>budget</th><th>used</th><th>error</th></tr>"
            f'</thead><tbody>{"".join(rows)}</tbody></table></div>')


def render_memory(data: Mapping[str, Any], ctx: Mapping[str, Any]) -> str:
    out = []
    proc = data.get("process") or {}
    percent = proc.get("percent")
    out.append('<div class="gauges">'
               f'<div class="gauge"><div class="label">resident (RSS)</div><div class="value" '
               f'data-key="rss_bytes">{esc(fmt_bytes(proc.get("rss_bytes")))}</div>'
               f'{charts.meter(percent / 100 if percent is not None else None)}'
               f'<div class="sub">{esc(fmt(percent))}% of {esc(fmt_bytes(proc.get("limit_bytes")))}'
               f' ({esc(proc.get("limit_source") or "no limit known")})</div></div>')
    ledger = data.get("ledger") or {}
    if ledger.get("enabled"):
        out.append(f'<div class="gauge"><div class="label">poolkeeper structures</div>'
                   f'<div class="value" data-key="ledger_bytes">'
                   f'{esc(fmt_bytes(ledger.get("total_bytes")))}</div><div class="sub">'
                   f'{fmt(len(ledger.get("entries") or []))} in the ledger</div></div>')
    out.append("</div>")
    trend = data.get("trend") or []
    now = time.time()
    t0 = min([p["t"] for p in trend] + [now - 30.0])
    rss = [("RSS", [(p["t"], p["rss_bytes"]) for p in trend if p.get("rss_bytes")])]
    led = [("ledger", [(p["t"], p["ledger_bytes"]) for p in trend
                       if p.get("ledger_bytes") is not None])]
    source = data.get("trend_source", "console")
    out.append('<div class="cards">'
               f'<div class="card"><h3>Process memory <small>{esc(source)} samples</small></h3>'
               f'{charts.line_chart(rss, t0=t0, t1=now, fmt=fmt_bytes, title="rss")}</div>'
               '<div class="card"><h3>poolkeeper structures <small>ledger total</small></h3>'
               f'{charts.line_chart(led, t0=t0, t1=now, fmt=fmt_bytes, title="ledger")}'
               "</div></div>")
    if ledger.get("enabled"):
        out.append(f'<h3>Ledger <small>bytes and budget per bounded structure</small></h3>'
                   f'{_ledger_table(ledger.get("entries") or [])}')
        cats = ledger.get("by_category") or {}
        out.append(f'<div class="cards"><div class="card"><h3>By category</h3>'
                   f'{kv_table({k: fmt_bytes(v) for k, v in cats.items()})}</div>')
    else:
        out.append(_notice("ledger not enabled: " + str(ledger.get("reason", ""))))
        out.append('<div class="cards">')
    for title, key in (("Watchdog", "watchdog"), ("Resource monitor", "monitor"),
                       ("Console history", "console")):
        if data.get(key):
            out.append(f'<div class="card"><h3>{esc(title)}</h3>{kv_table(data[key])}</div>')
    out.append("</div>")
    return "".join(out)


# ----------------------------------------------------------------------------- query
EXAMPLES = (
    "select pool, state, count(*) as n, max(age_s) from connections group by 1, 2",
    "select pool, name, value from pool_stats where name like 'requests%'",
    "select kind, site, count(*) as n, max(age_s) as oldest from resources "
    "group by 1, 2 order by n desc",
    "select name, category, bytes, budget_bytes from memory order by bytes desc",
)


def render_query(data: Mapping[str, Any], ctx: Mapping[str, Any]) -> str:
    if not data.get("enabled"):
        return _notice("not enabled: " + str(data.get("reason", "")))
    sql = data.get("sql") or ""
    out = ['<form class="query" method="get" action="/query">'
           f'<textarea name="sql" rows="4" spellcheck="false" placeholder="select ...">'
           f'{esc(sql)}</textarea><button type="submit">Run</button>'
           '<span class="muted small">one read-only SELECT over a snapshot of the pools, '
           "the monitor and the memory ledger</span></form>"]
    examples = "".join(f'<li><a href="/query?sql={quote(e)}"><code>{esc(e)}</code></a></li>'
                       for e in EXAMPLES)
    if data.get("error"):
        out.append(_notice(data["error"], "error"))
    elif data.get("columns") is not None:
        columns = list(data["columns"])
        rows = [dict(zip(columns, r, strict=False)) for r in data.get("rows") or []]
        more = " (truncated)" if data.get("truncated") else ""
        out.append(f'<p class="muted">{fmt(len(rows))} rows{more} in '
                   f'{fmt(data.get("elapsed_ms"))} ms</p>')
        out.append(table(columns, rows))
    tables = data.get("tables") or {}
    ref = "".join(f"<li><b>{esc(t)}</b> <span class=\"muted\">{esc(', '.join(cols))}</span></li>"
                  for t, cols in tables.items())
    out.append(f'<div class="cards"><div class="card"><h3>Examples</h3><ul>{examples}</ul></div>'
               f'<div class="card"><h3>Tables</h3><ul class="tables">{ref}</ul></div></div>')
    return "".join(out)


_RENDERERS: dict[str, tuple[str, Callable[[Mapping[str, Any], Mapping[str, Any]], str]]] = {
    "/": ("Overview", render_overview),
    "/sql": ("SQL", render_sql),
    "/caches": ("Statement caches", render_caches),
    "/connections": ("Connections", render_connections),
    "/resources": ("Resources", render_resources),
    "/memory": ("Memory", render_memory),
    "/query": ("Query", render_query),
}


def render(path: str, data: Mapping[str, Any], ctx: Mapping[str, Any]) -> tuple[str, str]:
    """(title, body HTML) of the page at ``path``."""
    title, fn = _RENDERERS[path]
    return title, fn(data, ctx)
