"""The per-request object, and reading a request body so that the app still receives it."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from starlette.types import Message, Receive, Scope, Send

from .budget import Budget
from .keys import Headers
from .rules import CacheRule


@dataclass(slots=True)
class Request:
    """What the middleware knows of one matched request; `key` is its primary key, `background` marks
    a refresh that no client waits for (its `send` goes nowhere)."""

    scope: Scope
    receive: Receive
    send: Send
    rule: CacheRule
    headers: Headers
    body: bytes | None
    key: str
    started: float
    directives: dict[str, str | None] = field(default_factory=dict)
    head: bool = False
    background: bool = False
    budget: Budget = field(default_factory=Budget)

    def for_background(self, started: float) -> Request:
        """A copy for a background refresh: its body replayed once, then no client at all."""
        body = self.body if self.body is not None else b""
        return Request(
            scope=dict(self.scope),
            receive=replay([{"type": "http.request", "body": body, "more_body": False}], _never),
            send=_discard,
            rule=self.rule,
            headers=self.headers,
            body=self.body,
            key=self.key,
            started=started,
            directives=self.directives,
            background=True,
            budget=Budget(self.budget.total),
        )


def route_path(scope: Scope) -> str:
    """The path the app routes on: `path` without the `root_path` it was mounted under."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path


async def read_body(receive: Receive, headers: Headers, limit: int) -> tuple[bytes | str, Receive]:
    """The whole request body, or why it was not read ("request-too-large", "client-disconnected"), and a
    `receive` that replays whatever was read, then goes on with the client's."""
    declared = headers.get(b"content-length")
    if declared is not None:
        try:
            if int(declared[0]) > limit:
                return "request-too-large", receive
        except ValueError:
            return "request-too-large", receive
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return "client-disconnected", replay(messages, receive)
        size += len(message.get("body", b""))
        if size > limit:
            return "request-too-large", replay(messages, receive)
        if not message.get("more_body", False):
            break
    body = (
        messages[0].get("body", b"") if len(messages) == 1 else b"".join(m.get("body", b"") for m in messages)
    )
    return body, replay([{"type": "http.request", "body": body, "more_body": False}], receive)


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that returns `messages` first, then whatever the client sends next."""
    pending = list(reversed(messages))

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


async def _never() -> Message:
    """The `receive` of a background refresh after its body: no client, so nothing ever arrives."""
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def _discard(message: Message) -> None:
    """The `send` of a background refresh: nobody is listening."""
