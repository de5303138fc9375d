"""A response the cache does not serve from an entry passes through as the app sends it: start message
included, at the moment it is sent; disconnected clients stop work nobody needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from redis_cache_middleware import CacheMiddleware, CacheRule, MemoryBackend
from redis_cache_middleware.keys import CANONICAL_JSON_LIMIT, request_digest

from .support import http_scope

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def cached(app: Any, **rule: Any) -> CacheMiddleware:
    return CacheMiddleware(app, backend=MemoryBackend(), rules=[CacheRule("/x", ttl=60, **rule)])


async def no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def test_a_start_sent_before_the_app_fails_still_reaches_the_client() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        raise RuntimeError("failed after the start")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(RuntimeError, match="failed after the start"):
        await cached(app)(http_scope("/x"), no_body, send)
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert sent[0]["status"] == 200


async def test_streamed_headers_go_out_before_the_first_chunk() -> None:
    headers_arrived = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        with anyio.fail_after(5):  # held headers would never arrive: the app would wait in vain
            await headers_arrived.wait()
        await send({"type": "http.response.body", "body": b"late", "more_body": False})

    received: list[Message] = []

    async def send(message: Message) -> None:
        received.append(message)
        if message["type"] == "http.response.start":
            headers_arrived.set()

    await cached(app)(http_scope("/x"), no_body, send)
    assert [m["type"] for m in received] == ["http.response.start", "http.response.body"]
    assert dict(received[0]["headers"])[b"x-cache"] == b"MISS"


async def test_a_stream_that_outgrows_the_limit_never_claims_stored() -> None:
    async def parts() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"x" * 1000

    async def endpoint(request: Request) -> Response:
        return StreamingResponse(parts())

    app = Starlette(routes=[Route("/x", endpoint)])
    cache = cached(app, max_body_bytes=4000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=cache), base_url="http://t") as client:
        first = await client.get("/x")
        second = await client.get("/x")
    assert len(first.content) == 8000
    assert "stored" not in first.headers["cache-status"]
    assert second.headers["x-cache"] == "MISS"


async def test_a_disconnected_client_stops_a_stream_nobody_needs() -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while True:
            produced += 1
            yield b"y" * 1000
            await anyio.lowlevel.checkpoint()

    async def endpoint(request: Request) -> Response:
        return StreamingResponse(endless())

    app = Starlette(routes=[Route("/x", endpoint)])
    delivered = 0

    async def send(message: Message) -> None:
        nonlocal delivered
        if message["type"] == "http.response.body":
            delivered += 1
            if delivered > 5:
                raise OSError("client went away")

    with anyio.fail_after(10), pytest.raises(ClientDisconnect):  # Starlette turns OSError into this
        await cached(app, max_body_bytes=64_000)(http_scope("/x"), no_body, send)
    assert produced <= 64 + 3, "the app stops once the stream can no longer be stored"


async def test_a_client_leaving_during_its_body_is_its_own_bypass_reason() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive())["type"] == "http.request":
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sequence: list[Message] = [
        {"type": "http.request", "body": b"{", "more_body": True},
        {"type": "http.disconnect"},
    ]
    messages = iter(sequence)

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        pass

    cache = CacheMiddleware(app, backend=MemoryBackend(), rules=[CacheRule("/x", ttl=60, methods=("POST",))])
    await cache(http_scope("/x", method="POST"), receive, send)
    rules = cache.stats()["rules"]
    assert rules["/x"]["bypass_reasons"] == {"client-disconnected": 1}  # type: ignore[index]


def test_large_json_bodies_are_keyed_on_their_bytes() -> None:
    rule = CacheRule("/x", ttl=60, methods=("POST",)).keying
    headers = {b"content-type": [b"application/json"]}
    scope = http_scope("/x", method="POST")
    small = (b'{"a":1,"b":2}', b'{ "b": 2, "a": 1 }')
    value = "v" * CANONICAL_JSON_LIMIT
    large = (orjson.dumps({"a": value, "b": 1}), orjson.dumps({"b": 1, "a": value}))
    assert request_digest(rule, scope, headers, small[0]) == request_digest(rule, scope, headers, small[1])
    assert request_digest(rule, scope, headers, large[0]) != request_digest(rule, scope, headers, large[1])
    assert request_digest(rule, scope, headers, large[0]) == request_digest(rule, scope, headers, large[0])


async def test_a_cancelled_request_stops_work_nobody_can_use(anyio_backend: str) -> None:
    """The leader's task cancelled (its client gone), no waiter, a response that may not be stored: the
    app is cancelled too, under asyncio (detached task) as under trio (scoped cancellation)."""
    produced = 0
    started = anyio.Event()

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while True:
            produced += 1
            started.set()
            yield b"z"
            await anyio.sleep(0.001)

    async def endpoint(request: Request) -> Response:
        response = StreamingResponse(endless())
        response.set_cookie("session", "one client's")  # never stored, never shared
        return response

    cache = cached(Starlette(routes=[Route("/x", endpoint)]))

    async def send(message: Message) -> None:
        pass

    async with anyio.create_task_group() as group:
        group.start_soon(cache, http_scope("/x"), no_body, send)
        await started.wait()
        group.cancel_scope.cancel()
    stopped_at = produced
    await anyio.sleep(0.2)
    assert produced <= stopped_at + 1, "the endpoint went on producing after its request was cancelled"
