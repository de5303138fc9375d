"""Run every scenario and write the table, the chart and the profiles to benchmarks/results/.

    python -m benchmarks.run            # full run: 3 interleaved repetitions, about 14 minutes
    python -m benchmarks.run --quick    # one repetition, shorter windows: about 3 minutes
    python -m benchmarks.run --only redis-hit,l1-hit,redis-hit-50k --no-gc --no-profile

The server runs on core 0, the load generator and our own redis-server on core 1, all on loopback. Two
groups of scenarios: an 18-byte prediction and a ~50 KB embedding (benchmarks/apps.py, GROUPS); before
and after each window the runner checks that the scenario answers its group's exact bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from benchmarks import chart as charts
from benchmarks import loadgen, report
from benchmarks.apps import GROUPS, SCENARIOS, Scenario
from benchmarks.hitpath import run as hitpath_run
from benchmarks.processes import LOAD_CORE, SERVER_CORE, free_port, pinned, private_redis
from benchmarks.reps import combine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
# Commands that are not part of serving a request: ours (INFO, CONFIG) and connection set-up.
ADMIN_COMMANDS = ("info", "config", "ping", "client", "hello", "select", "command", "subscribe", "script")


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


def check(port: int, scenario: Scenario, path: str | None = None) -> list[Any]:
    """[status, the scenario's cache header, body length, whether the body is the group's answer]."""
    status, headers, body = get(port, path or scenario.path)
    return [status, headers.get(scenario.cache_header), len(body), same_answer(body, scenario.group)]


def same_answer(body: bytes, group: str) -> bool:
    """Whether `body` is the group's answer: the same bytes, or the same JSON written otherwise (a peer that
    re-serialises floats with `json.dumps` writes `-8.8149e-05` where Pydantic writes `-0.000088149`)."""
    expected = GROUPS[group].body()
    if body == expected:
        return True
    try:
        return bool(json.loads(body) == json.loads(expected))
    except ValueError:
        return False


def problems(scenario: Scenario, checks: dict[str, Any], commands_per_request: float | None) -> list[str]:
    """What makes a run's figures untrustworthy: a wrong body, a missing hit or miss, a peer that stored
    nothing, more Redis commands per request than the scenario allows."""
    found = []
    expected = GROUPS[scenario.group].body()
    for attempt in ("first", "second", "after"):
        size = checks[attempt][2]
        if not checks[attempt][3]:
            found.append(
                f"the {attempt} response ({size} bytes) is not the group's {len(expected)}-byte answer"
            )
    wanted = scenario.expect_cache
    if wanted == "HIT" and (checks["second"][1] != "HIT" or checks["after"][1] != "HIT"):
        found.append(f"expected {scenario.cache_header} HIT, got {checks}")
    if wanted == "MISS" and checks["unique"][1] != "MISS":
        found.append(f"expected {scenario.cache_header} MISS, got {checks}")
    if scenario.peer and checks["redis_keys_after_priming"] == 0:
        found.append("the peer cache stored nothing in Redis")
    limit = scenario.max_commands
    if limit is not None and commands_per_request is not None and commands_per_request > limit + 0.01:
        found.append(f"{commands_per_request:.2f} Redis commands per request, more than {limit:g}")
    return found


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if get(port, "/health")[0] in (200, 404):  # raw-asgi has no /health
                return
        time.sleep(0.1)
    raise RuntimeError("server did not answer in time")


def data_commands(client: redis.Redis) -> int:
    """Commands Redis ran since CONFIG RESETSTAT, ours and connection set-up left out.

    Redis counts the commands a Lua script runs as well as the script call, and MULTI/EXEC separately.
    """
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return sum(
        value.get("calls", 0)
        for name, value in stats.items()
        if not name.removeprefix("cmdstat_").startswith(ADMIN_COMMANDS)
    )


@dataclass
class Run:
    scenario: str
    label: str
    gc_freeze: bool = False
    profile: bool = False
    result: dict[str, Any] = field(default_factory=dict)


def run_one(
    run: Run, redis_url: str, client: redis.Redis, args: argparse.Namespace, work: Path, run_id: int
) -> None:
    scenario = SCENARIOS[run.scenario]
    client.flushall()
    port = free_port()
    stats_file = work / f"{run.label}.{run_id}.stats.json"
    profile_file = RESULTS / f"profile-{run.scenario}.prof"
    command = [
        sys.executable,
        "-m",
        "benchmarks.server",
        run.scenario,
        "--port",
        str(port),
        "--redis-url",
        redis_url,
        "--stats",
        str(stats_file),
    ]
    if run.gc_freeze:
        command.append("--gc-freeze")
    if run.profile:
        command += ["--profile", str(profile_file)]
    log = (work / f"{run.label}.{run_id}.log").open("wb")
    server = subprocess.Popen(
        command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pinned(SERVER_CORE)
    )
    generate = loadgen.run_wrk if args.loadgen == "wrk" else loadgen.run_python
    url = f"http://127.0.0.1:{port}{scenario.path}"
    try:
        wait_ready(port, server)
        checks: dict[str, Any] = {attempt: check(port, scenario) for attempt in ("first", "second")}
        if scenario.unique:
            checks["unique"] = check(port, scenario, next(loadgen.unique_paths(90000 + run_id)))
        checks["redis_keys_after_priming"] = client.dbsize()
        options: dict[str, Any] = {"connections": args.connections, "unique": scenario.unique}
        if args.loadgen == "wrk":
            options["preexec"] = pinned(LOAD_CORE)
        # Distinct run ids: the window must not replay the warm-up's unique URLs (they would be hits).
        generate(url, seconds=args.warmup, run_id=10 * run_id + 1, **options)
        server.send_signal(signal.SIGUSR1)
        client.config_resetstat()
        time.sleep(0.05)
        measured = generate(url, seconds=args.duration, run_id=10 * run_id + 2, **options)
        commands = data_commands(client)
        server.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 20
        while not stats_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("server wrote no stats")
            time.sleep(0.05)
        checks["after"] = check(port, scenario)
        server_stats = json.loads(stats_file.read_text())
        per_request = commands / measured["requests"] if measured["requests"] else None
        run.result = {
            **measured,
            "redis_commands_per_request": per_request,
            "body_bytes": checks["second"][2],
            "checks": checks,
            "server": server_stats,
        }
        found = problems(scenario, checks, per_request)
        if found:
            run.result["warning"] = "; ".join(found)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.close()
    if run.profile:
        run.result["profile_file"] = str(profile_file)


def plan(args: argparse.Namespace) -> list[Run]:
    names = list(SCENARIOS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}; choose among {list(SCENARIOS)}")
    runs = [Run(name, name) for name in names if not (args.skip_peers and SCENARIOS[name].peer)]
    if not args.no_gc:
        for name in ("redis-hit", "l1-hit", "redis-hit-50k"):
            if name in names:
                runs.append(Run(name, f"{name}+gc.freeze", gc_freeze=True))
    if not args.no_profile:
        for name in ("redis-hit", "l1-hit"):
            if name in names:
                # Frozen, so that a full collection's pause is not charged to whichever call allocated.
                runs.append(Run(name, f"{name}+cProfile", gc_freeze=True, profile=True))
    return runs


def peer_missing(name: str) -> str | None:
    peer = SCENARIOS[name].peer
    if peer is None:
        return None
    module = {
        "fastapi-cache2": "fastapi_cache",
        "cashews": "cashews",
        "hishel": "hishel.asgi",
        "fastapi-redis-sdk": "redis_fastapi",
    }[peer]
    try:
        __import__(module)
    except ImportError as exc:
        return f"{peer} is not installed ({exc}): pip install -e '.[bench]'"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one repetition, 1 s warm-up and 3 s windows")
    parser.add_argument("--warmup", type=float, help="seconds of load before each window (default 1)")
    parser.add_argument("--duration", type=float, help="seconds measured per repetition (default 4)")
    parser.add_argument("--reps", type=int, help="repetitions of every scenario, interleaved (default 3)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", help="comma-separated scenarios: " + ", ".join(SCENARIOS))
    parser.add_argument("--skip-peers", action="store_true", help="leave out the other caches")
    parser.add_argument("--no-gc", action="store_true", help="leave out the gc.freeze() runs")
    parser.add_argument("--no-profile", action="store_true", help="leave out the cProfile runs")
    parser.add_argument("--no-hitpath", action="store_true", help="leave out the in-process step timings")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args(argv)
    args.warmup = args.warmup if args.warmup is not None else 1.0
    args.duration = args.duration if args.duration is not None else (3.0 if args.quick else 4.0)
    args.reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.loadgen == "auto":
        args.loadgen = "wrk" if loadgen.wrk_available() else "python"
    pin_self = pinned(LOAD_CORE)
    if pin_self is not None:
        pin_self()  # this process and the Python load generator stay off the server's core

    RESULTS.mkdir(exist_ok=True)
    runs = plan(args)
    started = time.monotonic()
    load_at_start = os.getloadavg()[0]
    hitpath = ""
    with tempfile.TemporaryDirectory(prefix="rcm-bench-") as folder, private_redis() as (redis_url, client):
        work = Path(folder)
        measured: dict[str, list[dict[str, Any]]] = {run.label: [] for run in runs}
        total = sum(1 if run.profile else args.reps for run in runs)
        number = 0
        for rep in range(args.reps):  # interleaved: every scenario once, then every scenario again
            for run in runs:
                if run.profile and rep > 0:
                    continue
                number += 1
                missing = peer_missing(run.scenario)
                if missing:
                    run.result = {"skipped": missing}
                else:
                    try:
                        run_one(run, redis_url, client, args, work, run_id=number)
                    except Exception as exc:  # one broken scenario must not lose the others
                        logs = work / f"{run.label}.{number}.log"
                        tail = logs.read_text(errors="replace")[-2000:] if logs.exists() else ""
                        run.result = {"failed": repr(exc), "log": tail}
                measured[run.label].append(run.result)
                print(f"[{number}/{total}] {report.one_line(run.label, run.result)}", flush=True)
        for run in runs:
            run.result = combine(measured[run.label])
        if not args.no_hitpath:
            try:
                hitpath = hitpath_run(redis_url, 1000 if args.quick else 3000)
            except Exception as exc:
                hitpath = f"hit-path timings failed: {exc!r}\n"
            print("[hit path] in-process step timings done", flush=True)
    elapsed = time.monotonic() - started
    machine = report.machine(
        args, redis_url_version(), loadgen.wrk_version() if args.loadgen == "wrk" else None
    )
    machine["total_run_s"] = round(elapsed, 1)
    machine["load_average_at_start"] = load_at_start
    data = {"machine": machine, "runs": [run.__dict__ for run in runs], "hitpath": hitpath}
    (RESULTS / "results.json").write_text(json.dumps(data, indent=1, default=str))
    markdown = report.markdown(data)
    (RESULTS / "results.md").write_text(markdown)
    png = charts.chart(data, RESULTS / "benchmark.png")
    print()
    print(markdown)
    print(f"written: {RESULTS / 'results.md'}, {RESULTS / 'results.json'}" + (f", {png}" if png else ""))


def redis_url_version() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        return "not installed"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    return out.split(" v=")[1].split()[0] if " v=" in out else out.strip()


if __name__ == "__main__":
    main()
