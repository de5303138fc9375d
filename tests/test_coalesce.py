"""Single-flight in one process: leaders, waiters and followers of a shared response, and row flights, on
both AnyIO backends (asyncio and trio). No Redis, no app: the leader's side is played by hand."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest
from starlette.types import Message

from redis_cache_middleware.coalesce import (
    Flight,
    FlightAborted,
    RowFlights,
    SingleFlight,
    follow,
    outcome,
    row_values,
)
from redis_cache_middleware.entry import Entry

LOOPS = pytest.mark.parametrize("loop", ["asyncio", "trio"])
START: Message = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
EXTRA = [(b"cache-status", b"rcm; hit; detail=coalesced")]
LONG = 30.0  # a wait that must end by what the leader does, never by this timeout


def make_entry(key: str = "k") -> Entry:
    return Entry(key, 200, [(b"content-type", b"text/plain")], b"body", 1000.0, 60.0)


def run(loop: str, test: Callable[[], Awaitable[None]]) -> None:
    anyio.run(test, backend=loop)


async def settle() -> None:
    """Let every task that can run, run (a few scheduler passes)."""
    for _ in range(10):
        await anyio.lowlevel.checkpoint()


class Recorder:
    """An ASGI `send` that keeps the messages."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    def bodies(self) -> list[tuple[bytes, bool]]:
        return [(m["body"], m["more_body"]) for m in self.messages if m["type"] == "http.response.body"]


# --- SingleFlight ------------------------------------------------------------------------------------


def test_lead_registers_and_finish_ends_the_flight() -> None:
    flights = SingleFlight()
    assert flights.in_flight("k") is None
    flight = flights.lead("k")
    assert flights.in_flight("k") is flight and len(flights) == 1
    entry = make_entry()
    flights.finish("k", flight, entry)
    assert flight.done and flight.entry is entry
    assert flights.in_flight("k") is None and len(flights) == 0
    flights.finish("k", flight, None)  # a second finish changes nothing
    assert flight.entry is entry


def test_finishing_an_old_flight_leaves_the_new_one_in_place() -> None:
    flights = SingleFlight()
    old = flights.lead("k")
    new = flights.lead("k")
    flights.finish("k", old, None)
    assert flights.in_flight("k") is new


def test_flights_are_per_key() -> None:
    flights = SingleFlight()
    a, b = flights.lead("a"), flights.lead("b")
    flights.finish("a", a, make_entry("a"))
    assert flights.in_flight("b") is b and not b.done


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("redis_cache_middleware.coalesce.time.monotonic", clock)
    return clock


def test_hit_for_miss_remembers_uncacheable_keys_for_a_while(clock: Clock) -> None:
    flights = SingleFlight(forget_uncacheable=10.0)
    flights.finish("k", flights.lead("k"), None)
    assert flights.known_uncacheable("k")
    assert not flights.known_uncacheable("other")
    clock.now += 9.9
    assert flights.known_uncacheable("k")
    clock.now += 0.1
    assert not flights.known_uncacheable("k")
    clock.now -= 5  # forgotten for good, not merely hidden
    assert not flights.known_uncacheable("k")


def test_hit_for_miss_is_off_by_default_and_ignores_shared_entries(clock: Clock) -> None:
    off = SingleFlight()
    off.finish("k", off.lead("k"), None)
    assert not off.known_uncacheable("k")
    on = SingleFlight(forget_uncacheable=10.0)
    on.finish("k", on.lead("k"), make_entry())
    assert not on.known_uncacheable("k")


# --- outcome -----------------------------------------------------------------------------------------


@LOOPS
def test_waiter_gets_the_leaders_entry(loop: str) -> None:
    async def test() -> None:
        flights = SingleFlight()
        flight = flights.lead("k")
        entry = make_entry()
        got: list[Entry | Flight | None] = []
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                got.append(await outcome(flight, LONG, may_follow=True))

            tg.start_soon(wait)
            await settle()
            assert got == []  # still waiting: nothing published yet
            flight.publish_start(START)
            await settle()
            assert got == []  # shareable, but no chunk yet to follow
            flights.finish("k", flight, entry)
        assert got == [entry]

    run(loop, test)


@LOOPS
def test_an_unshareable_response_sends_waiters_to_compute(loop: str) -> None:
    async def test() -> None:
        flight = SingleFlight().lead("k")
        got: list[Entry | Flight | None] = []
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                got.append(await outcome(flight, LONG, may_follow=True))

            tg.start_soon(wait)
            await settle()
            flight.publish_start(None)
            await settle()
            assert got == [None]  # at once, not when the leader ends or the wait times out
        assert not flight.done

    run(loop, test)


@LOOPS
def test_a_leader_ending_with_nothing_gives_none(loop: str) -> None:
    async def test() -> None:
        flights = SingleFlight()
        flight = flights.lead("k")
        got: list[Entry | Flight | None] = []
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                got.append(await outcome(flight, LONG, may_follow=False))

            tg.start_soon(wait)
            await settle()
            flights.finish("k", flight, None)
            await settle()
            assert got == [None]

    run(loop, test)


@LOOPS
def test_a_started_shareable_stream_is_followed_when_allowed(loop: str) -> None:
    async def test() -> None:
        flights = SingleFlight()
        flight = flights.lead("k")
        got: list[Entry | Flight | None] = []
        async with anyio.create_task_group() as tg:

            async def wait(may_follow: bool) -> None:
                got.append(await outcome(flight, LONG, may_follow=may_follow))

            tg.start_soon(wait, True)
            tg.start_soon(wait, False)
            await settle()
            flight.publish_start(START)
            flight.publish_chunk(b"part", last=False)
            await settle()
            assert got == [flight]  # the follower; the other waits for the entry
            entry = make_entry()
            flights.finish("k", flight, entry)
        assert got == [flight, entry]

    run(loop, test)


@LOOPS
def test_a_finished_flight_answers_at_once(loop: str) -> None:
    async def test() -> None:
        flights = SingleFlight()
        flight = flights.lead("k")
        entry = make_entry()
        flights.finish("k", flight, entry)
        assert await outcome(flight, 0, may_follow=True) is entry

    run(loop, test)


@LOOPS
def test_outcome_gives_none_when_the_leader_takes_too_long(loop: str) -> None:
    async def test() -> None:
        flight = SingleFlight().lead("k")
        flight.publish_start(START)
        assert await outcome(flight, 0.01, may_follow=False) is None
        assert await outcome(flight, 0.01, may_follow=True) is None  # started, but nothing to follow

    run(loop, test)


# --- follow ------------------------------------------------------------------------------------------


@LOOPS
def test_follow_sends_what_was_produced_then_each_new_chunk(loop: str) -> None:
    async def test() -> None:
        flights = SingleFlight()
        flight = flights.lead("k")
        flight.publish_start(START)
        flight.publish_chunk(b"one,", last=False)
        flight.publish_chunk(b"two,", last=False)
        send = Recorder()
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow, flight, send, EXTRA)
            await settle()
            assert flight.followers == 1
            assert send.bodies() == [(b"one,", True), (b"two,", True)]
            flight.publish_chunk(b"three", last=False)
            await settle()
            assert send.bodies()[-1] == (b"three", True)
            flight.publish_chunk(b"", last=True)
            flights.finish("k", flight, make_entry())
        assert send.messages[0] == {**START, "headers": [*START["headers"], *EXTRA]}
        assert send.bodies() == [(b"one,", True), (b"two,", True), (b"three", True), (b"", False)]
        assert flight.followers == 0

    run(loop, test)


@LOOPS
def test_follow_of_a_complete_stream_sends_it_whole(loop: str) -> None:
    async def test() -> None:
        flight = SingleFlight().lead("k")
        flight.publish_start(START)
        flight.publish_chunk(b"all", last=True)
        send = Recorder()
        await follow(flight, send, [])
        assert send.messages[0] == START
        assert send.bodies() == [(b"all", True), (b"", False)]

    run(loop, test)


@pytest.mark.parametrize("cut", ["abort", "finish-without-end"])
@LOOPS
def test_follow_raises_when_the_stream_is_cut_short(loop: str, cut: str) -> None:
    async def test() -> None:
        flights = SingleFlight()
        flight = flights.lead("k")
        flight.publish_start(START)
        flight.publish_chunk(b"one,", last=False)
        send = Recorder()
        raised: list[BaseException] = []

        async def follower() -> None:
            try:
                await follow(flight, send, [])
            except FlightAborted as exc:
                raised.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(follower)
            await settle()
            if cut == "abort":
                flight.abort()
            else:
                flights.finish("k", flight, None)
            await settle()
            assert len(raised) == 1
        assert flight.aborted and flight.followers == 0
        assert send.bodies() == [(b"one,", True)]  # never a final, complete-looking end

    run(loop, test)


@LOOPS
def test_finish_after_the_last_chunk_is_not_an_abort(loop: str) -> None:
    async def test() -> None:
        flights = SingleFlight()
        flight = flights.lead("k")
        flight.publish_start(START)
        flight.publish_chunk(b"done", last=True)
        flights.finish("k", flight, None)  # streamed whole, just not stored
        assert not flight.aborted
        send = Recorder()
        await follow(flight, send, [])
        assert send.bodies() == [(b"done", True), (b"", False)]

    run(loop, test)


# --- RowFlights --------------------------------------------------------------------------------------


def test_claim_splits_mine_from_theirs() -> None:
    rows = RowFlights()
    mine, theirs = rows.claim(["a", "b"])
    assert mine == ["a", "b"] and theirs == {}
    mine, theirs = rows.claim(["b", "c"])
    assert mine == ["c"] and list(theirs) == ["b"]
    assert len(rows) == 3
    rows.finish({"a": b"1", "b": b"2"}, ["a", "b"])
    assert len(rows) == 1
    mine, theirs = rows.claim(["a", "c"])
    assert mine == ["a"] and list(theirs) == ["c"]


@LOOPS
def test_row_values_are_the_values_others_computed(loop: str) -> None:
    async def test() -> None:
        rows = RowFlights()
        rows.claim(["a", "b", "c"])
        _, theirs = rows.claim(["a", "b", "c"])
        got: list[dict[str, bytes | None]] = []
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                got.append(await row_values(theirs, LONG))

            tg.start_soon(wait)
            await settle()
            rows.finish({"a": b"[1]"}, ["a"])
            await settle()
            assert got == []  # still waiting for b and c
            rows.finish({"b": b"[2]"}, ["b", "c"])  # c was not computed
        assert got == [{"a": b"[1]", "b": b"[2]", "c": None}]

    run(loop, test)


@LOOPS
def test_row_values_gives_none_for_rows_not_ready_in_time(loop: str) -> None:
    async def test() -> None:
        rows = RowFlights()
        rows.claim(["a", "b"])
        _, theirs = rows.claim(["a", "b"])
        rows.finish({"a": b"[1]"}, ["a"])
        assert await row_values(theirs, 0.01) == {"a": b"[1]", "b": None}

    run(loop, test)
