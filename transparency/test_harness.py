"""The harness itself: its comparison fails on undocumented differences, its wrapper accepts any ASGI app.

Run with `python -m pytest transparency/test_harness.py` (not part of `tests/`: it needs no Redis).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from redis_cache_middleware import CacheMiddleware
from transparency import plugin, run

PASSED = {"outcome": "passed", "first_line": ""}
FAILED = {"outcome": "failed", "first_line": "assert 304 == 200"}


def test_an_undocumented_difference_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    known = tmp_path / "known.txt"
    known.write_text("# header\ntests/a.py::documented[* | the origin allowed it to be cached\n")
    monkeypatch.setattr(run, "KNOWN", known)
    unwrapped = {"tests/a.py::documented[asyncio]": PASSED, "tests/a.py::same": PASSED}
    wrapped = {"tests/a.py::documented[asyncio]": FAILED, "tests/a.py::same": PASSED}
    assert run.compare(unwrapped, wrapped) == 0
    unwrapped["tests/a.py::other"] = PASSED  # missing from the wrapped run
    assert run.compare(unwrapped, wrapped) == 1


def test_the_wrapper_accepts_plain_asgi3_and_asgi2_callables() -> None:
    async def asgi3(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"three"})

    class Asgi2:
        def __init__(self, scope: Scope) -> None:
            self.scope = scope

        async def __call__(self, receive: Receive, send: Send) -> None:
            await asgi3(self.scope, receive, send)

    for app in (asgi3, Asgi2):
        wrapped = plugin.wrap(app)
        assert isinstance(wrapped, CacheMiddleware)
        assert TestClient(wrapped).get("/any/path").text == "three"
