"""A lean, pipelined Redis connection for the request path's commands: `GET`, `MGET`, `SET`.

Concurrent commands are written back to back on one socket and their replies matched in order (RESP replies
come in request order), parsed by hiredis. A reply that has not come when its caller's `within` runs out
makes the connection untrustworthy (if it never comes, every later reply would go to the wrong caller): the
connection is closed at once, every caller still waiting on it fails with `PipelineError`, and the next
call opens a fresh one. The connection is opened lazily (AUTH and SELECT included, all bounded by the
opener's `within`; a connection whose AUTH or SELECT fails is closed), and bound to the event loop that
opened it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import parse_url


class PipelineError(Exception):
    """The pipelined connection failed, was lost, or Redis answered with an error."""


class ConnectionReplaced(PipelineError):
    """The connection was closed under a caller because another caller's reply was overdue."""


class StillConnecting(TimeoutError):
    """The caller stopped waiting while the shared connection attempt was still under way."""


class _Protocol(asyncio.Protocol):
    """Matches each reply with the oldest caller still in line, and watches that the oldest reply comes
    in time: one timer per connection, not one per call (a timer per call is five objects the garbage
    collector must track while the call waits)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.due: deque[float] = deque()  # the loop time by which each waiter's reply must have come
        self.limits: deque[float] = deque()  # and the seconds it was given, for the error
        self.lost: Exception | None = None
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.TimerHandle | None = None
        self._suspect: asyncio.Future[Any] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                waiter = self.waiting.popleft()
                self.due.popleft()
                self.limits.popleft()
                if waiter.done():
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    waiter.set_exception(PipelineError(f"Redis error: {reply}"))
                else:
                    waiter.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self._fail(PipelineError(f"protocol error: {exc!r}"))
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(PipelineError(f"connection lost: {exc!r}" if exc else "connection closed by Redis"))

    def _fail(self, error: PipelineError) -> None:
        self.lost = error
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.due.clear()
        self.limits.clear()
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def send(self, within: float, *commands: bytes) -> list[asyncio.Future[Any]]:
        """Write `commands` in one write; one waiter per command, in order, each failing with
        `TimeoutError` if its reply has not come `within` s from now (see `_watch`)."""
        assert self.transport is not None
        waiters = [self._expect(within) for _ in commands]
        self.transport.write(b"".join(commands))
        return waiters

    def send_one(self, command: bytes, within: float) -> asyncio.Future[Any]:
        """`send` for one command, without the list: the hit path's `GET`."""
        assert self.transport is not None
        waiter = self._expect(within)
        self.transport.write(command)
        return waiter

    def _expect(self, within: float) -> asyncio.Future[Any]:
        """A waiter for the next reply, due `within` s from now; the watchdog is armed for the oldest."""
        loop = self._loop
        waiter: asyncio.Future[Any] = loop.create_future()
        self.waiting.append(waiter)
        self.due.append(loop.time() + within)
        self.limits.append(within)
        if self._watchdog is None:
            self._watchdog = loop.call_at(self.due[0], self._watch)
        return waiter

    def _watch(self) -> None:
        """The oldest reply is due. If it is still missing after one more pass of the loop (a reply that
        came while the loop was stalled, by a long garbage collection or a blocking call, is read first:
        a pause of this process is not Redis being slow), the connection is out of step: drop it."""
        self._watchdog = None
        if not self.waiting:
            return
        head = self.waiting[0]
        if self.due[0] > self._loop.time():
            self._watchdog = self._loop.call_at(self.due[0], self._watch)
        elif self._suspect is not head:
            self._suspect = head
            self._watchdog = self._loop.call_later(0, self._watch)
        else:
            self._suspect = None
            self.waiting.popleft()
            self.due.popleft()
            within = self.limits.popleft()
            if not head.done():
                head.set_exception(TimeoutError(f"no reply within {within} s"))
            self.drop("reply overdue: connection closed, replies out of step")

    def drop(self, reason: str) -> None:
        """Close the connection now and fail every caller still waiting on it (with `ConnectionReplaced`:
        their own replies were not late, the connection was)."""
        self._fail(ConnectionReplaced(reason))
        if self.transport is not None:
            self.transport.abort()


class _Deadline:
    """Fails a waiter with `error` after `seconds` unless it is done first (for opening a connection)."""

    def __init__(
        self, waiter: asyncio.Future[Any], seconds: float, what: str, error: type[TimeoutError]
    ) -> None:
        self.waiter = waiter
        self.seconds = seconds
        self.what = what
        self.error = error
        self.handle = asyncio.get_running_loop().call_later(seconds, self._fire)

    def _fire(self) -> None:
        if not self.waiter.done():
            self.waiter.set_exception(self.error(f"{self.what} {self.seconds} s"))

    def cancel(self) -> None:
        self.handle.cancel()


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class Pipeline:
    """`GET`, `MGET` and `SET` over one pipelined connection to a single Redis node (`redis://` or
    `unix://`, no TLS): the commands of the request path, at a fraction of a general client's cost."""

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self._setup = (
            [_command(b"AUTH", *[p.encode() for p in (username, password) if p])] if password else []
        )
        if db:
            self._setup.append(_command(b"SELECT", str(db).encode()))
        self._protocol: _Protocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Task[_Protocol] | None = None

    @classmethod
    def from_url(cls, url: str) -> Pipeline | None:
        """For a plain `redis://` or `unix://` URL; None for TLS or anything it does not handle."""
        if not url.lower().startswith(("redis://", "unix://")):
            return None
        settings = parse_url(url)
        known = {"host", "port", "path", "db", "username", "password", "connection_class"}
        if not set(settings) <= known:
            return None
        return cls(
            host=settings.get("host", "localhost"),
            port=int(settings.get("port", 6379)),
            path=settings.get("path"),
            db=int(settings.get("db", 0)),
            username=settings.get("username"),
            password=settings.get("password"),
        )

    def get(self, key: str, within: float, connect_within: float) -> Awaitable[Any]:
        """`GET key`, written at once when the connection is open: the awaitable gives the raw reply
        (bytes or None; the caller rejects anything else). `TimeoutError` when no reply came within
        `within` s of time the loop was free to read it, `StillConnecting` when opening the connection
        took longer than `connect_within` s, `PipelineError` (or `OSError`) on failure. A plain function
        returning the reply's future, so that a hit waits on one object, not a stack of coroutines."""
        command = _command(b"GET", key.encode())
        protocol = self._protocol
        if protocol is not None and self._loop is asyncio.get_running_loop() and self.connected:
            return protocol.send_one(command, within)
        return self._connect_and_send(command, within, connect_within)

    async def _connect_and_send(self, command: bytes, within: float, connect_within: float) -> Any:
        protocol = await self.connect(connect_within)
        return await protocol.send_one(command, within)

    async def get_many(self, keys: Sequence[str], within: float) -> list[bytes | None]:
        """`MGET keys`: the values in order, None where absent; bounds and errors as `get`."""
        if not keys:
            return []
        reply = await self._call(within, b"MGET", *(key.encode() for key in keys))
        if not isinstance(reply, list) or len(reply) != len(keys):
            raise PipelineError(f"unexpected reply to MGET: {type(reply).__name__}")
        return [value if isinstance(value, bytes) else None for value in reply]

    async def set_many(self, items: Sequence[tuple[str, bytes, int]], within: float) -> None:
        """`SET key value PX milliseconds` for each item, all written at once (one round trip)."""
        if not items:
            return
        commands = [_command(b"SET", k.encode(), v, b"PX", str(ms).encode()) for k, v, ms in items]
        replies = await self._call_many(within, commands)
        wrong = [reply for reply in replies if reply != b"OK"]
        if wrong:
            raise PipelineError(f"unexpected reply to SET: {wrong[0]!r}")

    async def set(self, key: str, value: bytes, milliseconds: int, within: float) -> None:
        """`SET key value PX milliseconds`, with the same bounds and errors as `get`."""
        reply = await self._call(within, b"SET", key.encode(), value, b"PX", str(milliseconds).encode())
        if reply != b"OK":
            raise PipelineError(f"unexpected reply to SET: {reply!r}")

    async def set_if_absent(self, key: str, value: bytes, milliseconds: int, within: float) -> bool:
        """`SET key value NX PX milliseconds`: True when it was set, False when the key existed."""
        reply = await self._call(
            within, b"SET", key.encode(), value, b"NX", b"PX", str(milliseconds).encode()
        )
        if reply not in (b"OK", None):
            raise PipelineError(f"unexpected reply to SET NX: {reply!r}")
        return bool(reply == b"OK")

    async def _call(self, within: float, *parts: bytes) -> Any:
        return (await self._call_many(within, [_command(*parts)]))[0]

    async def _call_many(self, within: float, commands: Sequence[bytes]) -> list[Any]:
        """Send `commands` in one write and wait for all their replies (they come in order, so the last is
        waited for). A reply of ours that was overdue raises `TimeoutError`; the connection was dropped."""
        protocol = await self.connect(within)
        waiters = protocol.send(within, *commands)
        try:
            await waiters[-1]
        except Exception:  # a failed or overdue reply: inspected below, with the others
            pass
        except BaseException:  # the caller was cancelled: its replies are read and dropped
            for waiter in waiters:
                waiter.cancel()
            raise
        errors = [waiter.exception() for waiter in waiters]  # each retrieved, even after the first
        late = next((error for error in errors if isinstance(error, TimeoutError)), None)
        error = late or next((error for error in errors if error is not None), None)
        if error is not None:
            raise error
        return [waiter.result() for waiter in waiters]

    @property
    def connected(self) -> bool:
        """Whether a GET can be written now without opening a connection first."""
        protocol = self._protocol
        return (
            protocol is not None
            and protocol.lost is None
            and protocol.transport is not None
            and not protocol.transport.is_closing()
        )

    async def connect(self, within: float = 1.0) -> _Protocol:
        """The open connection, opening it if need be (one attempt shared by concurrent callers, which
        outlives a caller that stops waiting after `within` s)."""
        loop = asyncio.get_running_loop()
        if self._protocol is not None and self.connected and self._loop is loop:
            return self._protocol
        if self._opening is None or self._opening.done() or self._loop is not loop:
            self.close()
            self._loop = loop
            self._opening = loop.create_task(self._open(within))
        waiter: asyncio.Future[_Protocol] = loop.create_future()

        def relay(opening: asyncio.Task[_Protocol]) -> None:
            error = PipelineError("connecting was cancelled") if opening.cancelled() else opening.exception()
            if waiter.done():  # the caller gave up; the attempt's error is retrieved all the same
                return
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(opening.result())

        self._opening.add_done_callback(relay)
        deadline = _Deadline(waiter, within, "connection still opening after", StillConnecting)
        try:
            return await waiter
        finally:
            deadline.cancel()

    async def _open(self, limit: float) -> _Protocol:
        """Connect, then AUTH and SELECT, within `limit` s in all; on any failure nothing stays open."""
        loop = asyncio.get_running_loop()
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(limit):
                if self.path is not None:
                    _, protocol = await loop.create_unix_connection(_Protocol, self.path)
                else:
                    _, protocol = await loop.create_connection(_Protocol, self.host, self.port)
                if self._setup:
                    replies = await asyncio.gather(
                        *protocol.send(limit, *self._setup), return_exceptions=True
                    )
                    for reply in replies:
                        if isinstance(reply, BaseException):
                            raise reply
        except BaseException:
            if protocol is not None and protocol.transport is not None:
                protocol.transport.abort()
            raise
        self._protocol = protocol
        return protocol

    def close(self) -> None:
        """Drop the connection (callers still waiting get `PipelineError`)."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.drop("connection closed by the client")
