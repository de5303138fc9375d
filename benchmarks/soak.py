"""Soak run across Redis outages: `python -m benchmarks.soak --seconds 30 [--fault kill|blackhole]`.

Starts its own redis-server (free port, temp folder) and the app below under uvicorn in a subprocess,
both on 127.0.0.1; drives it with concurrent clients asking for a mix of repeated and unique inputs.
`--fault kill` (default) SIGKILLs Redis at 40 % of the run and restarts it on the same port at 60 %.
`--fault blackhole` puts a loopback proxy (tests/netproxy.py, in a process of its own) between the app
and Redis and makes it swallow every byte both ways (connections stay open, nothing is answered) twice:
from 2/9 to 7/18 of the run and from 5/9 to 13/18 (8-14 s and 20-26 s of a 36 s run), healing it between.
Prints a Markdown table per phase (requests, errors, wrong bodies, latency percentiles, hit ratio) and,
for each restore, the time to the first HIT against the target `reset_timeout + 1 s`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, CacheRule, CircuitBreaker
from tests.netproxy import NetProxy
from tests.redis_server import RedisServer, free_port

MAX_SECONDS = 600


def create_app() -> Starlette:
    """`/predict?x=...` sleeps `SOAK_MODEL_MS` like a model would, then echoes `x`; cached in Redis."""
    model_seconds = float(os.environ.get("SOAK_MODEL_MS", "5")) / 1000

    async def predict(request: Request) -> Response:
        x = request.query_params["x"]
        await asyncio.sleep(model_seconds)
        return JSONResponse({"x": x, "score": sum(x.encode()) % 97})

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/predict", predict), Route("/health", health)])
    app.add_middleware(
        CacheMiddleware,
        redis_url=os.environ["SOAK_REDIS_URL"],
        rules=[CacheRule("/predict", ttl=600)],
        namespace="soak",
        timeout=float(os.environ.get("SOAK_TIMEOUT", "0.05")),
        breaker=CircuitBreaker(reset_timeout=float(os.environ.get("SOAK_RESET_TIMEOUT", "5"))),
    )
    return app


def wait_for_port(port: int, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@dataclass
class Sample:
    started: float
    seconds: float
    status: int
    cache: str
    correct: bool


@dataclass
class Phase:
    name: str
    samples: list[Sample] = field(default_factory=list)
    transport_errors: int = 0

    def row(self, duration: float) -> str:
        latencies = sorted(s.seconds for s in self.samples)
        served = [s for s in self.samples if s.status < 500]
        errors = len(self.samples) - len(served) + self.transport_errors
        hits = sum(s.cache == "HIT" for s in self.samples)
        bypasses = sum(s.cache == "BYPASS" for s in self.samples)
        wrong = sum(not s.correct for s in served)
        cells = [
            self.name,
            f"{duration:.1f}",
            str(len(served)),
            f"{len(served) / duration:.0f}",
            str(errors),
            str(wrong),
            *(percentile(latencies, q) for q in (50, 99, 100)),
            f"{hits / max(1, len(self.samples)):.1%}",
            str(bypasses),
        ]
        return "| " + " | ".join(cells) + " |"


def percentile(values: list[float], q: int) -> str:
    if not values:
        return "-"
    index = min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))
    return f"{values[index] * 1000:.1f} ms"


@dataclass
class Fault:
    """What the soak does to Redis: phase names, outage windows (start, end in s), and how to begin and
    end an outage."""

    describe: str
    phases: tuple[str, ...]
    windows: list[tuple[float, float]]
    begin: Callable[[], Awaitable[None]]
    end: Callable[[], Awaitable[None]]


class ProxyProcess:
    """A `NetProxy` in front of Redis in a process of its own (so that neither the load generator nor the
    app delays Redis traffic), told "swallow" or "pass" a line at a time on its stdin."""

    def __init__(self, redis_port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"from benchmarks.soak import serve_proxy; serve_proxy({redis_port})"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.control = self.process.stdin
        self.port = int(self.process.stdout.readline())

    async def black_hole(self) -> None:
        """Swallow every byte both ways; open connections stay open."""
        self._tell("swallow")

    async def heal(self) -> None:
        self._tell("pass")

    def _tell(self, mode: str) -> None:
        self.control.write(mode + "\n")
        self.control.flush()

    def close(self) -> None:
        self.control.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def serve_proxy(redis_port: int) -> None:
    """Run a `NetProxy` to `redis_port`: print its port, then set both directions to each mode read from
    stdin ("swallow" or "pass") until stdin closes."""

    async def serve() -> None:
        proxy = await NetProxy(redis_port).start()
        print(proxy.port, flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            proxy.up = proxy.down = "swallow" if line.strip() == "swallow" else "pass"
        await proxy.aclose()

    asyncio.run(serve())


def kill_fault(redis: RedisServer, seconds: float) -> Fault:
    async def begin() -> None:
        redis.kill()

    async def end() -> None:
        await asyncio.to_thread(redis.start)

    return Fault(
        f"Redis SIGKILLed at {0.4 * seconds:.0f} s, restarted at {0.6 * seconds:.0f} s",
        ("before kill", "Redis down", "after restart"),
        [(0.4 * seconds, 0.6 * seconds)],
        begin,
        end,
    )


def blackhole_fault(proxy: ProxyProcess, seconds: float) -> Fault:
    windows = [(seconds * 2 / 9, seconds * 7 / 18), (seconds * 5 / 9, seconds * 13 / 18)]
    spans = " and ".join(f"{a:.0f}-{b:.0f} s" for a, b in windows)
    return Fault(
        f"the app reaches Redis through a proxy that swallows all traffic both ways at {spans}",
        ("before", "black hole 1", "restored 1", "black hole 2", "restored 2"),
        windows,
        proxy.black_hole,
        proxy.heal,
    )


async def drive(
    base_url: str,
    fault: Fault,
    *,
    seconds: float,
    clients: int,
    hot_inputs: int,
    repeat: float,
    max_requests: int,
) -> tuple[list[Phase], list[float], list[float | None]]:
    """Run the load and the fault's outages; return the phases, their durations, and for each restore the
    time from it to the first HIT answered to a request sent after it (None: no hit before the run ended)."""
    phases = [Phase(name) for name in fault.phases]
    bounds = [0.0, *(t for window in fault.windows for t in window), seconds]
    durations = [bounds[i + 1] - bounds[i] for i in range(len(phases))]
    rng = random.Random(7)
    counter = 0
    issued = 0
    restored_at: list[float] = []
    first_hit: list[float | None] = [None] * len(fault.windows)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=10, limits=limits) as http:
        start = time.monotonic()

        def phase_index(at: float) -> int:
            return sum(at >= bound for bound in bounds[1:-1])

        async def client() -> None:
            nonlocal counter, issued
            while (now := time.monotonic() - start) < seconds and issued < max_requests:
                issued += 1
                if rng.random() < repeat:
                    x = f"hot-{rng.randrange(hot_inputs)}"
                else:
                    counter += 1
                    x = f"unique-{counter}"
                phase = phases[phase_index(now)]
                restores_before = len(restored_at)
                began = time.perf_counter()
                try:
                    response = await http.get("/predict", params={"x": x})
                except httpx.TransportError:
                    phase.transport_errors += 1
                    continue
                elapsed = time.perf_counter() - began
                cache = response.headers.get("x-cache", "")
                correct = response.status_code == 200 and response.json().get("x") == x
                phase.samples.append(Sample(now, elapsed, response.status_code, cache, correct))
                restore = restores_before - 1
                if cache == "HIT" and restore >= 0 and first_hit[restore] is None:
                    first_hit[restore] = now + elapsed - restored_at[restore]

        async def chaos() -> None:
            for begin_at, end_at in fault.windows:
                await asyncio.sleep(max(0.0, begin_at - (time.monotonic() - start)))
                await fault.begin()
                await asyncio.sleep(max(0.0, end_at - (time.monotonic() - start)))
                await fault.end()
                restored_at.append(time.monotonic() - start)

        await asyncio.gather(chaos(), *(client() for _ in range(clients)))
    return phases, durations, first_hit


def start_app(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "benchmarks.soak:create_app", "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"),
        ],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )


def stop_app(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fault", choices=("kill", "blackhole"), default="kill", help="default: kill")
    parser.add_argument("--seconds", type=float, default=30, help="whole run (default 30, at most 600)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--hot-inputs", type=int, default=200, help="distinct repeated inputs (default 200)")
    parser.add_argument("--repeat", type=float, default=0.9, help="share of requests on repeated inputs")
    parser.add_argument("--model-ms", type=float, default=5, help="time the app spends per miss (default 5)")
    parser.add_argument("--timeout", type=float, default=0.05, help="cache timeout in s (default 0.05)")
    parser.add_argument("--reset-timeout", type=float, default=5, help="breaker cool-down in s (default 5)")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="stop after this many requests")
    return parser.parse_args(argv)


def report(
    args: argparse.Namespace, seconds: float, fault: Fault, phases: list[Phase], durations: list[float]
) -> None:
    print(
        f"soak: {seconds:.0f} s, {args.clients} clients, {args.repeat:.0%} of requests on {args.hot_inputs} "
        f"repeated inputs, model {args.model_ms:g} ms, cache timeout {args.timeout:g} s, breaker cool-down "
        f"(reset_timeout) {args.reset_timeout:g} s; {fault.describe}\n"
    )
    print(
        "| phase | seconds | served | req/s | errors | wrong body | p50 | p99 | max | hit ratio | bypassed |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for phase, duration in zip(phases, durations, strict=True):
        print(phase.row(duration))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seconds = min(args.seconds, MAX_SECONDS)
    with tempfile.TemporaryDirectory(prefix="rcm-soak-") as folder:
        redis = RedisServer(Path(folder)).start()
        proxy = ProxyProcess(redis.port) if args.fault == "blackhole" else None
        fault = blackhole_fault(proxy, seconds) if proxy is not None else kill_fault(redis, seconds)
        port = free_port()
        env = {
            **os.environ,
            "SOAK_REDIS_URL": f"redis://127.0.0.1:{proxy.port if proxy else redis.port}/0",
            "SOAK_MODEL_MS": str(args.model_ms),
            "SOAK_TIMEOUT": str(args.timeout),
            "SOAK_RESET_TIMEOUT": str(args.reset_timeout),
        }
        server = start_app(port, env)
        try:
            wait_for_port(port, 20)
            phases, durations, recoveries = asyncio.run(
                drive(
                    f"http://127.0.0.1:{port}",
                    fault,
                    seconds=seconds,
                    clients=args.clients,
                    hot_inputs=args.hot_inputs,
                    repeat=args.repeat,
                    max_requests=args.max_requests,
                )
            )
        finally:
            stop_app(server)
            if proxy is not None:
                proxy.close()
            redis.kill()

    report(args, seconds, fault, phases, durations)
    target = args.reset_timeout + 1
    late = 0
    for number, recovery in enumerate(recoveries, 1):
        verdict = "within" if recovery is not None and recovery <= target else "NOT within"
        late += verdict != "within"
        after = f"{recovery:.2f} s" if recovery is not None else "none during the run"
        print(f"\nrestore {number}: first hit after {after}, {verdict} the target {target:g} s", end="")
    print()
    failed = sum(
        p.transport_errors + sum(s.status >= 500 or not s.correct for s in p.samples) for p in phases
    )
    return 1 if failed or late else 0


if __name__ == "__main__":
    sys.exit(main())
