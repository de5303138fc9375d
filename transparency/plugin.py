"""Pytest plugin (`-p transparency.plugin`) that wraps every app given to Starlette's TestClient in the cache.

Environment: `TRANSPARENCY_WRAP=1` wraps (otherwise the run is the unwrapped baseline, with the same plugin
loaded so both runs differ only in the wrapping); `TRANSPARENCY_BACKEND` picks the AnyIO backend
(`asyncio` or `trio`); `TRANSPARENCY_RESULTS` names the JSON file that receives one outcome per test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from typing import Any

import pytest
from starlette import testclient
from starlette.types import ASGIApp

from redis_cache_middleware import CacheMiddleware, CacheRule, MemoryBackend

CATCH_ALL = CacheRule(
    path="/{path:path}", ttl=3600, methods=("GET", "HEAD", "POST", "QUERY"), honor_origin=True
)
"""Every path, every cacheable method; the origin's Cache-Control decides, an hour at most."""


def wrap(app: Any) -> CacheMiddleware:
    """The cache around `app` (ASGI3, or ASGI2 made ASGI3 the way TestClient does it), fresh per client."""
    asgi3: ASGIApp = app if testclient._is_asgi3(app) else testclient._WrapASGI2(app)
    return CacheMiddleware(asgi3, backend=MemoryBackend(), rules=[CATCH_ALL])


def _install_wrapper() -> None:
    """Replace `TestClient.__init__` by one that wraps its `app` argument; the factory fixture uses it too."""
    original = testclient.TestClient.__init__

    def init(self: testclient.TestClient, app: Any, *args: Any, **kwargs: Any) -> None:
        original(self, wrap(app), *args, **kwargs)

    testclient.TestClient.__init__ = init  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("TRANSPARENCY_WRAP") == "1":
        _install_wrapper()
    config.stash[_RESULTS] = {}


@pytest.fixture
def anyio_backend() -> str:
    """The AnyIO backend every `anyio`-marked test and every TestClient of the suite runs on."""
    return os.environ.get("TRANSPARENCY_BACKEND", "asyncio")


_RESULTS = pytest.StashKey[dict[str, dict[str, str]]]()


def _first_line(report: pytest.TestReport) -> str:
    """The line that names the failure: the `E ` line of the traceback, else the last line of the report."""
    text = report.longreprtext or ""
    for line in text.splitlines():
        if line.startswith("E "):
            return line[1:].strip()[:300]
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    results = item.config.stash[_RESULTS]
    previous = results.get(report.nodeid, {}).get("outcome")
    if report.failed:
        outcome = "failed" if report.when == "call" else "error"
        if previous not in ("failed", "error"):
            results[report.nodeid] = {"outcome": outcome, "first_line": _first_line(report)}
    elif report.skipped and previous is None:
        results[report.nodeid] = {"outcome": "skipped", "first_line": ""}
    elif report.when == "call" and report.passed and previous is None:
        results[report.nodeid] = {"outcome": "passed", "first_line": ""}
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("TRANSPARENCY_RESULTS")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(session.config.stash[_RESULTS], out, indent=1, sort_keys=True)
