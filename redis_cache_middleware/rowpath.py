"""Row-level answers: a batch is answered from its stored rows, and only the rows missing reach the app.

The contract (README): each row's answer depends only on that row and on the request's other fields.
A row's key is its row space, its canonical form and its context (every other body field, the query,
Host, the `vary` headers and, on private rules, the credentials); every route naming the same row space
shares rows. Each route also stores its envelope: its response with the rows taken out. All rows and the
envelope stored: the answer is assembled from one multi-get. Some missing: the app gets the same request
with only the distinct missing rows, its answer is split and stored in one write, and merged back in order.
Anything unexpected: the app's own answer to the original request, nothing stored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.types import Message

from . import policy
from .batch import BatchRequest, assemble, split_response, split_row_response
from .cache import OverBudget, Unavailable
from .coalesce import row_values
from .entry import Entry
from .metrics import Outcome
from .request import Request, replay
from .responders import Parts, bypass
from .response import CacheStatus
from .rowkeys import RowKeys, row_keys
from .typed import RouteCanon

_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
# Validators of the app's whole body: an assembled body is another body.
_BODY_VALIDATORS = frozenset(
    {b"etag", b"last-modified", b"content-md5", b"digest", b"repr-digest", b"content-digest"}
)


class Captured:
    """A `send` that keeps a whole response (up to `limit` body bytes) instead of sending it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status, self.headers = message["status"], list(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            chunk: bytes = message.get("body", b"")
            self.size += len(chunk)
            if self.size <= self.limit:
                self.chunks.append(chunk)
            self.complete = not message.get("more_body", False)

    @property
    def whole(self) -> bool:
        return self.complete and self.size <= self.limit

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


@dataclass(slots=True)
class Computed:
    """The app's answer to a sub-batch, split: its status and headers, envelope and row values by key."""

    status: int
    headers: list[tuple[bytes, bytes]]
    envelope: bytes
    rows: dict[str, bytes]
    ttl: float | None  # None: the answer may not be stored
    seconds: float


def _located(parts: Parts, request: Request, canon: RouteCanon | None) -> RowKeys | str:
    return row_keys(
        parts.cache.keys,
        request.rule,
        request.scope,
        request.headers,
        request.body,
        parts.config.credential_headers,
        canon,
    )


async def answer_rows(parts: Parts, request: Request, canon: RouteCanon | None) -> None:
    """Answer a request of a rule with `batch=` or `row=` from stored rows."""
    if request.rule.batch is not None:
        await answer_batch(parts, request, canon)
    else:
        await answer_row(parts, request, canon)


async def answer_batch(parts: Parts, request: Request, canon: RouteCanon | None) -> None:
    """Answer a request of a rule with `batch=` from its rows, computing only those missing."""
    rule, cache = request.rule, parts.cache
    located = _located(parts, request, canon)
    if isinstance(located, str):
        await bypass(parts, rule, located, request.scope, request.receive, request.send)
        return
    split, keys, envelope_key = located.batch, list(located.rows), located.envelope
    assert split is not None
    distinct = list(dict.fromkeys(keys))
    try:
        envelope, values = await cache.rows(envelope_key, distinct, request.budget)
    except Unavailable as exc:
        await bypass(parts, rule, exc.reason, request.scope, request.receive, request.send)
        return
    if envelope is not None and len(values) == len(distinct):
        body = assemble(envelope.body, [values[key][0] for key in keys])
        status = CacheStatus(b"HIT", ("hit", f"detail=rows-{len(keys)}/{len(keys)}"), Outcome.HIT)
        saved = sum(values[key][1] for key in keys)
        await _send(parts, request, envelope.status, envelope.headers, body, status, saved)
        parts.metrics.rows(rule.key_name, hit=len(keys), computed=0)
        return
    found = {key: value for key, (value, _) in values.items()}
    await _compute_and_answer(parts, request, split, keys, found, envelope, envelope_key)


async def _compute_and_answer(
    parts: Parts,
    request: Request,
    split: BatchRequest,
    keys: list[str],
    found: dict[str, bytes],
    envelope: Entry | None,
    envelope_key: str,
) -> None:
    """Compute the rows not stored (awaiting those another request of this process computes), store
    them with the envelope, and answer the whole batch in its original order."""
    rule, flights = request.rule, parts.row_flights
    missing = [key for key in dict.fromkeys(keys) if key not in found]
    mine, theirs = flights.claim(missing)
    computed: list[Computed] = []
    try:
        if mine or (envelope is None and not theirs):  # no row to compute: one row fetches the envelope
            first = await _call_app(parts, request, split, keys, mine or keys[:1])
            if first is None:
                return
            computed.append(first)
    finally:
        flights.finish(computed[0].rows if computed else {}, mine)
    if theirs:
        others = await row_values(theirs, parts.config.coalesce_timeout)
        found.update({key: value for key, value in others.items() if value is not None})
    for computation in computed:
        found.update(computation.rows)
    late = [key for key in theirs if key not in found]
    if late or (envelope is None and not computed):  # a row nobody delivered, or still no envelope
        extra = await _call_app(parts, request, split, keys, late or keys[:1])
        if extra is None:
            return
        found.update(extra.rows)
        computed.append(extra)
    for computation in computed:
        if computation.ttl is not None:
            await _store(parts, request, computation, envelope_key)
    fresh = {key for computation in computed for key in computation.rows}
    hits = sum(1 for key in keys if key not in fresh)
    if computed:
        code, headers, shell = computed[-1].status, computed[-1].headers, computed[-1].envelope
    else:
        assert envelope is not None
        code, headers, shell = envelope.status, envelope.headers, envelope.body
    body = assemble(shell, [found[key] for key in keys])
    x_cache, outcome = (b"MISS", Outcome.MISS) if hits == 0 else (b"PARTIAL", Outcome.PARTIAL)
    status = CacheStatus(x_cache, ("fwd=uri-miss", f"detail=rows-{hits}/{len(keys)}"), outcome)
    await _send(parts, request, code, headers, body, status)
    parts.metrics.rows(rule.key_name, hit=hits, computed=len(fresh))


async def _call_app(
    parts: Parts, request: Request, split: BatchRequest, keys: list[str], wanted: list[str]
) -> Computed | None:
    """Ask the app for the rows `wanted` only; None when its answer was not usable, in which case the
    client has already been given the app's own answer to its original request."""
    rule = request.rule
    assert rule.batch is not None
    indices = [keys.index(key) for key in wanted]
    whole = indices == list(range(len(keys)))
    sub_body = request.body if whole else split.body_for(indices)
    assert sub_body is not None
    headers = [(n, v) for n, v in request.scope["headers"] if n.lower() not in _FRAMING_HEADERS]
    headers.append((b"content-length", str(len(sub_body)).encode()))
    scope = {**request.scope, "headers": headers}
    receive = replay([{"type": "http.request", "body": sub_body, "more_body": False}], request.receive)
    captured = Captured(rule.max_body_bytes)
    began = time.perf_counter()
    await parts.app(scope, receive, captured)
    seconds = time.perf_counter() - began
    answer = (
        split_response(rule.batch, captured.body, len(indices))
        if captured.whole and captured.status == 200
        else None
    )
    if answer is None:
        if captured.whole and (whole or captured.status != 200):  # the app's answer, as it sent it
            reason = "batch-app-error" if captured.status != 200 else "batch-unusable-answer"
            await _pass_through(parts, request, captured, reason)
        else:
            await _fall_back(parts, request)
        return None
    storage = policy.storage(rule, captured.status, captured.headers, time.time())
    return Computed(
        captured.status,
        _envelope_headers(captured.headers),
        answer.envelope,
        dict(zip(wanted, answer.values, strict=True)),
        storage.ttl if storage.reason is None else None,
        seconds,
    )


async def _store(parts: Parts, request: Request, computed: Computed, envelope_key: str) -> None:
    """Write the computed rows and the envelope in one round trip (after the answer if the request's
    backend time is spent)."""
    now, ttl = time.time(), computed.ttl or 0.0
    share = computed.seconds / max(1, len(computed.rows))
    rows = [(key, value, share) for key, value in computed.rows.items()]
    envelope = Entry(envelope_key, computed.status, computed.headers, computed.envelope, now, ttl)
    try:
        await parts.cache.save_rows(rows, envelope, request.rule, request.budget)
    except OverBudget:
        await parts.cache.save_rows(rows, envelope, request.rule)


async def _send(
    parts: Parts,
    request: Request,
    code: int,
    stored_headers: list[tuple[bytes, bytes]],
    body: bytes,
    status: CacheStatus,
    saved: float = 0.0,
) -> None:
    headers = policy.client_headers(stored_headers, parts.config.hidden_fields)
    headers.append((b"content-length", str(len(body)).encode()))
    headers += parts.status_headers(status, request.key)
    await request.send({"type": "http.response.start", "status": code, "headers": headers})
    await request.send({"type": "http.response.body", "body": body})
    seconds = time.perf_counter() - request.started
    parts.metrics.served(request.rule.key_name, status.outcome, seconds, saved)


async def _pass_through(parts: Parts, request: Request, captured: Captured, reason: str) -> None:
    """Send what the app answered (the client's own request, or an error for a sub-batch)."""
    parts.metrics.bypassed(request.rule.key_name, reason)
    headers = policy.client_headers(captured.headers, parts.config.hidden_fields) + parts.status_headers(
        CacheStatus(b"BYPASS", ("fwd=bypass", f"detail={reason}"), Outcome.BYPASS), request.key
    )
    await request.send({"type": "http.response.start", "status": captured.status, "headers": headers})
    await request.send({"type": "http.response.body", "body": captured.body})


async def _fall_back(parts: Parts, request: Request) -> None:
    """The app's answer to a sub-batch could not be split: give the client the app's answer to its own
    request instead, untouched."""
    body = request.body or b""
    receive = replay([{"type": "http.request", "body": body, "more_body": False}], request.receive)
    await bypass(parts, request.rule, "batch-unusable-answer", request.scope, receive, request.send)


async def answer_row(parts: Parts, request: Request, canon: RouteCanon | None) -> None:
    """Answer a single-row route of a row space: its envelope plus the row's stored value, wherever in the
    space the row was computed; otherwise the app answers, and its row and envelope are stored."""
    rule, cache = request.rule, parts.cache
    located = _located(parts, request, canon)
    if isinstance(located, str):
        await bypass(parts, rule, located, request.scope, request.receive, request.send)
        return
    key, envelope_key = located.rows[0], located.envelope
    try:
        envelope, values = await cache.rows(envelope_key, [key], request.budget)
    except Unavailable as exc:
        await bypass(parts, rule, exc.reason, request.scope, request.receive, request.send)
        return
    value = values[key][0] if key in values else None
    mine: list[str] = []
    if value is None:
        mine, theirs = parts.row_flights.claim([key])
        if theirs:
            value = (await row_values(theirs, parts.config.coalesce_timeout))[key]
    if envelope is not None and value is not None:
        body = assemble(envelope.body, [value])
        await _send(parts, request, envelope.status, envelope.headers, body, _ROW_HIT)
        parts.metrics.rows(rule.key_name, hit=1, computed=0)
        return
    computed: bytes | None = None
    try:
        computed = await _single_from_app(parts, request, key, envelope_key)
    finally:
        parts.row_flights.finish({key: computed}, mine)


async def _single_from_app(parts: Parts, request: Request, key: str, envelope_key: str) -> bytes | None:
    """The app answers the client's single-row request; its row value and envelope are stored when it may
    be. Returns the row value (None when the answer had none to share)."""
    rule = request.rule
    assert rule.row is not None
    captured = Captured(rule.max_body_bytes)
    began = time.perf_counter()
    await parts.app(request.scope, request.receive, captured)
    seconds = time.perf_counter() - began
    if not captured.whole:  # too large to have been kept: let the app answer again, untouched
        await _fall_back(parts, request)
        return None
    answer = split_row_response(rule.row, captured.body) if captured.status == 200 else None
    storage = policy.storage(rule, captured.status, captured.headers, time.time())
    if answer is not None and storage.reason is None:
        headers = _envelope_headers(captured.headers)
        computed = Computed(
            captured.status, headers, answer.envelope, {key: answer.values[0]}, storage.ttl, seconds
        )
        await _store(parts, request, computed, envelope_key)
    status = CacheStatus(b"MISS", ("fwd=uri-miss",), Outcome.MISS)
    headers = policy.client_headers(captured.headers, parts.config.hidden_fields) + parts.status_headers(
        status, request.key
    )
    await request.send({"type": "http.response.start", "status": captured.status, "headers": headers})
    await request.send({"type": "http.response.body", "body": b"" if request.head else captured.body})
    parts.metrics.served(rule.key_name, Outcome.MISS, time.perf_counter() - request.started)
    if answer is None:
        return None
    parts.metrics.rows(rule.key_name, hit=0, computed=1)
    return answer.values[0]


_ROW_HIT = CacheStatus(b"HIT", ("hit", "detail=rows-1/1"), Outcome.HIT)


def _envelope_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The fields an assembled answer keeps of the app's: no framing, no validators of the app's body."""
    return [(n, v) for n, v in policy.stored_headers(headers) if n.lower() not in _BODY_VALIDATORS]
