"""A lean, pipelined Redis connection for the hit path's one command, `GET`.

Concurrent GETs are written back to back on one socket and their replies matched in order (RESP replies
come in request order), parsed by hiredis. A caller that times out simply stops waiting: its reply is
still read and dropped when it arrives, so a slow reply can never be taken for another key's. The
connection is opened lazily, re-opened after it is lost, and bound to the event loop that opened it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, cast

import hiredis
from redis.asyncio.connection import parse_url


class PipelineError(Exception):
    """The pipelined connection failed, was lost, or Redis answered with an error."""


class _Protocol(asyncio.Protocol):
    """Matches each reply with the oldest caller still in line."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                waiter = self.waiting.popleft()
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
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        assert self.transport is not None
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        self.transport.write(command)
        return waiter


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class PipelinedGet:
    """`GET` over one pipelined connection to a single Redis node (`redis://` or `unix://`, no TLS)."""

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
        self._connecting: asyncio.Future[_Protocol] | None = None

    @classmethod
    def from_url(cls, url: str) -> PipelinedGet | None:
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

    async def get(self, key: str) -> bytes | None:
        """The value at `key`; raises `PipelineError` (or `OSError` while connecting). The caller bounds
        the wait: cancelling it leaves the connection in step."""
        protocol = await self.connect()
        encoded = key.encode()
        reply = await protocol.send(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(encoded), encoded))
        if reply is not None and not isinstance(reply, bytes):
            raise PipelineError(f"unexpected reply to GET: {type(reply).__name__}")
        return reply

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

    async def connect(self) -> _Protocol:
        """The open connection, opened now (once for all concurrent callers) if need be."""
        loop = asyncio.get_running_loop()
        if self._protocol is not None and self.connected and self._loop is loop:
            return self._protocol
        if self._connecting is not None and self._loop is loop and not self._connecting.done():
            return await asyncio.shield(self._connecting)
        self.close()
        self._loop = loop
        self._connecting = loop.create_future()
        connecting = self._connecting
        try:
            protocol = await self._open()
        except BaseException as exc:
            if not connecting.done():
                connecting.set_exception(exc if isinstance(exc, Exception) else PipelineError("cancelled"))
                connecting.exception()  # retrieved: concurrent callers, if any, have seen it
            raise
        self._protocol = protocol
        connecting.set_result(protocol)
        return protocol

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self.path is not None:
            _, protocol = await loop.create_unix_connection(_Protocol, self.path)
        else:
            _, protocol = await loop.create_connection(_Protocol, self.host, self.port)
        for command in self._setup:
            await protocol.send(command)
        return protocol

    def close(self) -> None:
        """Drop the connection (callers still waiting get `PipelineError`)."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
