"""Private `redis-server` processes for tests: free port, temporary folder, stopped at the end."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One `redis-server` on 127.0.0.1 that a test may stop, kill, pause and start again on the same port."""

    def __init__(self, directory: Path, *extra_args: str, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not on PATH: `apt-get install redis-server` (or run `make test`)"
            )
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.extra_args = (*extra_args, "--requirepass", password) if password else extra_args
        self.password = password
        self.new_port: Callable[[], int] = free_port
        self.started_once = False
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, password=self.password)

    def start(self) -> RedisServer:
        """Start (or restart, on the same port) and wait until it answers. A first start whose port was
        taken between choosing it and binding it moves to another free port, up to 5 times."""
        for _ in range(5):
            if self._launch():
                self.started_once = True
                return self
            if self.started_once:
                break
            self.port = self.new_port()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _launch(self) -> bool:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.directory), *self.extra_args]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return True
            except redis.ConnectionError:
                if self.process.poll() is not None:
                    self.process = None
                    return False
                if time.monotonic() > deadline:
                    self.kill()
                    return False
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL and wait: the server vanishes without closing anything."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
