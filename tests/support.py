"""Helpers that drive an ASGI app in-process, shared by the test modules (never imported from conftest)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
from starlette.types import ASGIApp

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: the working directory for subprocesses that run `python -m ...`."""


async def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m redis_cache_middleware ARGS` run from the repository root, without blocking the loop."""
    command = [sys.executable, "-m", "redis_cache_middleware", *args]
    return await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )


def client_for(app: ASGIApp) -> httpx.AsyncClient:
    """An httpx client that calls `app` in-process at http://testserver."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def http_scope(path: str, query: bytes = b"", method: str = "GET") -> dict[str, object]:
    """The scope a server hands an app for `method path?query` on http://testserver, for tests that drive
    the ASGI callables by hand (to control `receive` and `send`)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
    }
