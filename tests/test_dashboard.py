"""`CacheDashboard` served by a real uvicorn on loopback, and its page run in real Chromium (WebDriver).

Set RCM_DASHBOARD_SCREENSHOT=docs/dashboard.png to regenerate the README's screenshot from this test.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis
from starlette.applications import Starlette

from redis_cache_middleware import CacheMiddleware
from redis_cache_middleware.dashboard import CacheDashboard
from redis_cache_middleware.ops import redis_info

from .apps import DEFAULT_RULES, CountingApp
from .redis_server import RedisServer, free_port

TOKEN = "let-me-see"


class Served:
    """A Starlette app with the cache and the dashboard, served by uvicorn in a thread."""

    def __init__(self, redis_url: str) -> None:
        self.app: Starlette = CountingApp().starlette()
        self.app.add_middleware(
            CacheMiddleware, redis_url=redis_url, rules=list(DEFAULT_RULES), namespace="dash"
        )
        clients: list[Redis] = []

        async def info() -> dict[str, Any]:
            if not clients:
                clients.append(Redis.from_url(redis_url))  # made in the server's event loop
            return await redis_info(clients[0])

        self.app.mount("/cache", CacheDashboard(token=TOKEN, info=info))
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        cache: CacheMiddleware = self.app.state.cache
        return cache.stats()


@pytest.fixture
def served(fresh_redis: RedisServer) -> Iterator[Served]:
    app = Served(fresh_redis.url)
    app.thread.start()
    deadline = time.monotonic() + 30
    while not app.server.started:
        assert time.monotonic() < deadline and app.thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield app
    app.server.should_exit = True
    app.thread.join(timeout=30)


def test_the_dashboard_needs_its_token_and_serves_stats(served: Served) -> None:
    with httpx.Client(base_url=served.url) as http:
        assert http.get("/predict?x=1").status_code == 200
        assert http.get("/predict?x=1").headers["x-cache"] == "HIT"
        assert http.get("/cache/").status_code == 401
        assert http.get("/cache/stats.json", params={"token": "wrong"}).status_code == 401
        page = http.get("/cache/", params={"token": TOKEN})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<script" in page.text and "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")
        data = http.get("/cache/stats.json", headers={"x-dashboard-token": TOKEN}).json()
    assert data["rules"]["/predict"] == served.stats()["rules"]["/predict"]
    assert data["breaker"]["state"] == "closed"
    assert data["redis"]["used_memory"] > 0 and "evicted_keys" in data["redis"]


def chromedriver() -> str:
    """The chromedriver path, installing Debian's chromium and chromium-driver when root; else skip."""
    found = shutil.which("chromedriver")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium-driver is not installed and installing it needs root with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
        check=True,
        capture_output=True,
        env=env,
        timeout=1200,
    )
    return shutil.which("chromedriver") or pytest.fail("apt-get installed no chromedriver")


class Browser:
    """Headless Chromium driven through the W3C WebDriver HTTP protocol."""

    def __init__(self, driver: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen([driver, f"--port={self.port}"], stdout=subprocess.DEVNULL)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.http.get("/status").json()["value"]["ready"]:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "chromedriver did not start"
            time.sleep(0.1)
        options = {
            "binary": shutil.which("chromium") or "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"],
        }
        answer = self.http.post(
            "/session", json={"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}
        ).json()
        self.session = f"/session/{answer['value']['sessionId']}"

    def open(self, url: str) -> None:
        self.http.post(f"{self.session}/url", json={"url": url}).raise_for_status()

    def run(self, script: str) -> Any:
        answer = self.http.post(f"{self.session}/execute/sync", json={"script": script, "args": []})
        answer.raise_for_status()
        return answer.json()["value"]

    def screenshot(self) -> bytes:
        return base64.b64decode(self.http.get(f"{self.session}/screenshot").json()["value"])

    def close(self) -> None:
        try:
            self.http.delete(self.session)
        finally:
            self.http.close()
            self.process.terminate()
            self.process.wait(timeout=30)


READ_PAGE = """
const text = (id) => document.getElementById(id).textContent;
const out = {polls: +document.body.dataset.polls || 0, breaker: text("breaker"),
  memory: text("redis_memory"), rules: {}};
for (const card of document.querySelectorAll("[data-rule]")) {
  const fields = {};
  for (const cell of card.querySelectorAll("[data-field]")) fields[cell.dataset.field] = cell.textContent;
  out.rules[card.dataset.rule] = fields;
}
return out;
"""


def wait_for(browser: Browser, done: Any, what: str) -> dict[str, Any]:
    """The page read until `done(page)` holds (the page polls every second; 30 s is far beyond that)."""
    deadline = time.monotonic() + 30
    while True:
        page: dict[str, Any] = browser.run(READ_PAGE)
        if done(page):
            return page
        assert time.monotonic() < deadline, f"the page never showed {what}: {page}"
        time.sleep(0.2)


def test_the_page_shows_live_numbers_that_match_stats(served: Served) -> None:
    browser = Browser(chromedriver())
    try:
        browser.open(f"{served.url}/cache/?token={TOKEN}")
        first = wait_for(browser, lambda page: page["polls"] >= 1, "a first poll")
        assert (
            first["rules"] == {}
            and first["breaker"] == "closed"
            and first["memory"].endswith(("B", "K", "M"))
        )

        with httpx.Client(base_url=served.url) as http:
            for _ in range(4):
                http.get("/predict?x=1")
            http.get("/predict?x=2")
            http.get("/predict?x=1", headers={"authorization": "Bearer a"})
        stats = served.stats()["rules"]["/predict"]
        assert (stats["hit"], stats["miss"], stats["bypass"]) == (3, 2, 1)
        page = wait_for(
            browser, lambda page: page["rules"].get("/predict", {}).get("requests") == "6", "six requests"
        )
        shown = page["rules"]["/predict"]
        assert (shown["hit"], shown["miss"], shown["bypass"]) == ("3", "2", "1")
        assert shown["hit_ratio"] == "60.0%"
        assert shown["bypass_reasons"] == "credentials 1"
        assert shown["miss_latency"] != "- / -" and shown["hit_latency"] != "- / -"

        target = os.environ.get("RCM_DASHBOARD_SCREENSHOT")
        if target:  # a few seconds of mixed traffic, so that the sparklines have a history to draw
            with httpx.Client(base_url=served.url) as http:
                for i in range(300):
                    http.get(f"/predict?x={i % 40}")
                    time.sleep(0.02)
            Path(target).write_bytes(browser.screenshot())
    finally:
        browser.close()
