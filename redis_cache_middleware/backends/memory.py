"""In-process backend: an LRU bounded by bytes, with per-entry expiry. One process only."""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import lru_cache

_Members = set[str]  # named here: inside MemoryBackend, `set` is the method


def as_bytes(text: str) -> str:
    """`text` as its UTF-8 bytes, one character per byte: Redis matches globs byte by byte."""
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def glob_match(pattern: str, key: str) -> bool:
    """Whether Redis's glob `pattern` (as `KEYS` and `SCAN MATCH` read it) matches `key`."""
    return glob_regex(pattern).fullmatch(as_bytes(key)) is not None


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex over `as_bytes(key)` that matches what Redis's glob `pattern` matches: `*`, `?`, `[abc]`,
    `[^a]`, `[a-z]` (either order), and `\\` quoting the next character, in and out of brackets."""
    pattern = as_bytes(pattern)
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            i, klass = _bracket(pattern, i + 1)
            out.append(klass)
            continue
        elif char == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _bracket(pattern: str, i: int) -> tuple[int, str]:
    """The class starting after `[` at `i`, and the index after its `]` (an unclosed class ends with the
    pattern, as in Redis)."""
    negate = i < len(pattern) and pattern[i] == "^"
    i += negate
    items: list[str] = []
    while i < len(pattern) and pattern[i] != "]":
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            i += 1
            items.append(re.escape(pattern[i]))
        elif i + 2 < len(pattern) and pattern[i + 1] == "-":
            low, high = sorted((char, pattern[i + 2]))
            items.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 2
        else:
            items.append(re.escape(char))
        i += 1
    body = "".join(items)
    if not body:
        return i + 1, "[^\\s\\S]" if not negate else "[\\s\\S]"
    return i + 1, f"[{'^' if negate else ''}{body}]"


class MemoryBackend:
    """Keeps at most `max_bytes` of values (keys not counted), evicting the least recently used first.

    Sets (tag indexes, `add_to_sets`) live beside the values; members whose value is gone are pruned as
    the set grows, so a set never holds many more members than there are values.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        if max_bytes <= 0:
            raise ValueError("MemoryBackend max_bytes must be positive")
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.counters: dict[str, dict[str, float]] = {}
        self._sets: dict[str, tuple[_Members, float, int]] = {}

    async def get(self, key: str) -> bytes | None:
        return self._get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self._get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._set(key, value, ttl)

    async def set_many(self, items: Sequence[tuple[str, bytes, float]]) -> None:
        for key, value, ttl in items:
            self._set(key, value, ttl)

    async def delete(self, keys: Sequence[str]) -> int:
        return sum(self._remove(key) or self._sets.pop(key, None) is not None for key in keys)

    async def add_counters(self, key: str, deltas: Mapping[str, float]) -> None:
        """Add each delta to its field of the counter hash `key` (kept apart from the LRU values)."""
        fields = self.counters.setdefault(key, {})
        for field, value in deltas.items():
            fields[field] = fields.get(field, 0.0) + value

    async def add_to_sets(self, sets: Sequence[str], member: str, ttl: float) -> None:
        now = time.monotonic()
        for name in sets:
            members, expires, pruned_at = self._live_set(name, now) or (_Members(), now, 0)
            members.add(member)
            if len(members) > 2 * pruned_at + 16:
                members.intersection_update(self._items)
                pruned_at = len(members)
            self._sets[name] = (members, max(expires, now + ttl), pruned_at)

    async def purge(self, pattern: str) -> int:
        """Delete every value and set whose key matches the Redis glob `pattern`; the number deleted."""
        if pattern == "*":
            deleted = len(self._items) + len(self._sets)
            self.clear()
            return deleted
        matching = [key for key in (*self._items, *self._sets) if glob_match(pattern, key)]
        return await self.delete(matching)

    async def purge_set(self, set_key: str) -> int:
        found = self._live_set(set_key, time.monotonic())
        self._sets.pop(set_key, None)
        if found is None:
            return 0
        return sum(self._remove(key) for key in found[0])

    def clear(self) -> None:
        """Forget every value and set; the backend stays usable."""
        self._items.clear()
        self._sets.clear()
        self.size = 0

    async def acquire(self, key: str, token: str, ttl: float) -> bool:
        if self._get(key) is not None:
            return False
        self._set(key, token.encode(), ttl)
        return True

    async def release(self, key: str, token: str) -> None:
        if self._get(key) == token.encode():
            self._remove(key)

    async def aclose(self) -> None:
        self.clear()

    def __len__(self) -> int:
        return len(self._items)

    def _get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            self._remove(key)
            return None
        self._items.move_to_end(key)
        return item[0]

    def _set(self, key: str, value: bytes, ttl: float) -> None:
        self._remove(key)
        if len(value) > self.max_bytes or ttl <= 0:
            return
        self._items[key] = (value, time.monotonic() + ttl)
        self.size += len(value)
        while self.size > self.max_bytes:
            self._remove(next(iter(self._items)))

    def _live_set(self, name: str, now: float) -> tuple[_Members, float, int] | None:
        found = self._sets.get(name)
        if found is not None and found[1] <= now:
            del self._sets[name]
            return None
        return found

    def _remove(self, key: str) -> bool:
        item = self._items.pop(key, None)
        if item is None:
            return False
        self.size -= len(item[0])
        return True
