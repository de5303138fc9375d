"""A small Starlette app whose endpoints count their calls, wrapped in the cache for tests."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from redis_cache_middleware import Backend, CacheMiddleware, CacheRule
from redis_cache_middleware.keys import KeySpace

from .support import client_for


class CountingApp:
    """Endpoints that report how often they ran, so a test can tell a hit (no call) from a miss."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.version = 1

    async def predict(self, request: Request) -> Response:
        self.calls["predict"] += 1
        body = await request.body()
        return JSONResponse(
            {
                "query": request.query_params.multi_items(),
                "body": body.decode("latin-1"),
                "host": request.headers.get("host"),
                "language": request.headers.get("accept-language"),
                "forwarded_host": request.headers.get("x-forwarded-host"),
                "method_override": request.headers.get("x-http-method-override"),
                "call": self.calls["predict"],
            }
        )

    async def echo(self, request: Request) -> Response:
        self.calls["echo"] += 1
        body = await request.body()
        return JSONResponse({"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)})

    async def status(self, request: Request) -> Response:
        self.calls["status"] += 1
        return PlainTextResponse(
            f"status call {self.calls['status']}", status_code=int(request.path_params["code"])
        )

    async def headers(self, request: Request) -> Response:
        """Responds with the headers named in the query (`?etag=x`); `_status` is the status."""
        self.calls["headers"] += 1
        status = int(request.query_params.get("_status", "200"))
        response = PlainTextResponse(f"headers call {self.calls['headers']}", status_code=status)
        for name, value in request.query_params.multi_items():
            if name != "_status":
                response.headers.append(name, value)
        return response

    async def validated(self, request: Request) -> Response:
        """A resource at `self.version` answering conditional requests; `?cc=` is its Cache-Control."""
        etag = f'"v{self.version}"'
        headers = {"etag": etag, "cache-control": request.query_params.get("cc", "max-age=1")}
        if request.headers.get("if-none-match") == etag:
            self.calls["validated-304"] += 1
            return Response(status_code=304, headers=headers)
        self.calls["validated"] += 1
        return PlainTextResponse(f"version {self.version}", headers=headers)

    async def big(self, request: Request) -> Response:
        self.calls["big"] += 1
        return PlainTextResponse("x" * int(request.query_params["size"]))

    async def stream(self, request: Request) -> Response:
        self.calls["stream"] += 1
        parts = int(request.query_params.get("parts", "3"))

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(parts):
                yield f"chunk{i};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    async def item(self, request: Request) -> Response:
        self.calls["item"] += 1
        if request.method != "GET":
            return Response(status_code=int(request.query_params.get("status", "204")))
        return JSONResponse({"item": request.path_params["item_id"], "call": self.calls["item"]})

    async def other(self, request: Request) -> Response:
        self.calls["other"] += 1
        return PlainTextResponse("other")

    async def websocket(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    def starlette(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/predict", self.predict, methods=["GET", "POST", "PUT"]),
                Route("/echo", self.echo, methods=["POST"]),
                Route("/status/{code:int}", self.status),
                Route("/headers", self.headers),
                Route("/big", self.big),
                Route("/validated", self.validated),
                Route("/query", self.echo, methods=["QUERY", "POST"]),
                Route("/stream", self.stream),
                Route("/items/{item_id}", self.item, methods=["GET", "PUT", "DELETE"]),
                Route("/other", self.other),
                WebSocketRoute("/ws", self.websocket),
            ]
        )


DEFAULT_RULES = (
    CacheRule("/predict", ttl=60, methods=("GET", "POST")),
    CacheRule("/echo", ttl=60, methods=("POST",), max_request_bytes=1024),
    CacheRule("/status/{code:int}", ttl=60, statuses=(200, 404)),
    CacheRule("/headers", ttl=60),
    CacheRule("/big", ttl=60, max_body_bytes=1000),
    CacheRule("/stream", ttl=60, max_body_bytes=100),
    CacheRule("/items/{item_id}", ttl=60),
)


def cached_app(backend: Backend, rules: Any = DEFAULT_RULES, **options: Any) -> tuple[Starlette, CountingApp]:
    """The counting app with the cache added in one call, as a user would."""
    counting = CountingApp()
    app = counting.starlette()
    app.add_middleware(CacheMiddleware, backend=backend, rules=list(rules), namespace="test", **options)
    return app, counting


async def store_signed_variants(backend: Backend) -> None:
    """Two signed entries (signing key "k", namespace "test") of `/headers?vary=accept-language`, for
    Accept-Language fr and de, behind one Vary marker."""
    app, _ = cached_app(backend, signing_key="k")
    async with client_for(app) as http:
        for language in ("fr", "de"):
            await http.get("/headers?vary=accept-language", headers={"accept-language": language})


async def populate(
    backend: Backend,
    *,
    namespace: str = "test",
    version: str = "1",
    items: int = 2,
    rules: list[CacheRule] | None = None,
) -> None:
    """Store 4 `/predict` entries (3 GET, 1 POST JSON) and `items` `/items/<item_id>` entries via the app
    (and nothing else: the shared counters the app flushes are removed, so callers count entries only)."""
    app = CountingApp().starlette()
    app.add_middleware(
        CacheMiddleware,
        backend=backend,
        rules=rules if rules is not None else list(DEFAULT_RULES),
        namespace=namespace,
        version=version,
    )
    async with client_for(app) as http:
        for x in range(3):
            assert (await http.get("/predict", params={"x": x})).status_code == 200
        assert (await http.post("/predict", json={"b": 2, "a": 1})).status_code == 200
        for item in range(items):
            assert (await http.get(f"/items/{item}")).status_code == 200
    await backend.delete([KeySpace(namespace=namespace).stats()])


def entry_keys(client: redis.Redis, namespace: str = "test") -> list[str]:
    """The entry keys (tag sets and the shared counters left out) in `namespace`, sorted."""
    keys = (key.decode() for key in client.scan_iter(f"rcm:{namespace}:*") if b":tag:" not in key)
    return sorted(key for key in keys if not key.endswith(":stats"))
