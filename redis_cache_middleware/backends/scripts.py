"""Every Lua script the backends run, in one place, and how one is sent (`EVALSHA`, `EVAL` on `NOSCRIPT`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError

# Delete a lease only while `token` (ARGV[1]) still holds it.
RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

# GET and PTTL in one round trip; an absent key is nil.
GET_WITH_TTL = """
local value = redis.call('GET', KEYS[1])
if not value then return false end
return {value, redis.call('PTTL', KEYS[1])}
"""


class Script:
    """A Lua script run with `EVALSHA`; on `NOSCRIPT` (a new, restarted or promoted node) with `EVAL`, which
    also leaves it in that node's script cache. No `SCRIPT LOAD`: on a Cluster that goes to every primary,
    and one being down would fail reads of the others."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: Redis | RedisCluster, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)
