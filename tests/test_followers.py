"""Waiters behind a streaming leader receive its chunks as they are produced, not after the whole stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, CacheRule, MemoryBackend

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Stream:
    """A stream that sends its first chunk, then waits for `go` before the rest."""

    def __init__(self, cookie: bool = False) -> None:
        self.calls = 0
        self.go = anyio.Event()
        self.cookie = cookie

    async def endpoint(self, request: Request) -> Response:
        self.calls += 1

        async def parts() -> AsyncIterator[bytes]:
            yield b"first,"
            await self.go.wait()
            yield b"second,"
            yield b"third"

        response = StreamingResponse(parts(), media_type="text/plain")
        if self.cookie:
            response.set_cookie("session", "leader")
        return response


def app_for(stream: Stream) -> CacheMiddleware:
    app = Starlette(routes=[Route("/s", stream.endpoint)])
    return CacheMiddleware(app, backend=MemoryBackend(), rules=[CacheRule("/s", ttl=60)])


async def test_a_waiter_gets_the_leaders_chunks_while_they_are_produced() -> None:
    stream = Stream()
    transport = httpx.ASGITransport(app=app_for(stream))
    bodies: dict[str, bytes] = {}
    waiter_first_chunk = anyio.Event()

    async def leader(client: httpx.AsyncClient) -> None:
        async with client.stream("GET", "/s") as response:
            bodies["leader"] = b"".join([chunk async for chunk in response.aiter_raw()])

    async def waiter(client: httpx.AsyncClient) -> None:
        sent: list[bytes] = []

        async def record(message: dict[str, object]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                sent.append(message["body"])  # type: ignore[arg-type]
                waiter_first_chunk.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/s",
            "raw_path": b"/s",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"t")],
        }

        async def receive() -> dict[str, object]:
            await anyio.sleep_forever()
            raise AssertionError

        await transport.app(scope, receive, record)  # type: ignore[arg-type]
        bodies["waiter"] = b"".join(sent)

    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with anyio.fail_after(5):  # a waiter that waited for the whole stream would never let it go on
            async with anyio.create_task_group() as group:
                group.start_soon(leader, client)
                await anyio.sleep(0.05)
                group.start_soon(waiter, client)
                await waiter_first_chunk.wait()
                stream.go.set()
    assert bodies == {"leader": b"first,second,third", "waiter": b"first,second,third"}
    assert stream.calls == 1


async def test_waiters_of_an_unshareable_stream_compute_at_once() -> None:
    stream = Stream(cookie=True)
    stream.go.set()
    transport = httpx.ASGITransport(app=app_for(stream))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with anyio.fail_after(5):
            responses: list[httpx.Response] = []

            async def get() -> None:
                responses.append(await client.get("/s"))

            async with anyio.create_task_group() as group:
                for _ in range(3):
                    group.start_soon(get)
    assert stream.calls == 3, "a Set-Cookie response is never handed to another client"
    assert {r.headers["x-cache"] for r in responses} == {"MISS"}
