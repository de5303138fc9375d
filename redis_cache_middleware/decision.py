"""What to do with a request, as pure functions of the request, its stored entry and the clock.

`bypass_reason` runs before anything is read; `decide` once the lookup has answered. Neither does I/O.
Decisions are immutable named tuples (cheaper to build on the hit path than frozen dataclasses).
Sections are RFC 9111's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import NamedTuple

from . import policy
from .entry import MUST_REVALIDATE, REVALIDATABLE, Entry
from .keys import Headers
from .rules import CacheRule

Directives = dict[str, str | None]


class Hit(NamedTuple):
    """Fresh: answer from the entry; `refresh` asks for an early background refresh (XFetch)."""

    entry: Entry
    age: float
    refresh: bool = False


class Stale(NamedTuple):
    """Expired but within `stale_while_revalidate`: answer from the entry and refresh in the background."""

    entry: Entry
    age: float


class Revalidate(NamedTuple):
    """Expired with a validator (section 4.3): ask the app whether the entry is still current."""

    entry: Entry


class Miss(NamedTuple):
    """Run the app; `stale` may answer if it fails (stale-if-error); `fwd` is the Cache-Status reason."""

    stale: Entry | None
    fwd: str


class OnlyIfCached(NamedTuple):
    """Nothing usable is stored and the client forbids forwarding (section 5.2.1.7): 504."""


Decision = Hit | Stale | Revalidate | Miss | OnlyIfCached


def bypass_reason(
    rule: CacheRule,
    headers: Headers,
    directives: Directives,
    credential_headers: tuple[bytes, ...],
    allow_client_refresh: bool,
) -> str | None:
    """Why the cache must stand aside before reading anything (None: it need not)."""
    if not rule.private and any(name in headers for name in credential_headers):
        return "credentials"
    if allow_client_refresh and "no-store" in directives:
        return "request-no-store"
    return None


def decide(
    entry: Entry | None,
    now: float,
    rule: CacheRule,
    directives: Directives,
    allow_client_refresh: bool,
    draw: Callable[[], float] = random.random,
) -> Decision:
    """The answer to a request whose lookup found `entry` (None: nothing stored) at Unix time `now`."""
    only_if_cached = "only-if-cached" in directives  # section 5.2.1.7: a stored answer or 504, never the app
    if entry is not None:
        age = entry.age(now)
        if allow_client_refresh and client_refuses(directives, entry, age):
            return OnlyIfCached() if only_if_cached else Miss(entry, "fwd=request")
        if age < entry.ttl:
            early = rule.early_refresh is not None and xfetch(entry, age, rule.early_refresh, draw())
            return Hit(entry, age, early)
        if not entry.flags & MUST_REVALIDATE and age < entry.ttl + stale_while_revalidate(entry, rule):
            return Stale(entry, age)
        if entry.flags & REVALIDATABLE and not only_if_cached:
            return Revalidate(entry)
    if only_if_cached:
        return OnlyIfCached()
    return Miss(entry, "fwd=uri-miss" if entry is None else "fwd=stale")


def client_refuses(directives: Directives, entry: Entry, age: float) -> bool:
    """Whether the request's own Cache-Control rules out the stored entry (section 5.2.1)."""
    if not directives:
        return False
    if "no-cache" in directives:
        return True
    max_age = policy.delta_seconds(directives.get("max-age"))
    if max_age is not None and age > max_age:
        return True
    min_fresh = policy.delta_seconds(directives.get("min-fresh"))
    return min_fresh is not None and entry.ttl - age < min_fresh


# RFC 5861 section 4: the statuses that count as an error (with the app raising, or failing to answer).
ERROR_STATUSES = frozenset({500, 502, 503, 504})


def serves_stale_on_error(rule: CacheRule, stale: Entry | None, now: float) -> bool:
    """Whether `stale` may answer for a failed app (RFC 5861 section 4: the entry's window, which the rule
    bounds)."""
    return (
        stale is not None
        and not stale.flags & MUST_REVALIDATE
        and stale.age(now) < stale.ttl + stale_if_error(stale, rule)
    )


def stale_while_revalidate(entry: Entry, rule: CacheRule) -> float:
    """Seconds past expiry `entry` may be served while it is refreshed (RFC 5861 section 3)."""
    window = entry.stale_while_revalidate
    return rule.stale_while_revalidate if window is None else window


def stale_if_error(entry: Entry, rule: CacheRule) -> float:
    """Seconds past expiry `entry` may be served when the app fails (RFC 5861 section 4)."""
    window = entry.stale_if_error
    return rule.stale_if_error if window is None else window


def xfetch(entry: Entry, age: float, beta: float, draw: float) -> bool:
    """Probabilistic early expiration (Vattani et al., VLDB 2015): true ever more often as expiry nears;
    `draw` is uniform in [0, 1)."""
    return age - entry.delta * beta * math.log(1.0 - draw) >= entry.ttl


def keep_seconds(entry: Entry, rule: CacheRule) -> float:
    """How long to keep an entry in storage: its freshness, plus the windows in which it may serve stale
    or be revalidated."""
    keep = max(entry.ttl, rule.ttl if entry.flags & REVALIDATABLE else 0.0)
    if not entry.flags & MUST_REVALIDATE:
        keep += max(stale_while_revalidate(entry, rule), stale_if_error(entry, rule))
    return keep
