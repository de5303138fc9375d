"""`python -m demo`: serve the iris app with uvicorn, falling back to a private Redis or memory."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import ExitStack, suppress
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

import redis
import uvicorn

from demo.app import DEFAULT_REDIS_URL, create_app
from redis_cache_middleware import MemoryBackend

logger = logging.getLogger(__name__)

PRIVATE_REDIS_START_TIMEOUT = 5.0


def redact(url: str) -> str:
    """Return `url` with any password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def redis_reachable(url: str) -> bool:
    """Return True if a Redis at `url` answers PING within about half a second."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_private_redis(stack: ExitStack) -> str | None:
    """Start a throwaway redis-server stopped when `stack` closes; return its URL, or None on failure."""
    executable = shutil.which("redis-server")
    if executable is None:
        return None
    workdir = tempfile.mkdtemp(prefix="demo-redis-")
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    port = free_port()
    cmd = [
        executable,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    stack.callback(stop_process, proc)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + PRIVATE_REDIS_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            logger.warning("private redis-server exited with code %s", proc.returncode)
            return None
        if redis_reachable(url):
            return url
        time.sleep(0.05)
    logger.warning("private redis-server did not answer PING within %.0f s", PRIVATE_REDIS_START_TIMEOUT)
    return None


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate `proc` and wait for it, killing it if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM (re-raised by uvicorn after its graceful shutdown) into SystemExit so cleanup runs."""
    raise SystemExit(128 + signum)


def main() -> None:
    """Run the demo server until interrupted; always comes up, whatever the state of Redis."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)

    signal.signal(signal.SIGTERM, exit_on_sigterm)
    with ExitStack() as stack:
        if redis_reachable(redis_url):
            app = create_app(redis_url=redis_url)
        else:
            logger.warning("Redis at %s is unreachable", redact(redis_url))
            private_url = start_private_redis(stack)
            if private_url is not None:
                logger.info("using private redis-server at %s", private_url)
                app = create_app(redis_url=private_url)
            else:
                logger.warning("no usable redis-server; falling back to in-process MemoryBackend")
                app = create_app(backend=MemoryBackend())

        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        if ":" in shown_host:
            shown_host = f"[{shown_host}]"
        logger.info(
            "try: curl -i 'http://%s:%d/predict?sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2'",
            shown_host,
            port,
        )
        logger.info("cache dashboard: http://%s:%d/cache/", shown_host, port)
        with suppress(KeyboardInterrupt):
            uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")


if __name__ == "__main__":
    main()
