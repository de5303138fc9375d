"""An app's cache configuration read from the app itself (`module:attr`, as uvicorn takes it): the
`CacheMiddleware` options in Starlette's `app.user_middleware`, without serving a request or building the
middleware stack."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from starlette.types import Scope

from ..policy import CREDENTIAL_HEADERS
from ..request import route_path
from ..rules import CacheRule
from ..typed import RouteCanon, RouteTypes, route_types

_DEFAULTS: dict[str, Any] = {"prefix": "rcm", "namespace": "default", "version": "1"}


class AppConfigError(Exception):
    """The app cannot be imported, or its cache configuration cannot be read; the message says why."""


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """What operator commands need from one `CacheMiddleware` of an app."""

    redis_url: str | None
    prefix: str
    namespace: str
    version: str
    rules: tuple[CacheRule, ...]
    signing_key: bytes | None
    credential_headers: tuple[bytes, ...]
    route_types: RouteTypes | None = None  # the app's typed routes; None when `typed_keys=False`

    def canon_for(self, rule: CacheRule, method: str, scope: Scope) -> RouteCanon | None:
        """The typed canonicaliser the middleware keys this request on (its `_canon`): the route's types
        learnt from the app, with the rule's `round_floats`; None without typed keys or types."""
        if self.route_types is None:
            return None
        canon = self.route_types.for_request(method, route_path(scope))
        if canon is not None and rule.round_floats is not None:
            canon = canon.with_rounding(rule.round_floats)
        return canon

    def rule_for(self, method: str, path: str) -> CacheRule | None:
        """The rule named by its path or key name, else the one that routes `method path`."""
        for rule in self.rules:
            if path in (rule.path, rule.key_name):
                return rule
        for rule in self.rules:
            if (method in rule.method_set) and (
                rule.path == path or (rule.regex is not None and rule.regex.match(path))
            ):
                return rule
        return None


def import_app(target: str, factory: bool = False) -> Any:
    """The object `module:attr` names (called with no arguments when `factory`), with the current
    directory on `sys.path` as uvicorn does."""
    module_name, sep, attrs = target.partition(":")
    if not sep or not module_name or not attrs:
        raise AppConfigError(f"--app must be 'module:attribute', got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppConfigError(f"cannot import {module_name!r}: {exc}") from exc
    for attr in attrs.split("."):
        if not hasattr(found, attr):
            raise AppConfigError(f"module {module_name!r} has no attribute {attrs!r}")
        found = getattr(found, attr)
    if factory:
        found = found()
    return found


def cache_settings(app: Any, index: int | None = None) -> CacheSettings:
    """The settings of the app's `CacheMiddleware` (the `index`-th when it has several)."""
    from ..middleware import CacheMiddleware

    if callable(app) and not hasattr(app, "user_middleware") and hasattr(app, "__code__"):
        raise AppConfigError("--app names a function: add --factory to call it and read the app it returns")
    middleware: Sequence[Any] = getattr(app, "user_middleware", None) or ()
    caches = [m for m in middleware if isinstance(m.cls, type) and issubclass(m.cls, CacheMiddleware)]
    if not caches:
        raise AppConfigError(f"{type(app).__name__} has no CacheMiddleware in user_middleware")
    if index is None and len(caches) > 1:
        listing = "; ".join(f"--cache {i}: {_describe(m.kwargs)}" for i, m in enumerate(caches))
        raise AppConfigError(f"the app has {len(caches)} caches, choose one: {listing}")
    position = index or 0
    if not 0 <= position < len(caches):
        raise AppConfigError(
            f"--cache {position}: the app has {len(caches)} cache(s), 0 to {len(caches) - 1}"
        )
    settings = _settings(caches[position].kwargs)
    if caches[position].kwargs.get("typed_keys", True):
        return replace(settings, route_types=route_types(app))
    return settings


def _describe(kwargs: dict[str, Any]) -> str:
    options = {**_DEFAULTS, **kwargs}
    rules = ", ".join(rule.path for rule in options.get("rules", ()))
    return f"namespace {options['namespace']} prefix {options['prefix']} rules {rules}"


def _settings(kwargs: dict[str, Any]) -> CacheSettings:
    options = {**_DEFAULTS, **kwargs}
    backend = options.get("backend")
    redis_url = options.get("redis_url")
    if redis_url is None and backend is not None:
        redis_url = getattr(backend, "url", None)
    key = options.get("signing_key")
    names = options.get("credential_headers")
    credentials = (
        tuple(name.lower().encode("latin-1") for name in names) if names is not None else CREDENTIAL_HEADERS
    )
    return CacheSettings(
        redis_url=redis_url,
        prefix=str(options["prefix"]),
        namespace=str(options["namespace"]),
        version=str(options["version"]),
        rules=tuple(options.get("rules", ())),
        signing_key=key.encode() if isinstance(key, str) else key,
        credential_headers=credentials,
    )
