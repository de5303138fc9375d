"""Load generators: wrk when installed (one thread, N keep-alive connections), else a Python fallback.

Both return the same dict: requests, seconds, rps, latency percentiles in ms (p50, p90, p99, p999, max),
and error counts. `unique=True` makes every request's query string new (a cache miss each time).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Prints wrk's own latency percentiles (microseconds) as one JSON line.
_WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max))
end
"""

# A new petal_width per request: `0.2<run><thread><counter>` never repeats within a Redis lifetime.
_WRK_UNIQUE = r"""
local counter = 0
local run = "0"
local threads = 0
setup = function(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
init = function(args)
  run = args[1] or "0"
end
request = function()
  counter = counter + 1
  local path = string.format(
    "/predict?sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2%s%d%08d", run, tid, counter)
  return wrk.format("GET", path)
end
"""

UNIQUE_PREFIX = "/predict?sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def wrk_version() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        return "not installed"
    output = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    first = (output.stdout or output.stderr).splitlines()[0]  # "wrk debian/4.1.0-3+b2 [epoll] Copyright..."
    return first.split(" [", 1)[0].strip()


def unique_paths(run_id: int) -> Iterator[str]:
    counter = 0
    while True:
        counter += 1
        yield f"{UNIQUE_PREFIX}{run_id}0{counter:08d}"


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    unique: bool,
    run_id: int,
    preexec: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run wrk with one thread for `seconds` against `url` (its path is used unless `unique`)."""
    binary = shutil.which("wrk")
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="rcm-wrk-") as folder:
        script = Path(folder) / "bench.lua"
        script.write_text((_WRK_UNIQUE if unique else "") + _WRK_DONE)
        command = [
            binary,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            url,
            "--",
            str(run_id),
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, preexec_fn=preexec, timeout=seconds + 30
        )
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            raw = json.loads(line[len("WRKJSON ") :])
            break
    else:
        raise RuntimeError(f"wrk gave no result (exit {done.returncode}): {done.stdout}\n{done.stderr}")
    elapsed = raw["duration_us"] / 1e6
    return {
        "tool": "wrk",
        "requests": raw["requests"],
        "seconds": round(elapsed, 3),
        "rps": raw["requests"] / elapsed if elapsed else 0.0,
        **{p: raw[p] / 1000 for p in ("p50", "p90", "p99", "p999", "max")},
        "errors": {k: raw[k] for k in ("connect", "read", "write", "status", "timeout")},
    }


def run_python(
    url: str, *, connections: int, seconds: float, unique: bool, run_id: int, **_: Any
) -> dict[str, Any]:
    """The fallback: asyncio keep-alive clients in this process (pin it to the load core first).

    It needs far more CPU per request than wrk, so the numbers of fast scenarios are capped by the
    client, not the server: use it only where wrk cannot be installed.
    """
    return asyncio.run(_python_load(url, connections, seconds, unique, run_id))


async def _python_load(
    url: str, connections: int, seconds: float, unique: bool, run_id: int
) -> dict[str, Any]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    fixed = (parts.path + ("?" + parts.query if parts.query else "")).encode()
    paths = unique_paths(run_id)
    latencies: list[int] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            errors["connect"] += 1
            return
        try:
            while time.perf_counter() < deadline:
                path = next(paths).encode() if unique else fixed
                started = time.perf_counter_ns()
                writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                latencies.append(time.perf_counter_ns() - started)
                if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.1 3")):
                    errors["status"] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            errors["read"] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def percentile(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] / 1e6

    return {
        "tool": "python",
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        **{f"p{str(p).replace('.', '')}": percentile(p) for p in (50, 90, 99, 99.9)},
        "max": latencies[-1] / 1e6 if latencies else 0.0,
        "errors": errors,
    }
