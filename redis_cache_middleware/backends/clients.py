"""redis-py clients for the URLs `RedisBackend.from_url` takes: one node, Redis Cluster, Sentinel."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.sentinel import Sentinel

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SINGLE_NODE_SCHEMES = ("redis", "rediss", "unix")
Closer = Callable[[], Awaitable[None]]

# redis-py 8 skips its check for closed or unread connections on pool checkout while maintenance
# notifications are in "auto" mode; turning them off (they need RESP3 anyway) restores it. redis-py
# before 7 has no maintenance notifications, and always checks.
_POOL_CHECKS: dict[str, Any] = {}
with contextlib.suppress(ImportError):
    from redis.maint_notifications import MaintNotificationsConfig

    _POOL_CHECKS["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)


def client_for_url(url: str, settings: dict[str, Any]) -> tuple[Redis | RedisCluster, list[Closer]]:
    """A client for `url` made with `settings` (the URL's query wins), and what else must be closed."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in CLUSTER_SCHEMES:
        return _cluster_client(parts, settings), []
    if scheme in SENTINEL_SCHEMES:
        sentinel, primary = _sentinel_client(parts, {**_POOL_CHECKS, **settings})
        return primary, [_sentinel_closer(sentinel)]
    if scheme in SINGLE_NODE_SCHEMES:
        return Redis.from_url(url, **{**_POOL_CHECKS, **settings}), []
    known = ", ".join(f"{s}://" for s in (*SINGLE_NODE_SCHEMES, *CLUSTER_SCHEMES, *SENTINEL_SCHEMES))
    raise ValueError(f"Redis URL scheme must be one of {known}: {url!r}")


def _nodes(netloc: str, default_port: int) -> tuple[str, list[tuple[str, int]]]:
    """The `user:password@` part (with its `@`) and the `(host, port)` list of `h1:p1,h2:p2`."""
    userinfo, at, hosts = netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        if not host:
            raise ValueError(f"Redis URL has an empty host in {netloc!r}")
        nodes.append((unquote(host), int(port) if port else default_port))
    return userinfo + at, nodes


def _client_options(scheme: str, userinfo: str, db: str, query: str) -> dict[str, Any]:
    """Credentials, db, TLS and query options of a multi-host URL, parsed as redis-py parses its URLs."""
    parsed: dict[str, Any] = dict(parse_url(f"{scheme}://{userinfo}localhost/{db}?{query}"))
    parsed.pop("host", None)
    parsed.pop("port", None)
    if parsed.pop("connection_class", None) is SSLConnection:
        parsed["ssl"] = True
    return parsed


def _cluster_client(parts: SplitResult, settings: dict[str, Any]) -> RedisCluster:
    """A `RedisCluster` on the listed startup nodes: no retries, slots served even when others are not
    covered, and a MOVED reply updates that slot only (a full refresh would drop every open connection)."""
    userinfo, nodes = _nodes(parts.netloc, 6379)
    base = parts.scheme.lower().removesuffix("+cluster")
    options = {"require_full_coverage": False, "reinitialize_steps": 0, **settings}
    options.update(_client_options(base, userinfo, parts.path.strip("/"), parts.query))
    if options.get("db"):
        raise ValueError("Redis Cluster has only database 0")
    options.pop("db", None)
    return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes], **options)


def _sentinel_closer(sentinel: Sentinel) -> Closer:
    """`Sentinel.aclose` (redis-py >= 5.1), or closing each sentinel's client on older versions."""
    closer: Closer | None = getattr(sentinel, "aclose", None)
    if closer is not None:
        return closer

    async def close_each() -> None:
        for client in sentinel.sentinels:
            await client.aclose()

    return close_each


def _sentinel_client(parts: SplitResult, settings: dict[str, Any]) -> tuple[Sentinel, Redis]:
    """The primary of `/service[/db]` as the listed sentinels report it; TLS options apply to both."""
    userinfo, nodes = _nodes(parts.netloc, 26379)
    base = parts.scheme.lower().removesuffix("+sentinel")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not 1 <= len(path) <= 2:
        raise ValueError("a redis+sentinel:// URL needs /service_name or /service_name/db as its path")
    options = {**settings, **_client_options(base, userinfo, path[1] if len(path) == 2 else "", parts.query)}
    sentinel_options = {
        name: value
        for name, value in options.items()
        if name.startswith(("socket_", "ssl")) or name in ("retry", "health_check_interval")
    }
    sentinel = Sentinel(nodes, sentinel_kwargs=sentinel_options, **options)  # type: ignore[no-untyped-call]
    primary: Redis = sentinel.master_for(path[0])
    return sentinel, primary
