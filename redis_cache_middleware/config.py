"""The middleware's options as one frozen, validated object; defaults are defined here once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .policy import TAG_HEADERS
from .targeted import DEFAULT_TARGETED_FIELDS

# Request fields that carry a client's identity by default: such requests bypass unless the rule is private.
DEFAULT_CREDENTIAL_HEADERS = ("authorization", "cookie", "x-api-key")
DEFAULT_TIMEOUT = 0.05


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Everything `CacheMiddleware` decides with, apart from its rules and its backend.

    `timeout` bounds the Redis time of one request in total; `coalesce_timeout` how long a request waits
    for an identical one in flight; `hit_for_miss` how long a key whose response could not be shared is
    computed without queueing; `lock_lease` the lifetime of a cross-process computation lease.
    `targeted_fields`: response fields that speak to this cache only (RFC 9213), the first present and valid
    one replacing Cache-Control; they reach clients only with `forward_targeted`.
    """

    cache_name: str = "redis-cache"
    credential_headers: tuple[bytes, ...] = tuple(h.encode() for h in DEFAULT_CREDENTIAL_HEADERS)
    allow_client_refresh: bool = False
    cache_headers: bool = True
    debug: bool = False
    signing_key: bytes | None = None
    coalesce: bool = True
    coalesce_timeout: float = 10.0
    hit_for_miss: float = 0.0
    lock: bool = False
    lock_lease: float = 5.0
    targeted_fields: tuple[str, ...] = DEFAULT_TARGETED_FIELDS
    forward_targeted: bool = False
    # Derived once: the response fields clients never get from the cache (tag headers, targeted fields).
    hidden_fields: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.coalesce_timeout > 0 or self.hit_for_miss < 0:
            raise ValueError(
                "CacheMiddleware coalesce_timeout must be positive and hit_for_miss non-negative"
            )
        if not self.lock_lease > 0:
            raise ValueError("CacheMiddleware lock_lease must be positive")
        if not self.cache_name or any(c in self.cache_name for c in ";,\r\n"):
            raise ValueError("CacheMiddleware cache_name must be non-empty without ';', ',' or newlines")
        names = self.targeted_fields
        if isinstance(names, str) or not all(
            isinstance(name, str) and name and name.isascii() and not any(c in name for c in ":, \t\r\n")
            for name in names
        ):
            raise ValueError(f"CacheMiddleware targeted_fields must be a sequence of field names: {names!r}")
        object.__setattr__(self, "targeted_fields", tuple(name.lower() for name in names))
        hidden = set(TAG_HEADERS)
        if not self.forward_targeted:
            hidden.update(name.encode("ascii") for name in self.targeted_fields)
        object.__setattr__(self, "hidden_fields", frozenset(hidden))


def credential_names(headers: Sequence[str]) -> tuple[bytes, ...]:
    """Header names as the request path compares them: lowercased bytes."""
    if isinstance(headers, str):
        raise ValueError("CacheMiddleware credential_headers must be a sequence of header names")
    return tuple(h.lower().encode("latin-1") for h in headers)


def targeted_names(names: Sequence[str]) -> tuple[str, ...]:
    """Targeted field names as given (checked by `CacheConfig`); a lone string is refused there."""
    if isinstance(names, str):
        raise ValueError(f"CacheMiddleware targeted_fields must be a sequence of field names: {names!r}")
    return tuple(names)


def signing_key_bytes(key: bytes | str | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key
