"""Cache rules: which requests are cached, for how long, and how they are keyed."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from re import Pattern

from starlette.routing import compile_path

from .batch import BatchRows, Row
from .invalidation import is_unsafe
from .keys import KeySpec

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "QUERY", "OPTIONS"})
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(:[a-zA-Z_][a-zA-Z0-9_]*)?}")


@dataclass(frozen=True)
class CacheRule:
    """Cache responses to `methods` on `path` (exact, or a Starlette template like `/items/{id}`) for `ttl` s.

    `statuses`: cacheable status codes (default 200; with `honor_origin`, any the response's headers allow).
    `vary`: request headers that become part of the key. `max_body_bytes` bounds a stored response and
    `max_request_bytes` the request body read for the key. `key_host=False` leaves scheme and Host out of
    the key (only when one host is guaranteed). `name`: the readable key segment (default: the path, with
    `{param}` written `<param>`). `honor_origin`: the response's Cache-Control/Expires/Age/Date decide
    storage and lifetime, `ttl` being the upper bound (RFC 9111 shared cache). `private`: credentialed
    requests are cached per credential instead of bypassing. `stale_while_revalidate` / `stale_if_error`:
    seconds after expiry a stale entry may be served while refreshing / when the app fails.
    `invalidate_on`: unsafe methods whose 2xx/3xx response on a matching URL drops its cached GET entry;
    with `honor_origin` and no `invalidate_on`, every unsafe method does (RFC 9111 section 4.4).
    `early_refresh`: XFetch beta (e.g. 1.0) to refresh hot entries before they expire; None is off.
    `tags`: names every entry of this rule is indexed under, for `CacheMiddleware.invalidate(tags=...)`.
    `batch`: where a batch request's rows are (`BatchRows`): each row is cached on its own, and only the
    rows not stored reach the app. `row`: this single-row route shares the rows of a row space (`Row`).
    `round_floats`: key floats of typed parameters rounded to this many decimal places (approximate keys).
    """

    path: str
    ttl: float
    methods: Sequence[str] = ("GET",)
    statuses: Iterable[int] | None = None
    vary: Sequence[str] = ()
    max_body_bytes: int = 1024 * 1024
    max_request_bytes: int = 64 * 1024
    key_host: bool = True
    name: str | None = None
    honor_origin: bool = False
    private: bool = False
    stale_while_revalidate: float = 0
    stale_if_error: float = 0
    invalidate_on: Sequence[str] = ()
    early_refresh: float | None = None
    tags: Sequence[str] = ()
    batch: BatchRows | None = None
    row: Row | None = None
    round_floats: int | None = None
    # Derived once at construction; not arguments.
    regex: Pattern[str] | None = field(init=False, repr=False, compare=False)
    method_set: frozenset[str] = field(init=False, repr=False, compare=False)
    invalidating_methods: frozenset[str] = field(init=False, repr=False, compare=False)
    status_set: frozenset[int] = field(init=False, repr=False, compare=False)
    vary_names: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    key_name: str = field(init=False, repr=False, compare=False)
    keying: KeySpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ValueError(f"CacheRule path must start with '/': {self.path!r}")
        if isinstance(self.ttl, bool) or not isinstance(self.ttl, int | float) or not self.ttl > 0:
            raise ValueError(f"CacheRule ttl must be a positive number of seconds: {self.ttl!r}")
        if isinstance(self.methods, str):
            raise ValueError(f"CacheRule methods must be a sequence of names, not a string: {self.methods!r}")
        methods = frozenset(m.upper() for m in self.methods)
        if not methods or not methods <= _METHODS:
            raise ValueError(f"CacheRule methods must be among {sorted(_METHODS)}: {self.methods!r}")
        if "GET" in methods:
            methods |= {"HEAD"}
        if self.statuses is not None:
            statuses = frozenset(self.statuses)
            if not all(isinstance(s, int) and 100 <= s <= 599 for s in statuses):
                raise ValueError(f"CacheRule statuses must be HTTP status codes: {self.statuses!r}")
        elif self.honor_origin:
            statuses = frozenset(range(200, 600)) - {206, 304}  # no range support; a 304 is not a response
        else:
            statuses = frozenset({200})
        invalidating = frozenset(m.upper() for m in self.invalidate_on)
        if isinstance(self.invalidate_on, str) or not invalidating <= _UNSAFE_METHODS:
            raise ValueError(f"CacheRule invalidate_on must be among {sorted(_UNSAFE_METHODS)}")
        if invalidating & methods:
            raise ValueError("CacheRule invalidate_on methods cannot also be cached methods")
        for window in ("stale_while_revalidate", "stale_if_error"):
            if not isinstance(getattr(self, window), int | float) or getattr(self, window) < 0:
                raise ValueError(f"CacheRule {window} must be a non-negative number of seconds")
        if isinstance(self.tags, str) or not all(
            isinstance(t, str) and t and " " not in t for t in self.tags
        ):
            raise ValueError(
                f"CacheRule tags must be a sequence of non-empty names without spaces: {self.tags!r}"
            )
        if self.early_refresh is not None and not self.early_refresh > 0:
            raise ValueError("CacheRule early_refresh must be a positive XFetch beta, or None")
        if isinstance(self.vary, str):
            raise ValueError(f"CacheRule vary must be a sequence of header names: {self.vary!r}")
        for limit in ("max_body_bytes", "max_request_bytes"):
            if not isinstance(getattr(self, limit), int) or getattr(self, limit) < 0:
                raise ValueError(f"CacheRule {limit} must be a non-negative int")
        _check_rows(self, methods)
        name = self.name if self.name is not None else _PARAM.sub(r"<\1>", self.path)
        vary_names = tuple(sorted({h.lower().encode("latin-1") for h in self.vary}))
        keying = KeySpec(name, self.key_host, vary_names, self.private)
        regex = compile_path(self.path)[0] if _PARAM.search(self.path) else None
        object.__setattr__(self, "regex", regex)
        object.__setattr__(self, "method_set", methods)
        object.__setattr__(self, "invalidating_methods", invalidating)
        object.__setattr__(self, "status_set", statuses)
        object.__setattr__(self, "vary_names", vary_names)
        object.__setattr__(self, "key_name", name)
        object.__setattr__(self, "keying", keying)

    def invalidates(self, method: str) -> bool:
        """Whether a `method` request on this rule's URLs invalidates their stored GET responses."""
        if self.invalidate_on or not self.honor_origin:
            return method in self.invalidating_methods
        return is_unsafe(method) and method not in self.method_set


def _check_rows(rule: CacheRule, methods: frozenset[str]) -> None:
    if rule.batch is not None and not isinstance(rule.batch, BatchRows):
        raise ValueError(f"CacheRule batch must be a BatchRows: {rule.batch!r}")
    if rule.row is not None and not isinstance(rule.row, Row):
        raise ValueError(f"CacheRule row must be a Row: {rule.row!r}")
    if rule.batch is not None and rule.row is not None:
        raise ValueError("CacheRule takes batch= or row=, not both")
    if rule.batch is not None and not methods <= {"POST", "QUERY"}:
        raise ValueError("CacheRule batch= needs methods among POST and QUERY (the rows are in the body)")
    if (rule.batch is not None or rule.row is not None) and rule.honor_origin:
        raise ValueError("CacheRule batch= and row= keep rows for the rule's ttl: not with honor_origin")
    places = rule.round_floats
    if places is not None and (isinstance(places, bool) or not isinstance(places, int) or places < 0):
        raise ValueError(f"CacheRule round_floats must be None or a non-negative int: {places!r}")


class RuleMatcher:
    """Finds the first rule, in the order given, whose path and method match a request."""

    def __init__(self, rules: Sequence[CacheRule]) -> None:
        self.rules = list(rules)
        self._exact: dict[str, list[tuple[int, CacheRule]]] = {}
        self._templates: list[tuple[int, CacheRule]] = []
        for index, rule in enumerate(rules):
            if not isinstance(rule, CacheRule):
                raise TypeError(f"rules must be CacheRule instances, got {rule!r}")
            if rule.regex is None:
                self._exact.setdefault(rule.path, []).append((index, rule))
            else:
                self._templates.append((index, rule))
        names = [rule.key_name for rule in rules]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"CacheRule names must be unique (give name=...): {sorted(duplicates)}")

    def match(self, method: str, path: str) -> CacheRule | None:
        """The matching rule, or None when the request is not cached by any rule."""
        for index, rule in self._exact.get(path, ()):
            if method in rule.method_set or rule.invalidates(method):
                best_index, best = index, rule
                break
        else:
            best_index, best = sys.maxsize, None
        for index, rule in self._templates:
            if index >= best_index:
                break
            if (method in rule.method_set or rule.invalidates(method)) and (
                rule.regex is not None and rule.regex.match(path)
            ):
                return rule
        return best
