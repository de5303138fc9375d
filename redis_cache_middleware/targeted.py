"""Targeted cache control (RFC 9213): a field such as `CDN-Cache-Control` that speaks to this cache only and,
when present and valid, replaces Cache-Control for it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .structured import parse_dictionary

DEFAULT_TARGETED_FIELDS = ("cdn-cache-control",)
# Directives whose argument is a delta-seconds: an sf-integer in a targeted field (RFC 9213 section 2.1).
_SECONDS = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})


def targeted_directives(
    fields: Mapping[bytes, list[bytes]], targeted_fields: Iterable[str]
) -> dict[str, str | None] | None:
    """The directives of the first targeted field in `targeted_fields` that is present, non-empty and a valid
    Structured Fields Dictionary (RFC 9213 section 2.1), shaped like `parse_cache_control`'s result; None
    when none applies and Cache-Control governs. A seconds directive that is not a non-negative sf-integer is
    kept with the invalid argument "" (RFC 9111 section 4.2.1: invalid freshness information is stale)."""
    for name in targeted_fields:
        lines = fields.get(name.lower().encode("latin-1"))
        if not lines or not any(line.strip(b" \t") for line in lines):
            continue
        dictionary = parse_dictionary(lines)
        if dictionary is None:
            continue  # RFC 9213 section 2.1: an invalid field is ignored as a whole
        directives: dict[str, str | None] = {}
        for directive, item in dictionary.items():
            value = item.value
            if directive in _SECONDS:
                valid = isinstance(value, int) and not isinstance(value, bool) and value >= 0
                directives[directive] = str(value) if valid else ""  # "" : present but invalid
            elif value is not False:
                directives[directive] = None  # boolean directives; qualified forms count as the bare one
        return directives
    return None
