"""Soak run across a Redis outage: `python -m benchmarks.soak --seconds 30`.

Starts its own redis-server (free port, temp folder) and the app below under uvicorn in a subprocess,
both on 127.0.0.1; drives it with concurrent clients asking for a mix of repeated and unique inputs;
SIGKILLs Redis when the second phase starts and restarts it on the same port when the third starts.
Prints a Markdown table per phase: requests, errors, wrong bodies, latency percentiles, hit ratio.
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
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, CacheRule, CircuitBreaker
from tests.redis_server import RedisServer, free_port

PHASES = ("before kill", "Redis down", "after restart")
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


async def drive(
    base_url: str,
    redis: RedisServer,
    *,
    seconds: float,
    clients: int,
    hot_inputs: int,
    repeat: float,
    max_requests: int,
) -> tuple[list[Phase], list[float], float | None]:
    """Run the load; kill Redis at 40 % of `seconds` and restart it at 60 %."""
    phases = [Phase(name) for name in PHASES]
    bounds = [0.0, 0.4 * seconds, 0.6 * seconds, seconds]
    durations = [bounds[i + 1] - bounds[i] for i in range(3)]
    rng = random.Random(7)
    counter = 0
    issued = 0
    restarted_at: list[float] = []
    first_hit_after_restart: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=10, limits=limits) as http:
        start = time.monotonic()

        def phase_index(at: float) -> int:
            return 0 if at < bounds[1] else 1 if at < bounds[2] else 2

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
                if restarted_at and not first_hit_after_restart and cache == "HIT" and now > restarted_at[0]:
                    first_hit_after_restart.append(now - restarted_at[0])

        async def chaos() -> None:
            await asyncio.sleep(bounds[1])
            redis.kill()
            await asyncio.sleep(bounds[2] - bounds[1])
            await asyncio.to_thread(redis.start)
            restarted_at.append(time.monotonic() - start)

        await asyncio.gather(chaos(), *(client() for _ in range(clients)))
    return phases, durations, first_hit_after_restart[0] if first_hit_after_restart else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30, help="whole run (default 30, at most 600)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--hot-inputs", type=int, default=200, help="distinct repeated inputs (default 200)")
    parser.add_argument("--repeat", type=float, default=0.9, help="share of requests on repeated inputs")
    parser.add_argument("--model-ms", type=float, default=5, help="time the app spends per miss (default 5)")
    parser.add_argument("--timeout", type=float, default=0.05, help="cache timeout in s (default 0.05)")
    parser.add_argument("--reset-timeout", type=float, default=5, help="breaker cool-down in s (default 5)")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="stop after this many requests")
    args = parser.parse_args(argv)
    seconds = min(args.seconds, MAX_SECONDS)

    with tempfile.TemporaryDirectory(prefix="rcm-soak-") as folder:
        redis = RedisServer(Path(folder)).start()
        port = free_port()
        env = {
            **os.environ,
            "SOAK_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
            "SOAK_MODEL_MS": str(args.model_ms),
            "SOAK_TIMEOUT": str(args.timeout),
            "SOAK_RESET_TIMEOUT": str(args.reset_timeout),
        }
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "benchmarks.soak:create_app", "--factory"),
                *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"),
            ],
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
        )
        try:
            wait_for_port(port, 20)
            phases, durations, recovery = asyncio.run(
                drive(
                    f"http://127.0.0.1:{port}",
                    redis,
                    seconds=seconds,
                    clients=args.clients,
                    hot_inputs=args.hot_inputs,
                    repeat=args.repeat,
                    max_requests=args.max_requests,
                )
            )
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            redis.kill()

    print(
        f"soak: {seconds:.0f} s, {args.clients} clients, {args.repeat:.0%} of requests on {args.hot_inputs} "
        f"repeated inputs, model {args.model_ms:g} ms, cache timeout {args.timeout:g} s, breaker cool-down "
        f"{args.reset_timeout:g} s; Redis SIGKILLed at {0.4 * seconds:.0f} s, "
        f"restarted at {0.6 * seconds:.0f} s\n"
    )
    print(
        "| phase | seconds | served | req/s | errors | wrong body | p50 | p99 | max | hit ratio | bypassed |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for phase, duration in zip(phases, durations, strict=True):
        print(phase.row(duration))
    after = f"{recovery:.2f} s" if recovery is not None else "none during the run"
    print(f"\nfirst hit after the restart: {after}")
    failed = sum(
        p.transport_errors + sum(s.status >= 500 or not s.correct for s in p.samples) for p in phases
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
