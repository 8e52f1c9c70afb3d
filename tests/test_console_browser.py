"""The console as a person sees it: headless Chromium loads each page of a pool under load.

Each page is rendered by a real browser (``--dump-dom``), its numbers are read back from the
DOM and compared with ``pool.stats()`` read just before and just after the page (counters
must lie between the two), and a screenshot is saved under ``artifacts/``.

Needs Debian's ``chromium``; skipped with the reason when it is absent, unless
``POOLKEEPER_REQUIRE_BROWSER=1``, where the absence fails the tests.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from poolkeeper import Pool
from poolkeeper.console import ConsoleHandle, serve

from ._db import create_table, drop_table, unique_table

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
# Counters that only grow while the load runs: shown value must lie between two reads.
MONOTONIC = ("requests_num", "requests_queued", "requests_wait_ms", "handoffs_num",
             "returns_num", "usage_ms", "connections_num", "lease_reuses_num",
             "lease_parks_num", "sql_executions", "sql_ms")
DYNAMIC_GAUGES = ("pool_size", "pool_active", "pool_available", "pool_parked",
                  "requests_waiting", "connections_opening")


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path is not None:
            return path
    reason = ("headless Chromium is not installed (Debian: apt-get install -y chromium); "
              "the browser tests of the console are skipped")
    if os.environ.get("POOLKEEPER_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (POOLKEEPER_REQUIRE_BROWSER=1 turns this skip into a failure)")
    pytest.skip(reason)


def _chromium(browser: str, profile: Path, url: str, *extra: str) -> str:
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-proxy-server", "--disable-extensions",
            f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1280,1600",
            *extra, url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


class _Page(HTMLParser):
    """Collects the text of every element with ``data-key``, per ``data-pool`` section."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, list[tuple[str, str]]] = {}
        self.pool = ""
        self._key: str | None = None
        self._text: list[str] = []
        self.tags: dict[str, int] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "section" and a.get("data-pool"):
            self.pool = a["data-pool"] or ""
        if a.get("data-key"):
            self._key = a["data-key"]
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if self._key is not None:
            self.values.setdefault(self.pool, []).append((self._key, "".join(self._text).strip()))
            self._key = None
        if tag == "section":
            self.pool = ""

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._key is not None:
            self._text.append(data)


def _number(text: str) -> float:
    return float(text.replace(",", "").replace("–", "nan"))


class Live:
    """A pool under load with its console."""

    def __init__(self, pool: Pool, handle: ConsoleHandle, browser: str, profile: Path) -> None:
        self.pool = pool
        self.handle = handle
        self.browser = browser
        self.profile = profile

    def visit(self, path: str, shot: str) -> tuple[dict[str, Any], _Page, dict[str, Any]]:
        url = self.handle.url.rstrip("/") + path
        before = self.pool.stats()
        dom = _chromium(self.browser, self.profile, url, "--dump-dom")
        after = self.pool.stats()
        ARTIFACTS.mkdir(exist_ok=True)
        target = ARTIFACTS / f"console-{shot}.png"
        _chromium(self.browser, self.profile, url, f"--screenshot={target}")
        assert target.stat().st_size > 10_000, f"{target} looks empty"
        page = _Page()
        page.feed(dom)
        return before, page, after


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    browser = _browser()
    tmp = tmp_path_factory.mktemp("browser")
    with Pool(f"sqlite:///{tmp / 'shop.db'}", max_size=3, name="shop") as pool:
        hooks: list[Any] = []
        try:
            from poolkeeper.hooks.stats import StatsHook
        except ImportError:
            pass
        else:
            if not hasattr(pool, "sql_stats"):  # older builds: statistics as a hook
                hooks.append(StatsHook.from_config(pool.config, pool.driver.name))
                pool.add_hook(hooks[-1])
        table = unique_table("pkbrowse")
        create_table(pool, table)
        stop = threading.Event()

        def work(seed: int) -> None:
            deadline = time.monotonic() + 300  # bounded in time and in count
            for i in range(200_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                with pool.connection() as conn:
                    if i % 5 == 0:
                        conn.execute(f"INSERT INTO {table} (v) VALUES ('row {seed}-{i}')")
                    conn.execute(f"SELECT COUNT(*) FROM {table} WHERE v <> 'x'").fetchall()
                time.sleep(0.003)

        workers = [threading.Thread(target=work, args=(n,), name=f"load-{n}") for n in range(5)]
        for w in workers:
            w.start()
        handle = serve([pool], sample_interval=0.2)
        try:
            time.sleep(1.0)  # a few samples for the charts before the first page
            yield Live(pool, handle, browser, tmp / "profile")
        finally:
            stop.set()
            for w in workers:
                w.join(30)
            handle.stop()
            drop_table(pool, table)
            for hook in hooks:
                pool.remove_hook(hook)


def test_overview_numbers_match_pool_stats(live: Live) -> None:
    before, page, after = live.visit("/", "overview")
    shown = dict(page.values["shop"])
    assert {"pool_size", "pool_max", "requests_num", "usage_ms"} <= set(shown)
    for key, text in shown.items():
        assert key in after, f"the page shows {key!r}, which pool.stats() does not have"
        if "bytes" in key:
            continue  # shown as KB / MB
        value = _number(text)
        if key in ("pool_max", "pool_min"):
            assert value == after[key], key
        elif key in DYNAMIC_GAUGES:
            assert 0 <= value <= after["pool_max"] + (key == "requests_waiting") * 10, key
        elif key in MONOTONIC:
            assert before[key] <= value <= after[key], (key, before[key], value, after[key])
    assert before["requests_num"] < after["requests_num"], "the pool was not under load"
    assert page.tags.get("polyline", 0) >= 2, "the recent-minutes charts drew no line"
    assert page.tags.get("rect", 0) >= 12, "the histograms drew no bars"


def test_connections_page_lists_every_open_connection(live: Live) -> None:
    before, page, after = live.visit("/connections", "connections")
    ids = [v for k, v in page.values["shop"] if k == "id"]
    assert len(ids) in (before["pool_size"], after["pool_size"])
    chips = sum(int(v) for k, v in page.values["shop"] if k.startswith("state:"))
    assert chips == len(ids)
    assert "in_use" in "".join(page.text) or "idle" in "".join(page.text)


def test_sql_page_shows_fingerprints_adding_up_to_the_executions(live: Live) -> None:
    before, page, after = live.visit("/sql?sort=executions", "sql")
    if "sql_executions" not in after:
        assert "not enabled" in "".join(page.text)
        return
    executions = [_number(v) for k, v in page.values["shop"] if k == "executions"]
    assert executions == sorted(executions, reverse=True)
    assert before["sql_executions"] <= sum(executions) <= after["sql_executions"]
    text = "".join(page.text)
    assert "SELECT COUNT(*) FROM" in text and "row " not in text  # literals folded


def test_caches_page_shows_the_cache_counters(live: Live) -> None:
    before, page, after = live.visit("/caches", "caches")
    shown = dict(page.values.get("shop", []))
    if not any("cache" in k for k in after):
        assert "not enabled" in "".join(page.text)
        return
    for key, text in shown.items():
        if key in after and key.endswith(("_hits", "_misses")):
            assert before[key] <= _number(text) <= after[key], key


def test_resources_page_groups_by_site_with_the_stack(live: Live) -> None:
    monitor = importlib.import_module("poolkeeper.observe.monitor").MONITOR
    was_on = monitor.enabled
    monitor.enable()
    token = monitor.track("spill_file", size=4096)  # this line is the expected site
    line = _this_line() - 1
    try:
        time.sleep(1.1)  # the page hides resources younger than a second by default
        _before, page, _after = live.visit("/resources", "resources")
    finally:
        token.close()
        if not was_on:
            monitor.disable()
    text = "".join(page.text)
    assert f"test_console_browser.py:{line}" in text
    assert "spill_file" in text and "4.0 KB" in text


def test_memory_page_shows_process_memory_and_the_ledger(live: Live) -> None:
    _before, page, _after = live.visit("/memory", "memory")
    shown = dict(page.values.get("", []))
    assert shown["rss_bytes"].endswith("MB")
    text = "".join(page.text)
    if "ledger not enabled" not in text:
        assert "console history" in text


def test_query_page_answers_a_select_over_the_admin_tables(live: Live) -> None:
    importlib.import_module("poolkeeper.observe.admin")
    sql = quote("select name, max_size, driver from pools")
    _before, page, _after = live.visit(f"/query?sql={sql}", "query")
    cells = dict(page.values.get("", []))
    assert cells["name"] == "shop" and cells["max_size"] == "3" and cells["driver"] == "sqlite"


def _this_line() -> int:
    import inspect

    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno
