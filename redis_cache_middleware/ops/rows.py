"""A described request of a row rule (`batch=` or `row=`): its route's envelope and each of its rows, in
every version that holds one of them, and the other routes of the row space those rows answer."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import aclosing
from typing import Any

from starlette.types import Scope

from ..batch import assemble
from ..entry import Entry
from ..keys import Headers, KeySpace
from ..policy import CREDENTIAL_HEADERS
from ..rowkeys import RowKeys, row_keys, row_space, shares_rows
from ..rules import CacheRule
from ..typed import RouteCanon
from .inspect import PREVIEW_BYTES, read_records
from .scan import DEFAULT_PREFIX, Client, scan_keys, text

_ROW_MARK = "\N{HORIZONTAL ELLIPSIS}".encode()


async def inspect_rows(
    client: Client,
    *,
    prefix: str = DEFAULT_PREFIX,
    namespace: str,
    rule: CacheRule,
    scope: Scope,
    headers: Headers,
    body: bytes | None,
    credentials: tuple[bytes, ...] = CREDENTIAL_HEADERS,
    canon: RouteCanon | None = None,
    rules: Sequence[CacheRule] = (),
    version: str | None = None,
    signing_key: bytes | None = None,
    batch: int = 500,
) -> list[dict[str, Any]] | str:
    """What is stored for a request of a row rule (from `request_scope`; `canon` as the middleware types
    the route, None without typed keys): one report per version holding its envelope or a row (in
    `version` only when given), or the reason the middleware bypasses such a request.

    A report has `version`, `rule`, `space`, `envelope` (`inspect`'s answer or None, and `envelope_key`),
    `envelope_preview` (the stored envelope with each row shown as an ellipsis), `rows` (per row of the
    request: `key` and `entry` or None), `answer` ("HIT" when the envelope and every row are fresh, else
    "PARTIAL" or "MISS"), `answer_preview` on a HIT, and `shared_with`: the other `rules` these rows
    answer, each with `rule`, `path`, `methods`, `envelope_key` and `envelope_stored`.
    """
    base = KeySpace(prefix, namespace)
    located = row_keys(base, rule, scope, headers, body, credentials, canon)
    if isinstance(located, str):
        return located
    if version is not None:
        versions = [version]
    else:
        versions = await stored_versions(client, base, [located.envelope, *located.rows], batch)
    siblings = [other for other in rules if other.key_name != rule.key_name and shares_rows(rule, other)]
    reports = []
    for found_version in versions:
        space = base.with_version(found_version)
        keys = row_keys(space, rule, scope, headers, body, credentials, canon)
        assert not isinstance(keys, str)
        reports.append(await _report(client, space, rule, keys, siblings, signing_key))
    return reports


async def stored_versions(
    client: Client, space: KeySpace, keys: Sequence[str], batch: int = 500
) -> list[str]:
    """The versions of the namespace in which any of `keys` (given in any one version) is stored: one
    SCAN over the namespace's entries."""
    wanted = {parts[1:] for key in keys if (parts := space.parse(key)) is not None}
    found: set[str] = set()
    async with aclosing(scan_keys(client, space.entries_glob(), batch)) as stored:
        async for raw in stored:
            parts = space.parse(text(raw))
            if parts is not None and parts[1:] in wanted:
                found.add(parts[0])
    return sorted(found)


async def _report(
    client: Client,
    space: KeySpace,
    rule: CacheRule,
    keys: RowKeys,
    siblings: list[CacheRule],
    signing_key: bytes | None,
) -> dict[str, Any]:
    digest = keys.envelope.rpartition(":")[2]
    sibling_keys = [space.entry(other.key_name, digest) for other in siblings]
    distinct = list(dict.fromkeys([keys.envelope, *keys.rows, *sibling_keys]))
    records = await read_records(client, distinct, signing_key=signing_key)
    envelope_info, envelope = records[keys.envelope]
    usable = [_fresh(records[key]) for key in keys.rows]
    report: dict[str, Any] = {
        "version": space.version,
        "rule": rule.key_name,
        "space": row_space(rule),
        "envelope_key": keys.envelope,
        "envelope": envelope_info,
        "envelope_preview": _envelope_preview(envelope, len(keys.rows)),
        "rows": [{"key": key, "entry": records[key][0]} for key in keys.rows],
        "answer": _answer(_fresh(records[keys.envelope]), usable, keys.batch is not None),
        "shared_with": [
            {
                "rule": other.key_name,
                "path": other.path,
                "methods": list(other.methods),
                "envelope_key": key,
                "envelope_stored": records[key][1] is not None,
            }
            for other, key in zip(siblings, sibling_keys, strict=True)
        ],
    }
    if report["answer"] == "HIT":
        assert envelope is not None
        try:
            body = assemble(envelope.body, [value.body for value in usable if value is not None])
        except ValueError:
            report["answer"] = "MISS"
        else:
            report["answer_preview"] = body[:PREVIEW_BYTES].decode("utf-8", errors="replace")
    return report


def _fresh(record: tuple[dict[str, Any] | None, Entry | None]) -> Entry | None:
    info, entry = record
    return entry if entry is not None and info is not None and info["fresh"] else None


def _answer(envelope: Entry | None, rows: list[Entry | None], batch: bool) -> str:
    """How the middleware would answer now: HIT (the envelope and every row fresh), PARTIAL (a batch with
    some rows fresh: only the others are computed), else MISS."""
    stored = sum(row is not None for row in rows)
    if envelope is not None and stored == len(rows):
        return "HIT"
    return "PARTIAL" if stored and batch else "MISS"


def _envelope_preview(envelope: Entry | None, rows: int) -> str | None:
    """The stored envelope as the answer it frames, each row shown as an ellipsis."""
    if envelope is None:
        return None
    try:
        if envelope.body[:1] == b"O":  # open inference: the document with emptied outputs, as JSON
            framed = envelope.body[1:]
        else:
            framed = assemble(envelope.body, [_ROW_MARK] * max(1, rows))
    except ValueError:
        return None
    return framed[:PREVIEW_BYTES].decode("utf-8", errors="replace")
