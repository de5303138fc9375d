"""Operator functions over a `redis.asyncio` client (single node or `RedisCluster`): purge, inspect,
stats. Never imported by the request path."""

from ..upkeep import memory_warning
from .inspect import (
    follow_vary,
    inspect,
    locate_request,
    read_records,
    request_digest_for,
    request_key,
    request_scope,
    sample_keys,
)
from .purge import index_tags, purge, purge_request, tag_key
from .rows import inspect_rows, stored_versions
from .scan import DEFAULT_PREFIX
from .stats import (
    find_namespaces,
    human_bytes,
    memory_policy,
    namespace_stats,
    read_counters,
    redis_info,
    write_counters,
)

__all__ = [
    "DEFAULT_PREFIX",
    "find_namespaces",
    "follow_vary",
    "human_bytes",
    "index_tags",
    "inspect",
    "inspect_rows",
    "locate_request",
    "memory_policy",
    "memory_warning",
    "namespace_stats",
    "purge",
    "purge_request",
    "read_counters",
    "read_records",
    "redis_info",
    "request_digest_for",
    "request_key",
    "request_scope",
    "sample_keys",
    "stored_versions",
    "tag_key",
    "write_counters",
]
