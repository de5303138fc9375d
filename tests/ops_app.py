"""Apps the CLI imports with `--app tests.ops_app:...` (the Redis URL comes from $RCM_TEST_REDIS_URL)."""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette

from redis_cache_middleware import CacheMiddleware, CacheRule

from .apps import CountingApp

REDIS_URL = os.environ.get("RCM_TEST_REDIS_URL", "redis://127.0.0.1:1/0")
RULES = [CacheRule("/predict", ttl=60, methods=("GET", "POST")), CacheRule("/items/{item_id}", ttl=60)]
OPTIONS: dict[str, Any] = {
    "rules": RULES,
    "namespace": "opsapp",
    "version": "7",
    "signing_key": "s3cret",
    "credential_headers": ("x-token",),
}


def create_app() -> Starlette:
    """The counting app behind one cache configured by `OPTIONS`."""
    app = CountingApp().starlette()
    app.add_middleware(CacheMiddleware, redis_url=REDIS_URL, **OPTIONS)
    return app


app = create_app()

two_caches = CountingApp().starlette()
two_caches.add_middleware(CacheMiddleware, redis_url=REDIS_URL, **OPTIONS)
two_caches.add_middleware(CacheMiddleware, redis_url=REDIS_URL, rules=RULES, namespace="outer")
