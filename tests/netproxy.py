"""A loopback TCP proxy for network-fault tests: pass, delay, swallow or drop traffic per direction, refuse
or hang new connections, reset open ones, all switchable while connections are open."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Literal

from .redis_server import free_port

Mode = Literal["pass", "delay", "swallow", "drop"]


class NetProxy:
    """Listens on 127.0.0.1:`port` and relays to `target_port`.

    `up` is the client-to-server direction, `down` server-to-client (replies). Per direction:
    "pass" relays, "delay" relays each chunk `delay` s late (order kept), "swallow" reads and forwards
    nothing (a black hole: the sender sees its bytes accepted), "drop" resets the connection on its next
    chunk. `refuse()` closes the listener (connects are refused), `hang()` keeps the port bound with a
    full accept queue (connects never complete), `accept()` goes back to normal.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.up: Mode = "pass"
        self.down: Mode = "pass"
        self.delay = 0.0
        self.swallowed = 0
        self._server: asyncio.Server | None = None
        self._hanging: list[socket.socket] = []
        self._transports: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def url_with(self, userinfo: str = "", query: str = "") -> str:
        return f"redis://{userinfo}127.0.0.1:{self.port}/0{'?' + query if query else ''}"

    async def start(self) -> NetProxy:
        await self.accept()
        return self

    def heal(self) -> None:
        """Both directions back to "pass"."""
        self.up = self.down = "pass"

    async def accept(self) -> None:
        """Accept and relay new connections (after `refuse` or `hang`)."""
        self._stop_hanging()
        if self._server is None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def refuse(self) -> None:
        """Stop listening: new connections are refused; open ones stay."""
        await self._close_server()
        self._stop_hanging()

    async def hang(self) -> None:
        """Keep the port bound but never accept: once the accept queue is full (filled here), a connect
        attempt gets no answer at all, as behind a firewall that drops packets."""
        await self._close_server()
        if self._hanging:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(0)
        self._hanging.append(listener)
        for _ in range(2):  # fill the accept queue; beyond it, SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self._hanging.append(filler)
        await asyncio.sleep(0.05)

    def reset_all(self) -> None:
        """Abort every open connection (the client sees a reset)."""
        for writer in list(self._transports):
            writer.transport.abort()
        self._transports.clear()

    async def aclose(self) -> None:
        await self._close_server()
        self._stop_hanging()
        self.reset_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    def _stop_hanging(self) -> None:
        for sock in self._hanging:
            sock.close()
        self._hanging.clear()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._transports.update((client_writer, server_writer))
        for source, sink, upward in (
            (client_reader, server_writer, True),
            (server_reader, client_writer, False),
        ):
            task = asyncio.get_running_loop().create_task(self._pump(source, sink, upward, client_writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        upward: bool,
        client: asyncio.StreamWriter,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                mode = self.up if upward else self.down
                if mode == "swallow":
                    self.swallowed += len(data)
                    continue
                if mode == "drop":
                    sink.transport.abort()
                    client.transport.abort()
                    return
                if mode == "delay":
                    await asyncio.sleep(self.delay)
                sink.write(data)
                await sink.drain()
        sink.transport.abort()
        self._transports.discard(sink)
