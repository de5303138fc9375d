"""Single-flight: one computation per key at a time in this process; identical requests wait for it.

A flight publishes what its leader produces: once the response is known to be shareable, its start and
each body chunk as they are sent (so waiters of a streamed response get it as it is produced, as Varnish
streams to waiting clients), and at the end the stored entry. Built on AnyIO events: asyncio and trio.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import anyio
from starlette.types import Message, Send

from .entry import Entry

_MAX_REMEMBERED = 10_000


class FlightAborted(Exception):
    """The shared response was cut short after a follower had begun to receive it."""


class Flight:
    """One computation in flight. `shareable` is None until the leader's response start is known."""

    __slots__ = (
        "_changed",
        "aborted",
        "chunks",
        "complete",
        "done",
        "entry",
        "followers",
        "orphaned",
        "shareable",
        "start",
    )

    def __init__(self) -> None:
        self.entry: Entry | None = None
        self.start: Message | None = None
        self.chunks: list[bytes] = []
        self.shareable: bool | None = None
        self.complete = False  # the last body chunk has been published
        self.aborted = False
        self.done = False
        self.followers = 0
        self.orphaned = False  # the leader's own client is gone (its task was cancelled)
        self._changed: anyio.Event | None = None  # made by the first waiter: most flights have none

    def publish_start(self, start: Message | None) -> None:
        """The leader's response start (None: the response cannot be shared with waiters)."""
        self.start, self.shareable = start, start is not None
        self._notify()

    def publish_chunk(self, chunk: bytes, last: bool) -> None:
        if chunk:
            self.chunks.append(chunk)
        self.complete = last
        self._notify()

    def abort(self) -> None:
        """Stop sharing the stream (too large to keep); followers are cut off, others compute."""
        self.aborted, self.shareable, self.chunks = True, False, []
        self._notify()

    def finish(self, entry: Entry | None) -> None:
        if not self.done:
            self.done, self.entry = True, entry
            if entry is None and not self.complete and self.start is not None:
                self.aborted = True  # the leader ended without finishing its stream
            self._notify()

    async def changed(self) -> None:
        """Wait until the flight publishes something new."""
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()


class SingleFlight:
    """The flight in progress for each key; with `forget_uncacheable` > 0, remembers for that many seconds
    the keys whose last computation had nothing to share ("hit-for-miss")."""

    def __init__(self, forget_uncacheable: float = 0.0) -> None:
        self._flights: dict[str, Flight] = {}
        self._uncacheable: dict[str, float] = {}
        self.forget_uncacheable = forget_uncacheable

    def in_flight(self, key: str) -> Flight | None:
        return self._flights.get(key)

    def lead(self, key: str) -> Flight:
        """Register this caller's computation for `key`; end it with `finish`."""
        flight = self._flights[key] = Flight()
        return flight

    def finish(self, key: str, flight: Flight, entry: Entry | None) -> None:
        """Hand `entry` (None: nothing shareable) to the waiters and end the flight; then no-op."""
        if flight.done:
            return
        flight.finish(entry)
        if self._flights.get(key) is flight:
            del self._flights[key]
        if entry is None and self.forget_uncacheable > 0:
            if len(self._uncacheable) > _MAX_REMEMBERED:
                self._uncacheable.clear()
            self._uncacheable[key] = time.monotonic() + self.forget_uncacheable

    def known_uncacheable(self, key: str) -> bool:
        """True while a recent flight for `key` ended without a shareable response."""
        until = self._uncacheable.get(key)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self._uncacheable[key]
        return False

    def __len__(self) -> int:
        return len(self._flights)


async def outcome(flight: Flight, seconds: float, may_follow: bool) -> Entry | Flight | None:
    """What a waiter gets within `seconds`: the stored entry; the flight itself once its shareable
    stream has started (when `may_follow`), to be followed with `follow`; or None (compute yourself)."""
    with anyio.move_on_after(seconds):
        while not flight.done:
            if flight.shareable is False:
                return None
            if may_follow and flight.shareable and flight.chunks:
                return flight
            await flight.changed()
    return flight.entry


async def follow(flight: Flight, send: Send, extra_headers: list[tuple[bytes, bytes]]) -> None:
    """Send the leader's response to one more client: what was already produced, then each new chunk.
    Raises `FlightAborted` when the leader's stream is cut short."""
    assert flight.start is not None
    flight.followers += 1
    try:
        headers = [*flight.start.get("headers", ()), *extra_headers]
        await send({**flight.start, "headers": headers})
        sent = 0
        while True:
            if flight.aborted:
                raise FlightAborted("the shared response was cut short")
            while sent < len(flight.chunks):
                await send({"type": "http.response.body", "body": flight.chunks[sent], "more_body": True})
                sent += 1
            if flight.complete:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await flight.changed()
    finally:
        flight.followers -= 1


class RowFlights:
    """Single-flight per row: the rows some request in this process is computing, by row key."""

    def __init__(self) -> None:
        self._flights: dict[str, RowFlight] = {}

    def claim(self, keys: list[str]) -> tuple[list[str], dict[str, RowFlight]]:
        """Split `keys` into those this caller now computes and the flights of those others compute."""
        mine: list[str] = []
        theirs: dict[str, RowFlight] = {}
        for key in keys:
            flight = self._flights.get(key)
            if flight is None:
                self._flights[key] = RowFlight()
                mine.append(key)
            else:
                theirs[key] = flight
        return mine, theirs

    def finish(self, values: Mapping[str, bytes | None], keys: list[str]) -> None:
        """Publish the computed value of each of `keys` (None: not computed) and end their flights."""
        for key in keys:
            flight = self._flights.pop(key, None)
            if flight is not None:
                flight.finish(values.get(key))

    def __len__(self) -> int:
        return len(self._flights)


class RowFlight:
    """One row being computed; `value` is its value bytes once `done` (None: none came)."""

    __slots__ = ("_event", "done", "value")

    def __init__(self) -> None:
        self.done = False
        self.value: bytes | None = None
        self._event: anyio.Event | None = None  # made by the first waiter

    def finish(self, value: bytes | None) -> None:
        self.done, self.value = True, value
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if not self.done:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()


async def row_values(flights: dict[str, RowFlight], seconds: float) -> dict[str, bytes | None]:
    """The values other requests computed for these rows, waiting at most `seconds` in all."""
    with anyio.move_on_after(seconds):
        for flight in flights.values():
            await flight.wait()
    return {key: flight.value for key, flight in flights.items()}
